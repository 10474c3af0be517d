"""The `connect` engine: the same build against a remote Spark Connect endpoint (a Sail server here)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from conftest import assert_same_rows, read_delta
from etl.cli import main
from planted import WIDE_SCHEMA, expected_wide_rows, planted_config, write_planted_sources


@pytest.fixture
def remote_endpoint():
    from pysail.spark import SparkConnectServer

    server = SparkConnectServer(ip="127.0.0.1", port=0)
    server.start(background=True)
    host, port = server.listening_address
    yield f"sc://{host}:{port}"
    server.stop()


def test_build_through_a_remote_spark_connect_endpoint(tmp_path, remote_endpoint):
    write_planted_sources(tmp_path / "sources")
    config = tmp_path / "connect.yaml"
    config.write_text(planted_config(tmp_path / "sources", tmp_path / "warehouse", engine="connect")
                      + f"connect_url: {remote_endpoint}\n")
    assert main(["build", "--config", str(config)]) == 0
    wide = read_delta(tmp_path / "warehouse/dms/dms_laion_wide")
    expected = pa.Table.from_pylist(expected_wide_rows(tmp_path / "sources"), schema=WIDE_SCHEMA)
    assert_same_rows(wide.select(WIDE_SCHEMA.names), expected)
