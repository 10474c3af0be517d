"""Least privilege and hygiene: no credential in any artefact, no name escaping its folder, and a
`--where` that can only ever be a filter.

Credentials: build, dq and export run against a SeaweedFS S3 server with unique marker strings as
the AWS keys (SeaweedFS, started without an identity config, accepts any keys), plus runs whose
S3 access fails (a bucket that does not exist, an endpoint nobody listens on), some with
`--verbose`. Then every artefact is searched for the markers: every file under the run's folder
(warehouse with `_delta_log`, reports, configs, export staging), every object in every bucket
(shards, manifest), parquet files also decoded (a compressed page could hide a marker from a
byte search), and each run's captured stdout and stderr (its log lines).
"""

from __future__ import annotations

import io
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from etl.project.config import ConfigError, load_config
from etl.project.project import load_project
from etl.export.filters import FilterError, load_presets, resolve_filter, validate_predicate
from helpers import REPO, write_planted_project
from planted import planted_config, write_planted_sources

ACCESS_KEY_ID = "AKIDMARKER" + secrets.token_hex(5).upper()
SECRET_ACCESS_KEY = "secretmarker" + secrets.token_hex(14)
MARKERS = (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
WIDE_COLUMNS = load_project().wide_table.contract.column_types


# ---------------------------------------------------------------------------------------------
# credentials


def leaks(data: bytes) -> list[str]:
    """Which credential markers `data` holds, searched as bytes and, for parquet, as decoded values."""
    found = [marker for marker in MARKERS if marker.encode() in data]
    if data[:4] == b"PAR1":
        text = str(pq.read_table(io.BytesIO(data)).to_pylist())
        found += [marker for marker in MARKERS if marker in text and marker not in found]
    return found


def test_the_leak_search_finds_a_marker_even_in_a_compressed_parquet_page():
    for compression in ("zstd", "snappy", "gzip"):
        buffer = io.BytesIO()
        pq.write_table(pa.table({"message": [f"boom {SECRET_ACCESS_KEY} boom" * 3] * 50}), buffer,
                       compression=compression)
        assert leaks(buffer.getvalue()) == [SECRET_ACCESS_KEY], compression
    assert leaks(f"key={ACCESS_KEY_ID}".encode()) == [ACCESS_KEY_ID]
    assert leaks(b"nothing here") == []


def test_credential_values_are_masked_but_short_placeholders_are_left_alone(monkeypatch):
    from etl.redact import redact

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "test")  # e.g. the test fixtures' keys: no real key is this short
    line = f"Authorization: Credential={ACCESS_KEY_ID}/20261122 secret={SECRET_ACCESS_KEY} in test_export"
    assert redact(line) == "Authorization: Credential=***/20261122 secret=*** in test_export"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def credential_runs(s3_endpoint, tmp_path_factory):
    """Every command run with marker credentials; returns (run folder, s3 client, {run: output})."""
    import boto3

    root = tmp_path_factory.mktemp("hygiene")
    write_planted_sources(root / "sources")
    client = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=ACCESS_KEY_ID,
                          aws_secret_access_key=SECRET_ACCESS_KEY, region_name="us-east-1")
    # Sources on S3, so the engine and the planner read with the credentials; one warehouse local
    # (every file searched as a file), one on S3 (the engine, delta-rs and the lock write there).
    client.create_bucket(Bucket="laion")
    for path in sorted((root / "sources").rglob("*")):
        if path.is_file():
            client.upload_file(str(path), "laion", f"sources/{path.relative_to(root / 'sources')}")

    def config(name: str, endpoint: str, sources: str = "s3://laion/sources",
               warehouse: str = str(root / "warehouse")) -> str:
        path = root / f"{name}.yaml"
        path.write_text(planted_config(sources, warehouse)
                        + f"reports: {root / 'reports'}\ns3:\n  endpoint: {endpoint}\n")
        return str(path)

    good = config("good", s3_endpoint)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAION_ETL__"))}
    env.update(PYTHONPATH=str(REPO), AWS_ACCESS_KEY_ID=ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
               AWS_REGION="us-east-1")
    outputs: dict[str, tuple[int, str]] = {}

    def run(name: str, *args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "etl.cli", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=900)
        outputs[name] = (done.returncode, done.stdout + done.stderr)
        (root / "outputs").mkdir(exist_ok=True)
        (root / "outputs" / f"{name}.txt").write_text(done.stdout + done.stderr)

    run("build", "-v", "build", "--config", good)
    run("dq", "dq", "--config", good)
    on_s3 = config("s3-warehouse", s3_endpoint, warehouse="s3://laion/warehouse")
    run("build on an S3 warehouse", "-v", "build", "--config", on_s3)
    run("dq on an S3 warehouse", "-v", "dq", "--config", on_s3)
    run("export", "-v", "export", "--config", good, "--where", "width > 0", "--out", "s3://laion/exports/all")
    run("export to a missing bucket", "-v", "export", "--config", good, "--where", "width > 0",
        "--out", "s3://no-such-bucket/all")
    run("build from a missing bucket", "-v", "build", "--config",
        config("missing-bucket", s3_endpoint, sources="s3://no-such-bucket/sources"))
    run("export to an unreachable endpoint", "export", "--config",
        config("unreachable", f"http://127.0.0.1:{_closed_port()}"), "--where", "width > 0",
        "--out", "s3://laion/exports/unreachable")
    return root, client, outputs


