"""The JVM engine: spark-submit on local[2] with delta-spark writes the same Delta tables as Sail.

Each JVM run is a subprocess (the engine is chosen once per process). Java must be present on CI.
Delta is the format of every JVM run here; parquet, still supported, is tested once (the store
checks). One warehouse written by both engines in turn is tests/test_engine_interop.py, which
also exports with each engine and compares the shards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl.cli import main
from etl.project.project import load_project
from etl.synth import generate
from etl.warehouse.meta import META_TABLES, QUARANTINE
from helpers import REPO, assert_same_rows, demo_config, need_java, read_delta, warehouse_tables
from jvm_jobs import jvm_env, spark_submit
from store_checks import CHECKS

pytestmark = pytest.mark.jvm
TABLES = load_project().tables
# The one known schema difference between the engines' Delta tables (names, order, types and
# partition columns are the same): Sail marks the columns it knows cannot be null NOT NULL (the
# lineage literals), JVM Delta makes every column of a table it creates nullable. The bookkeeping
# tables and the quarantine are created by delta-rs under either engine, from their contracts.
SAIL_NOT_NULL = {
    "ods_laion_base": {"file_name", "subset"},
    "ods_laion_joined": {"file_name", "subset"},
    "ods_laion_aesthetic": {"source_rank", "source_name", "file_name", "subset"},
    "dmd_image_path_suffix_aesthetics": {"subset"},  # file_name is null in the rows of joined-only hashes
    "dms_laion_wide": {"file_name", "subset"},
}


def delta_schema(path: Path) -> tuple[list[dict], list[str]]:
    """The Delta schema (fields with types, nullability, metadata) and partition columns, as the log says."""
    from deltalake import DeltaTable

    table = DeltaTable(str(path))
    return json.loads(table.schema().to_json())["fields"], table.metadata().partition_columns


def add_rows_to_quarantine(sources: Path) -> None:
    """Two base rows the ODS must refuse (a null and a blank URL), so both engines quarantine some."""
    path = sorted((sources / "laion2B-en").glob("*.parquet"))[0]
    table = pq.read_table(path)
    url = next(name for name in table.column_names if name.lower() == "url")
    refused = table.slice(0, 2).to_pylist()
    refused[0][url], refused[1][url] = None, "  "
    pq.write_table(pa.concat_tables([table, pa.Table.from_pylist(refused, schema=table.schema)]), path)


@pytest.fixture(scope="module")
def both_engines(tmp_path_factory):
    """Synthetic sources with every quirk (type drift, NaN, nulls, images) built by spark-submit and
    by Sail, both on Delta."""
    need_java()
    root = tmp_path_factory.mktemp("engines")
    generate(root / "sources", rows=3_000, seed=5, images="webdataset")
    add_rows_to_quarantine(root / "sources")
    jvm_config = demo_config(root / "sources", root / "jvm_warehouse", root / "jvm.yaml", engine="spark")
    sail_config = demo_config(root / "sources", root / "sail_warehouse", root / "sail.yaml")
    submitted = spark_submit("--config", str(jvm_config))
    assert submitted.returncode == 0, submitted.stdout[-3000:]
    assert main(["build", "--config", str(sail_config)]) == 0
    return root, submitted


def test_spark_submit_prints_the_build_summary(both_engines):
    _, submitted = both_engines
    assert "laion.dms_laion_wide" in submitted.stdout
    assert "6 tables built" in submitted.stdout


def test_spark_submit_output_is_the_builds_own_not_sparks_info_log(both_engines):
    """A hand-written spark-submit line: the driver logs at WARN from the SparkContext's start
    (spark.log.level); only the three lines Spark logs before it applies the level are INFO.
    (Ivy's resolution of --packages is printed by spark-submit itself, about 25 lines.)"""
    _, submitted = both_engines
    # The build's heartbeats (one per table every 15 s) count the machine's speed, not the log's.
    lines = [line for line in (submitted.stdout + submitted.stderr).splitlines() if " ... still running (" not in line]
    info = [line for line in lines if " INFO " in line]
    assert len(lines) < 100, "\n".join(lines[:150])
    assert len(info) <= 3 and all(" INFO SparkContext: " in line for line in info), info


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_jvm_and_sail_give_the_same_rows(both_engines, table):
    root, _ = both_engines
    sail = read_delta(root / "sail_warehouse" / table.layer / table.name)
    jvm = read_delta(root / "jvm_warehouse" / table.layer / table.name)
    assert sail.num_rows > 100
    assert_same_rows(jvm, sail)


def test_jvm_and_sail_quarantine_the_same_rows(both_engines):
    root, _ = both_engines
    sail = read_delta(root / "sail_warehouse" / "meta" / QUARANTINE).drop_columns(["run_id"])
    jvm = read_delta(root / "jvm_warehouse" / "meta" / QUARANTINE).drop_columns(["run_id"])
    assert sorted(sail.column("reason").to_pylist()) == ["url is empty", "url is null"]
    assert_same_rows(jvm.select(sail.column_names), sail)


@pytest.mark.parametrize("name", [t.name for t in TABLES] + list(META_TABLES))
def test_jvm_and_sail_write_the_same_delta_schemas_but_for_nullability(both_engines, name):
    root, _ = both_engines
    sail_fields, sail_partitions = delta_schema(warehouse_tables(root / "sail_warehouse")[name])
    jvm_fields, jvm_partitions = delta_schema(warehouse_tables(root / "jvm_warehouse")[name])
    assert jvm_partitions == sail_partitions
    assert [(f["name"], f["type"]) for f in jvm_fields] == [(f["name"], f["type"]) for f in sail_fields]
    assert all(f["nullable"] and f["metadata"] == {} for f in jvm_fields)
    assert {f["name"] for f in sail_fields if not f["nullable"]} == SAIL_NOT_NULL.get(name, set())
    # The bookkeeping tables and the quarantine are created by delta-rs under both engines (from
    # their contracts, every column nullable), so they carry no engine's field metadata either.
    assert all(f["metadata"] == {} for f in sail_fields)


def test_every_jvm_commit_carries_the_run_id(both_engines):
    root, _ = both_engines
    from deltalake import DeltaTable

    (run_id,) = [row["run_id"] for row in read_delta(root / "jvm_warehouse" / "meta" / "runs").to_pylist()]
    for name, path in warehouse_tables(root / "jvm_warehouse").items():
        assert {commit.get("userMetadata") for commit in DeltaTable(str(path)).history()} == {run_id}, name


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_the_store_passes_every_store_check_on_the_jvm_engine(tmp_path, fmt):
    """tests/store_checks.py on local[2]: Delta (as Sail runs them in test_store.py) and parquet."""
    need_java()
    config = demo_config(tmp_path / "sources", tmp_path / "warehouse", tmp_path / f"{fmt}.yaml", engine="spark",
                         fmt=fmt)
    env = {**jvm_env(), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(REPO / "tests" / "store_checks.py"), str(config), str(tmp_path / "tables")],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert sorted(line for line in result.stdout.splitlines() if line.startswith("ok ")) == sorted(
        f"ok {check.__name__}" for check in CHECKS)


def test_spark_submit_refuses_a_bad_config_with_exit_code_2(tmp_path):
    need_java()
    config = tmp_path / "bad.yaml"
    config.write_text("engine: spark\nformat: delta\nwarehouse: /tmp/x\nsources: {}\n")
    result = spark_submit("--config", str(config))
    assert result.returncode == 2
    # spark-submit's PythonRunner merges the Python process's stderr into its stdout.
    assert "laion-etl: error: sources: at least one subset is required" in result.stdout
