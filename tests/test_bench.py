"""bench/run.py end to end at a toy size (no timing asserted): the figures are there and the
engines' wide tables agree. The JVM engine runs at a toy size too; the cluster engine's config,
command and model are checked without starting a cluster (tests/test_cluster.py runs one)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from etl.engine.session import JVM_SQL_TUNING, local_memory_settings, machine_memory_bytes
from helpers import REPO, need_java

BENCH = REPO / "bench" / "run.py"
ODS_DMD_DMS = {"ods_image_index", "ods_laion_base", "ods_laion_joined", "ods_laion_aesthetic",
               "dmd_image_path_suffix_aesthetics", "dms_laion_wide"}


def run_bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_run", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_engine_figures(size: dict, engine: str) -> None:
    figures = size["engines"][engine]
    assert figures["exit_code"] == 0, figures["log"]
    assert figures["wall_seconds"] > 0 and figures["peak_rss_bytes"] > 0
    stages = {s["table"]: s for s in figures["stages"]}
    assert set(stages) == ODS_DMD_DMS
    for name, stage in stages.items():
        assert stage["seconds"] >= 0 and stage["rows_out"] is not None
        if name != "ods_image_index":  # no images in the benchmark's sources
            assert stage["rows_out"] > 0 and stage["output_bytes"] > 0 and stage["output_files"] > 0
    assert figures["dms_rows"] == size["joined_rows"]


def assert_checks_timed(figures: dict) -> None:
    """Every table's checks and quarantine step were timed from the build's log."""
    stages = {s["table"]: s for s in figures["stages"]}
    for part in ("checks_seconds", "quarantine_seconds"):
        assert all(s[part] is not None and s[part] >= 0 for s in stages.values()), (part, stages)
    assert figures["checks_seconds"] == pytest.approx(sum(s["checks_seconds"] for s in stages.values()))
    assert 0 < figures["checks_quarantine_share"] < 1


def assert_agrees_with_sail(size: dict, engine: str) -> None:
    check = size["checks"][f"sail_vs_{engine}"]
    assert check["rows_equal"] and check["fingerprint_equal"], check
    ratio = size["ratios"][f"sail_over_{engine}"]
    assert ratio["wall"] > 0 and ratio["stages"] > 0


def test_bench_smoke_sail_and_both_duckdb_hashes(tmp_path):
    out = tmp_path / "results" / "run.json"
    done = run_bench("--sizes", "2000", "--engines", "sail,duckdb,duckdb-vectorised", "--out", str(out),
                     "--data", str(tmp_path / "data"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sail_over_duckdb:" in done.stdout and "sail_over_duckdb-vectorised:" in done.stdout
    assert "rows/s/core" in done.stdout

    results = json.loads(out.read_text())
    info = results["meta"]
    assert info["engines"] == ["sail", "duckdb", "duckdb-vectorised"] and info["cores"] >= 1
    assert len(info["git_commit"]) == 40 and info["memory_bytes"] > 2**30
    for package in ("pysail", "pyspark", "delta-spark", "duckdb", "numba", "java", "delta-spark jar"):
        assert info["versions"][package], package
    assert info["versions"]["delta-spark jar"].startswith("io.delta:delta-spark_")
    (size,) = results["sizes"]
    assert size["rows"] == 2000 and size["joined_rows"] > 0
    for engine in ("sail", "duckdb", "duckdb-vectorised"):
        assert_engine_figures(size, engine)
    for engine in ("duckdb", "duckdb-vectorised"):
        assert_agrees_with_sail(size, engine)
    assert_checks_timed(size["engines"]["sail"])
    assert "checks_seconds" not in size["engines"]["duckdb"]  # the reference neither checks nor quarantines
    assert "duckdb-vectorised" in size["engines"]["duckdb-vectorised"]["log"]
    assert out.with_suffix(".png").stat().st_size > 1000

    table = run_bench("--table", str(out), timeout=60)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"| 2,000 base rows ({size['joined_rows']:,} joined) | Sail")
    assert "DuckDB, mmh3 UDF" in lines[0] and "DuckDB, vectorised hash" in lines[0]
    wall = next(line for line in lines if line.startswith("| wall seconds"))
    assert wall == "| wall seconds | " + " | ".join(
        f"{size['engines'][e]['wall_seconds']:.1f}" for e in ("sail", "duckdb", "duckdb-vectorised")) + " |"
    assert any(line.startswith("| dms_laion_wide |") for line in lines)
    sail = size["engines"]["sail"]
    share = next(line for line in lines if line.startswith("| checks + quarantine"))
    assert share.split(" | ")[1] == f"{sail['checks_seconds'] + sail['quarantine_seconds']:.1f} " \
                                   f"({sail['checks_quarantine_share']:.0%})"
    assert any(line.startswith(f"- commit {info['git_commit'][:10]}") for line in lines)
    assert f"- load average (1 min) before each run: sail " \
           f"{size['engines']['sail']['load_average_before'][0]:.1f}, duckdb" in table.stdout


@pytest.mark.jvm
def test_bench_smoke_jvm_builds_delta_with_checks_and_records_its_settings(tmp_path):
    need_java()
    out = tmp_path / "run.json"
    done = run_bench("--sizes", "2000", "--engines", "sail,jvm", "--out", str(out), "--data", str(tmp_path / "data"),
                     timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (size,) = json.loads(out.read_text())["sizes"]
    assert_engine_figures(size, "jvm")
    assert_agrees_with_sail(size, "jvm")
    jvm = size["engines"]["jvm"]
    assert jvm["format"] == "delta"
    assert_checks_timed(jvm)
    assert {s["checks"] for s in jvm["stages"]} <= {"pass", "warn"}  # every table's contract was checked
    settings = jvm["jvm_settings"]
    assert settings["spark.master"] == "local[2]"
    assert settings["spark.driver.memory"] == local_memory_settings(machine_memory_bytes())["spark.driver.memory"]
    assert {k: settings[k] for k in JVM_SQL_TUNING} == JVM_SQL_TUNING


def test_cluster_engine_config_command_and_model(tmp_path):
    bench = bench_module()
    args = bench.parse_args(["--sizes", "2000", "--engines", "cluster", "--out", str(tmp_path / "r.json"),
                             "--data", str(tmp_path / "data")])
    import yaml

    config = yaml.safe_load(bench.write_config(tmp_path / "cluster.yaml", tmp_path / "sources", tmp_path / "wh",
                                               "spark", "delta", args, 3, master="spark://127.0.0.1:7077").read_text())
    assert config["engine"] == "spark" and config["format"] == "delta"
    assert config["spark"] == {"master": "spark://127.0.0.1:7077",
                               "conf": {"spark.executor.cores": "1",
                                        "spark.executor.memory": bench.CLUSTER_EXECUTOR_MEMORY}}
    assert config["dq"]["rules"]["dms_laion_wide.duplicate_hash_per_subset"] == {"max_unexpected": 6}
    local = yaml.safe_load(bench.write_config(tmp_path / "jvm.yaml", tmp_path / "sources", tmp_path / "wh",
                                              "spark", "delta", args).read_text())
    assert "conf" not in local["spark"]  # local[2] runs on the engine's own memory settings
    assert bench.cluster_command(tmp_path / "cluster.yaml")[2:] == [
        "etl.cli", "submit", "--", "build", "--config", str(tmp_path / "cluster.yaml")]

    # 1M base rows in 100 s of stages on 2 cores: 5,000 rows/s per core, 200 core-microseconds a row.
    model = bench.scale_model(1_000_000, 100.0, 2)
    assert model["base_rows_per_s_per_core"] == pytest.approx(5_000)
    assert model["core_hours"] == pytest.approx(5_860_068_373 * 200e-6 * 1.5 / 0.7 / 3600)
    assert round(model["core_hours"]) == 698


def test_bench_reads_the_settings_a_jvm_session_logs():
    bench = bench_module()
    lines = ["09:00:01 starting", "09:00:02 JVM Spark settings: spark.master=local[2] spark.driver.memory=4g "
                                  "spark.sql.autoBroadcastJoinThreshold=32MB", "09:00:03 [ods] ..."]
    assert bench.jvm_settings_logged(lines) == {"spark.master": "local[2]", "spark.driver.memory": "4g",
                                                "spark.sql.autoBroadcastJoinThreshold": "32MB"}
    assert bench.jvm_settings_logged(["no settings here"]) is None


@pytest.mark.parametrize("args, message", [
    (["--sizes", "ten", "--out", "x.json"], "--sizes"),
    (["--sizes", "1000000", "--engines", "sail,spark", "--out", "x.json"], "--engines: unknown spark"),
    (["--sizes", "1000000", "--out", "results.txt"], "must end in .json"),
    (["--out", "x.json"], "--sizes and --out are required"),
    (["--table", "missing.json"], "--table missing.json: no such file"),
])
def test_bench_refuses_bad_arguments_before_any_work(tmp_path, args, message):
    done = run_bench(*args, "--data", str(tmp_path / "data"), timeout=60)
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "data").exists()


def test_the_fingerprinted_files_of_a_delta_table_in_a_folder_with_a_space_exist(tmp_path):
    table = tmp_path / "bench out é" / "dms_laion_wide"
    write_deltalake(str(table), pa.table({"hash": [1, 2, 3], "subset": ["en", "en", "multi"]}), partition_by=["subset"])

    files = bench_module().data_files(table, "delta")

    assert len(files) == 2 and all(os.path.isfile(f) for f in files), files
