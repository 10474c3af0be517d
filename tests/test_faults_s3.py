"""Object-storage faults: throttling, server errors and hung requests between the pipeline and S3.

Sources, warehouse and exports live on a SeaweedFS server on loopback, and every S3 client of
the project (pyarrow planning the build, Sail reading and writing the tables, delta-rs reading
versions, boto3 uploading exports) reaches it through tests/faultproxy.py. A transient fault must
be retried with backoff and leave exactly what a run without faults leaves; a permanent one must
fail the run with one line naming the S3 object and the operation, and publish nothing.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import boto3
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from etl.cli import main
from etl.project.config import ConfigError, load_config
from etl.project.project import load_project
from faultproxy import FORWARD, STALL, FaultProxy, Rule
from helpers import assert_same_rows, one_line
from planted import expected_wide_rows, planted_config, write_planted_sources

BUCKET = "lake"
SOURCES = f"s3://{BUCKET}/sources"
WIDE = "dms/dms_laion_wide"
TIMEOUT_SECONDS = 2  # the configured request timeout; a stall lasts far longer
STALL_SECONDS = 30
PYARROW, ENGINE, BOTO3 = "aws-sdk-cpp", "object_store", "Boto3"  # User-Agent marks of the clients
# Every variable the CLI exports for the S3 clients: set here first, so the test process gets
# its own environment back when the module ends.
EXPORTED = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ALLOW_HTTP", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE",
            "AWS_TIMEOUT", "AWS_CONNECT_TIMEOUT")


@dataclass
class Lake:
    proxy: FaultProxy
    direct: str  # SeaweedFS itself, for checks that must not go through the faults
    client: object  # boto3, direct
    root: Path  # local scratch folder (configs, reports)

    def config(self, warehouse: str) -> Path:
        path = self.root / f"{warehouse}.yaml"
        path.write_text(planted_config(SOURCES, f"s3://{BUCKET}/{warehouse}") + f"""
s3:
  endpoint: {self.proxy.endpoint}
  max_attempts: 5
  timeout_seconds: {TIMEOUT_SECONDS}
reports: {self.root / 'reports'}
""")
        return path

    def table(self, warehouse: str, table: str = WIDE) -> DeltaTable:
        return DeltaTable(f"s3://{BUCKET}/{warehouse}/{table}", storage_options=self._direct_options())

    def has_table(self, warehouse: str, table: str = WIDE) -> bool:
        return DeltaTable.is_deltatable(f"s3://{BUCKET}/{warehouse}/{table}", storage_options=self._direct_options())

    def _direct_options(self) -> dict:
        return {"AWS_ENDPOINT_URL": self.direct, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}

    def keys(self, prefix: str) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for o in listed.get("Contents", []))


@pytest.fixture(scope="module")
def lake(s3_endpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("s3faults")
    local_sources = root / "sources"
    write_planted_sources(local_sources)
    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    for path in sorted(p for p in local_sources.rglob("*") if p.is_file()):
        client.upload_file(str(path), BUCKET, f"sources/{path.relative_to(local_sources).as_posix()}")
    with pytest.MonkeyPatch.context() as env, FaultProxy(s3_endpoint) as proxy:
        for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"),
                            ("AWS_REGION", "us-east-1")):
            env.setenv(name, value)
        for name in EXPORTED:
            env.setenv(name, "unset by the test")  # recorded for restoring, then cleared
            env.delenv(name)
        # An export to s3:// stages its shards under the temp folder; a failed one leaves them
        # there to resume, which must not leak into the next test session.
        env.setattr(tempfile, "tempdir", str(root / "tmp"))
        (root / "tmp").mkdir()
        yield Lake(proxy=proxy, direct=s3_endpoint, client=client, root=root)


@pytest.fixture(scope="module")
def baseline(lake) -> pa.Table:
    """The wide table built on S3 without faults: the planted rows, image paths on S3."""
    assert main(["build", "--config", str(lake.config("baseline"))]) == 0
    wide = lake.table("baseline").to_pyarrow_table()
    local = str(lake.root / "sources")
    expected = [{**row, "image_path": row["image_path"] and row["image_path"].replace(local, SOURCES)}
                for row in expected_wide_rows(lake.root / "sources")]
    actual = wide.select(list(expected[0]))
    assert_same_rows(actual, pa.Table.from_pylist(expected, schema=actual.schema))
    return wide


@pytest.fixture
def proxy(lake):
    lake.proxy.clear()
    yield lake.proxy
    lake.proxy.clear()


def build(lake, warehouse: str, *extra: str):
    return main(["build", "--config", str(lake.config(warehouse)), *extra])


def assert_recovered(proxy: FaultProxy, rule: Rule) -> None:
    """Every fault of `rule` was applied, and each faulted request was later answered for real."""
    seen = proxy.seen(rule.path_contains, rule.method, rule.agent)
    faulted = proxy.faulted(rule)
    assert len(faulted) == rule.times, f"{rule}: faults applied {len(faulted)}, log {seen}"
    for fault in faulted:
        assert any(s.action == FORWARD and s.target == fault.target and s.at > fault.at
                   and s.status is not None and s.status < 300
                   for s in seen), f"{fault} was never retried successfully: {seen}"


def assert_gave_up_early(proxy: FaultProxy, rule: Rule) -> None:
    """The stalled request was retried within a fraction of the stall: the client's timeout fired."""
    seen = proxy.seen(rule.path_contains, rule.method, rule.agent)
    stalled = proxy.faulted(rule)[0]
    retried = next(s for s in seen if s.at > stalled.at)
    assert retried.at - stalled.at < STALL_SECONDS / 2, f"{rule.agent} waited out the stall: {seen}"


