#!/usr/bin/env python
"""Many small builds back to back, in this process and in subprocesses: how many hang?

    python bench/stress_builds.py --in-process 40 --subprocesses 20

A build hangs when it neither finishes nor fails within `--deadline` seconds. Builds run on the
embedded engine with a short stall limit, so a stalled engine call fails the build (counted as
`stalled`) instead of hanging it; a subprocess that outlives its deadline is killed and counted as
`hung`. Every build after the first redoes everything (`--force`), so each one writes, checks
and publishes all six tables. Prints one line per build and the totals; exit code 1 when any
build failed, stalled or hung.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROWS = 2000

CONFIG = """\
warehouse: {root}/warehouse
engine_stall_seconds: {stall}
sources:
  laion2B-en:
    base: {root}/sources/laion2B-en/*.parquet
    joined: {root}/sources/laion2B-en-joined/*.parquet
    aesthetic: [{root}/sources/laion2B-en-aesthetic/*.parquet, {root}/sources/improved_aesthetics_4.5plus/*.parquet]
  laion2B-multi:
    base: {root}/sources/laion2B-multi/*.parquet
    joined: {root}/sources/laion2B-multi-joined/*.parquet
  laion1B-nolang:
    base: {root}/sources/laion1B-nolang/*.parquet
    joined: {root}/sources/laion1B-nolang-joined/*.parquet
images: [{root}/sources/images]
"""


def prepare(root: Path, stall_seconds: float) -> Path:
    from etl.synth import generate

    generate(root / "sources", rows=ROWS, seed=11, images="webdataset")
    config = root / "stress.yaml"
    config.write_text(CONFIG.format(root=root, stall=stall_seconds))
    return config


def in_process_build(config: Path, deadline: float) -> str:
    """'ok', 'failed', 'stalled' or 'hung' for one build run by etl.cli.main in a thread of this process."""
    from etl.cli import main

    outcome: dict[str, object] = {}

    def run() -> None:
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            outcome["code"] = main(["-q", "build", "--config", str(config), "--force"])
        outcome["err"] = err.getvalue()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        return "hung"
    return _verdict(outcome["code"], str(outcome["err"]))


def subprocess_build(config: Path, deadline: float) -> str:
    try:
        done = subprocess.run([sys.executable, "-m", "etl.cli", "-q", "build", "--config", str(config), "--force"],
                              cwd=REPO, capture_output=True, text=True, timeout=deadline)
    except subprocess.TimeoutExpired:
        return "hung"
    return _verdict(done.returncode, done.stderr)


def _verdict(code, stderr: str) -> str:
    if code == 0:
        return "ok"
    return "stalled" if "made no progress" in stderr else f"failed: {stderr.strip().splitlines()[-1:]}"


def stress(in_process: int, subprocesses: int, deadline: float, stall_seconds: float) -> dict[str, int]:
    counts = {"builds": 0, "ok": 0, "failed": 0, "stalled": 0, "hung": 0}
    with tempfile.TemporaryDirectory(prefix="laion-stress-") as folder:
        config = prepare(Path(folder), stall_seconds)
        runs = [("in-process", in_process_build)] * in_process + [("subprocess", subprocess_build)] * subprocesses
        for number, (kind, build) in enumerate(runs, 1):
            started = time.monotonic()
            verdict = build(config, deadline)
            counts["builds"] += 1
            counts[verdict.split(":")[0]] += 1
            print(f"build {number:3d} ({kind}): {verdict} in {time.monotonic() - started:.1f} s", flush=True)
            if verdict == "hung":
                break  # a hung in-process build still holds the warehouse; the figure is what matters
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-process", type=int, default=20, help="builds run in this process (default 20)")
    parser.add_argument("--subprocesses", type=int, default=10, help="builds run as subprocesses (default 10)")
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds after which a build counts as hung")
    parser.add_argument("--stall-seconds", type=float, default=60.0, help="the builds' engine_stall_seconds")
    args = parser.parse_args()
    counts = stress(args.in_process, args.subprocesses, args.deadline, args.stall_seconds)
    print("stress: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    return 0 if counts["ok"] == counts["builds"] else 1


if __name__ == "__main__":
    sys.exit(main())