def test_runs_used_and_failed_on_object_storage(credential_runs):
    """The search below means something only if the runs did touch S3, and the failing ones failed there."""
    _, client, outputs = credential_runs
    for name in ("build", "dq", "export", "build on an S3 warehouse", "dq on an S3 warehouse"):
        assert outputs[name][0] == 0, (name, outputs[name][1][-3000:])
    written = [o["Key"] for o in client.list_objects_v2(Bucket="laion")["Contents"]]
    assert "exports/all/manifest.json" in written
    assert any(key.startswith("warehouse/dms/dms_laion_wide/_delta_log/") for key in written)
    failures = {
        "export to a missing bucket": "NoSuchBucket",
        "build from a missing bucket": "no-such-bucket",
        "export to an unreachable endpoint": "127.0.0.1",
    }
    for name, mentioned in failures.items():
        code, output = outputs[name]
        assert code in (1, 2), (name, output[-3000:])
        assert mentioned in output.splitlines()[-1], (name, output[-3000:])


def test_no_credential_in_any_artefact(credential_runs):
    root, client, outputs = credential_runs
    found = []
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any("_delta_log" in p.parts for p in files) and any(p.suffix == ".html" for p in files)
    for path in files:
        found += [(str(path), marker) for marker in leaks(path.read_bytes())]
    objects = 0
    # SeaweedFS's ListBuckets showed these keys none of the buckets they wrote to (observed): name them.
    buckets = {"laion"} | {b["Name"] for b in client.list_buckets()["Buckets"]}
    for bucket in sorted(buckets):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                objects += 1
                body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                found += [(f"s3://{bucket}/{item['Key']}", m) for m in leaks(body)]
    assert objects > 0
    for name, (_, output) in outputs.items():
        found += [(f"output of {name}", marker) for marker in leaks(output.encode())]
    assert not found, found


# ---------------------------------------------------------------------------------------------
# names that become paths

BAD_NAMES = ["..", "../escape", "/abs", "a/b", "", ".hidden", "a..b", "a b", "-dash", "a\\b"]
GOOD_SUBSETS = ["laion2B-en", "laion1B-nolang", "improved_aesthetics_4.5plus"]


def write_config(tmp_path: Path, subset: str = "laion2B-en", warehouse: str | None = None) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"warehouse": warehouse or str(tmp_path / "wh"),
                                    "sources": {subset: {"base": "b/*.parquet", "joined": "j/*.parquet"}}}))
    return path


