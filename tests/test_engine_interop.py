"""One warehouse, two engines: a Delta warehouse built by either engine is rebuilt in part, checked
and exported by the other, and delta-rs reads every table after every step.

Two warehouses over the same planted sources: one built by Sail then carried on by JVM Spark
(spark-submit, local[2]), one built by JVM Spark then carried on by Sail. Between the builds and
the incremental rebuilds one joined row is added to laion1B-nolang, and each warehouse is rebuilt
with `--subsets laion1B-nolang` by the other engine; both must then hold exactly what a fresh
single-engine build of the changed sources gives. Every table's Delta protocol must stay within
what all three writers (Sail, delta-spark, delta-rs for the bookkeeping upserts and restores)
read and write: reader version 1, writer version 2, no table features.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyspark
import pytest

from etl import laion_hash
from etl.cli import main
from etl.engine.jvm_packages import DELTA_SPARK
from etl.project.project import load_project
from etl.warehouse.meta import META_TABLES
from helpers import (assert_same_rows, need_java, runs, warehouse_tables, write_planted_config,
                     write_planted_project)
from jvm_jobs import spark_submit
from planted import WIDE_SCHEMA, expected_wide_rows

pytestmark = pytest.mark.jvm
TABLES = load_project().tables
NEW_NOLANG = ("http://h.example/8.jpg", "a new nolang sample")
WIDE = "dms_laion_wide"
EXPORT_ARGS = ["--where", "similarity > 0", "--rows-per-shard", "2"]
# What each engine does to a warehouse first (Sail or JVM), and then the other engine, in order.
FIRST, REBUILT, CHECKED, EXPORTED = "built", "rebuilt", "checked", "exported"
STEPS = [(warehouse, step) for warehouse in ("sail_first", "jvm_first") for step in (FIRST, REBUILT, CHECKED, EXPORTED)]
# The one protocol every table must keep: what Sail 0.7.2, delta-spark 4.0.1 and delta-rs all write
# when they create a table, and all of them read and write.
SHARED_PROTOCOL = {"minReaderVersion": 1, "minWriterVersion": 2}
WRITERS = {  # the engineInfo of each writer's commits
    "sail": f"sail-delta-lake:{version('pysail')}",
    "spark": f"Apache-Spark/{pyspark.__version__} Delta-Lake/{DELTA_SPARK.rsplit(':', 1)[1]}",
    "delta-rs": f"delta-rs:py-{version('deltalake')}",
}


def read_every_table(warehouse: Path) -> dict[str, object]:
    """Each table read whole by delta-rs: its rows, or why it could not be read."""
    from deltalake import DeltaTable

    tables = {}
    for name, path in warehouse_tables(warehouse).items():
        try:
            tables[name] = DeltaTable(str(path)).to_pyarrow_table()
        except Exception as exc:  # reported per table by the test
            tables[name] = f"{type(exc).__name__}: {exc}"
    return tables


def subset_files(path: Path, subset: str) -> set[str]:
    """The data files of one partition in the table's current version."""
    from deltalake import DeltaTable

    actions = pa.table(DeltaTable(str(path)).get_add_actions(flatten=True)).to_pylist()
    return {a["path"] for a in actions if a["partition.subset"] == subset}


def subset_partitioned(warehouse: Path) -> dict[str, Path]:
    """The project's tables under `warehouse` that are partitioned by subset, by name."""
    from deltalake import DeltaTable

    paths = {table.name: warehouse / table.layer / table.name for table in TABLES}
    return {name: path for name, path in paths.items() if "subset" in DeltaTable(str(path)).metadata().partition_columns}


def add_nolang_joined_row(sources: Path) -> None:
    path = sources / "laion1B-nolang-joined" / "part-00000.parquet"
    table = pq.read_table(path)
    extra = {name: [None] for name in table.column_names}
    extra.update(URL=[NEW_NOLANG[0]], TEXT=[NEW_NOLANG[1]], hash=[laion_hash(*NEW_NOLANG)])
    pq.write_table(pa.concat_tables([table, pa.table(extra, schema=table.schema)]), path)


def run_jvm(*args: str, job: str = "build.py") -> str:
    submitted = spark_submit(*args, job=job)
    assert submitted.returncode == 0, submitted.stdout[-3000:]
    return submitted.stdout


