"""Export: shards img2dataset reads as they are, deterministic, resumable, local and on S3, written only
into folders the export owns."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from etl.cli import main
from helpers import build_synthetic, demo_config, one_line, read_delta

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
    assert manifest["totals"]["rows"] == expected.num_rows > 300 and manifest["layout"] == "img2dataset"
    assert manifest["source"]["version"] == DeltaTable(str(root / "warehouse/dms/dms_laion_wide")).version()
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "manifest.json", "shards"]
    names = sorted(p.name for p in (out / "shards").iterdir())
    assert names == [f"part-{i:05d}.parquet" for i in range(len(names))] == [s["name"].split("/")[1] for s in manifest["shards"]]
    assert [s["rows"] for s in manifest["shards"]][:-1] == [300] * (len(names) - 1)
    shards = shards_of(out)
    assert shards.column_names == ["URL", "TEXT", "similarity", "hash", "punsafe", "pwatermark", "aesthetic_score", "language"]
    assert sorted(shards["hash"].to_pylist()) == sorted(expected["hash"].to_pylist())
    assert shards["hash"].to_pylist() == sorted(shards["hash"].to_pylist())
    # An img2dataset export keeps the id exports had before there were layouts (a rerun into a
    # folder written then is a no-op): the key leaves the default layout out.
    old_key = {"source": manifest["source"], "where": manifest["filter"]["where"],
               "columns": ["similarity", "hash", "punsafe", "pwatermark", "aesthetic_score", "language"],
               "rows_per_shard": 300}
    assert manifest["export_id"] == hashlib.sha256(json.dumps(old_key, sort_keys=True).encode()).hexdigest()[:16]


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
def test_a_bad_where_is_refused_before_any_work(built, run_cli, no_engine, where, message):
    root, config = built
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


# --- an export writes only into folders of its own -------------------------------------------------

def users_files() -> dict[str, bytes]:
    """What a user may keep in a folder: shards and a manifest of their own (where img2dataset
    globs, and named as an export names them) and notes."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"URL": ["https://example.com/mine.jpg"], "TEXT": ["mine"]}), sink)
    mine = sink.getvalue().to_pybytes()
    return {"shards/part-00000.parquet": mine, "shards/part-00009.parquet": mine,
            "manifest.json": b'{"my": "own manifest"}\n', "notes.txt": b"mine\n"}


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def objects_in(client, bucket: str) -> dict[str, bytes]:
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def without_folder(manifest: bytes) -> dict:
    """A manifest less its img2dataset command, the one field that names the export folder."""
    return {key: value for key, value in json.loads(manifest).items() if key != "img2dataset"}


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_a_folder_that_is_not_an_export_is_refused_and_left_as_it_was(built, run_cli, no_engine, overwrite):
    root, config = built
    out = root / f"users-{len(overwrite)}"
    write_files(out, users_files())
    code, _, err = run_cli("export", "--config", str(config), "--preset", "sd2", "--out", str(out), *overwrite)
    line = one_line(err)
    assert code == 2 and "manifest.json" in line and "shards/part-00000.parquet" in line, line
    assert files_in(out) == users_files()


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_a_prefix_that_is_not_an_export_is_refused_and_left_as_it_was(built, run_cli, s3_env, no_engine, overwrite):
    root, config = built
    client = boto3.client("s3", endpoint_url=s3_env)
    bucket = f"users-{len(overwrite)}"
    client.create_bucket(Bucket=bucket)
    for name, data in users_files().items():
        client.put_object(Bucket=bucket, Key=f"mine/{name}", Body=data)
    code, _, err = run_cli("export", "--config", str(config), "--preset", "sd2", "--out", f"s3://{bucket}/mine",
                           *overwrite)
    line = one_line(err)
    assert code == 2 and "manifest.json" in line and "shards/part-00000.parquet" in line, line
    assert objects_in(client, bucket) == {f"mine/{name}": data for name, data in users_files().items()}


@pytest.mark.parametrize("other", [["--where", "aesthetic_score > 6"], ["--preset", "sd2", "--rows-per-shard", "250"]],
                         ids=["another filter", "another shard size"])
def test_a_folder_holding_another_export_is_refused_without_overwrite(built, run_cli, request, other):
    root, config = built
    out = root / f"kept-{len(other)}"
    assert run_cli("export", "--config", str(config), "--preset", "sd2", "--rows-per-shard", "300",
                   "--out", str(out))[0] == 0
    before = files_in(out)
    request.getfixturevalue("no_engine")
    code, _, err = run_cli("export", "--config", str(config), *other, "--out", str(out))
    line = one_line(err)
    assert code == 2 and json.loads(before["manifest.json"])["filter"]["where"] in line and "--overwrite" in line, line
    assert files_in(out) == before