@pytest.mark.parametrize("name", BAD_NAMES)
def test_subset_names_cannot_leave_their_partition_folder(tmp_path, name):
    with pytest.raises(ConfigError) as refused:
        load_config(write_config(tmp_path, name))
    message = str(refused.value)
    assert message.startswith(f"sources.{name}: {name!r} is not a valid name") and "\n" not in message


def test_subset_names_from_the_environment_are_checked_too(tmp_path):
    with pytest.raises(ConfigError, match=r"^sources\.\.\.: '\.\.' is not a valid name"):
        load_config(write_config(tmp_path), environ={"LAION_ETL__SOURCES__..__BASE": "b/*.parquet",
                                                      "LAION_ETL__SOURCES__..__JOINED": "j/*.parquet"})


@pytest.mark.parametrize("name", GOOD_SUBSETS)
def test_real_subset_names_are_accepted(tmp_path, name):
    assert load_config(write_config(tmp_path, name)).subset_names == (name,)


@pytest.mark.parametrize("trailing", ["", "/", "//"])
def test_every_table_path_stays_inside_the_warehouse(tmp_path, trailing):
    from etl.warehouse.lock import lock_location
    from etl.warehouse.meta import DQ_RESULTS, QUARANTINE, RUNS, meta_path
    root = tmp_path / "wh"
    config = load_config(write_config(tmp_path, warehouse=f"{root}{trailing}"))
    paths = [t.path(config) for t in load_project().tables]
    paths += [meta_path(config, name) for name in (RUNS, DQ_RESULTS, QUARANTINE)] + [lock_location(config)]
    for path in paths:
        assert path.startswith(f"{root}/") and "//" not in path and "/." not in path, path
        assert Path(path).resolve().parent.parent == root, path


@pytest.mark.parametrize("stem", ["Bad-Name", "x.y", ".", "1abc", "a b"])
def test_table_names_from_sql_files_are_checked(tmp_path, stem):
    (tmp_path / "sql" / "ods").mkdir(parents=True)
    (tmp_path / "sql" / "ods" / f"{stem}.sql").write_text("select 1 as x")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'sql' / 'ods'}/.*: table name '{stem}' must be lower-case"):
        load_project(str(tmp_path))


@pytest.fixture
def cli_config(tmp_path):
    """A valid config whose sources exist; nothing is built (refusals come before any work)."""
    return write_planted_project(tmp_path, tmp_path / "wh", name="config")


@pytest.mark.parametrize("option, value, message", [
    ("--layers", "../ods", "--layers: unknown layer '../ods'"),
    ("--layers", "/abs", "--layers: unknown layer '/abs'"),
    ("--subsets", "../laion2B-en", "--subsets: '../laion2B-en' is not in the config's sources"),
    ("--subsets", "laion2B-en/../x", "--subsets: 'laion2B-en/../x' is not in the config's sources"),
])
def test_build_names_from_the_command_line_are_checked(cli_config, run_cli, option, value, message):
    code, _, err = run_cli("build", "--config", str(cli_config), option, value)
    assert code == 2 and err.startswith(f"laion-etl: error: {message}") and len(err.strip().splitlines()) == 1
    assert not (cli_config.parent / "wh").exists()


@pytest.mark.parametrize("table", ["..", "../ods_laion_base", "/abs", "ods/ods_laion_base"])
def test_dq_tables_from_the_command_line_are_checked(cli_config, run_cli, table):
    code, _, err = run_cli("dq", "--config", str(cli_config), "--tables", table)
    assert code == 2 and err.startswith(f"laion-etl: error: --tables: unknown table {table!r}")
    assert not (cli_config.parent / "wh").exists()


@pytest.mark.parametrize("preset", ["..", "../sd2", "/abs", "a/b"])
def test_preset_names_are_checked(preset):
    with pytest.raises(FilterError, match=r"^unknown filter preset"):
        resolve_filter(preset, None, WIDE_COLUMNS, load_project().preset_files)


