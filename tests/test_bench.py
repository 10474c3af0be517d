"""bench/run.py end to end at a toy size (no timing asserted): the figures are there and the
engines' wide tables agree. The JVM part is left out here (test_jvm covers that engine)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO

BENCH = REPO / "bench" / "run.py"
ODS_DMD_DMS = {"ods_image_index", "ods_laion_base", "ods_laion_joined", "ods_laion_aesthetic",
               "dmd_image_path_suffix_aesthetics", "dms_laion_wide"}


def run_bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_bench_smoke_sail_and_duckdb(tmp_path):
    out = tmp_path / "results" / "run.json"
    done = run_bench("--sizes", "2000", "--engines", "sail,duckdb", "--out", str(out), "--data", str(tmp_path / "data"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "sail_over_duckdb" in done.stdout and "rows/s/core" in done.stdout

    results = json.loads(out.read_text())
    assert results["meta"]["engines"] == ["sail", "duckdb"] and results["meta"]["cores"] >= 1
    (size,) = results["sizes"]
    assert size["rows"] == 2000 and size["joined_rows"] > 0
    for engine in ("sail", "duckdb"):
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
    check = size["checks"]["sail_vs_duckdb"]
    assert check["rows_equal"] and check["fingerprint_equal"], check
    ratio = size["ratios"]["sail_over_duckdb"]
    assert ratio["wall"] > 0 and ratio["stages"] > 0
    assert out.with_suffix(".png").stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["--sizes", "ten", "--out", "x.json"], "--sizes"),
    (["--sizes", "1000000", "--engines", "sail,spark", "--out", "x.json"], "--engines: unknown spark"),
    (["--sizes", "1000000", "--out", "results.txt"], "must end in .json"),
])
def test_bench_refuses_bad_arguments_before_any_work(tmp_path, args, message):
    done = run_bench(*args, "--data", str(tmp_path / "data"), timeout=60)
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "data").exists()
