"""A stalled engine ends the step that waits on it, within the stall limit, instead of hanging.

The stall is real: the Sail server's process is frozen with SIGSTOP while a query waits on it,
as the hung server of a CI run did (CPU idle, the client's gRPC call waiting in C).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from etl.engine.sail_server import SailServerProcess, process_cpu_seconds, process_stat
from etl.engine.stall_watchdog import EngineStalled, StallWatchdog
from helpers import REPO, committed, demo_config, has_data_files, runs


def test_a_quiet_step_is_a_stall_and_a_busy_one_is_not():
    cpu = {"seconds": 0.0}
    aborted = threading.Event()
    watchdog = StallWatchdog(lambda: cpu["seconds"], aborted.set, stall_seconds=1.0, poll_seconds=0.1)
    try:
        with watchdog.busy("t: working"):
            for _ in range(20):  # 2 s of steady CPU: never a stall
                cpu["seconds"] += 1
                time.sleep(0.1)
        assert not aborted.is_set()
        time.sleep(1.5)  # idle outside a step: not a stall either
        assert not aborted.is_set()
        with pytest.raises(EngineStalled, match=r"t: waiting: the engine made no progress for \d+ s"):
            with watchdog.busy("t: waiting"):
                assert aborted.wait(10), "the watchdog did not stop a step that made no progress"
    finally:
        watchdog.close()


def test_a_step_the_abort_does_not_unblock_is_reported_stuck():
    stuck = []
    release = threading.Event()
    watchdog = StallWatchdog(lambda: 0.0, lambda: None, stall_seconds=0.5, poll_seconds=0.1,
                             on_stuck=lambda reason: (stuck.append(reason), release.set()),
                             stuck_after_abort_seconds=0.5)
    try:
        with pytest.raises(EngineStalled):
            with watchdog.busy("t: blocked on a lock"):
                assert release.wait(10), "on_stuck was not called"
        assert "t: blocked on a lock" in stuck[0] and "did not end" in stuck[0]
    finally:
        watchdog.close()


def test_a_frozen_server_fails_the_waiting_query_within_the_stall_limit():
    server = SailServerProcess()
    spark = server.connect()
    # The server's CPU alone: the build's measure adds this process's, which here is a pytest
    # worker that may be busy with other threads, and this test is about the server.
    watchdog = StallWatchdog(lambda: server.cpu_seconds() or 0.0, server.kill, stall_seconds=3.0, poll_seconds=0.2)
    try:
        assert spark.range(10).count() == 10
        assert process_cpu_seconds(server.pid) is not None
        os.kill(server.pid, signal.SIGSTOP)
        await_process_state(server.pid, "T")
        started = time.monotonic()
        with pytest.raises(EngineStalled, match="count: the engine made no progress"):
            with watchdog.busy("count"):
                counted = spark.range(1000).count()
                pytest.fail(f"a frozen server answered {counted}; its state now: {process_state(server.pid)}")
        assert time.monotonic() - started < 30
        assert not server.alive()
    finally:
        watchdog.close()
        server.kill()
        stopper = threading.Thread(target=spark.stop, daemon=True)
        stopper.start()
        stopper.join(30)
        assert not stopper.is_alive(), "SparkSession.stop() blocked on a dead server"


def process_state(pid: int) -> str:
    """The process's one-letter state: R running, S sleeping, T stopped, Z zombie ("gone" once reaped)."""
    fields = process_stat(pid)
    return "gone" if fields is None else fields[0]


def await_process_state(pid: int, state: str, timeout: float = 10.0) -> None:
    """A signal is delivered when the process next runs: on a loaded machine, not at once."""
    deadline = time.monotonic() + timeout
    while process_state(pid) != state:
        assert time.monotonic() < deadline, f"process {pid} is {process_state(pid)}, not {state}, after {timeout:.0f} s"
        time.sleep(0.01)


def test_the_server_goes_when_its_parent_closes_the_pipe():
    server = SailServerProcess()
    server.stop(grace_seconds=20)
    assert not server.alive()


def test_a_build_whose_engine_freezes_fails_naming_the_table_and_step(long_sources, tmp_path):
    """The whole path: a build on a frozen server ends within the stall limit, exit 1, one line
    naming the table and step; the run is recorded failed, the lock released, tables whole."""
    warehouse = tmp_path / "warehouse"
    config = demo_config(long_sources / "sources", warehouse, tmp_path / "demo.yaml", with_images=False)
    config.write_text(config.read_text() + "engine_stall_seconds: 4\n")
    process = subprocess.Popen([sys.executable, "-m", "etl.cli", "build", "--config", str(config)], cwd=REPO,
                               env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not has_data_files(warehouse, "ods_laion_base"):
        assert process.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
        time.sleep(0.01)
    server_pid = int(re.search(r"Spark Connect server on \S+ \(pid (\d+)\)", "".join(lines)).group(1))
    os.kill(server_pid, signal.SIGSTOP)
    frozen = time.monotonic()
    process.wait(timeout=120)
    reader.join(10)
    err = "".join(lines)

    assert process.returncode == 1, err[-3000:]
    assert time.monotonic() - frozen < 60
    failures = [line for line in err.splitlines() if line.startswith("laion-etl:")]
    assert len(failures) == 1 and re.match(
        r"laion-etl: failed: ods_laion_base: (writing|quarantine|checks): the engine made no progress "
        r"for \d+ s \(stall limit 4 s\); it was stopped", failures[0]), err[-3000:]
    assert not (warehouse / "meta" / "_lock.json").exists()
    stalled = runs(warehouse)[-1]
    assert stalled["status"] == "failed" and "made no progress" in stalled["message"]
    assert "ods_laion_base" not in json.loads(stalled["published"])
    assert not committed(warehouse, "ods_laion_base") or "ods_laion_base" in json.loads(stalled["rolled_back"])


def test_a_session_is_on_its_own_server_whatever_sessions_the_process_has():
    """Spark Connect's getOrCreate() hands back the process's existing session whatever its server:
    a stall test once froze one server while its query ran on another (xdist reuses processes)."""
    first, second = SailServerProcess(), SailServerProcess()
    on_first = first.connect()
    on_second = second.connect()
    try:
        first.kill()
        assert on_second.range(3).count() == 3
    finally:
        # Stopped, so no later test in this process is handed a session on a dead server.
        on_second.stop()
        second.kill()
        stopper = threading.Thread(target=on_first.stop, daemon=True)
        stopper.start()
        stopper.join(30)
        first.kill()
