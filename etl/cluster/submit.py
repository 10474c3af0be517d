"""`laion-etl submit`: the exact `spark-submit` line for a job, run or printed.

A hand-written line has to agree with this install on half a dozen things that are easy to get
wrong: pyspark's own spark-submit (its Spark is the one the delta-spark artifact is built for),
the job script, the package shipped to the executors (the `--py-files` zip, written from the code
this process runs, so the executors run what the driver runs), the JVM artifacts and Delta's SQL
extension for the config's format, the Python the executors start, and the config's own Spark
settings. Here they come from one place; `--print` shows the line for people who keep their own.

SPARK_HOME is set to pyspark's folder: pip's spark-submit wrapper otherwise finds it by running
`python3` from PATH, which fails (or finds another Spark) in a shell where the venv is not active.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Mapping, NoReturn, Optional, Sequence

from etl.cluster.package_zip import write_package_zip
from etl.engine.artifacts import cache_folder, spark_home, write_by_content
from etl.engine.jvm_packages import jvm_packages
from etl.project.config import Config
from etl.project.resources import bundled_root

JOBS = ("build", "dq", "export")
DEPLOY_MODES = ("client", "cluster")
EXECUTOR_PYTHON = "spark.pyspark.python"
DRIVER_PYTHON = "spark.pyspark.driver.python"


@dataclass(frozen=True)
class SubmitLine:
    environment: Mapping[str, str]  # set for spark-submit, on top of the caller's environment
    argv: tuple[str, ...]  # spark-submit, its options, the job script and the job's arguments

    def shell(self) -> str:
        """The line as a shell command: one option per line, continued with backslashes."""
        prefix = " ".join(f"{name}={shlex.quote(value)}" for name, value in self.environment.items())
        head, rest = self.argv[0], list(self.argv[1:])
        lines = [f"{prefix} {shlex.quote(head)}".strip()]
        while rest and rest[0].startswith("--"):
            option, value = rest.pop(0), rest.pop(0)
            lines.append(f"    {option} {shlex.quote(value)}")
        lines.append("    " + " ".join(shlex.quote(part) for part in rest))
        return " \\\n".join(lines)


def shipped_package() -> Path:
    """The `--py-files` zip of the code this process runs (etl/cluster/package_zip.py)."""
    folder = cache_folder()
    building = folder / f".etl-{os.getpid()}.zip"
    write_package_zip(building)
    try:
        return write_by_content(folder, "etl.zip", building.read_bytes())
    finally:
        building.unlink()


def job_script(job: str, root: Optional[Traversable] = None) -> Path:
    """`jobs/<job>.py` of this install as a file spark-submit can run: the checkout's, the wheel's
    bundled copy, or, when the package is imported from a zip, a copy written to the cache."""
    entry = (root or bundled_root()).joinpath("jobs", f"{job}.py")
    if isinstance(entry, Path):
        return entry
    return write_by_content(cache_folder() / "jobs", f"{job}.py", entry.read_bytes())


def submit_line(config: Config, job: str, job_args: Sequence[str], master: Optional[str] = None,
                deploy_mode: str = "client", executor_python: Optional[str] = None) -> SubmitLine:
    """The spark-submit line that runs `jobs/<job>.py job_args` for `config`.

    The master is `master`, else the config's `spark.master`. The executors' Python is
    `executor_python`, else the config's `spark.conf` entry `spark.pyspark.python`, else this
    interpreter. In client mode the driver runs here, on this interpreter; in cluster mode it
    runs beside the executors, on theirs.
    """
    from etl.engine.jvm_hash import with_hash_jar  # the engine's imports, only when needed
    from etl.engine.session import jvm_settings, quiet_driver_settings

    settings = jvm_settings(config)
    if deploy_mode == "client":  # the driver starts here: its log configuration is a file here
        settings.update(quiet_driver_settings(settings))
    python = executor_python or settings.get(EXECUTOR_PYTHON) or sys.executable
    settings[EXECUTOR_PYTHON] = python
    settings.setdefault(DRIVER_PYTHON, sys.executable if deploy_mode == "client" else python)
    home = spark_home()
    argv = [str(home / "bin" / "spark-submit"), "--master", master or config.spark.master,
            "--deploy-mode", deploy_mode]
    packages = jvm_packages(config.format, config.uses_s3)
    if packages:
        argv += ["--packages", ",".join(packages)]
    argv += ["--py-files", str(shipped_package())]
    jars = with_hash_jar(settings.pop("spark.jars", None))  # the JVM laion_hash, built from this code
    if jars:
        argv += ["--jars", jars]
    for key, value in settings.items():
        argv += ["--conf", f"{key}={value}"]
    argv += [str(job_script(job)), *job_args]
    return SubmitLine(environment={"SPARK_HOME": str(home)}, argv=tuple(argv))


def run(line: SubmitLine) -> NoReturn:
    """Become spark-submit: its exit code is the command's, and signals reach it directly."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(line.argv[0], list(line.argv), {**os.environ, **line.environment})
