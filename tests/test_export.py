"""Export: shards img2dataset reads as they are, deterministic, resumable, local and on S3."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from etl.cli import main
from helpers import build_synthetic, read_delta

SD2 = "language = 'en' and aesthetic_score >= 4.5 and punsafe <= 0.98 and width >= 512 and height >= 512"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    _, config = build_synthetic(root, rows=6_000, seed=21, images=None)
    return root, config


def shards_of(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "shards").glob("*.parquet"))])


def expected_sd2(root: Path) -> pa.Table:
    """The SD 2 rows of the wide table, filtered with pyarrow on delta-rs' read (not the engine)."""
    wide = read_delta(root / "warehouse/dms/dms_laion_wide")
    keep = pc.and_kleene(pc.and_kleene(pc.equal(wide["language"], "en"), pc.greater_equal(wide["aesthetic_score"], 4.5)),
                         pc.and_kleene(pc.less_equal(wide["punsafe"], 0.98),
                                       pc.and_kleene(pc.greater_equal(wide["width"], 512),
                                                     pc.greater_equal(wide["height"], 512))))
    return wide.filter(pc.fill_null(keep, False))


def test_preset_export_counts_equal_matching_rows_and_layout_is_clean(built, run_cli):
    root, config = built
    out = root / "sd2"
    code, stdout, _ = run_cli("export", "--config", str(config), "--preset", "sd2", "--out", str(out),
                              "--rows-per-shard", "300")
    assert code == 0, stdout
    manifest = json.loads((out / "manifest.json").read_text())
    expected = expected_sd2(root)
    assert manifest["totals"]["rows"] == expected.num_rows > 300
    assert manifest["source"]["version"] == DeltaTable(str(root / "warehouse/dms/dms_laion_wide")).version()
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "manifest.json", "shards"]
    names = sorted(p.name for p in (out / "shards").iterdir())
    assert names == [f"part-{i:05d}.parquet" for i in range(len(names))] == [s["name"].split("/")[1] for s in manifest["shards"]]
    assert [s["rows"] for s in manifest["shards"]][:-1] == [300] * (len(names) - 1)
    shards = shards_of(out)
    assert shards.column_names == ["URL", "TEXT", "similarity", "hash", "punsafe", "pwatermark", "aesthetic_score", "language"]
    assert sorted(shards["hash"].to_pylist()) == sorted(expected["hash"].to_pylist())
    assert shards["hash"].to_pylist() == sorted(shards["hash"].to_pylist())


def test_two_exports_of_one_version_are_identical_and_a_rerun_is_a_no_op(built, run_cli):
    root, config = built
    args = ["export", "--config", str(config), "--where", "aesthetic_score > 5", "--columns", "hash,subset",
            "--rows-per-shard", "500"]
    assert run_cli(*args, "--out", str(root / "a"))[0] == 0
    assert run_cli(*args, "--out", str(root / "b"))[0] == 0
    a, b = json.loads((root / "a/manifest.json").read_text()), json.loads((root / "b/manifest.json").read_text())
    assert [s["name"] for s in a["shards"]] == [s["name"] for s in b["shards"]]
    assert shards_of(root / "a").equals(shards_of(root / "b"))
    stamp = (root / "a/shards/part-00000.parquet").stat().st_mtime_ns
    code, stdout, _ = run_cli(*args, "--out", str(root / "a"))
    assert code == 0 and "already complete, nothing written" in stdout
    assert (root / "a/shards/part-00000.parquet").stat().st_mtime_ns == stamp


def die_after(monkeypatch, target_class, shards: int):
    """Make `target_class.put_file` publish `shards` shards, then die as a killed run would."""
    real_put, published = target_class.put_file, []

    def dying_put(self, local, name):
        if len(published) == shards:
            raise KeyboardInterrupt("killed while publishing")
        published.append(name)
        real_put(self, local, name)

    monkeypatch.setattr(target_class, "put_file", dying_put)
    return real_put


