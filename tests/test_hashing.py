"""LAION's hash: the public function, the compiled batch hash and the SQL function equal mmh3's reference.

The batch hash (`laion_hash_arrow`, numba's MurmurHash3_x64_128 over Arrow buffers) is checked
against `mmh3.hash64` on two million random pairs drawn from every UTF-8 width, on every
boundary between URL and TEXT for lengths 0-40 (so every tail length 0-15 and every straddling
word), on 100 kB strings, and on every Arrow layout an engine can hand it (slices, chunks, nulls
with bytes behind them, large/view/binary/dictionary types).
"""

from __future__ import annotations

import random

import mmh3
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import etl.engine.hashing as hashing
from etl import laion_hash
from etl.engine.hashing import hash_backend, laion_hash_arrow, laion_hash_batches, laion_hashes

EDGE_CODE_POINTS = "\x00\x7f\x80\u07ff\u0800\ud7ff\ue000\ufffd\uffff\U00010000\U0010ffff"

ADVERSARIAL = [
    (None, None), ("", ""), (None, "text only"), ("http://url.only/", None), ("a", "b"), ("ab", ""),
    ("", "ab"), ("http://ex.com/ü.jpg", "Grüße aus Köln"), ("http://例子.测试/图.png", "猫が好き 🐈‍⬛"),
    ("http://x/", "\u0000nul inside"), ("http://x/" + "a" * 100_000, "long url"), ("http://x/", "é" * 50_000),
    ("http://x/\ud7ff", "surrogate-adjacent \U0010ffff"), (EDGE_CODE_POINTS, EDGE_CODE_POINTS[::-1]),
    ("🙂" * 25_000, "漢" * 33_334), ("", "x" * 100_003), ("y" * 100_001, ""),
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


def random_unicode(count: int, seed: int) -> list:
    """`count` strings of 0-120 code points (a few of 1-5k) of every UTF-8 width; 5% None.

    Built in C: one long string of random code points (surrogates excluded), then sliced.
    """
    rng = np.random.default_rng(seed)
    lengths = np.where(rng.random(count) < 0.002, rng.integers(1_000, 5_000, count), rng.integers(0, 120, count))
    total = int(lengths.sum())
    ranges = np.array([[0x00, 0x80], [0x80, 0x800], [0x800, 0xD800], [0xE000, 0x10000], [0x10000, 0x110000]])
    pick = rng.choice(len(ranges), size=total, p=[0.6, 0.15, 0.15, 0.05, 0.05])
    low, high = ranges[pick, 0], ranges[pick, 1]
    code_points = (low + (rng.random(total) * (high - low)).astype(np.int64)).astype("<u4")
    text = code_points.tobytes().decode("utf-32-le")
    ends = np.cumsum(lengths).tolist()
    starts = [0, *ends[:-1]]
    nulls = (rng.random(count) < 0.05).tolist()
    return [None if null else text[a:b] for a, b, null in zip(starts, ends, nulls)]


@pytest.mark.parametrize("url, text", ADVERSARIAL)
def test_laion_hash_equals_reference(url, text):
    assert laion_hash(url, text) == reference(url, text)


def test_laion_hash_of_nothing_is_zero_and_signed_values_occur():
    assert laion_hash(None, None) == laion_hash("", "") == 0
    values = [laion_hash(u, t) for u, t in random_pairs(200, seed=1)]
    assert min(values) < 0 < max(values)


def test_the_compiled_kernel_is_the_one_in_use():
    assert hash_backend() == "numba"


def test_vectorised_hashes_equal_scalar_ones():
    pairs = random_pairs(5_000, seed=2) + ADVERSARIAL
    urls, texts = zip(*pairs)
    assert laion_hashes(urls, texts).tolist() == [reference(u, t) for u, t in pairs]


def test_two_million_random_unicode_pairs_equal_mmh3():
    """2,000,000 pairs: URLs and TEXTs drawn from two pools of 100,000 random strings."""
    count = 2_000_000
    rng = np.random.default_rng(13)
    url_pool, text_pool = random_unicode(100_000, seed=11), random_unicode(100_000, seed=12)
    urls = [url_pool[i] for i in rng.integers(0, len(url_pool), count).tolist()]
    texts = [text_pool[i] for i in rng.integers(0, len(text_pool), count).tolist()]
    hash64 = mmh3.hash64
    expected = np.fromiter((hash64(((u or "") + (t or "")).encode("utf-8"))[0] for u, t in zip(urls, texts)),
                           dtype=np.int64, count=count)
    actual = laion_hashes(urls, texts)
    mismatches = np.flatnonzero(actual != expected)
    assert mismatches.size == 0, [(urls[i], texts[i]) for i in mismatches[:3]]


def test_every_boundary_between_url_and_text():
    """All byte lengths 0-40 on each side: every tail (0-15), every straddling word, multi-byte
    characters cut at the boundary."""
    pairs = []
    for unit in ("a", "é", "漢", "🙂"):
        for url_length in range(0, 41):
            for text_length in range(0, 41):
                pairs.append((("u" + unit * 40)[:url_length], (unit + "t" * 40)[:text_length]))
    urls, texts = zip(*pairs)
    assert laion_hashes(urls, texts).tolist() == [reference(u, t) for u, t in pairs]


def test_words_at_the_very_end_of_the_buffers():
    """A one-row array: the row's last word ends its data buffer, where the kernel cannot load a
    whole 8-byte word past the value and masks; the same rows followed by another take the
    masked-load path."""
    for url_length in range(0, 21):
        for text_length in range(0, 21):
            url, text = "u" * url_length, "t" * text_length
            assert laion_hashes([url], [text]).tolist() == [reference(url, text)], (url_length, text_length)
            assert laion_hashes([url, "next"], [text, "row"]).tolist() == [reference(url, text),
                                                                           reference("next", "row")]


def test_tail_lengths_and_long_strings():
    pairs = [("x" * n, None) for n in range(0, 48)] + [(None, "y" * n) for n in range(0, 48)]
    pairs += [("h" * 100_000 + str(n), "t" * n) for n in range(16)]
    urls, texts = zip(*pairs)
    assert laion_hashes(urls, texts).tolist() == [reference(u, t) for u, t in pairs]


def test_invalid_unicode_raises_like_the_reference():
    # mmh3.hash64 of such a str crashes the interpreter (mmh3 5.3.1); the reference encodes
    # first and raises, and so must the batch hash.
    with pytest.raises(UnicodeEncodeError):
        laion_hash("http://x/\ud800", "lone surrogate")
    with pytest.raises(UnicodeEncodeError):
        laion_hashes(["http://x/\ud800"], ["lone surrogate"])


def arrow_layouts() -> list[tuple[str, object, object, list]]:
    """(name, url array, text array, expected hashes) for every layout an engine can send."""
    pairs = random_pairs(300, seed=4) + ADVERSARIAL
    urls, texts = [u for u, _ in pairs], [t for _, t in pairs]
    expected = [reference(u, t) for u, t in pairs]
    url_array, text_array = pa.array(urls, pa.string()), pa.array(texts, pa.string())
    layouts = [
        ("string", url_array, text_array, expected),
        ("large_string", url_array.cast(pa.large_string()), text_array.cast(pa.large_string()), expected),
        ("string_view", url_array.cast(pa.string_view()), text_array.cast(pa.string_view()), expected),
        ("binary", url_array.cast(pa.binary()), text_array.cast(pa.large_binary()), expected),
        ("dictionary", pc.dictionary_encode(url_array), text_array, expected),
        ("mixed types", url_array, text_array.cast(pa.large_string()), expected),
        ("sliced", url_array.slice(7, 200), text_array.slice(7, 200), expected[7:207]),
        ("chunked differently",
         pa.chunked_array([url_array.slice(0, 100), url_array.slice(100)]),
         pa.chunked_array([text_array.slice(0, 33), text_array.slice(33, 200), text_array.slice(233)]), expected),
        ("empty", url_array.slice(0, 0), text_array.slice(0, 0), []),
        ("all null", pa.nulls(5, pa.string()), pa.nulls(5), [0] * 5),
    ]
    # Null slots whose offsets still cover bytes: those bytes must not be hashed.
    validity = pa.py_buffer(np.packbits([1, 0, 1, 0], bitorder="little").tobytes())
    hidden = pa.Array.from_buffers(pa.string(), 4, [validity, pa.py_buffer(np.array([0, 2, 6, 7, 9], np.int32).tobytes()),
                                                     pa.py_buffer(b"abHIDEcXY")])
    plain = pa.array(["q", "r", None, ""])
    layouts.append(("null slots with bytes", hidden, plain, [reference(u, t) for u, t in
                                                             [("ab", "q"), (None, "r"), ("c", None), (None, "")]]))
    layouts.append(("null slots with bytes, sliced", hidden.slice(1, 3), plain.slice(1, 3),
                    [reference(u, t) for u, t in [(None, "r"), ("c", None), (None, "")]]))
    return layouts


@pytest.mark.parametrize("name, urls, texts, expected", arrow_layouts(), ids=lambda v: v if isinstance(v, str) else "")
def test_arrow_layouts(name, urls, texts, expected):
    result = laion_hash_arrow(urls, texts)
    assert result.type == pa.int64() and result.null_count == 0
    assert result.to_pylist() == expected


@pytest.mark.parametrize("name, urls, texts, expected", arrow_layouts()[:8], ids=lambda v: v if isinstance(v, str) else "")
def test_mmh3_fallback_gives_the_same_hashes(monkeypatch, name, urls, texts, expected):
    monkeypatch.setattr(hashing, "_BACKEND", (None, "python"))
    assert hash_backend() == "python"
    assert laion_hash_arrow(urls, texts).to_pylist() == expected


def test_length_mismatch_is_refused():
    with pytest.raises(ValueError, match="2 urls but 1 texts"):
        laion_hash_arrow(pa.array(["a", "b"]), pa.array(["c"]))


def test_pandas_udf_body_on_object_series():
    pairs = random_pairs(1_000, seed=5) + ADVERSARIAL
    urls = pd.Series([u for u, _ in pairs], index=range(10, 10 + len(pairs)))
    texts = pd.Series([float("nan") if t is None else t for _, t in pairs], index=urls.index)
    result = hashing._hash_series(urls, texts)
    assert result.index.equals(urls.index)
    assert result.tolist() == [reference(u, t) for u, t in pairs]


@pytest.mark.parametrize("dtype", ["string[pyarrow]", "str"])
def test_pandas_udf_body_on_arrow_backed_series(dtype):
    """The Sail server hands the UDF Arrow-backed strings (pandas' infer_string), nulls as NaN or NA."""
    pairs = random_pairs(1_000, seed=6) + ADVERSARIAL
    with pd.option_context("future.infer_string", True):
        urls = pd.Series([u for u, _ in pairs], dtype=dtype, index=range(5, 5 + len(pairs)))
        texts = pd.Series([t for _, t in pairs], dtype=dtype, index=urls.index)
        assert urls.isna().any() and texts.isna().any()
        result = hashing._hash_series(urls, texts)
    assert result.index.equals(urls.index)
    assert result.tolist() == [reference(u, t) for u, t in pairs]


def test_sql_function_and_map_in_arrow_on_sail_equal_reference(tmp_path):
    from etl.project.config import parse_config
    from etl.engine.session import open_session

    pairs = random_pairs(3_000, seed=3) + ADVERSARIAL
    expected = {i: reference(u, t) for i, (u, t) in enumerate(pairs)}
    config = parse_config({"warehouse": str(tmp_path), "sources": {"s": {"base": "b", "joined": "j"}}}, tmp_path)
    with open_session(config) as spark:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "700")  # several batches
        df = spark.createDataFrame([(i, u, t) for i, (u, t) in enumerate(pairs)], "id int, url string, text string")
        by_sql = df.selectExpr("id", "laion_hash(url, text) as hash").collect()
        by_map = df.mapInArrow(laion_hash_batches("url", "text"), "id int, url string, text string, hash bigint") \
            .select("id", "hash").collect()
    assert {r.id: r.hash for r in by_sql} == expected
    assert {r.id: r.hash for r in by_map} == expected


def test_the_sail_server_gives_pandas_udfs_arrow_backed_strings(tmp_path):
    """What makes the SQL laion_hash cheap on Sail: its string columns arrive Arrow-backed, not as objects."""
    from pyspark.sql.functions import pandas_udf
    from etl.project.config import parse_config
    from etl.engine.session import open_session

    config = parse_config({"warehouse": str(tmp_path), "sources": {"s": {"base": "b", "joined": "j"}}}, tmp_path)
    with open_session(config) as spark:
        dtype_of = pandas_udf(lambda values: pd.Series([str(values.dtype)] * len(values)), "string")
        found = {r.dtype for r in spark.createDataFrame([("a",), (None,)], "s string").select(dtype_of("s").alias("dtype")).collect()}
    assert found == {"str"}, found
