"""Signals: Ctrl-C (SIGINT) or SIGTERM stop a build within seconds, whatever it is doing.

Sent at several points found by watching the warehouse from outside (a data file appearing, a
commit appearing), as tests/test_faults_killed_runs.py does for SIGKILL. After each: exit 130
with one line, the lock released, the run recorded `interrupted`, every table absent or exactly
a version the run published (nothing written and left unchecked), and a rerun equal to an
uninterrupted build. A second Ctrl-C exits at once; a run found dead is marked `abandoned`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from etl.cli import main
from etl.project.project import load_project
from helpers import (REPO, assert_same_rows, committed, demo_config, has_data_files, read_delta, runs, stop_point_reached,
                     table_dir)

TABLES = [t.name for t in load_project().tables]
STOP_SECONDS = 30  # "within seconds", with room for a loaded 2-core machine


def start_build(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "etl.cli", "build", "--config", str(config)], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(process: subprocess.Popen, condition, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the build ended (exit {process.returncode}) before the signal point:\n"
                        + process.stderr.read()[-3000:])
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the signal point was never reached")
        time.sleep(0.01)


def signal_and_wait(process: subprocess.Popen, signum: int) -> tuple[float, str]:
    """Send `signum`; (seconds until the process ended, its stderr)."""
    sent = time.monotonic()
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=STOP_SECONDS * 4)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"the build was still running {STOP_SECONDS * 4} s after {signal.Signals(signum).name}")
    return time.monotonic() - sent, err


@pytest.mark.parametrize("point, signum", [
    ("mid_ods_write", signal.SIGINT),
    ("between_layers", signal.SIGINT),
    ("mid_dms_write", signal.SIGTERM),
])
def test_a_signal_stops_the_build_within_seconds_and_leaves_whole_versions(long_sources, long_reference, tmp_path, point,
                                                                          signum):
    warehouse = tmp_path / "warehouse"
    config = demo_config(long_sources / "sources", warehouse, tmp_path / "demo.yaml", with_images=False)
    condition = stop_point_reached(warehouse, point)
    process = start_build(config)
    wait_for(process, condition)
    seconds, err = signal_and_wait(process, signum)

    assert process.returncode == 130, err[-3000:]
    assert seconds < STOP_SECONDS, f"took {seconds:.1f} s to stop"
    name = signal.Signals(signum).name
    assert f"laion-etl: interrupted by {name}: every table is at its old or its new version" in err
    assert "Traceback" not in err
    assert not (warehouse / "meta" / "_lock.json").exists(), "the lock was not released"
    interrupted = runs(warehouse)[-1]
    assert interrupted["status"] == "interrupted" and interrupted["finished_at"] != ""
    assert interrupted["message"] == f"interrupted by {name}"
    published = json.loads(interrupted["published"])
    present = {t for t in TABLES if committed(warehouse, t)}
    # Nothing the run wrote is left current unchecked: what is there is what it published.
    assert present == set(published), (present, published, err[-2500:])
    for table in present:
        assert_same_rows(read_delta(table_dir(warehouse, table)), read_delta(table_dir(long_reference, table)))

    assert main(["-q", "build", "--config", str(config)]) == 0
    for table in TABLES:
        assert_same_rows(read_delta(table_dir(warehouse, table)), read_delta(table_dir(long_reference, table)))


def test_a_second_ctrl_c_exits_at_once(long_sources, tmp_path):
    warehouse = tmp_path / "warehouse"
    config = demo_config(long_sources / "sources", warehouse, tmp_path / "demo.yaml", with_images=False)
    process = start_build(config)
    wait_for(process, lambda: has_data_files(warehouse, "ods_laion_base"))
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    seconds, err = signal_and_wait(process, signal.SIGINT)
    assert process.returncode == 130, err[-3000:]
    assert seconds < 5, f"the second Ctrl-C took {seconds:.1f} s"


def test_a_run_found_dead_is_marked_abandoned(long_sources, tmp_path):
    warehouse = tmp_path / "warehouse"
    config = demo_config(long_sources / "sources", warehouse, tmp_path / "demo.yaml", with_images=False)
    process = start_build(config)
    wait_for(process, lambda: committed(warehouse, "ods_laion_joined"))
    process.kill()
    process.communicate()
    dead = runs(warehouse)[-1]
    assert dead["status"] == "running"

    assert main(["-q", "build", "--config", str(config)]) == 0
    by_id = {run["run_id"]: run for run in runs(warehouse)}
    assert by_id[dead["run_id"]]["status"] == "abandoned"
    assert by_id[dead["run_id"]]["message"].startswith("found dead by run ")
    assert [run["status"] for run in by_id.values()].count("running") == 0
