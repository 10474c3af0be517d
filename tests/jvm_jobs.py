"""The jobs in `jobs/` run the way the README runs them on one machine: spark-submit on local[2]
with delta-spark and the JVM laion_hash jar (what `laion-etl submit` passes), each in a process of
its own (the engine is chosen once per process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from etl.engine.jvm_hash import build_jar
from etl.engine.jvm_packages import DELTA_SPARK
from helpers import REPO


def jvm_env() -> dict:
    # An in-process Sail session leaves SPARK_CONNECT_MODE_ENABLED set; the JVM job must not see it.
    environ = {k: v for k, v in os.environ.items() if k != "SPARK_CONNECT_MODE_ENABLED"}
    return {**environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1"}


def spark_submit(*args: str, job: str = "build.py") -> subprocess.CompletedProcess:
    """`jobs/<job> *args` under spark-submit; spark-submit merges the job's stderr into its stdout."""
    submit = Path(sys.executable).with_name("spark-submit")
    command = [str(submit), "--master", "local[2]", "--conf", "spark.ui.enabled=false", "--packages", DELTA_SPARK,
               "--jars", str(build_jar()), str(REPO / "jobs" / job), *args]
    return subprocess.run(command, env=jvm_env(), capture_output=True, text=True, timeout=600)