# --- (a) transient faults: retried, same table ---------------------------------------------------

def test_throttling_while_planning_is_retried(lake, baseline, proxy, capsys):
    rules = [proxy.add(Rule("slow_down", "list-type=2", method="GET", agent=PYARROW, times=2)),
             proxy.add(Rule("slow_down", "/sources/laion2B-en/part-00001.parquet", agent=PYARROW, times=3)),
             proxy.add(Rule("internal_error", "/sources/laion2B-en-joined/part-00000.parquet", agent=PYARROW,
                            times=2))]
    assert build(lake, "wh-planning") == 0, capsys.readouterr().err
    for rule in rules:
        assert_recovered(proxy, rule)
    assert_same_rows(lake.table("wh-planning").to_pyarrow_table(), baseline)


def test_server_errors_while_the_engine_reads_are_retried(lake, baseline, proxy, capsys):
    # The two files Sail scans itself (the others hold constant float columns: pyarrow reads them).
    rules = [proxy.add(Rule("slow_down", "/sources/laion2B-en-joined/part-00000.parquet", method="GET",
                            agent=ENGINE, times=3)),
             proxy.add(Rule("internal_error", "/sources/laion2B-en/part-00000.parquet", method="GET",
                            agent=ENGINE, times=2))]
    assert build(lake, "wh-reading") == 0, capsys.readouterr().err
    for rule in rules:
        assert_recovered(proxy, rule)
    assert_same_rows(lake.table("wh-reading").to_pyarrow_table(), baseline)


def test_a_stalled_read_times_out_and_is_retried(lake, baseline, proxy, capsys):
    """One request of each reader hangs; each gives up after the configured timeout, not the stall."""
    rules = [proxy.add(Rule(STALL, "/sources/laion2B-en/part-00000.parquet", method="GET", agent=PYARROW,
                            times=1, stall_seconds=STALL_SECONDS)),
             proxy.add(Rule(STALL, "/sources/laion2B-en-joined/part-00000.parquet", method="GET", agent=ENGINE,
                            times=1, stall_seconds=STALL_SECONDS))]
    assert build(lake, "wh-stall") == 0, capsys.readouterr().err
    for rule in rules:
        assert_recovered(proxy, rule)
        assert_gave_up_early(proxy, rule)
    assert_same_rows(lake.table("wh-stall").to_pyarrow_table(), baseline)


def test_throttled_table_writes_are_retried(lake, baseline, proxy, capsys):
    rules = [proxy.add(Rule("slow_down", "/wh-writing/dms/dms_laion_wide/subset%3D", method="PUT", agent=ENGINE,
                            times=2)),
             proxy.add(Rule("slow_down", "/wh-writing/dms/dms_laion_wide/_delta_log/00000000000000000000.json",
                            method="PUT", agent=ENGINE, times=2)),
             proxy.add(Rule("internal_error", "/wh-writing/ods/ods_laion_joined/", method="PUT", agent=ENGINE,
                            times=1))]
    assert build(lake, "wh-writing") == 0, capsys.readouterr().err
    for rule in rules:
        assert_recovered(proxy, rule)
    table = lake.table("wh-writing")
    assert table.version() == 0  # one commit: the retried commit was not written twice
    assert_same_rows(table.to_pyarrow_table(), baseline)


# --- (b) permanent faults: one clear line, nothing new published ---------------------------------

def test_a_permanent_server_error_on_a_commit_fails_the_build_and_keeps_the_version(lake, baseline, proxy, capsys):
    before = lake.table("baseline").version()
    rule = proxy.add(Rule("internal_error", "/baseline/dms/dms_laion_wide/_delta_log/", method="PUT"))
    assert build(lake, "baseline", "--layers", "dms", "--force") == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith("laion-etl: failed: dms_laion_wide (s3://lake/baseline/dms/dms_laion_wide)"), line
    assert "S3 InternalError" in line and "/lake/baseline/dms/dms_laion_wide/_delta_log/" in line, line
    assert len(proxy.faulted(rule)) == 11  # Sail's object_store: 10 retries (not settable), then it gives up
    table = lake.table("baseline")
    assert table.version() == before
    assert_same_rows(table.to_pyarrow_table(), baseline)


