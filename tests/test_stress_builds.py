"""Small builds back to back, in one process and in subprocesses: none hangs (bench/stress_builds.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO


@pytest.mark.timeout(900)
def test_builds_back_to_back_never_hang():
    done = subprocess.run([sys.executable, str(REPO / "bench" / "stress_builds.py"), "--in-process", "4",
                           "--subprocesses", "2", "--deadline", "240"],
                          cwd=REPO, capture_output=True, text=True, timeout=840)
    summary = done.stdout.strip().splitlines()[-1]
    assert summary == "stress: builds 6, ok 6, failed 0, stalled 0, hung 0", done.stdout + done.stderr[-3000:]
    assert done.returncode == 0
