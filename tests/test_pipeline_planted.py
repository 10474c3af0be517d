"""The whole pipeline on Sail over hand-planted sources, checked row by row through delta-rs."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from etl import laion_hash
from etl.project.config import load_config
from etl.project.project import load_project
from helpers import assert_same_rows, read_delta, write_planted_project
from planted import A, B, D, F, IMAGE_KEY_A, IMAGE_KEY_F, WIDE_SCHEMA, expected_wide_rows



@pytest.fixture(scope="module")
def planted_build(tmp_path_factory):
    from etl.cli import main

    root = tmp_path_factory.mktemp("planted")
    config = write_planted_project(root)
    assert main(["build", "--config", str(config)]) == 0
    return root, config


def test_wide_table_has_exact_schema_and_planted_rows(planted_build):
    root, _ = planted_build
    wide = read_delta(root / "warehouse/dms/dms_laion_wide")
    assert [(f.name, f.type) for f in wide.schema] == [(f.name, f.type) for f in WIDE_SCHEMA]
    expected = pa.Table.from_pylist(expected_wide_rows(root / "sources"), schema=WIDE_SCHEMA)
    assert_same_rows(wide.select(WIDE_SCHEMA.names), expected)


def test_wide_table_has_one_row_per_joined_row(planted_build):
    root, _ = planted_build
    joined = read_delta(root / "warehouse/ods/ods_laion_joined")
    wide = read_delta(root / "warehouse/dms/dms_laion_wide")
    assert wide.num_rows == joined.num_rows == 6
    assert sorted(wide.column("hash").to_pylist()) == sorted(joined.column("hash").to_pylist())


def test_ods_base_swaps_width_and_height_back_and_keeps_duplicates(planted_build):
    root, _ = planted_build
    base = read_delta(root / "warehouse/ods/ods_laion_base").to_pylist()
    by_id = {r["sample_id"]: r for r in base}
    assert (by_id[1]["width"], by_id[1]["height"]) == (640, 480)
    assert [r["sample_id"] for r in base if r["hash"] == laion_hash(*D)] in ([3, 7], [7, 3])
    nan_row = [r for r in base if r["url"] == "http://e.example/5.jpg"][0]
    assert nan_row["sample_id"] is None and nan_row["text"] is None


def test_ods_keeps_source_hash_beside_recomputed_one(planted_build):
    root, _ = planted_build
    joined = {r["url"]: r for r in read_delta(root / "warehouse/ods/ods_laion_joined").to_pylist()}
    assert joined[A[0]]["source_hash"] == 12345
    assert joined[A[0]]["hash"] == laion_hash(*A)
    assert joined[B[0]]["source_hash"] == joined[B[0]]["hash"]


def test_ods_aesthetic_ranks_sources_in_configured_order(planted_build):
    root, _ = planted_build
    rows = read_delta(root / "warehouse/ods/ods_laion_aesthetic").to_pylist()
    ranks = {(r["source_name"], r["url"]): (r["source_rank"], r["aesthetic_score"]) for r in rows}
    assert ranks[("laion2B-en-aesthetic", A[0])] == (0, np.float32(5.5))
    assert ranks[("improved_aesthetics_4.5plus", A[0])] == (1, np.float32(5.6))
    assert ranks[("laion2B-en-aesthetic", B[0])] == (0, None)  # NaN in the source: no score


def test_image_index_reads_real_suffix_and_failed_rows(planted_build):
    root, _ = planted_build
    index = {r["url"]: r for r in read_delta(root / "warehouse/ods/ods_image_index").to_pylist()}
    assert index[A[0]]["image_suffix"] == "png"
    assert index[A[0]]["image_path"].endswith("/images/00000.tar#000000000.jpg")
    assert index[A[0]]["hash"] == index[A[0]]["source_hash"] == laion_hash(*A)
    assert index[B[0]]["status"] == "failed_to_download"
    assert index[B[0]]["image_path"] is None and index[B[0]]["image_suffix"] is None


def test_dmd_has_one_row_per_base_row_and_one_per_joined_only_hash(planted_build):
    root, _ = planted_build
    dmd = read_delta(root / "warehouse/dmd/dmd_image_path_suffix_aesthetics").to_pylist()
    base = read_delta(root / "warehouse/ods/ods_laion_base")
    assert len([r for r in dmd if r["file_name"] is not None]) == base.num_rows == 6
    joined_only = [r for r in dmd if r["file_name"] is None]
    assert [(r["subset"], r["hash"], r["sample_id"], r["url"]) for r in joined_only] == [
        ("laion2B-en", laion_hash(*F), None, None)]
    assert joined_only[0]["image_path"].endswith(f"/images/00000.tar#{IMAGE_KEY_F}.jpg")
    assert (joined_only[0]["image_suffix"], joined_only[0]["aesthetic_score"]) == ("gif", np.float32(7.75))


def test_every_table_matches_its_contract_schema(planted_build):
    root, config_path = planted_build
    config = load_config(config_path)
    type_names = {pa.int64(): "bigint", pa.int32(): "int", pa.string(): "string", pa.float64(): "double",
                  pa.float32(): "float"}
    for table in load_project().tables:
        schema = read_delta(table.path(config)).schema
        actual = [(f.name, type_names[f.type]) for f in schema]
        assert actual == [(c.name, c.type) for c in table.contract.columns], table.name


def test_forced_rebuild_with_unchanged_inputs_gives_same_rows_and_new_version(planted_build):
    from deltalake import DeltaTable

    from etl.cli import main

    root, config = planted_build
    path = root / "warehouse/dms/dms_laion_wide"
    before, version_before = read_delta(path), DeltaTable(str(path)).version()
    assert main(["build", "--config", str(config), "--force"]) == 0
    assert DeltaTable(str(path)).version() == version_before + 1
    assert_same_rows(read_delta(path), before)


def test_image_downloaded_into_two_folders_gives_one_row_from_the_first_folder(tmp_path):
    import shutil

    from etl.cli import main

    config = write_planted_project(tmp_path)
    shutil.copytree(tmp_path / "sources/images", tmp_path / "sources/images-again")
    # Listed second, the folder that sorts first must still win: the order is by folder, not by config.
    text = config.read_text().replace(f"  - {tmp_path / 'sources'}/images\n",
                                      f"  - {tmp_path}/sources/images-again\n  - {tmp_path}/sources/images\n")
    assert "images-again" in text
    config.write_text(text)
    assert main(["build", "--config", str(config)]) == 0

    index = read_delta(tmp_path / "warehouse/ods/ods_image_index")
    assert index.column("url").to_pylist().count(A[0]) == 2
    dmd = read_delta(tmp_path / "warehouse/dmd/dmd_image_path_suffix_aesthetics")
    assert dmd.num_rows == 7
    wide = {r["url"]: r for r in read_delta(tmp_path / "warehouse/dms/dms_laion_wide").to_pylist()}
    assert wide[A[0]]["image_path"] == f"{tmp_path}/sources/images/00000.tar#{IMAGE_KEY_A}.jpg"
    expected = pa.Table.from_pylist(expected_wide_rows(tmp_path / "sources"), schema=WIDE_SCHEMA)
    assert_same_rows(read_delta(tmp_path / "warehouse/dms/dms_laion_wide"), expected)
