"""Object-storage settings: the config's `s3` section, or the user's environment, reach every client."""

import os
from pathlib import Path

import pytest

from etl.ingest.storage import filesystem, null_counts
from etl.project.config import parse_config
from etl.s3_settings import ENGINE_VARIABLES, S3Settings, applied_s3_settings

ENDPOINT = "http://127.0.0.1:8333"


def s3_options(uri: str) -> tuple[dict, str]:
    fs, path = filesystem(uri)
    return fs.__reduce__()[1][0], path


def test_s3_endpoint_and_http_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT", "127.0.0.1:8333")
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_REGION", "us-east-1")

    options, path = s3_options("s3://laion/images/out")

    assert path == "laion/images/out"
    assert options["endpoint_override"] == "127.0.0.1:8333"
    assert (options["scheme"], options["region"]) == ("http", "us-east-1")


def test_s3_endpoint_url_scheme_wins(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localhost:9000/")
    monkeypatch.delenv("AWS_ALLOW_HTTP", raising=False)

    options, _ = s3_options("s3://laion/images")

    assert (options["endpoint_override"], options["scheme"]) == ("localhost:9000", "http")


def s3_config(**s3):
    raw = {"warehouse": "wh", "sources": {"laion2B-en": {"base": "b/*.parquet", "joined": "j/*.parquet"}}, "s3": s3}
    return parse_config(raw, base_dir=Path("/tmp"))


@pytest.fixture
def no_s3_environment(monkeypatch):
    for name in (*ENGINE_VARIABLES, "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


def test_the_config_s3_section_reaches_every_client_in_its_own_words(no_s3_environment):
    settings = S3Settings.from_config(s3_config(endpoint=ENDPOINT, max_attempts=3, timeout_seconds=2.5))

    boto3 = settings.boto3_client_kwargs()
    assert boto3["endpoint_url"] == ENDPOINT
    assert boto3["config"].retries == {"mode": "standard", "total_max_attempts": 3}
    assert (boto3["config"].connect_timeout, boto3["config"].read_timeout) == (2.5, 2.5)
    pyarrow = settings.pyarrow_kwargs("laion")
    assert (pyarrow["endpoint_override"], pyarrow["scheme"]) == ("127.0.0.1:8333", "http")
    assert (pyarrow["retry_strategy"].max_attempts, pyarrow["request_timeout"], pyarrow["connect_timeout"]) == (3, 2.5, 2.5)
    assert settings.delta_storage_options() == {"AWS_ENDPOINT_URL": ENDPOINT, "AWS_ALLOW_HTTP": "true",
                                                "AWS_TIMEOUT": "2500ms", "AWS_CONNECT_TIMEOUT": "2500ms"}
    assert settings.engine_environment() == {"AWS_ENDPOINT_URL": ENDPOINT, "AWS_ENDPOINT": ENDPOINT,
                                             "AWS_ALLOW_HTTP": "true", "AWS_MAX_ATTEMPTS": "3",
                                             "AWS_TIMEOUT": "2500ms", "AWS_CONNECT_TIMEOUT": "2500ms"}


def test_an_endpoint_in_the_config_wins_over_the_environment(no_s3_environment, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://elsewhere.example")

    assert S3Settings.from_config(s3_config(endpoint=ENDPOINT)).endpoint_url == ENDPOINT
    assert S3Settings.from_config(s3_config()).endpoint_url == "https://elsewhere.example"


def test_applied_settings_reach_the_engine_and_pyarrow_and_are_undone_after(no_s3_environment, monkeypatch):
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")
    monkeypatch.setenv("AWS_ENDPOINT", "elsewhere:9000")

    with applied_s3_settings(s3_config(endpoint=ENDPOINT, timeout_seconds=4)) as settings:
        assert {name: os.environ.get(name) for name in ENGINE_VARIABLES} == settings.engine_environment()
        options, _ = s3_options("s3://laion/x")
        assert (options["endpoint_override"], options["request_timeout"]) == ("127.0.0.1:8333", 4)

    assert {name: os.environ[name] for name in ENGINE_VARIABLES if name in os.environ} == {
        "AWS_ALLOW_HTTP": "true", "AWS_ENDPOINT": "elsewhere:9000"}
    assert s3_options("s3://laion/x")[0]["endpoint_override"] == "elsewhere:9000"


def test_a_process_without_a_config_reads_back_what_was_exported_for_it(no_s3_environment):
    settings = S3Settings.from_config(s3_config(endpoint=ENDPOINT, max_attempts=2, timeout_seconds=0.25))

    assert S3Settings.from_environment(settings.engine_environment()) == settings


def test_a_footer_states_the_nulls_of_the_columns_it_keeps_statistics_for(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"url": ["a", None, None, "d"], "score": [None, 1.0, 2.0, 3.0],
                      "pair": pa.array([{"x": 1}, None, {"x": None}, {"x": 2}])})
    pq.write_table(table, tmp_path / "all.parquet", row_group_size=3)
    assert null_counts(str(tmp_path / "all.parquet")) == {"url": 2, "score": 1}  # nested columns: unknown
    pq.write_table(table, tmp_path / "some.parquet", row_group_size=3, write_statistics=["score"])
    assert null_counts(str(tmp_path / "some.parquet")) == {"score": 1}
    pq.write_table(table.slice(0, 0), tmp_path / "empty.parquet")
    assert set(null_counts(str(tmp_path / "empty.parquet")).values()) <= {0}
