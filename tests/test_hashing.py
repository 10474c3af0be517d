"""LAION's hash: the public function, and the SQL function on the engine, equal mmh3's reference."""

from __future__ import annotations

import random

import mmh3
import pytest

from etl import laion_hash
from etl.hashing import laion_hashes

ADVERSARIAL = [
    (None, None), ("", ""), (None, "text only"), ("http://url.only/", None), ("a", "b"), ("ab", ""),
    ("", "ab"), ("http://ex.com/ü.jpg", "Grüße aus Köln"), ("http://例子.测试/图.png", "猫が好き 🐈‍⬛"),
    ("http://x/", "\u0000nul inside"), ("http://x/" + "a" * 100_000, "long url"), ("http://x/", "é" * 50_000),
    ("http://x/\ud7ff", "surrogate-adjacent \U0010ffff"),
]


def reference(url, text) -> int:
    """LAION's build scripts: mmh3.hash64 of the UTF-8 bytes of URL + TEXT, first (signed) half."""
    return mmh3.hash64(((url or "") + (text or "")).encode("utf-8"))[0]


def random_pairs(count: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    alphabet = "abcxyz019 /:.?&=%-_é漢字🙂\t"
    def text():
        return None if rng.random() < 0.05 else "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
    return [(text(), text()) for _ in range(count)]


@pytest.mark.parametrize("url, text", ADVERSARIAL)
def test_laion_hash_equals_reference(url, text):
    assert laion_hash(url, text) == reference(url, text)


def test_laion_hash_of_nothing_is_zero_and_signed_values_occur():
    assert laion_hash(None, None) == laion_hash("", "") == 0
    values = [laion_hash(u, t) for u, t in random_pairs(200, seed=1)]
    assert min(values) < 0 < max(values)


def test_vectorised_hashes_equal_scalar_ones():
    pairs = random_pairs(5_000, seed=2) + ADVERSARIAL
    urls, texts = zip(*pairs)
    assert laion_hashes(urls, texts).tolist() == [reference(u, t) for u, t in pairs]


def test_sql_function_on_sail_equals_reference(tmp_path):
    from etl.config import parse_config
    from etl.session import open_session

    pairs = random_pairs(3_000, seed=3) + ADVERSARIAL
    config = parse_config({"warehouse": str(tmp_path), "sources": {"s": {"base": "b", "joined": "j"}}}, tmp_path)
    with open_session(config) as spark:
        rows = spark.createDataFrame(
            [(i, u, t) for i, (u, t) in enumerate(pairs)], "id int, url string, text string"
        ).selectExpr("id", "laion_hash(url, text) as hash").collect()
    assert {r.id: r.hash for r in rows} == {i: reference(u, t) for i, (u, t) in enumerate(pairs)}