@pytest.fixture(scope="module")
def interop(tmp_path_factory):
    """Both warehouses taken through every step; what delta-rs read after each, and what the
    steps printed and kept, for the tests to assert on."""
    need_java()
    root = tmp_path_factory.mktemp("interop")
    configs = {
        ("sail_first", "sail"): write_planted_project(root, root / "sail_first", name="sail_first_on_sail"),
        ("sail_first", "spark"): write_planted_config(root, root / "sail_first", name="sail_first_on_jvm", engine="spark"),
        ("jvm_first", "spark"): write_planted_config(root, root / "jvm_first", name="jvm_first_on_jvm", engine="spark"),
        ("jvm_first", "sail"): write_planted_config(root, root / "jvm_first", name="jvm_first_on_sail"),
    }
    state = {"root": root, "read": {}, "stdout": {}, "files_before": {}}

    def after(warehouse: str, step: str) -> None:
        state["read"][(warehouse, step)] = read_every_table(root / warehouse)

    def jvm(warehouse: str, *args: str, job: str = "build.py") -> None:
        state["stdout"][(warehouse, job)] = run_jvm("--config", str(configs[(warehouse, "spark")]), *args, job=job)

    def sail(warehouse: str, command: str, *args: str) -> None:
        assert main([command, "--config", str(configs[(warehouse, "sail")]), *args]) == 0

    sail("sail_first", "build")
    after("sail_first", FIRST)
    jvm("jvm_first")
    after("jvm_first", FIRST)

    state["files_before"] = {warehouse: {name: subset_files(path, "laion2B-en")
                                         for name, path in subset_partitioned(root / warehouse).items()}
                             for warehouse in ("sail_first", "jvm_first")}
    add_nolang_joined_row(root / "sources")
    jvm("sail_first", "--subsets", "laion1B-nolang")
    after("sail_first", REBUILT)
    sail("jvm_first", "build", "--subsets", "laion1B-nolang")
    after("jvm_first", REBUILT)

    jvm("sail_first", "--tables", WIDE, job="dq.py")
    after("sail_first", CHECKED)
    sail("jvm_first", "dq", "--tables", WIDE)
    after("jvm_first", CHECKED)

    jvm("sail_first", *EXPORT_ARGS, "--out", str(root / "sail_first_export"), job="export.py")
    after("sail_first", EXPORTED)
    sail("jvm_first", "export", *EXPORT_ARGS, "--out", str(root / "jvm_first_export"))
    after("jvm_first", EXPORTED)

    # The single-engine reference: the changed sources built from scratch by Sail alone.
    assert main(["build", "--config", str(write_planted_config(root, root / "reference", name="reference"))]) == 0
    state["reference"] = read_every_table(root / "reference")
    return state


@pytest.mark.parametrize("warehouse,step", STEPS, ids=[f"{w}-{s}" for w, s in STEPS])
def test_delta_rs_reads_every_table_after_every_step(interop, warehouse, step):
    tables = interop["read"][(warehouse, step)]
    assert {name: error for name, error in tables.items() if isinstance(error, str)} == {}
    assert set(tables) == {t.name for t in TABLES} | set(META_TABLES)
    assert all(table.num_rows > 0 for name, table in tables.items() if name != "quarantine")


@pytest.mark.parametrize("warehouse", ["sail_first", "jvm_first"])
def test_the_first_build_of_either_engine_gives_the_planted_wide_rows(interop, warehouse):
    wide = interop["read"][(warehouse, FIRST)][WIDE]
    expected = pa.Table.from_pylist(expected_wide_rows(interop["root"] / "sources"), schema=WIDE_SCHEMA)
    assert_same_rows(wide, expected)


def test_spark_submit_prints_the_build_summary(interop):
    stdout = interop["stdout"][("jvm_first", "build.py")]
    assert "laion.dms_laion_wide" in stdout and "6 tables built" in stdout


@pytest.mark.parametrize("warehouse", ["sail_first", "jvm_first"])
@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_a_rebuild_by_the_other_engine_equals_a_single_engine_build(interop, warehouse, table):
    expected = interop["reference"][table.name]
    assert expected.num_rows > 0
    for step in (REBUILT, CHECKED, EXPORTED):
        assert_same_rows(interop["read"][(warehouse, step)][table.name], expected)


def test_the_new_row_is_in_the_rebuilt_wide_tables(interop):
    for warehouse in ("sail_first", "jvm_first"):
        rows = [r for r in interop["read"][(warehouse, REBUILT)][WIDE].to_pylist() if r["url"] == NEW_NOLANG[0]]
        assert [(r["subset"], r["language"]) for r in rows] == [("laion1B-nolang", "nolang")], warehouse


