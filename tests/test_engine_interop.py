"""One warehouse, two engines: a Delta warehouse built by either engine is rebuilt in part, checked
and exported by the other, and delta-rs reads every table after every step.

Two warehouses, each over its own copy of the planted sources: one built by Sail then carried on
by JVM Spark (spark-submit, local[2]), one built by JVM Spark then carried on by Sail. Between the builds and
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
from helpers import assert_same_rows, need_java, runs, warehouse_tables, write_planted_config
from jvm_jobs import spark_submit
from planted import WIDE_SCHEMA, expected_wide_rows, write_planted_sources

# Each walk is five JVM jobs and three Sail runs in one fixture: on a loaded 2-core machine that has
# taken over 10 minutes (about 4 when idle).
pytestmark = [pytest.mark.jvm, pytest.mark.timeout(900)]
TABLES = load_project().tables
NEW_NOLANG = ("http://h.example/8.jpg", "a new nolang sample")
WIDE = "dms_laion_wide"
EXPORT_ARGS = ["--where", "similarity > 0", "--rows-per-shard", "2"]
# What each engine does to a warehouse first (Sail or JVM), and then the other engine, in order.
FIRST, REBUILT, CHECKED, EXPORTED = "built", "rebuilt", "checked", "exported"
WAREHOUSES = ["sail_first", "jvm_first"]  # the fixtures below, named for the engine that builds first
STEPS = [(warehouse, step) for warehouse in WAREHOUSES for step in (FIRST, REBUILT, CHECKED, EXPORTED)]
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


def carry_on(root: Path, first: str) -> dict:
    """The planted warehouse under `root` built by engine `first`, then rebuilt in part, checked and
    exported by the other one; what delta-rs read after each step, and what the steps printed and
    kept, for the tests to assert on."""
    need_java()
    other = "spark" if first == "sail" else "sail"
    write_planted_sources(root / "sources")
    configs = {engine: write_planted_config(root, root / "warehouse", name=engine, engine=engine)
               for engine in ("sail", "spark")}
    walk = {"root": root, "first": first, "other": other, "read": {}, "stdout": {}}

    def run(engine: str, step: str, command: str, *args: str) -> None:
        if engine == "spark":
            submitted = spark_submit("--config", str(configs[engine]), *args, job=f"{command}.py")
            assert submitted.returncode == 0, submitted.stdout[-3000:]
            walk["stdout"][command] = submitted.stdout
        else:
            assert main([command, "--config", str(configs[engine]), *args]) == 0
        walk["read"][step] = read_every_table(root / "warehouse")

    run(first, FIRST, "build")
    walk["files_before"] = {name: subset_files(path, "laion2B-en")
                            for name, path in subset_partitioned(root / "warehouse").items()}
    add_nolang_joined_row(root / "sources")
    run(other, REBUILT, "build", "--subsets", "laion1B-nolang")
    run(other, CHECKED, "dq", "--tables", WIDE)
    run(other, EXPORTED, "export", *EXPORT_ARGS, "--out", str(root / "export"))
    # The single-engine reference: the changed sources built from scratch by Sail alone.
    assert main(["build", "--config", str(write_planted_config(root, root / "reference", name="reference"))]) == 0
    walk["reference"] = read_every_table(root / "reference")
    return walk


# One fixture per warehouse, so each JVM-heavy walk is set up within one test's deadline.
@pytest.fixture(scope="module")
def sail_first(tmp_path_factory):
    return carry_on(tmp_path_factory.mktemp("sail_first"), first="sail")


@pytest.fixture(scope="module")
def jvm_first(tmp_path_factory):
    return carry_on(tmp_path_factory.mktemp("jvm_first"), first="spark")



@pytest.mark.parametrize("warehouse,step", STEPS, ids=[f"{w}-{s}" for w, s in STEPS])
def test_delta_rs_reads_every_table_after_every_step(request, warehouse, step):
    tables = request.getfixturevalue(warehouse)["read"][step]
    assert {name: error for name, error in tables.items() if isinstance(error, str)} == {}
    assert set(tables) == {t.name for t in TABLES} | set(META_TABLES)
    assert all(table.num_rows > 0 for name, table in tables.items() if name != "quarantine")


@pytest.mark.parametrize("warehouse", WAREHOUSES)
def test_the_first_build_of_either_engine_gives_the_planted_wide_rows(request, warehouse):
    walk = request.getfixturevalue(warehouse)
    expected = pa.Table.from_pylist(expected_wide_rows(walk["root"] / "sources"), schema=WIDE_SCHEMA)
    assert_same_rows(walk["read"][FIRST][WIDE], expected)


def test_spark_submit_prints_the_build_summary(jvm_first):
    stdout = jvm_first["stdout"]["build"]
    assert "laion.dms_laion_wide" in stdout and "6 tables built" in stdout


@pytest.mark.parametrize("warehouse", WAREHOUSES)
@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_a_rebuild_by_the_other_engine_equals_a_single_engine_build(request, warehouse, table):
    walk = request.getfixturevalue(warehouse)
    expected = walk["reference"][table.name]
    assert expected.num_rows > 0
    for step in (REBUILT, CHECKED, EXPORTED):
        assert_same_rows(walk["read"][step][table.name], expected)


@pytest.mark.parametrize("warehouse", WAREHOUSES)
def test_the_new_row_is_in_the_rebuilt_wide_table(request, warehouse):
    wide = request.getfixturevalue(warehouse)["read"][REBUILT][WIDE]
    rows = [r for r in wide.to_pylist() if r["url"] == NEW_NOLANG[0]]
    assert [(r["subset"], r["language"]) for r in rows] == [("laion1B-nolang", "nolang")]


@pytest.mark.parametrize("warehouse", WAREHOUSES)
def test_the_other_engine_replaces_only_the_named_subset(request, warehouse):
    """The rebuild's commits replace laion1B-nolang alone (replaceWhere): laion2B-en keeps its very files."""
    from deltalake import DeltaTable

    walk = request.getfixturevalue(warehouse)
    rebuild = [r for r in runs(walk["root"] / "warehouse") if r["command"] == "build"][-1]
    assert rebuild["engine"] == walk["other"] and rebuild["subsets"] == "laion1B-nolang"
    partitioned = subset_partitioned(walk["root"] / "warehouse")
    assert set(partitioned) == set(walk["files_before"]) and len(partitioned) == 5
    rebuilt = set()
    for name, path in partitioned.items():
        assert subset_files(path, "laion2B-en") == walk["files_before"][name], name
        commits = [c for c in DeltaTable(str(path)).history() if c.get("userMetadata") == rebuild["run_id"]]
        rebuilt |= {name} if commits else set()
        for commit in commits:
            assert commit["engineInfo"] == WRITERS[walk["other"]], name
            assert "laion1B-nolang" in commit["operationParameters"]["predicate"], name
            assert "laion2B-en" not in commit["operationParameters"]["predicate"], name
    assert {"ods_laion_joined", WIDE} <= rebuilt  # the tables the new joined row changes


