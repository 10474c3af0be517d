"""JVM Spark on object storage: sources read from and the Delta warehouse written to `s3://`
through hadoop-aws (S3A), driven by the config's `s3` section and the AWS variables alone.

One spark-submit build on local[2] (with the `--conf` entries `jvm_s3_conf` renders, as
`laion-etl submit` passes them) and one Sail build read the planted sources from a SeaweedFS
bucket; delta-rs reads both wide tables back from S3 and they hold the same rows. The JVM
processes get the credentials but no endpoint from the environment: it comes from the config.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import boto3
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from etl.cli import main
from etl.engine.jvm_packages import jvm_packages
from etl.project.config import load_config
from etl.s3_settings import jvm_s3_conf
from helpers import REPO, assert_same_rows, need_java
from planted import planted_config, write_planted_sources
from test_jvm import jvm_env

BUCKET = "jvm-lake"
SOURCES = f"s3://{BUCKET}/sources"
WIDE = "dms/dms_laion_wide"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ALLOW_HTTP")


def s3_config(path: Path, warehouse: str, engine: str, endpoint: str) -> Path:
    path.write_text(planted_config(SOURCES, f"s3://{BUCKET}/{warehouse}", engine=engine) + f"""
s3:
  endpoint: {endpoint}
  max_attempts: 4
  timeout_seconds: 20
reports: {path.parent / 'reports'}
""")
    return path


def test_s3a_settings_come_from_the_config_and_hold_no_credential(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID0001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-secret-that-must-not-leak")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    for name in ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    config = load_config(str(s3_config(tmp_path / "s3.yaml", "wh", "spark", "http://127.0.0.1:8333")))
    conf = jvm_s3_conf(config)
    hadoop = {k.removeprefix("spark.hadoop."): v for k, v in conf.items() if k.startswith("spark.hadoop.")}
    assert hadoop == {
        "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
        "fs.s3a.endpoint": "http://127.0.0.1:8333", "fs.s3a.path.style.access": "true",
        "fs.s3a.connection.ssl.enabled": "false", "fs.s3a.endpoint.region": "eu-west-3",
        "fs.s3a.s3.signing-algorithm": "AWS4UnsignedPayloadSignerType",
        "fs.s3a.attempts.maximum": "3", "fs.s3a.retry.limit": "3", "fs.s3a.retry.throttle.limit": "3",
        "fs.s3a.connection.establish.timeout": "20000ms", "fs.s3a.connection.timeout": "20000ms"}
    workers = {k.removeprefix("spark.executorEnv."): v for k, v in conf.items() if k.startswith("spark.executorEnv.")}
    assert workers["AWS_ENDPOINT_URL"] == "http://127.0.0.1:8333" and workers["AWS_MAX_ATTEMPTS"] == "4"
    assert len(hadoop) + len(workers) == len(conf)
    rendered = repr(conf)
    assert "AKIAEXAMPLEKEYID0001" not in rendered and "a-secret-that-must-not-leak" not in rendered

    https = load_config(str(s3_config(tmp_path / "https.yaml", "wh", "spark", "https://s3.example.org")))
    assert jvm_s3_conf(https)["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
    assert "spark.hadoop.fs.s3a.s3.signing-algorithm" not in jvm_s3_conf(https)  # the SDK's own signer
    (tmp_path / "plain.yaml").write_text(planted_config(tmp_path / "sources", tmp_path / "warehouse", engine="spark"))
    assert jvm_s3_conf(load_config(str(tmp_path / "plain.yaml"))) == {}


@pytest.fixture(scope="module")
def lake(s3_endpoint, tmp_path_factory):
    """The planted sources in a bucket; the same sources built by spark-submit and by Sail, both into S3."""
    need_java()
    root = tmp_path_factory.mktemp("jvm_s3")
    write_planted_sources(root / "sources")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    client.create_bucket(Bucket=BUCKET)
    for path in sorted(p for p in (root / "sources").rglob("*") if p.is_file()):
        client.upload_file(str(path), BUCKET, f"sources/{path.relative_to(root / 'sources').as_posix()}")
    jvm_config = s3_config(root / "jvm.yaml", "jvm_warehouse", "spark", s3_endpoint)
    environment = {**{k: v for k, v in jvm_env().items() if k not in ENDPOINT_VARIABLES}, **CREDENTIALS}
    conf = jvm_s3_conf(load_config(str(jvm_config)))
    command = [str(Path(sys.executable).with_name("spark-submit")), "--master", "local[2]",
               "--conf", "spark.ui.enabled=false", "--packages", ",".join(jvm_packages("delta", uses_s3=True)),
               *(arg for key, value in conf.items() for arg in ("--conf", f"{key}={value}")),
               str(REPO / "jobs" / "build.py"), "--config", str(jvm_config)]
    submitted = subprocess.run(command, env=environment, cwd=root, capture_output=True, text=True, timeout=600)
    assert submitted.returncode == 0, submitted.stdout[-4000:] + submitted.stderr[-4000:]
    with pytest.MonkeyPatch.context() as env:
        for name, value in CREDENTIALS.items():
            env.setenv(name, value)
        for name in ENDPOINT_VARIABLES:
            env.delenv(name, raising=False)
        assert main(["build", "--config", str(s3_config(root / "sail.yaml", "sail_warehouse", "sail", s3_endpoint))]) == 0
    return root, s3_endpoint, submitted


def read_wide(endpoint: str, warehouse: str) -> pa.Table:
    options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", **CREDENTIALS}
    return DeltaTable(f"s3://{BUCKET}/{warehouse}/{WIDE}", storage_options=options).to_pyarrow_table()


@pytest.mark.jvm
def test_jvm_build_on_s3_gives_the_rows_of_a_sail_build(lake):
    _, endpoint, submitted = lake
    assert "6 tables built" in submitted.stdout
    jvm, sail = read_wide(endpoint, "jvm_warehouse"), read_wide(endpoint, "sail_warehouse")
    assert sail.num_rows == 6
    assert_same_rows(jvm.select(sail.column_names).cast(sail.schema), sail)
    # The image index was read from the bucket (by the Python workers): paths name the S3 folder.
    assert {p.split("/images/")[0] for p in jvm.column("image_path").to_pylist() if p} == {SOURCES}


@pytest.mark.jvm
def test_analyst_sql_on_the_jvm_reads_the_s3_warehouse(lake):
    root, endpoint, _ = lake
    environment = {**{k: v for k, v in jvm_env().items() if k not in ENDPOINT_VARIABLES}, **CREDENTIALS}
    query = "select subset, count(*) as n from laion.dms_laion_wide group by subset order by subset"
    result = subprocess.run([sys.executable, "-m", "etl.cli", "sql", "--config", str(root / "jvm.yaml"), query],
                            env={**environment, "PYTHONPATH": str(REPO)}, cwd=root, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = pa.table({"subset": read_wide(endpoint, "jvm_warehouse").column("subset")}).group_by("subset").aggregate(
        [("subset", "count")]).sort_by("subset").to_pylist()
    printed = [line.split() for line in result.stdout.splitlines()]
    for row in counts:
        assert [row["subset"], str(row["subset_count"])] in printed, result.stdout
    assert "2 rows" in result.stdout
