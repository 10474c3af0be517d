"""Incremental rebuilds: each partition is redone only when what it is built from changed.

Every case edits the planted source tree, rebuilds incrementally, and compares every table with a
fresh full build of the same tree in another warehouse (both ways), and checks which partitions
the incremental build actually rewrote (from the Delta log: the files of untouched partitions
stay the same objects).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from etl.cli import main
from etl.project.project import load_project
from helpers import assert_same_rows, read_delta, run_in_own_group, runs, table_dir, write_planted_config
from planted import write_planted_sources

TABLES = {t.name: t for t in load_project().tables}
EN, NOLANG = "laion2B-en", "laion1B-nolang"


def build(root, warehouse, *args):
    config = write_planted_config(root, warehouse, name=warehouse.name)
    assert main(["-q", "build", "--config", str(config), *args]) == 0
    return config


def versions(warehouse) -> dict[str, int]:
    return {name: DeltaTable(str(table_dir(warehouse, name))).version() for name in TABLES}


def files_by_subset(warehouse, name) -> dict[str, set[str]]:
    actions = pa.table(DeltaTable(str(table_dir(warehouse, name))).get_add_actions(flatten=True)).to_pylist()
    found: dict[str, set[str]] = {}
    for action in actions:
        found.setdefault(action.get("partition.subset", "*"), set()).add(action["path"])
    return found


def assert_equals_full_build(root, warehouse) -> None:
    fresh = root / "fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    build(root, fresh)
    for name in TABLES:
        assert_same_rows(read_delta(table_dir(warehouse, name)), read_delta(table_dir(fresh, name)))


@pytest.fixture
def planted(tmp_path):
    write_planted_sources(tmp_path / "sources")
    warehouse = tmp_path / "warehouse"
    build(tmp_path, warehouse)
    return tmp_path, warehouse


def rewrite_part(path, change) -> None:
    table = pq.read_table(path)
    pq.write_table(change(table), path)


def test_unchanged_inputs_rebuild_nothing(planted, capsys):
    root, warehouse = planted
    before = versions(warehouse)
    inputs_before = read_delta(warehouse / "meta/table_inputs").num_rows
    capsys.readouterr()
    config = build(root, warehouse)
    assert "0 tables built (6 unchanged, skipped)" in capsys.readouterr().out
    assert versions(warehouse) == before
    assert read_delta(warehouse / "meta/table_inputs").num_rows == inputs_before
    last_run = runs(warehouse)[-1]
    assert last_run["status"] == "succeeded" and last_run["published"] == "{}"

    assert main(["-q", "build", "--config", str(config), "--force"]) == 0
    assert versions(warehouse) == {name: version + 1 for name, version in before.items()}
    assert_equals_full_build(root, warehouse)


def test_a_build_with_nothing_to_rebuild_never_imports_great_expectations(planted):
    """Its 4-5 s import is for checks; a build that checks no table (an unchanged warehouse) skips it."""
    root, warehouse = planted
    config = write_planted_config(root, warehouse, name=warehouse.name)
    probe = ("import sys; from etl.cli import main; code = main(['-q', 'build', '--config', sys.argv[1]]); "
             "print(code, 'great_expectations' in sys.modules)")
    unchanged = run_in_own_group([sys.executable, "-c", probe, str(config)], cwd=root, env=dict(os.environ),
                                 timeout=300, what="a build with nothing to rebuild")
    assert unchanged.returncode == 0, unchanged.stderr[-3000:]
    assert "0 tables built (6 unchanged, skipped)" in unchanged.stdout
    assert unchanged.stdout.splitlines()[-1] == "0 False", unchanged.stdout[-2000:]
    # The probe sees the import where there are checks to run.
    forced = run_in_own_group([sys.executable, "-c", probe.replace("'build',", "'build', '--force',"), str(config)],
                              cwd=root, env=dict(os.environ), timeout=300, what="a forced build")
    assert forced.stdout.splitlines()[-1] == "0 True", forced.stdout[-2000:] + forced.stderr[-3000:]


def test_changed_part_file_rebuilds_only_its_subset_and_downstream(planted):
    root, warehouse = planted
    before_versions = versions(warehouse)
    before_files = {name: files_by_subset(warehouse, name) for name in TABLES}
    part = root / "sources/laion1B-nolang/part-00000.parquet"
    rewrite_part(part, lambda t: t.set_column(t.schema.get_field_index("LICENSE"), "LICENSE",
                                              pa.array(["cc0"] * t.num_rows, t.schema.field("LICENSE").type)))
    build(root, warehouse)

    after_versions = versions(warehouse)
    rebuilt = {name for name in TABLES if after_versions[name] != before_versions[name]}
    assert rebuilt == {"ods_laion_base", "dmd_image_path_suffix_aesthetics", "dms_laion_wide"}
    for name in rebuilt:
        after = files_by_subset(warehouse, name)
        assert after[EN] == before_files[name][EN], f"{name}: the unchanged subset was rewritten"
        assert after[NOLANG] != before_files[name][NOLANG], f"{name}: the changed subset was not rewritten"
    wide = read_delta(table_dir(warehouse, "dms_laion_wide")).to_pylist()
    assert {r["license"] for r in wide if r["subset"] == NOLANG} == {"cc0"}
    assert_equals_full_build(root, warehouse)


def test_added_part_file_rebuilds_its_subset(planted):
    root, warehouse = planted
    before = versions(warehouse)
    joined = root / "sources/laion2B-en-joined"
    table = pq.read_table(joined / "part-00000.parquet")
    extra = table.slice(0, 1).set_column(0, "URL", pa.array(["http://new.example/x.jpg"]))
    pq.write_table(extra, joined / "part-00009.parquet")
    build(root, warehouse)

    after = versions(warehouse)
    # The DMD reads joined rows too (their hashes without a base row get a row there).
    assert {n for n in TABLES if after[n] != before[n]} == {"ods_laion_joined", "dmd_image_path_suffix_aesthetics",
                                                          "dms_laion_wide"}
    urls = read_delta(table_dir(warehouse, "dms_laion_wide")).column("url").to_pylist()
    assert "http://new.example/x.jpg" in urls
    assert_equals_full_build(root, warehouse)


def test_removed_part_file_removes_its_rows(planted):
    root, warehouse = planted
    base = root / "sources/laion2B-en"
    removed = pq.read_table(base / "part-00001.parquet").column("URL").to_pylist()
    (base / "part-00001.parquet").unlink()
    build(root, warehouse)

    ods_urls = read_delta(table_dir(warehouse, "ods_laion_base")).column("url").to_pylist()
    assert ods_urls.count(removed[0]) == 1  # D is also in part-00000; E only in the removed file
    assert removed[1] not in ods_urls
    files = read_delta(warehouse / "meta/source_files").to_pylist()
    last_run = max(r["run_id"] for r in files)
    paths = {r["path"] for r in files if r["run_id"] == last_run and r["table_name"] == "ods_laion_base"}
    assert paths == {str(base / "part-00000.parquet")}
    assert_equals_full_build(root, warehouse)


def test_source_files_record_path_size_and_modification_time(planted):
    root, warehouse = planted
    rows = read_delta(warehouse / "meta/source_files").to_pylist()
    base_rows = [r for r in rows if r["table_name"] == "ods_laion_base"]
    expected = sorted(str(p) for subset in (EN, NOLANG) for p in (root / "sources" / subset).glob("*.parquet"))
    assert sorted(r["path"] for r in base_rows) == expected
    for row in base_rows:
        stat = Path(row["path"]).stat()
        assert row["size"] == stat.st_size and row["modified_ns"] == stat.st_mtime_ns
        assert row["status"] == "read" and row["fingerprint"] and row["table_version"] == 0


def test_dry_run_says_what_would_be_rebuilt(planted, capsys):
    root, warehouse = planted
    rewrite_part(root / "sources/laion2B-en-aesthetic/part-00000.parquet", lambda t: t)  # same rows, new mtime
    config = root / "warehouse.yaml"
    capsys.readouterr()
    assert main(["build", "--config", str(config), "--dry-run"]) == 0
    lines = {line.split()[2]: line for line in capsys.readouterr().out.splitlines()
             if line.split()[:1] and line.split()[0].isdigit()}
    assert lines["laion.ods_laion_aesthetic"].rstrip().endswith(EN)
    assert lines["laion.dmd_image_path_suffix_aesthetics"].rstrip().endswith(EN)
    assert lines["laion.ods_laion_base"].rstrip().endswith("nothing (inputs unchanged)")
    assert lines["laion.ods_image_index"].rstrip().endswith("nothing (inputs unchanged)")


def plan_lines(out: str) -> dict[str, str]:
    """The dry-run plan's table rows, by table."""
    return {line.split()[2]: line.rstrip() for line in out.splitlines()
            if line.split()[:1] and line.split()[0].isdigit()}