@pytest.mark.parametrize("warehouse,engine", [("sail_first", "spark"), ("jvm_first", "sail")])
def test_the_other_engine_replaces_only_the_named_subset(interop, warehouse, engine):
    """The rebuild's commits replace laion1B-nolang alone (replaceWhere): laion2B-en keeps its very files."""
    from deltalake import DeltaTable

    root = interop["root"]
    rebuild = [r for r in runs(root / warehouse) if r["command"] == "build"][-1]
    assert rebuild["engine"] == engine and rebuild["subsets"] == "laion1B-nolang"
    partitioned = subset_partitioned(root / warehouse)
    assert set(partitioned) == set(interop["files_before"][warehouse]) and len(partitioned) == 5
    rebuilt = set()
    for name, path in partitioned.items():
        assert subset_files(path, "laion2B-en") == interop["files_before"][warehouse][name], name
        commits = [c for c in DeltaTable(str(path)).history() if c.get("userMetadata") == rebuild["run_id"]]
        rebuilt |= {name} if commits else set()
        for commit in commits:
            assert commit["engineInfo"] == WRITERS[engine], name
            assert "laion1B-nolang" in commit["operationParameters"]["predicate"], name
            assert "laion2B-en" not in commit["operationParameters"]["predicate"], name
    assert {"ods_laion_joined", WIDE} <= rebuilt  # the tables the new joined row changes


@pytest.mark.parametrize("warehouse,engine", [("sail_first", "spark"), ("jvm_first", "sail")])
def test_the_other_engine_checks_the_current_version(interop, warehouse, engine):
    from deltalake import DeltaTable

    root = interop["root"]
    history = runs(root / warehouse)
    first = "sail" if warehouse == "sail_first" else "spark"
    assert [(r["command"], r["engine"]) for r in history] == [
        ("build", first), ("build", engine), ("dq", engine)]
    dq = history[-1]
    assert (dq["status"], dq["verdict"]) == ("succeeded", "pass") and Path(dq["report_path"]).is_file()
    results = [r for r in interop["read"][(warehouse, CHECKED)]["dq_results"].to_pylist() if r["run_id"] == dq["run_id"]]
    wide_version = DeltaTable(str(root / warehouse / "dms" / WIDE)).version()
    assert results and {(r["table_name"], r["table_version"]) for r in results} == {(WIDE, wide_version)}
    if engine == "spark":
        assert "verdict: PASS" in interop["stdout"][(warehouse, "dq.py")]


def test_either_engine_exports_the_same_shards_from_the_version_it_names(interop):
    from deltalake import DeltaTable

    root = interop["root"]
    shards = {w: sorted((root / f"{w}_export" / "shards").iterdir()) for w in ("sail_first", "jvm_first")}
    assert len(shards["sail_first"]) > 1
    assert [p.name for p in shards["sail_first"]] == [p.name for p in shards["jvm_first"]]
    for by_jvm, by_sail in zip(shards["sail_first"], shards["jvm_first"]):
        jvm, sail = pq.read_table(by_jvm), pq.read_table(by_sail)
        assert jvm.schema == sail.schema and jvm.to_pylist() == sail.to_pylist(), by_jvm.name
    for warehouse in shards:
        manifest = json.loads((root / f"{warehouse}_export" / "manifest.json").read_text())
        assert manifest["source"]["version"] == DeltaTable(str(root / warehouse / "dms" / WIDE)).version()


def delta_log_actions(path: Path, kind: str) -> list[tuple[str, dict]]:
    """Every `kind` action in the table's JSON commits, with the engineInfo of the commit holding it."""
    found = []
    for commit in sorted((path / "_delta_log").glob("*.json")):
        actions = [json.loads(line) for line in commit.read_text().splitlines() if line.strip()]
        writer = next(a["commitInfo"].get("engineInfo") for a in actions if "commitInfo" in a)
        found += [(writer, a[kind]) for a in actions if kind in a]
    return found


def test_every_table_keeps_the_protocol_all_three_writers_share(interop):
    """Reader 1 / writer 2, no table features, in every commit and in each table's current
    protocol (delta-rs reads it through checkpoints too), whoever wrote the table."""
    from deltalake import DeltaTable

    root = interop["root"]
    writers, protocol_writers = set(), set()
    for warehouse in ("sail_first", "jvm_first", "reference"):
        for name, path in warehouse_tables(root / warehouse).items():
            current = DeltaTable(str(path)).protocol()
            assert (current.min_reader_version, current.min_writer_version, current.reader_features,
                    current.writer_features) == (1, 2, None, None), (warehouse, name)
            writers |= {writer for writer, _ in delta_log_actions(path, "commitInfo")}
            for writer, protocol in delta_log_actions(path, "protocol"):
                assert protocol == SHARED_PROTOCOL, (warehouse, name, writer)
                protocol_writers.add(writer)
    # Every writer wrote commits here; the two engines each created tables (and so set a protocol).
    assert writers == set(WRITERS.values())
    assert protocol_writers == {WRITERS["sail"], WRITERS["spark"]}