def test_an_interrupted_export_resumes_without_restaging(built, run_cli, monkeypatch):
    import etl.export.shards as export
    import etl.export.object_store as store

    root, config = built
    args = ["export", "--config", str(config), "--preset", "sd2", "--rows-per-shard", "200", "--out", str(root / "r")]
    real_put = die_after(monkeypatch, store.LocalTarget, 2)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert not (root / "r/_SUCCESS").exists() and len(list((root / "r/shards").iterdir())) == 2

    monkeypatch.setattr(store.LocalTarget, "put_file", real_put)
    monkeypatch.setattr(export, "_stage", lambda *a, **k: pytest.fail("a complete staging area was rewritten"))
    assert run_cli(*args)[0] == 0
    manifest = json.loads((root / "r/manifest.json").read_text())
    assert manifest["totals"]["rows"] == expected_sd2(root).num_rows == shards_of(root / "r").num_rows
    assert not (root / "r/_staging").exists()


@pytest.mark.parametrize("where, message", [
    ("1=1; drop table laion.dms_laion_wide", "statement"),
    ("hash in (select hash from laion.ods_laion_base)", "subquer"),
    ("nope > 1", "nope"),
])
def test_a_bad_where_is_refused_before_any_work(built, run_cli, monkeypatch, where, message):
    import etl.engine.session

    root, config = built
    monkeypatch.setattr(etl.engine.session, "open_session", lambda *a, **k: pytest.fail("an engine was started"))
    code, _, err = run_cli("export", "--config", str(config), "--where", where, "--out", str(root / "bad"))
    assert code == 2 and message in err.lower() and len(err.strip().splitlines()) == 1
    assert not (root / "bad").exists()


def test_export_to_object_storage(built, run_cli, s3_env):
    root, config = built
    client = boto3.client("s3", endpoint_url=s3_env)
    client.create_bucket(Bucket="exports")
    args = ["export", "--config", str(config), "--preset", "sd2", "--rows-per-shard", "400",
            "--out", "s3://exports/sd2"]
    assert run_cli(*args)[0] == 0
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="exports", Prefix="sd2/")["Contents"])
    manifest = json.loads(client.get_object(Bucket="exports", Key="sd2/manifest.json")["Body"].read())
    assert keys == sorted(["sd2/_SUCCESS", "sd2/manifest.json"] + [f"sd2/{s['name']}" for s in manifest["shards"]])
    assert manifest["totals"]["rows"] == expected_sd2(root).num_rows
    code, stdout, _ = run_cli(*args)
    assert code == 0 and "nothing written" in stdout


def test_a_failed_s3_export_does_not_block_the_same_export_to_another_prefix(built, run_cli, s3_env, monkeypatch,
                                                                            tmp_path):
    import tempfile

    import etl.export.object_store as store

    root, config = built
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # a staging area of this test's own
    client = boto3.client("s3", endpoint_url=s3_env)
    client.create_bucket(Bucket="retries")
    args = ["export", "--config", str(config), "--preset", "sd2", "--rows-per-shard", "400"]
    real_put = die_after(monkeypatch, store.S3Target, 1)
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--out", "s3://retries/first"])
    monkeypatch.setattr(store.S3Target, "put_file", real_put)

    assert run_cli(*args, "--out", "s3://retries/second")[0] == 0
    manifest = json.loads(client.get_object(Bucket="retries", Key="second/manifest.json")["Body"].read())
    assert manifest["totals"]["rows"] == expected_sd2(root).num_rows
    assert run_cli(*args, "--out", "s3://retries/first")[0] == 0  # and the first one resumes
    first = json.loads(client.get_object(Bucket="retries", Key="first/manifest.json")["Body"].read())
    assert [s["sha256"] for s in first["shards"]] == [s["sha256"] for s in manifest["shards"]]


def test_clip_input_lists_webdataset_shards(tmp_path, run_cli):
    for shard in range(3):
        (tmp_path / f"{shard:05d}.tar").write_bytes(b"")
    (tmp_path / "00000.parquet").write_bytes(b"")
    code, stdout, _ = run_cli("clip-input", str(tmp_path))
    assert code == 0 and stdout.splitlines()[0] == f"{tmp_path}/{{00000..00002}}.tar"
    assert "--input_format webdataset" in stdout
