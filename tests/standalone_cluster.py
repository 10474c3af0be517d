"""A real Spark standalone cluster for tests: a master and workers, each its own JVM started from
pyspark's `bin/spark-class`, on 127.0.0.1, one core each.

Every JVM runs in a process group of its own; the executors a worker starts, and their Python
daemons, stay in the worker's group. Stopping kills the groups and then looks for anything left
(by group, and by the cluster's folder in a command line, which the executors' Python workers,
in groups of their own, carry through their interpreter's path when it lives there): a test run
must never leave a JVM behind, failed tests included.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from etl.engine.artifacts import spark_home
from helpers import free_port

START_DEADLINE = 120  # seconds for the master and every worker to be up, on a busy CI machine
STOP_GRACE = 10  # seconds a JVM gets to end its executors after SIGTERM, before SIGKILL
MASTER_URL = r"Starting Spark master at (spark://\S+)"
MASTER_UI = r"Successfully started service 'MasterUI' on port (\d+)"


class ClusterStartError(RuntimeError):
    pass


def cluster_environment(extra: dict | None = None) -> dict:
    """The environment of the cluster's JVMs: no PYTHONPATH (the executors must not see this
    repository) and no Spark Connect mode left by an in-process Sail session."""
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPARK_CONNECT_MODE_ENABLED")}
    return {**environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1", **(extra or {})}


class StandaloneCluster:
    """`with StandaloneCluster(folder, workers=2) as cluster:` ... `cluster.master_url`."""

    def __init__(self, root: Path, workers: int = 2, cores: int = 1, memory: str = "1g"):
        self.root, self.workers, self.cores, self.memory = root, workers, cores, memory
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.master_url = ""
        self.web_url = ""

    def __enter__(self) -> "StandaloneCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spark_class(self, name: str, main_class: str, *args: str) -> Path:
        log = self.root / f"{name}.log"
        with open(log, "wb") as out:
            self.processes.append(subprocess.Popen(
                [str(spark_home() / "bin" / "spark-class"), main_class, *args], cwd=self.root,
                env=cluster_environment(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        self.logs.append(log)
        return log

    def worker_dir(self, number: int) -> Path:
        return self.root / f"worker{number}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + START_DEADLINE
        master_log = self._spark_class("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                       "--port", str(free_port()), "--webui-port", str(free_port()))
        # The ports actually bound: Spark moves to the next port when one was taken meanwhile.
        self._wait(deadline, lambda: _log_match(master_log, MASTER_URL) and _log_match(master_log, MASTER_UI),
                   "the master to start")
        self.master_url = _log_match(master_log, MASTER_URL)
        self.web_url = f"http://127.0.0.1:{_log_match(master_log, MASTER_UI)}"
        for number in range(1, self.workers + 1):
            self._spark_class(f"worker{number}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                              "--webui-port", str(free_port()), "--cores", str(self.cores), "--memory", self.memory,
                              "--work-dir", str(self.worker_dir(number)), self.master_url)
        self._wait(deadline, lambda: self.state().get("aliveworkers") == self.workers,
                   f"{self.workers} workers to register with the master")

    def _wait(self, deadline: float, ready, what: str) -> None:
        while time.monotonic() < deadline:
            dead = [p.args[1] for p in self.processes if p.poll() is not None]
            if dead:
                raise ClusterStartError(f"{', '.join(dead)} exited while waiting for {what}\n{self.log_tails()}")
            try:
                if ready():
                    return
            except OSError:  # the web UI is not listening yet
                pass
            time.sleep(0.5)
        raise ClusterStartError(f"timed out after {START_DEADLINE} s waiting for {what}\n{self.log_tails()}")

    def state(self) -> dict:
        """The master's own account: workers, cores, running and completed applications."""
        with urllib.request.urlopen(f"{self.web_url}/json/", timeout=5) as response:
            return json.load(response)

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                         for log in self.logs if log.exists())

    def survivors(self) -> list[str]:
        """Processes of this cluster still alive (zombies aside): its JVMs' groups, and anything
        whose command line names the cluster's folder."""
        groups = {p.pid for p in self.processes}
        listing = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True,
                                 check=True).stdout
        alive = []
        for line in listing.splitlines():
            pid, pgid, stat, args = line.split(None, 3)
            if stat.startswith("Z") or int(pid) == os.getpid():
                continue
            if int(pgid) in groups or str(self.root) in args:
                alive.append(line.strip())
        return alive

    def stop(self) -> None:
        """SIGTERM to every group (a worker ends its executors), SIGKILL after the grace, then
        fail naming any process still alive."""
        for signum, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, STOP_GRACE)):
            for process in self.processes:
                try:
                    os.killpg(process.pid, signum)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.survivors():
                for process in self.processes:
                    process.poll()  # reap our own children so they stop counting
                time.sleep(0.2)
            if not self.survivors():
                return
        raise AssertionError("processes of the standalone cluster survived SIGKILL:\n" + "\n".join(self.survivors()))


def _log_match(log: Path, pattern: str) -> str:
    found = re.search(pattern, log.read_text(errors="replace")) if log.exists() else None
    return found.group(1) if found else ""
