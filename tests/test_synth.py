"""The synthetic LAION generator writes the published layout with exactly the quirks it reports."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl.engine.hashing import laion_hash, laion_hashes
from etl.synth import generate
from helpers import REAL_PAIRS

SUBSETS = ("laion2B-en", "laion2B-multi", "laion1B-nolang")
FAMILY_SUFFIXES = ("", "-joined", "-aesthetic")
ROWS = 4000
PARTS = 3
MAGIC_TYPES = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"GIF87a": "gif", b"GIF89a": "gif"}


def image_type(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((kind for magic, kind in MAGIC_TYPES.items() if data.startswith(magic)), None)


def read_family(root: Path, family: str) -> pd.DataFrame:
    """All parts of one family; pandas absorbs the numeric type drift between parts."""
    frames = []
    for path in sorted((root / family).glob("part-*.parquet")):
        table = pq.read_table(path)
        all_null = [name for name, type_ in zip(table.column_names, table.schema.types) if type_ == pa.null()]
        frame = table.to_pandas().astype({name: "float64" for name in all_null})
        frame["file"] = path.name
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def with_recomputed_hash(frame: pd.DataFrame) -> pd.DataFrame:
    texts = [None if pd.isna(text) else text for text in frame["TEXT"]]
    return frame.assign(recomputed=laion_hashes(frame["URL"].tolist(), texts))


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth") / "sources"
    return root, generate(root, rows=ROWS, seed=7, parts=PARTS)


@pytest.fixture(scope="module")
def base(tree) -> pd.DataFrame:
    root, _ = tree
    return with_recomputed_hash(pd.concat([read_family(root, subset).assign(subset=subset) for subset in SUBSETS],
                                          ignore_index=True))


@pytest.fixture(scope="module")
def joined(tree) -> pd.DataFrame:
    root, _ = tree
    return with_recomputed_hash(pd.concat(
        [read_family(root, f"{subset}-joined").assign(subset=subset) for subset in SUBSETS], ignore_index=True))


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    first = generate(tmp_path / "a", rows=1500, seed=3, images="webdataset", parts=2)
    second = generate(tmp_path / "b", rows=1500, seed=3, images="webdataset", parts=2)
    generate(tmp_path / "c", rows=1500, seed=4, images="webdataset", parts=2)
    assert first == second
    a, b, c = (tree_bytes(tmp_path / name) for name in "abc")
    assert a.keys() == b.keys()
    assert [name for name in a if a[name] != b[name]] == []
    assert all(a[name] != c[name] for name in a if name.endswith(".parquet") or name.endswith(".tar"))


def test_another_process_writes_the_same_bytes(tmp_path):
    generate(tmp_path / "here", rows=600, seed=8, images="webdataset")
    script = "import sys; from etl.synth import generate; generate(sys.argv[1], rows=600, seed=8, images='webdataset')"
    # A different string-hash seed would expose any dependence on set or dict ordering.
    environment = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "there")], check=True, env=environment,
                   cwd=Path(__file__).resolve().parents[1])
    assert tree_bytes(tmp_path / "here") == tree_bytes(tmp_path / "there")


def test_asking_for_images_leaves_the_metadata_files_unchanged(tmp_path):
    generate(tmp_path / "plain", rows=800, seed=5)
    generate(tmp_path / "with_images", rows=800, seed=5, images="files")
    plain = tree_bytes(tmp_path / "plain")
    with_images = tree_bytes(tmp_path / "with_images")
    assert plain == {name: data for name, data in with_images.items() if not name.startswith("images/")}


def test_layout_has_every_family_with_its_part_files(tree):
    root, summary = tree
    expected_parts = [f"part-{part:05d}.parquet" for part in range(PARTS)]
    families = [subset + suffix for subset in SUBSETS for suffix in FAMILY_SUFFIXES]
    for family in families + ["improved_aesthetics_4.5plus"]:
        assert sorted(path.name for path in (root / family).iterdir()) == expected_parts, family
    assert sorted(path.name for path in root.iterdir()) == sorted(families + ["improved_aesthetics_4.5plus"])
    assert summary["images"] is None


def test_counts_add_up_to_rows_and_match_the_summary(tree, base, joined):
    root, summary = tree
    assert len(base) == ROWS
    assert sum(summary[subset]["base"] for subset in SUBSETS) == ROWS
    assert summary["laion2B-en"]["base"] == summary["laion2B-multi"]["base"] == ROWS * 45 // 100
    for subset in SUBSETS:
        assert (base["subset"] == subset).sum() == summary[subset]["base"]
        assert (joined["subset"] == subset).sum() == summary[subset]["joined"]
        assert len(read_family(root, f"{subset}-aesthetic")) == summary[subset]["aesthetic"]
    assert len(read_family(root, "improved_aesthetics_4.5plus")) == summary["improved_aesthetics_4.5plus"]


@pytest.mark.parametrize("rows, expected", [(1, (0, 0, 1)), (3, (1, 1, 1)), (4, (1, 1, 2)), (101, (45, 45, 11))])
def test_small_row_counts_split_across_subsets(tmp_path, rows, expected):
    summary = generate(tmp_path / "tiny", rows=rows, parts=2)
    assert tuple(summary[subset]["base"] for subset in SUBSETS) == expected


def test_base_swaps_width_and_height_against_joined(base, joined):
    pairs = base.merge(joined, on=["subset", "recomputed"], suffixes=("_base", "_joined"))
    assert len(pairs) > 0.9 * len(base)
    assert (pairs["WIDTH_base"] == pairs["HEIGHT_joined"]).all()
    assert (pairs["HEIGHT_base"] == pairs["WIDTH_joined"]).all()
    assert (pairs["WIDTH_joined"] != pairs["HEIGHT_joined"]).mean() > 0.9


def test_duplicate_sample_ids_belong_to_different_samples(tree, base):
    _, summary = tree
    planted = summary["planted"]["duplicate_sample_ids"]
    assert planted == sum(summary[subset]["base"] // 20 for subset in SUBSETS)
    assert len(base) - base["SAMPLE_ID"].nunique() >= planted
    shared = base[base.duplicated("SAMPLE_ID", keep=False)]
    assert shared.groupby("SAMPLE_ID")["URL"].nunique().min() >= 2


def test_duplicate_hashes_are_the_planted_ones_in_base_and_joined(tree, base, joined):
    _, summary = tree
    planted = summary["planted"]["duplicate_hashes"]
    assert planted == max(2, ROWS // 2000)
    for frame in (base, joined):
        counts = frame["recomputed"].value_counts()
        assert (counts > 1).sum() == planted
        assert counts.max() == 2
    twice = base[base.duplicated("recomputed", keep=False)]
    assert (twice.groupby("recomputed")[["URL", "TEXT"]].nunique(dropna=False) == 1).all().all()


def test_mismatched_source_hashes_are_exactly_the_planted_ones(tree, joined):
    _, summary = tree
    planted = summary["planted"]["mismatched_source_hashes"]
    assert planted >= 1
    assert (joined["hash"] != joined["recomputed"]).sum() == planted
    for family in ("laion2B-en-aesthetic", "improved_aesthetics_4.5plus"):
        aesthetic = with_recomputed_hash(read_family(tree[0], family))
        assert (aesthetic["hash"] == aesthetic["recomputed"]).all()


def test_types_drift_between_part_files(tree):
    root, summary = tree

    def types(family: str, column: str) -> list[pa.DataType]:
        return [pq.read_schema(root / family / f"part-{part:05d}.parquet").field(column).type for part in range(PARTS)]

    assert types("laion2B-en", "WIDTH")[:2] == [pa.int32(), pa.float64()]
    assert types("laion2B-en", "SAMPLE_ID")[:2] == [pa.int64(), pa.float64()]
    assert {pa.float32(), pa.float64()} <= set(types("laion2B-en-joined", "punsafe"))
    assert {pa.float32(), pa.float64()} <= set(types("laion2B-en-joined", "similarity"))
    assert pa.null() in types("laion2B-multi-joined", "pwatermark")
    assert summary["planted"]["null_pwatermark_part"] == "laion2B-multi-joined/part-00002.parquet"
    index_part = root / summary["planted"]["index_column_part"]
    assert "__index_level_0__" in pq.read_schema(index_part).names
    with_index = [path for path in root.rglob("*.parquet") if "__index_level_0__" in pq.read_schema(path).names]
    assert with_index == [index_part]
    sample_ids = pq.read_table(root / "laion2B-en/part-00001.parquet", columns=["SAMPLE_ID"]).column(0).to_numpy()
    assert (sample_ids == np.round(sample_ids)).all()


def test_language_columns_follow_the_subset(tree, joined):
    root, _ = tree
    assert "LANGUAGE" not in pq.read_schema(root / "laion1B-nolang-joined/part-00000.parquet").names
    assert "LANGUAGE" not in pq.read_schema(root / "laion2B-en/part-00000.parquet").names
    assert "LANGUAGE" in pq.read_schema(root / "laion2B-multi/part-00000.parquet").names
    en = joined[joined["subset"] == "laion2B-en"]["LANGUAGE"]
    assert en.isna().any() and set(en.dropna()) == {"en"}
    multi = joined[joined["subset"] == "laion2B-multi"]["LANGUAGE"]
    assert {"de", "fr", "ja", "ru", "zh", "es"} <= set(multi)


def test_null_text_is_null_for_the_sample_in_every_family(tree, base, joined):
    _, summary = tree
    everywhere = pd.concat([base, joined])
    null_samples = set(zip(everywhere["subset"], everywhere.loc[everywhere["TEXT"].isna(), "URL"]))
    assert len(null_samples) == summary["planted"]["null_text"] > 0
    null_in_base = set(base.loc[base["TEXT"].isna(), "URL"])
    shared_urls = set(base["URL"]) & set(joined["URL"])
    assert null_in_base & shared_urls == set(joined.loc[joined["TEXT"].isna(), "URL"]) & shared_urls
    assert joined["punsafe"].isna().mean() > 0.005
    assert joined["pwatermark"].isna().any()


def test_captions_include_non_ascii_text(base):
    texts = base["TEXT"].dropna()
    non_ascii = texts[~texts.map(str.isascii)]
    assert len(non_ascii) > 0.3 * (base["subset"] == "laion2B-multi").sum()
    assert any(any(0x1F300 <= ord(char) <= 0x1FAFF for char in text) for text in non_ascii)  # emoji
    assert any(any(0x3040 <= ord(char) <= 0x30FF for char in text) for text in non_ascii)  # Japanese kana


def test_coverage_between_families(tree, base, joined):
    root, summary = tree
    planted = summary["planted"]
    base_keys = set(zip(base["subset"], base["recomputed"]))
    joined_keys = set(zip(joined["subset"], joined["recomputed"]))
    assert len(base_keys - joined_keys) == planted["dropped_from_joined"] > 0
    assert len(joined_keys - base_keys) == planted["joined_only"] > 0
    for subset in SUBSETS:
        aesthetic = read_family(root, f"{subset}-aesthetic")
        samples = {key for key in base_keys | joined_keys if key[0] == subset}
        assert 0.25 < len(aesthetic) / len(samples) < 0.35
        assert aesthetic["aesthetic"].between(1, 10).all()


def test_improved_aesthetics_holds_en_samples_with_a_different_score(tree, base, joined):
    root, _ = tree
    improved = read_family(root, "improved_aesthetics_4.5plus")
    assert (improved["AESTHETIC_SCORE"] >= 4.5).all()
    en_hashes = set(base.loc[base["subset"] == "laion2B-en", "recomputed"]) | set(
        joined.loc[joined["subset"] == "laion2B-en", "recomputed"])
    assert set(improved["hash"]) <= en_hashes
    overlap = improved.merge(read_family(root, "laion2B-en-aesthetic"), on="hash")
    assert len(overlap) > 0
    assert (overlap["AESTHETIC_SCORE"] != overlap["aesthetic"]).all()
    assert (overlap["AESTHETIC_SCORE"] - overlap["aesthetic"]).abs().max() <= 0.5


def test_real_pairs_cycle_with_distinct_urls(tmp_path):
    pairs_path = tmp_path / "pairs.parquet"
    urls = [f"https://example.org/img/{n}.jpg" + ("?size=big" if n % 2 else "") for n in range(40)]
    pq.write_table(pa.table({"URL": urls, "TEXT": [f"caption {n}" for n in range(40)]}), pairs_path)
    root = tmp_path / "sources"
    summary = generate(root, rows=300, seed=1, real_pairs=pairs_path)
    frame = with_recomputed_hash(pd.concat([read_family(root, subset) for subset in SUBSETS]))
    assert {url.split("?s=")[0].split("&s=")[0] for url in frame["URL"]} == set(urls)
    assert frame["URL"].str.contains(r"[?&]s=\d+$").any()
    assert (frame["recomputed"].value_counts() > 1).sum() == summary["planted"]["duplicate_hashes"]


@pytest.mark.skipif(not REAL_PAIRS.is_file(), reason=f"real LAION pairs not found at {REAL_PAIRS}")
def test_real_pairs_file_supplies_urls_and_captions(tmp_path):
    real = pq.read_table(REAL_PAIRS, columns=["URL", "TEXT"]).to_pandas()
    root = tmp_path / "sources"
    generate(root, rows=2000, seed=2, real_pairs=REAL_PAIRS)
    en = read_family(root, "laion2B-en")
    assert set(en["URL"]) <= set(real["URL"])
    real_pairs = set(zip(real["URL"], real["TEXT"]))
    kept_captions = sum((url, text) in real_pairs for url, text in zip(en["URL"], en["TEXT"]))
    assert kept_captions > 0.9 * len(en)


@pytest.mark.parametrize("output_format", ["files", "webdataset", "parquet"])
def test_images_mimic_img2dataset_output(tmp_path, output_format):
    root = tmp_path / "sources"
    summary = generate(root, rows=1500, seed=11, images=output_format, parts=2)["images"]
    folder = root / "images"
    assert summary["format"] == output_format
    assert summary["shards"] == 2 and set(summary["subsets"]) == {"laion2B-en", "laion2B-multi"}

    index = pd.concat([pq.read_table(path).to_pandas().assign(shard=path.stem)
                       for path in sorted(folder.glob("*.parquet"))], ignore_index=True)
    assert len(index) == summary["rows"] == sum(summary["subsets"].values())
    assert list(index.columns[:12]) == ["hash", "caption", "url", "key", "status", "error_message", "width",
                                        "height", "original_width", "original_height", "exif", "sha256"]
    assert (index["key"].str.len() == 7).all() and (index["key"].str[:5] == index["shard"]).all()
    assert list(index["hash"]) == [laion_hash(url, caption) for url, caption in zip(index["url"], index["caption"])]
    success = index["status"] == "success"
    assert success.sum() == summary["success"] and 0.8 < success.mean() < 0.9
    assert set(index.loc[~success, "status"]) == {"failed_to_download"}
    assert index.loc[~success, "error_message"].notna().all() and index.loc[success, "error_message"].isna().all()
    for shard in index["shard"].unique():
        stats = json.loads((folder / f"{shard}_stats.json").read_text())
        assert stats["count"] == (index["shard"] == shard).sum()
        assert stats["successes"] == (success & (index["shard"] == shard)).sum()

    if output_format == "files":
        images = {path.name: path.read_bytes() for path in folder.glob("*/*.jpg")}
        assert {path.parent.name for path in folder.glob("*/*")} == set(index["shard"])
        assert len(list(folder.glob("*/*.txt"))) == len(list(folder.glob("*/*.json"))) == len(images)
    elif output_format == "webdataset":
        images = {}
        for tar_path in sorted(folder.glob("*.tar")):
            with tarfile.open(tar_path) as tar:
                names = tar.getnames()
                assert {name.rsplit(".", 1)[1] for name in names} == {"jpg", "txt", "json"}
                images.update({name: tar.extractfile(name).read() for name in names if name.endswith(".jpg")})
    else:
        assert not list(folder.glob("*.tar")) and not [path for path in folder.iterdir() if path.is_dir()]
        assert index.loc[~success, "jpg"].isna().all()
        images = {f"{key}.jpg": data for key, data in zip(index.loc[success, "key"], index.loc[success, "jpg"])}

    assert set(images) == {f"{key}.jpg" for key in index.loc[success, "key"]}
    sha256 = dict(zip(index["key"] + ".jpg", index["sha256"]))
    assert all(hashlib.sha256(data).hexdigest() == sha256[name] for name, data in images.items())
    found_types = pd.Series([image_type(data) for data in images.values()]).value_counts().to_dict()
    assert found_types == summary["image_types"]
    assert set(found_types) == {"jpeg", "png", "webp", "gif"}


@pytest.mark.parametrize("arguments, message", [
    ({"rows": 0}, "rows"),
    ({"rows": 10, "parts": 0}, "parts"),
    ({"rows": 10, "seed": -1}, "seed"),
    ({"rows": 10, "images": "tfrecord"}, "images"),
    ({"rows": 10, "real_pairs": Path("/nonexistent/pairs.parquet")}, "not found"),
])
def test_bad_arguments_raise_value_error(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


def test_real_pairs_without_url_and_text_columns_is_refused(tmp_path):
    pairs_path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"url": ["https://example.org/a.jpg"], "caption": ["a"]}), pairs_path)
    with pytest.raises(ValueError, match="URL, TEXT"):
        generate(tmp_path / "out", rows=10, real_pairs=pairs_path)


def test_non_empty_output_directory_is_refused(tmp_path):
    (tmp_path / "stale.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="empty directory"):
        generate(tmp_path, rows=10)
