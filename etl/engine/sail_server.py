"""The embedded engine's Spark Connect server, run in a child process the build can kill.

Run inside the build's own process, a Sail server that stops answering takes the build with it:
a query's gRPC call waits in C for good and `SparkSession.stop()` blocks as well (seen in this
project's test runs: CPU idle, a Great Expectations `collect` waiting for over 15 minutes). In a
child process it can be killed; the pending call then fails at once and the build reports
which table and step stalled. The child ignores Ctrl-C (the build decides when it ends) and
exits when its parent's end of the pipe closes, so a killed build leaves no server behind.

Run as `python -m etl.engine.sail_server`: prints `listening <host> <port>`, then serves until
its standard input closes.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Optional

READY_PREFIX = "listening "
START_TIMEOUT_SECONDS = 60.0


class ServerStartError(RuntimeError):
    """The child process did not start a server."""


class SailServerProcess:
    """A Sail Spark Connect server in a child process: its URL, its CPU time, and a kill switch."""

    def __init__(self) -> None:
        env = dict(os.environ)
        # Sail logs every session start and shutdown at INFO; a user's RUST_LOG still wins.
        env.setdefault("RUST_LOG", "error")
        # The child imports etl (the LAION hash UDF runs in the server) from wherever this process does.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "etl.engine.sail_server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, text=True)
        self.host, self.port = self._await_address()

    def _await_address(self) -> tuple[str, int]:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._process.stdout], [], [], 0.5)
            if ready:
                line = self._process.stdout.readline()
                if line.startswith(READY_PREFIX):
                    host, port = line[len(READY_PREFIX):].split()
                    return host, int(port)
                if not line:
                    break
            if self._process.poll() is not None:
                break
        self.kill()
        raise ServerStartError(f"the Sail server process did not start within {START_TIMEOUT_SECONDS:.0f} s "
                               f"(exit code {self._process.returncode})")

    @property
    def url(self) -> str:
        return f"sc://{self.host}:{self.port}"

    def connect(self):
        """A Spark Connect session on this server that gives up on it within seconds once it is gone.

        The client's default policy retries an unreachable server for ten minutes; for a server
        on this machine that the build killed, that is ten minutes of hanging for nothing.
        """
        from pyspark.sql import SparkSession

        # create(), not getOrCreate(): the latter hands back any session this process already has
        # (Spark Connect's default session), whatever server it is on.
        spark = SparkSession.builder.remote(self.url).create()
        spark.client.set_retry_policies([local_server_retry_policy()])
        return spark

    @property
    def pid(self) -> int:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.poll() is None

    def cpu_seconds(self) -> Optional[float]:
        """CPU time the server has used so far (Linux /proc); None where that cannot be read."""
        return process_cpu_seconds(self._process.pid)

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Close its standard input (it exits by itself); kill it if it is still there after `grace_seconds`."""
        if self._process.poll() is None:
            try:
                self._process.stdin.close()
            except OSError:
                pass
            try:
                self._process.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        for stream in (self._process.stdin, self._process.stdout):
            try:
                stream.close()
            except OSError:
                pass


GARBLED_RESPONSE = "Exception deserializing response"  # grpc's words for a reply protobuf could not parse


def local_server_retry_policy():
    """pyspark's retries on an unreachable server, given up within seconds (see `connect`), and
    also on a single reply (not a query's stream) that gRPC received whole but could not decode.

    That happened once in a CI run of the suite, to the first schema request of a build
    (`AnalyzePlanResponse`: "Wire format was corrupt"); the same request passed on every other
    run: a transient fault of the client's decoding under load, which gRPC's Python users know
    without a cause. Asking again for a schema (or a setting) changes nothing. A query's stream is
    not asked again: Sail forgets an operation whose stream broke, so resuming it fails anyway,
    and the error should say what broke (the query fails; no result is ever cut short).
    """
    import grpc
    from pyspark.sql.connect.client.retries import DefaultPolicy

    class LocalServerRetryPolicy(DefaultPolicy):
        def can_retry(self, exception: BaseException) -> bool:
            return super().can_retry(exception) or (
                isinstance(exception, grpc.RpcError) and not isinstance(exception, Iterator)
                and exception.code() == grpc.StatusCode.INTERNAL and GARBLED_RESPONSE in (exception.details() or ""))

    return LocalServerRetryPolicy(max_retries=4, initial_backoff=50, max_backoff=2000)


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_stat(pid: int) -> Optional[list[str]]:
    """The fields of /proc/<pid>/stat after the command name (state first, utime 12th); None where
    that cannot be read. The name may hold spaces and parentheses, so the split is at the last ')'."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu_seconds(pid: int) -> Optional[float]:
    """CPU time the process has used so far (user + system); None where /proc cannot tell."""
    fields = process_stat(pid)
    # stat's fields 14 and 15 (1-based): utime and stime, in clock ticks.
    return None if fields is None else (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _arrow_backed_pandas_strings() -> None:
    """Let Sail hand a pandas UDF its string columns as Arrow-backed pandas strings.

    The server runs the UDFs in this process, through pyarrow's `to_pandas`: by default that
    copies every value into a Python str and `laion_hash` copies it back into Arrow (the SQL
    `laion_hash(url, text)` took 7.4 s for 10M rows, 2.4 s this way; bench/hash_bench.py). This
    process runs nothing but the engine and its UDFs, so pandas' option is set here only, never
    in a user's process.
    """
    import pandas as pd

    pd.options.future.infer_string = True


def main() -> None:
    from pysail.spark import SparkConnectServer

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _arrow_backed_pandas_strings()
    server = SparkConnectServer(ip="127.0.0.1", port=0)
    server.start(background=True)
    host, port = server.listening_address
    print(f"{READY_PREFIX}{host} {port}", flush=True)
    sys.stdin.read()  # until the parent closes the pipe or dies
    # Nothing of a build lives only in the server (Delta commits are atomic), and a server that
    # stopped answering may not stop politely either.
    os._exit(0)


if __name__ == "__main__":
    main()
