"""The suite cannot hang: a test stuck in C, where pytest-timeout's signal never lands, still ends."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

STUCK_IN_C = '''
import ctypes

def test_stuck_in_c():
    # A default pthread mutex locked twice by one thread waits forever inside libc, as a gRPC
    # call waiting on its completion queue does: signals do not interrupt it, so no Python
    # handler (pytest-timeout's signal method) ever runs.
    libc = ctypes.CDLL(None)
    mutex = ctypes.create_string_buffer(64)
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)
'''


def test_a_test_stuck_in_c_fails_with_stacks_within_its_deadline(tmp_path: Path):
    (tmp_path / "test_stuck.py").write_text(STUCK_IN_C)
    env = {**os.environ, "PYTHONPATH": str(HERE), "LAION_TEST_WATCHDOG_GRACE": "3"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "pytest_hang_watchdog", "-p", "no:cacheprovider",
         "-o", "timeout=2", "test_stuck.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode != 0, done.stdout + done.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s"
    assert "Timeout (0:00:05)!" in done.stderr, done.stderr
    assert "test_stuck_in_c" in done.stderr, done.stderr


def test_a_test_within_its_deadline_is_not_touched(tmp_path: Path):
    (tmp_path / "test_quick.py").write_text("import time\n\ndef test_quick():\n    time.sleep(3)\n")
    env = {**os.environ, "PYTHONPATH": str(HERE), "LAION_TEST_WATCHDOG_GRACE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "pytest_hang_watchdog", "-p", "no:cacheprovider",
         "-o", "timeout=5", "test_quick.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