@pytest.mark.parametrize("name", ["../sd2", "a/b", "UPPER", ""])
def test_preset_names_in_the_presets_file_are_checked(tmp_path, name):
    path = tmp_path / "presets.yaml"
    path.write_text(f"presets:\n  {name!r}:\n    description: x\n    where: width > 1\n")
    with pytest.raises(FilterError, match="a preset name is lower-case letters, digits"):
        load_presets(path, WIDE_COLUMNS)


@pytest.mark.parametrize("out, message", [
    ("s3://exports/../other", "has an empty, '.' or '..' part"),
    ("s3://exports/a//b", "has an empty, '.' or '..' part"),
    ("s3://exports/./a", "has an empty, '.' or '..' part"),
    ("s3://", "has an empty, '.' or '..' part"),
    ("{wh}", "is the warehouse"),
    ("{wh}/dms/dms_laion_wide", "is inside the warehouse"),
    ("{wh}/../wh/meta", "is inside the warehouse"),
    ("{root}", "contains the warehouse"),
])
def test_export_folder_cannot_overlap_the_warehouse_or_climb_out_of_its_bucket(cli_config, run_cli, no_engine,
                                                                                out, message):
    root = cli_config.parent
    out = out.format(wh=root / "wh", root=root)
    code, _, err = run_cli("export", "--config", str(cli_config), "--where", "width > 1", "--out", out)
    assert code == 2 and err.startswith(f"laion-etl: error: --out: {out!r}") and message in err, err
    assert len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# --where: only ever a filter


@pytest.mark.parametrize("where", [
    "read_files('/etc/passwd') is not null",
    "laion_hash(url, text) = 1",  # the UDF the session registers
    "reflect('java.lang.System', 'exit', '1') is null",
    "try_reflect('java.lang.System', 'exit', '1') is null",
    "java_method('java.lang.Runtime', 'getRuntime') is null",
    "coalesce(url, reflect('a', 'b')) = 'x'",
    "raise_error('x') is null",
    "assert_true(false) is null",
    "input_file_name() = 'x'",
    "current_user() = 'x'",
    "rand() < 0.5",
    "width > 1\u037e drop table laion.dms_laion_wide",  # a Greek question mark looks like ';'
    "width > 1\x00",
    "url = ${x}",
    "text = '${env:AWS_SECRET_ACCESS_KEY}'",
])
def test_where_refuses_anything_but_a_filter(where):
    with pytest.raises(FilterError):
        validate_predicate(where, WIDE_COLUMNS)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from etl.engine.session import open_session

    root = tmp_path_factory.mktemp("where")
    config_path = root / "config.yaml"
    config_path.write_text(f"warehouse: {root / 'wh'}\nsources:\n  s:\n    base: b\n    joined: j\n")
    with open_session(load_config(config_path)) as spark:
        yield spark


QUOTED_TEXTS = ["abc' or 1=1 --", "abc\\", "it's", "a\nb", "plain", "%;%", "ab"]


@pytest.mark.parametrize("where, expected", [
    # A backslash-escaped quote must stay inside the literal on the engine too, or the tail would
    # become SQL (here: OR 1=1, every row).
    ("text = 'abc\\' or 1=1 --'", ["abc' or 1=1 --"]),
    ("text = 'abc\\\\'", ["abc\\"]),
    ("text = \"it's\"", ["it's"]),
    ("text = 'a\\nb'", ["a\nb"]),
    ("text like '%;%'", ["%;%"]),
    ("text like 'a_' escape '\\\\'", ["ab"]),
])
def test_validated_where_means_on_the_engine_what_was_validated(engine, where, expected):
    """The regenerated SQL is parsed again by the engine: both parsers must agree on every literal."""
    columns = dict(WIDE_COLUMNS)
    normalised = validate_predicate(where, columns)
    rows = engine.createDataFrame([(t,) for t in QUOTED_TEXTS], "text string").filter(normalised).collect()
    assert sorted(r.text for r in rows) == sorted(expected), normalised
