"""Object-storage settings reach pyarrow from the environment, as they reach Sail and boto3."""

from etl.ingest.storage import filesystem


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
