"""The `connect` engine: the same build against a remote Spark Connect endpoint (a Sail server here)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from etl.cli import main
from helpers import assert_same_rows, read_delta, write_planted_project
from planted import WIDE_SCHEMA, expected_wide_rows


@pytest.fixture
def remote_endpoint():
    from pysail.spark import SparkConnectServer

    server = SparkConnectServer(ip="127.0.0.1", port=0)
    server.start(background=True)
    host, port = server.listening_address
    yield f"sc://{host}:{port}"
    server.stop()


def test_build_through_a_remote_spark_connect_endpoint(tmp_path, remote_endpoint):
    config = write_planted_project(tmp_path, name="connect", engine="connect", extra=f"connect_url: {remote_endpoint}\n")
    assert main(["build", "--config", str(config)]) == 0
    wide = read_delta(tmp_path / "warehouse/dms/dms_laion_wide")
    expected = pa.Table.from_pylist(expected_wide_rows(tmp_path / "sources"), schema=WIDE_SCHEMA)
    assert_same_rows(wide.select(WIDE_SCHEMA.names), expected)