def test_overwrite_replaces_only_what_exports_wrote_and_equals_a_fresh_export(built, run_cli, monkeypatch):
    import etl.export.object_store as store

    root, config = built
    out, fresh = root / "replaced", root / "replaced-fresh"
    base = ["export", "--config", str(config)]
    sd2 = ["--preset", "sd2", "--rows-per-shard", "300"]
    write_files(out, {"notes.txt": b"mine\n"})
    assert run_cli(*base, "--where", "aesthetic_score > 5", "--rows-per-shard", "100", "--out", str(out),
                   "--overwrite")[0] == 0
    many_shards = len(list((out / "shards").iterdir()))
    real_put = die_after(monkeypatch, store.LocalTarget, 1)
    with pytest.raises(KeyboardInterrupt):  # a second export replaces that one and is killed while publishing
        main([*base, "--where", "width >= 512", "--rows-per-shard", "200", "--out", str(out), "--overwrite"])
    monkeypatch.setattr(store.LocalTarget, "put_file", real_put)
    assert (out / "_staging").exists() and not (out / "manifest.json").exists()

    assert run_cli(*base, *sd2, "--out", str(out), "--overwrite")[0] == 0
    assert run_cli(*base, *sd2, "--out", str(fresh))[0] == 0
    replaced, expected = files_in(out), files_in(fresh)
    assert replaced.pop("notes.txt") == b"mine\n"
    assert without_folder(replaced.pop("manifest.json")) == without_folder(expected.pop("manifest.json"))
    assert replaced == expected and len(expected) - 1 < many_shards  # shards and _SUCCESS, byte for byte


def test_overwrite_on_object_storage_replaces_only_what_an_export_wrote(built, run_cli, s3_env):
    root, config = built
    client = boto3.client("s3", endpoint_url=s3_env)
    client.create_bucket(Bucket="replaced")
    client.put_object(Bucket="replaced", Key="sd2/notes.txt", Body=b"mine\n")
    client.put_object(Bucket="replaced", Key="sd2-next-door/manifest.json", Body=b"{}")  # beside --out, not in it
    base = ["export", "--config", str(config)]
    sd2 = ["--preset", "sd2", "--rows-per-shard", "400"]
    assert run_cli(*base, "--where", "aesthetic_score > 5", "--rows-per-shard", "100", "--out", "s3://replaced/sd2",
                   "--overwrite")[0] == 0
    assert run_cli(*base, *sd2, "--out", "s3://replaced/sd2", "--overwrite")[0] == 0
    assert run_cli(*base, *sd2, "--out", "s3://replaced/fresh")[0] == 0
    objects = objects_in(client, "replaced")
    replaced = {key[len("sd2/"):]: data for key, data in objects.items() if key.startswith("sd2/")}
    expected = {key[len("fresh/"):]: data for key, data in objects.items() if key.startswith("fresh/")}
    assert replaced.pop("notes.txt") == b"mine\n" and objects["sd2-next-door/manifest.json"] == b"{}"
    assert without_folder(replaced.pop("manifest.json")) == without_folder(expected.pop("manifest.json"))
    assert replaced == expected


@pytest.mark.parametrize("out, relation", [  # the warehouse: test_faults_hygiene.py
    ("sources/laion2B-en/exports", "is inside the source folder"),
    ("sources", "contains the source folder"),
    ("linked-sources/laion2B-multi-joined/exports", "is inside the source folder"),
    ("warehouse/../sources/laion1B-nolang-aesthetic", "is the source folder"),
    ("downloads/sd2/exports", "is inside the image folder"),
])
def test_out_overlapping_a_source_or_an_image_folder_is_refused(built, run_cli, no_engine, out, relation):
    root, config = built
    with_images = root / "with-images.yaml"
    with_images.write_text(config.read_text().replace("images: []", f"images: [{root / 'downloads/sd2'}]"))
    (root / "downloads/sd2").mkdir(parents=True, exist_ok=True)
    if not (root / "linked-sources").exists():
        (root / "linked-sources").symlink_to(root / "sources")
    before = files_in(root)
    code, _, err = run_cli("export", "--config", str(with_images), "--preset", "sd2", "--out", f"{root}/{out}")
    line = one_line(err)
    assert code == 2 and relation in line, line
    assert files_in(root) == before


@pytest.mark.parametrize("out, relation", [
    ("s3://lake/warehouse/exports", "is inside the warehouse"),
    ("s3://lake", "contains the warehouse"),
    ("s3://lake/sources/laion2B-en/exports", "is inside the source folder"),
    ("s3://lake/sources/laion2B-en-joined/", "is the source folder"),
    ("s3://lake/sources", "contains the image folder"),
    ("s3://lake/sources/images/exports", "is inside the image folder"),
])
def test_out_overlapping_an_object_storage_prefix_is_refused(tmp_path, run_cli, no_engine, monkeypatch, out,
                                                             relation):
    config = demo_config("s3://lake/sources", "s3://lake/warehouse", tmp_path / "on-s3.yaml")
    # Were the check missing, nothing may leave the loopback looking for the table.
    config.write_text(config.read_text() + "s3:\n  endpoint: http://127.0.0.1:9\n  max_attempts: 1\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "test")
    code, _, err = run_cli("export", "--config", str(config), "--preset", "sd2", "--out", out)
    line = one_line(err)
    assert code == 2 and relation in line, line


def test_clip_input_lists_webdataset_shards(tmp_path, run_cli):
    for shard in range(3):
        (tmp_path / f"{shard:05d}.tar").write_bytes(b"")
    (tmp_path / "00000.parquet").write_bytes(b"")
    code, stdout, _ = run_cli("clip-input", str(tmp_path))
    assert code == 0 and stdout.splitlines()[0] == f"{tmp_path}/{{00000..00002}}.tar"
    assert "--input_format webdataset" in stdout