def test_a_permanent_throttle_while_planning_fails_the_build_before_any_table(lake, baseline, proxy, capsys):
    rule = proxy.add(Rule("slow_down", "/sources/laion2B-en-joined/part-00000.parquet", agent=PYARROW))
    assert build(lake, "wh-unreachable") == 1
    line = one_line(capsys.readouterr().err)
    assert "s3://lake/sources/laion2B-en-joined/part-00000.parquet" in line and "HTTP status 503" in line, line
    assert len(proxy.faulted(rule)) == 5  # s3.max_attempts
    assert not any(lake.has_table("wh-unreachable", f"{table.layer}/{table.name}") for table in load_project().tables)


def test_an_unreachable_source_is_not_skipped_as_a_bad_file(lake, baseline, proxy, capsys):
    """`on_bad_file: skip` is for broken files; a source S3 cannot serve must stop the run, or
    the table would be published without its rows."""
    config = lake.config("wh-skip")
    config.write_text(config.read_text() + "on_bad_file: skip\n")
    proxy.add(Rule("slow_down", "/sources/laion2B-en/part-00000.parquet", agent=PYARROW))
    assert main(["build", "--config", str(config)]) == 1
    line = one_line(capsys.readouterr().err)
    assert "s3://lake/sources/laion2B-en/part-00000.parquet" in line and "HTTP status 503" in line, line
    assert not any(lake.has_table("wh-skip", f"{table.layer}/{table.name}") for table in load_project().tables)


# --- (c) exports to S3 ---------------------------------------------------------------------------

def export(lake, out: str):
    return main(["export", "--config", str(lake.config("baseline")), "--where", "url is not null",
                 "--rows-per-shard", "2", "--out", f"s3://{BUCKET}/{out}"])


def manifest(lake, out: str) -> dict:
    published = json.loads(lake.client.get_object(Bucket=BUCKET, Key=f"{out}/manifest.json")["Body"].read())
    return {key: value for key, value in published.items() if key != "img2dataset"}  # names the folder


def test_export_with_throttled_and_stalled_uploads_gives_the_same_manifest(lake, baseline, proxy, capsys):
    assert export(lake, "exports/clean") == 0, capsys.readouterr().err
    proxy.clear()
    rules = [proxy.add(Rule("slow_down", "/exports/faulty/shards/", method="PUT", agent=BOTO3, times=3)),
             proxy.add(Rule(STALL, "/exports/faulty/shards/part-00001.parquet", method="PUT", agent=BOTO3, times=1,
                            stall_seconds=STALL_SECONDS)),
             proxy.add(Rule("internal_error", "/exports/faulty/manifest.json", method="PUT", times=1)),
             proxy.add(Rule("slow_down", "/exports/faulty/_SUCCESS", method="PUT", times=1))]
    assert export(lake, "exports/faulty") == 0, capsys.readouterr().err
    for rule in rules:
        assert_recovered(proxy, rule)
    assert_gave_up_early(proxy, rules[1])
    assert manifest(lake, "exports/faulty") == manifest(lake, "exports/clean")
    assert manifest(lake, "exports/faulty")["totals"]["rows"] == baseline.num_rows
    assert [k.split("/", 2)[2] for k in lake.keys("exports/faulty/")] == \
        [k.split("/", 2)[2] for k in lake.keys("exports/clean/")]


def test_export_with_a_permanent_upload_failure_publishes_no_manifest(lake, baseline, proxy, capsys):
    rule = proxy.add(Rule("internal_error", "/exports/broken/shards/part-00001.parquet", method="PUT"))
    assert export(lake, "exports/broken") == 1
    line = one_line(capsys.readouterr().err)
    assert "exports/broken/shards/part-00001.parquet" in line and "InternalError" in line, line
    assert len(proxy.faulted(rule)) == 5  # s3.max_attempts
    published = lake.keys("exports/broken/")
    assert "exports/broken/manifest.json" not in published and "exports/broken/_SUCCESS" not in published


# --- the settings themselves ---------------------------------------------------------------------

@pytest.mark.parametrize("section, message", [
    ("max_attempts: 0", r"^s3\.max_attempts: must be a positive integer"),
    ("max_attempts: two", r"^s3\.max_attempts: must be a positive integer"),
    ("timeout_seconds: 0", r"^s3\.timeout_seconds: must be a positive number"),
    ("timeout_seconds: soon", r"^s3\.timeout_seconds: must be a positive number"),
    ("endpoint: 127.0.0.1:8333", r"^s3\.endpoint: must be an http:// or https:// URL"),
    ("retries: 3", r"^s3\.retries: unknown key"),
])
def test_s3_settings_are_validated(tmp_path, section, message):
    path = tmp_path / "c.yaml"
    path.write_text(planted_config(SOURCES, str(tmp_path / "wh")) + f"s3:\n  {section}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})
