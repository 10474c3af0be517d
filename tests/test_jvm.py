"""The JVM engine: spark-submit on local[2] with the parquet format gives the same rows as Sail.

Each JVM run is a subprocess (the engine is chosen once per process). Java must be present on CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl import laion_hash
from etl.cli import main
from etl.project.project import load_project
from etl.synth import generate
from helpers import (REPO, assert_same_rows, demo_config, need_java, read_delta, read_parquet_table, runs,
                     write_planted_config, write_planted_project)
from planted import WIDE_SCHEMA, expected_wide_rows, write_planted_sources
from store_checks import CHECKS

pytestmark = pytest.mark.jvm
NEW_NOLANG = ("http://h.example/8.jpg", "a new nolang sample")


def jvm_env() -> dict:
    # An in-process Sail session leaves SPARK_CONNECT_MODE_ENABLED set; the JVM job must not see it.
    environ = {k: v for k, v in os.environ.items() if k != "SPARK_CONNECT_MODE_ENABLED"}
    return {**environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1"}


def spark_submit(*args: str, job: str = "build.py") -> subprocess.CompletedProcess:
    submit = Path(sys.executable).with_name("spark-submit")
    command = [str(submit), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
               str(REPO / "jobs" / job), *args]
    return subprocess.run(command, env=jvm_env(), capture_output=True, text=True, timeout=600)


def table_rows(warehouse: Path, fmt: str, layer: str, name: str) -> pa.Table:
    path = warehouse / layer / name
    return read_delta(path) if fmt == "delta" else read_parquet_table(path)


@pytest.fixture(scope="module")
def both_engines(tmp_path_factory):
    """The planted sources built by spark-submit (parquet) and by Sail (delta)."""
    need_java()
    root = tmp_path_factory.mktemp("engines")
    jvm_config = write_planted_project(root, root / "jvm_warehouse", name="jvm", fmt="parquet", engine="spark")
    sail_config = write_planted_config(root, root / "sail_warehouse", name="sail")
    submitted = spark_submit("--config", str(jvm_config))
    assert submitted.returncode == 0, submitted.stdout[-3000:]
    assert main(["build", "--config", str(sail_config)]) == 0
    return root, submitted


def test_spark_submit_prints_the_build_summary(both_engines):
    _, submitted = both_engines
    assert "laion.dms_laion_wide" in submitted.stdout
    assert "6 tables built" in submitted.stdout


def test_spark_submit_dq_job_validates_the_parquet_tables(both_engines):
    root, _ = both_engines
    result = spark_submit("--config", str(root / "jvm.yaml"), "--tables", "dms_laion_wide", job="dq.py")
    assert result.returncode == 0, result.stdout[-3000:]
    # Every rule of the planted wide table holds (the build's warnings are all on ODS tables).
    assert "verdict: PASS" in result.stdout
    jvm_runs = runs(root / "jvm_warehouse", fmt="parquet")
    assert [(r["command"], r["verdict"]) for r in jvm_runs] == [("build", "warn"), ("dq", "pass")]
    assert Path(jvm_runs[-1]["report_path"]).is_file()


def test_spark_submit_builds_the_planted_wide_table(both_engines):
    root, _ = both_engines
    wide = table_rows(root / "jvm_warehouse", "parquet", "dms", "dms_laion_wide")
    expected = pa.Table.from_pylist(expected_wide_rows(root / "sources"), schema=WIDE_SCHEMA)
    assert_same_rows(wide.select(WIDE_SCHEMA.names).cast(WIDE_SCHEMA), expected)


@pytest.mark.parametrize("table", load_project().tables, ids=lambda t: t.name)
def test_jvm_and_sail_give_the_same_rows(both_engines, table):
    root, _ = both_engines
    sail = table_rows(root / "sail_warehouse", "delta", table.layer, table.name)
    jvm = table_rows(root / "jvm_warehouse", "parquet", table.layer, table.name)
    assert sail.num_rows > 0
    assert_same_rows(jvm.select(sail.column_names).cast(sail.schema), sail)


@pytest.fixture(scope="module")
def both_engines_on_synth(tmp_path_factory):
    """Synthetic sources with every quirk (type drift, NaN, nulls, images) built by both engines."""
    need_java()
    root = tmp_path_factory.mktemp("synth_engines")
    generate(root / "sources", rows=3_000, seed=5, images="webdataset")
    jvm_config = demo_config(root / "sources", root / "jvm_warehouse", root / "jvm.yaml", engine="spark", fmt="parquet")
    sail_config = demo_config(root / "sources", root / "sail_warehouse", root / "sail.yaml")
    submitted = spark_submit("--config", str(jvm_config))
    assert submitted.returncode == 0, submitted.stdout[-3000:]
    assert main(["build", "--config", str(sail_config)]) == 0
    return root


@pytest.mark.parametrize("table", load_project().tables, ids=lambda t: t.name)
def test_jvm_and_sail_agree_on_synthetic_sources(both_engines_on_synth, table):
    root = both_engines_on_synth
    sail = table_rows(root / "sail_warehouse", "delta", table.layer, table.name)
    jvm = table_rows(root / "jvm_warehouse", "parquet", table.layer, table.name)
    assert sail.num_rows > 100
    assert_same_rows(jvm.select(sail.column_names).cast(sail.schema), sail)


def test_jvm_export_gives_the_same_shards_as_sail(both_engines_on_synth):
    root = both_engines_on_synth
    args = ["--where", "aesthetic_score > 4", "--rows-per-shard", "100"]
    submitted = spark_submit("--config", str(root / "jvm.yaml"), *args, "--out", str(root / "jvm_export"), job="export.py")
    assert submitted.returncode == 0, submitted.stdout[-3000:]
    assert main(["export", "--config", str(root / "sail.yaml"), *args, "--out", str(root / "sail_export")]) == 0
    names = sorted(p.name for p in (root / "sail_export" / "shards").iterdir())
    assert len(names) > 1 and names == sorted(p.name for p in (root / "jvm_export" / "shards").iterdir())
    for name in names:
        jvm = pq.read_table(root / "jvm_export" / "shards" / name)
        sail = pq.read_table(root / "sail_export" / "shards" / name)
        assert jvm.cast(sail.schema).to_pylist() == sail.to_pylist(), name


def _add_nolang_joined_row(sources: Path) -> None:
    path = sources / "laion1B-nolang-joined" / "part-00000.parquet"
    table = pq.read_table(path)
    extra = {name: [None] for name in table.column_names}
    extra.update(URL=[NEW_NOLANG[0]], TEXT=[NEW_NOLANG[1]], hash=[laion_hash(*NEW_NOLANG)])
    pq.write_table(pa.concat_tables([table, pa.table(extra, schema=table.schema)]), path)


def test_partial_rebuild_replaces_one_subset_and_keeps_the_others(tmp_path):
    """On both engines: rebuilding laion1B-nolang alone must leave laion2B-en's rows untouched."""
    need_java()
    write_planted_sources(tmp_path / "sources")
    configs = {fmt: write_planted_config(tmp_path, tmp_path / f"{fmt}_warehouse", name=fmt, fmt=fmt, engine=engine)
               for engine, fmt in (("spark", "parquet"), ("sail", "delta"))}
    full = spark_submit("--config", str(configs["parquet"]))
    assert full.returncode == 0, full.stdout[-3000:]
    assert main(["build", "--config", str(configs["delta"])]) == 0
    before = {fmt: table_rows(tmp_path / f"{fmt}_warehouse", fmt, "dms", "dms_laion_wide") for fmt in configs}

    _add_nolang_joined_row(tmp_path / "sources")
    partial = spark_submit("--config", str(configs["parquet"]), "--subsets", "laion1B-nolang")
    assert partial.returncode == 0, partial.stdout[-3000:]
    assert main(["build", "--config", str(configs["delta"]), "--subsets", "laion1B-nolang"]) == 0

    for fmt in configs:
        after = table_rows(tmp_path / f"{fmt}_warehouse", fmt, "dms", "dms_laion_wide")
        for subset, expected_rows in (("laion2B-en", 5), ("laion1B-nolang", 2)):
            rows = [r for r in after.to_pylist() if r["subset"] == subset]
            assert len(rows) == expected_rows, (fmt, subset)
        kept_before = before[fmt].filter(pa.compute.equal(before[fmt].column("subset"), "laion2B-en"))
        kept_after = after.filter(pa.compute.equal(after.column("subset"), "laion2B-en"))
        assert_same_rows(kept_after, kept_before)
        new_row = [r for r in after.to_pylist() if r["url"] == NEW_NOLANG[0]]
        assert len(new_row) == 1 and new_row[0]["language"] == "nolang", fmt


def test_parquet_store_passes_every_store_check_on_the_jvm_engine(tmp_path):
    """tests/store_checks.py against the parquet store on local[2] (Sail runs them on Delta)."""
    need_java()
    config = demo_config(tmp_path / "sources", tmp_path / "warehouse", tmp_path / "parquet.yaml", engine="spark",
                         fmt="parquet")
    env = {**jvm_env(), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(REPO / "tests" / "store_checks.py"), str(config), str(tmp_path / "tables")],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    assert sorted(line for line in result.stdout.splitlines() if line.startswith("ok ")) == sorted(
        f"ok {check.__name__}" for check in CHECKS)


def test_spark_submit_refuses_a_bad_config_with_exit_code_2(tmp_path):
    need_java()
    config = tmp_path / "bad.yaml"
    config.write_text("engine: spark\nformat: parquet\nwarehouse: /tmp/x\nsources: {}\n")
    result = spark_submit("--config", str(config))
    assert result.returncode == 2
    # spark-submit's PythonRunner merges the Python process's stderr into its stdout.
    assert "laion-etl: error: sources: at least one subset is required" in result.stdout