def test_a_table_changed_outside_the_pipeline_is_rebuilt_with_what_is_built_on_it(planted, capsys, caplog):
    root, warehouse = planted
    config = root / "warehouse.yaml"
    # The pipeline's own later commits are no outside edits: here the gate restores ods_laion_joined.
    joined = root / "sources/laion2B-en-joined"
    bad = pq.read_table(joined / "part-00000.parquet").slice(0, 1)
    pq.write_table(bad.set_column(bad.schema.get_field_index("punsafe"), "punsafe", pa.array([1.5], pa.float32())),
                   joined / "part-00001.parquet")
    assert main(["-q", "build", "--config", str(config)]) == 1
    (joined / "part-00001.parquet").unlink()
    base = table_dir(warehouse, "ods_laion_base")
    published = DeltaTable(str(base)).version()
    DeltaTable(str(base)).delete(f"subset = '{NOLANG}'")  # an analyst's DELETE through another tool
    before = versions(warehouse)
    capsys.readouterr()

    assert main(["build", "--config", str(config), "--layers", "dmd,dms", "--dry-run"]) == 2
    assert (f"--layers: laion.ods_laion_base was changed outside the pipeline since version {published}"
            in capsys.readouterr().err)
    assert main(["build", "--config", str(config), "--dry-run"]) == 0
    lines = plan_lines(capsys.readouterr().out)
    since = f"changed outside the pipeline since version {published}"
    assert lines["laion.ods_laion_base"].endswith(f"all ({since})")
    assert lines["laion.dmd_image_path_suffix_aesthetics"].endswith(f"all (built on laion.ods_laion_base, {since})")
    assert lines["laion.ods_laion_joined"].endswith("nothing (inputs unchanged)")

    assert main(["build", "--config", str(config)]) == 0
    assert f"ods_laion_base: {since}: rebuilding all of it" in caplog.text
    after = versions(warehouse)
    assert {name for name in TABLES if after[name] != before[name]} == {
        "ods_laion_base", "dmd_image_path_suffix_aesthetics", "dms_laion_wide"}
    assert_equals_full_build(root, warehouse)

    build(root, warehouse)
    assert versions(warehouse) == after