@pytest.mark.parametrize("warehouse", WAREHOUSES)
def test_the_other_engine_checks_the_current_version(request, warehouse):
    from deltalake import DeltaTable

    walk = request.getfixturevalue(warehouse)
    history = runs(walk["root"] / "warehouse")
    assert [(r["command"], r["engine"]) for r in history] == [
        ("build", walk["first"]), ("build", walk["other"]), ("dq", walk["other"])]
    dq = history[-1]
    assert (dq["status"], dq["verdict"]) == ("succeeded", "pass") and Path(dq["report_path"]).is_file()
    results = [r for r in walk["read"][CHECKED]["dq_results"].to_pylist() if r["run_id"] == dq["run_id"]]
    wide_version = DeltaTable(str(walk["root"] / "warehouse" / "dms" / WIDE)).version()
    assert results and {(r["table_name"], r["table_version"]) for r in results} == {(WIDE, wide_version)}


def test_spark_submit_prints_the_dq_verdict(sail_first):
    assert "verdict: PASS" in sail_first["stdout"]["dq"]


def test_either_engine_exports_the_same_shards_from_the_version_it_names(sail_first, jvm_first):
    from deltalake import DeltaTable

    by_jvm, by_sail = (sorted((walk["root"] / "export" / "shards").iterdir()) for walk in (sail_first, jvm_first))
    assert len(by_jvm) > 1 and [p.name for p in by_jvm] == [p.name for p in by_sail]
    for jvm_shard, sail_shard in zip(by_jvm, by_sail):
        jvm, sail = pq.read_table(jvm_shard), pq.read_table(sail_shard)
        assert jvm.schema == sail.schema and jvm.to_pylist() == sail.to_pylist(), jvm_shard.name
    for walk in (sail_first, jvm_first):
        manifest = json.loads((walk["root"] / "export" / "manifest.json").read_text())
        assert manifest["source"]["version"] == DeltaTable(str(walk["root"] / "warehouse" / "dms" / WIDE)).version()


def delta_log_actions(path: Path, kind: str) -> list[tuple[str, dict]]:
    """Every `kind` action in the table's JSON commits, with the engineInfo of the commit holding it."""
    found = []
    for commit in sorted((path / "_delta_log").glob("*.json")):
        actions = [json.loads(line) for line in commit.read_text().splitlines() if line.strip()]
        writer = next(a["commitInfo"].get("engineInfo") for a in actions if "commitInfo" in a)
        found += [(writer, a[kind]) for a in actions if kind in a]
    return found


def test_every_table_keeps_the_protocol_all_three_writers_share(sail_first, jvm_first):
    """Reader 1 / writer 2, no table features, in every commit and in each table's current
    protocol (delta-rs reads it through checkpoints too), whoever wrote the table."""
    from deltalake import DeltaTable

    writers, protocol_writers = set(), set()
    for walk in (sail_first, jvm_first):
        for warehouse in ("warehouse", "reference"):
            for name, path in warehouse_tables(walk["root"] / warehouse).items():
                current = DeltaTable(str(path)).protocol()
                assert (current.min_reader_version, current.min_writer_version, current.reader_features,
                        current.writer_features) == (1, 2, None, None), (path, name)
                writers |= {writer for writer, _ in delta_log_actions(path, "commitInfo")}
                for writer, protocol in delta_log_actions(path, "protocol"):
                    assert protocol == SHARED_PROTOCOL, (path, writer)
                    protocol_writers.add(writer)
    # Every writer wrote commits here and created tables (and so set a protocol): the two engines
    # their tables, delta-rs the bookkeeping tables and the quarantine.
    assert writers == set(WRITERS.values())
    assert protocol_writers == set(WRITERS.values())
