"""The whole pipeline on Sail over synthetic sources with every LAION quirk, checked through delta-rs.

Expectations are computed independently from the source files with pyarrow (not through the
engine), so a wrong join, a lost row or a swapped column shows up as a difference.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from etl.cli import main
from etl.engine.hashing import laion_hashes
from etl.synth import generate
from helpers import REAL_PAIRS, assert_same_rows, build_synthetic, demo_config, read_delta

SUFFIX_OF_TYPE = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif"}


def source_rows(sources: Path, folder: str) -> pa.Table:
    tables = [pq.read_table(p) for p in sorted((sources / folder).glob("*.parquet"))]
    return pa.concat_tables([t.select(["URL", "TEXT"]) for t in tables])


@pytest.fixture(scope="module")
def synth_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary, config = build_synthetic(root, rows=6_000, seed=7)
    return root, summary, config


def test_one_wide_row_per_joined_row_in_every_subset(synth_build):
    root, summary, _ = synth_build
    wide = read_delta(root / "warehouse/dms/dms_laion_wide")
    per_subset = Counter(wide.column("subset").to_pylist())
    assert per_subset == {s: summary[s]["joined"] for s in ("laion2B-en", "laion2B-multi", "laion1B-nolang")}


def test_wide_hash_is_recomputed_from_url_and_text(synth_build):
    root, _, _ = synth_build
    wide = read_delta(root / "warehouse/dms/dms_laion_wide")
    expected = laion_hashes(wide.column("url").to_pylist(), wide.column("text").to_pylist())
    assert wide.column("hash").to_pylist() == expected.tolist()


def test_wide_rows_equal_joined_sources_row_for_row(synth_build):
    root, _, _ = synth_build
    wide = read_delta(root / "warehouse/dms/dms_laion_wide").select(["url", "text", "file_name"])
    expected = []
    for subset in ("laion2B-en", "laion2B-multi", "laion1B-nolang"):
        for part in sorted((root / "sources" / f"{subset}-joined").glob("*.parquet")):
            table = pq.read_table(part, columns=["URL", "TEXT"])
            expected.append(pa.table({"url": table["URL"], "text": table["TEXT"],
                                      "file_name": pa.array([part.name] * table.num_rows, pa.string())}))
    assert_same_rows(wide, pa.concat_tables(expected))


def test_planted_source_hash_mismatches_are_kept_for_comparison(synth_build):
    root, summary, _ = synth_build
    joined = read_delta(root / "warehouse/ods/ods_laion_joined")
    mismatched = pc.sum(pc.not_equal(joined.column("source_hash"), joined.column("hash"))).as_py()
    assert mismatched == summary["planted"]["mismatched_source_hashes"]


def test_duplicate_hashes_and_sample_ids_survive_into_ods(synth_build):
    root, summary, _ = synth_build
    base = read_delta(root / "warehouse/ods/ods_laion_base")
    hashes = Counter(base.column("hash").to_pylist())
    assert sum(1 for c in hashes.values() if c > 1) == summary["planted"]["duplicate_hashes"]
    assert base.num_rows - len(set(base.column("sample_id").to_pylist())) >= summary["planted"]["duplicate_sample_ids"]


def test_base_width_and_height_are_swapped_back_to_match_joined(synth_build):
    root, _, _ = synth_build
    base = {(r["subset"], r["hash"]): (r["width"], r["height"])
            for r in read_delta(root / "warehouse/ods/ods_laion_base").to_pylist()}
    joined = read_delta(root / "warehouse/ods/ods_laion_joined").to_pylist()
    compared = [(base[(r["subset"], r["hash"])], (r["width"], r["height"])) for r in joined
                if (r["subset"], r["hash"]) in base]
    assert len(compared) > 5_000
    assert all(b == j for b, j in compared)
    assert any(w != h for w, h in (j for _, j in compared))


def test_wide_sample_id_comes_from_the_first_base_row_of_the_hash(synth_build):
    root, _, _ = synth_build
    base = read_delta(root / "warehouse/ods/ods_laion_base").to_pylist()
    first = {}
    for row in sorted(base, key=lambda r: (r["file_name"], r["sample_id"] is None, r["sample_id"] or 0)):
        first.setdefault((row["subset"], row["hash"]), row["sample_id"])
    wide = read_delta(root / "warehouse/dms/dms_laion_wide").to_pylist()
    assert all(r["sample_id"] == first.get((r["subset"], r["hash"])) for r in wide)
    assert sum(r["sample_id"] is None for r in wide) >= 1  # joined-only rows


def test_aesthetic_score_comes_from_the_first_source_holding_the_hash(synth_build):
    root, _, _ = synth_build
    aesthetic = read_delta(root / "warehouse/ods/ods_laion_aesthetic").to_pylist()
    best = {}
    for row in sorted(aesthetic, key=lambda r: (r["source_rank"], r["file_name"])):
        best.setdefault((row["subset"], row["hash"]), row["aesthetic_score"])
    wide = read_delta(root / "warehouse/dms/dms_laion_wide").to_pylist()
    with_base = [r for r in wide if r["sample_id"] is not None]
    assert all(r["aesthetic_score"] == best.get((r["subset"], r["hash"])) for r in with_base)
    ranks = Counter(r["source_rank"] for r in aesthetic if r["subset"] == "laion2B-en")
    assert ranks[0] > 0 and ranks[1] > 0


def test_images_get_path_and_real_suffix_and_failed_downloads_none(synth_build):
    root, summary, _ = synth_build
    index = read_delta(root / "warehouse/ods/ods_image_index").to_pylist()
    success = [r for r in index if r["status"] == "success"]
    assert Counter(r["image_suffix"] for r in success) == {
        SUFFIX_OF_TYPE[t]: n for t, n in summary["images"]["image_types"].items()}
    assert all(r["image_path"] is None for r in index if r["status"] != "success")
    downloaded = {r["hash"]: (r["image_path"], r["image_suffix"]) for r in success}
    wide = read_delta(root / "warehouse/dms/dms_laion_wide").to_pylist()
    with_base = [r for r in wide if r["sample_id"] is not None]
    assert all((r["image_path"], r["image_suffix"]) == downloaded.get(r["hash"], (None, None)) for r in with_base)
    assert sum(r["image_path"] is not None for r in wide) > 100


def test_language_falls_back_to_the_subset_default(synth_build):
    root, _, _ = synth_build
    wide = read_delta(root / "warehouse/dms/dms_laion_wide").to_pylist()
    languages = Counter((r["subset"], r["language"]) for r in wide)
    assert languages[("laion1B-nolang", "nolang")] == sum(1 for r in wide if r["subset"] == "laion1B-nolang")
    assert languages[("laion2B-en", "en")] == sum(1 for r in wide if r["subset"] == "laion2B-en")
    assert all(r["language"] for r in wide)


def test_rebuild_is_idempotent_on_every_table(synth_build):
    root, _, config = synth_build
    from etl.project.config import load_config
    from etl.project.project import load_project

    tables = load_project().tables
    paths = [t.path(load_config(config)) for t in tables]
    before = [read_delta(p) for p in paths]
    assert main(["build", "--config", str(config), "--force"]) == 0
    for path, old in zip(paths, before):
        assert_same_rows(read_delta(path), old)


@pytest.mark.skipif(not REAL_PAIRS.exists(), reason=f"{REAL_PAIRS} is not present (it is on CI)")
def test_pipeline_on_real_laion_pairs(tmp_path):
    summary = generate(tmp_path / "sources", rows=10_000, seed=11, real_pairs=REAL_PAIRS)
    config = demo_config(tmp_path / "sources", tmp_path / "warehouse", tmp_path / "demo.yaml", with_images=False)
    assert main(["build", "--config", str(config)]) == 0
    wide = read_delta(tmp_path / "warehouse/dms/dms_laion_wide")
    assert wide.num_rows == sum(summary[s]["joined"] for s in ("laion2B-en", "laion2B-multi", "laion1B-nolang"))
    real_urls = set(pq.read_table(REAL_PAIRS, columns=["URL"]).column("URL").to_pylist())
    en = [r for r in wide.to_pylist() if r["subset"] == "laion2B-en"]
    assert sum(r["url"] in real_urls for r in en) > len(en) // 2
    assert wide.column("hash").to_pylist() == laion_hashes(wide.column("url").to_pylist(),
                                                           wide.column("text").to_pylist()).tolist()
    assert_same_rows(wide.select(["url", "text"]).rename_columns(["URL", "TEXT"]),
                     pa.concat_tables([source_rows(tmp_path / "sources", f"{s}-joined")
                                       for s in ("laion2B-en", "laion2B-multi", "laion1B-nolang")]))
