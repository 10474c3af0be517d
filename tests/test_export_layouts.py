"""Export layouts for OpenDataLab: the parts their laion5b-downloader reads (checked by a faithful
re-implementation of its task builder) and their published wide table, partitioned by file_name;
both deterministic, resumable and refused before any engine starts when asked with --columns."""

from __future__ import annotations

import ast
import json
import math
import os
import re
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from etl.cli import main
from etl.export.layouts import hive_escape
from helpers import assert_same_rows, build_synthetic, one_line, read_delta

WHERE = "height >= 300"
ROWS_PER_PART = 250
LAYOUTS = ("opendatalab", "opendatalab-wide")
# The types laion5b-downloader's parts carry (id: the hash as a string its task builder evaluates).
OPENDATALAB_SCHEMA = [("id", pa.string()), ("SAMPLE_ID", pa.int64()), ("URL", pa.string()), ("TEXT", pa.string()),
                      ("HEIGHT", pa.int32()), ("WIDTH", pa.int32()), ("LICENSE", pa.string()), ("NSFW", pa.string()),
                      ("similarity", pa.float64()), ("image_suffix", pa.string())]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small synthetic build with downloaded images (so image suffixes vary), and both layouts
    exported from it once."""
    root = tmp_path_factory.mktemp("layouts")
    _, config = build_synthetic(root, rows=3_000, seed=21, images="files")
    for layout in LAYOUTS:
        assert main(export_args(config, layout, root / layout)) == 0
    return root, config


def export_args(config: Path, layout: str, out: Path | str) -> list[str]:
    return ["export", "--config", str(config), "--where", WHERE, "--layout", layout,
            "--rows-per-shard", str(ROWS_PER_PART), "--out", str(out)]


def wide_rows(root: Path) -> pa.Table:
    """The wide table's rows matching WHERE, read by delta-rs and filtered with pyarrow (not the engine)."""
    wide = read_delta(root / "warehouse/dms/dms_laion_wide")
    return wide.filter(pc.fill_null(pc.greater_equal(wide["height"], 300), False))


def nulls_first(values) -> tuple:
    return tuple((value is not None, value) for value in values)


def expected_opendatalab(root: Path) -> dict[tuple[str, str], dict]:
    """(subset, id) -> the row for each (subset, hash) of the matching wide rows: the first source
    part's, then the least by every column, nulls first; the image suffix `jpg` where the index
    knows none."""
    candidates = defaultdict(list)
    for row in wide_rows(root).to_pylist():
        suffix = row["image_suffix"] if row["image_suffix"] not in (None, "unknown") else "jpg"
        written = (str(row["hash"]), row["sample_id"], row["url"], row["text"], row["height"], row["width"],
                   row["license"], row["nsfw"], row["similarity"], suffix)
        candidates[row["subset"], str(row["hash"])].append((row["file_name"], written))
    names = [n for n, _ in OPENDATALAB_SCHEMA]
    return {key: dict(zip(names, min(rows, key=lambda r: nulls_first((r[0], *r[1])))[1]))
            for key, rows in candidates.items()}


def exact(row: dict) -> tuple:
    """A row comparable exactly, NaN equal to NaN."""
    return tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row.values())


def parts_by_folder(folders: list[Path]) -> dict[str, list[Path]]:
    return {folder.name: sorted(folder.iterdir()) for folder in folders}


def check_part_names(parts: dict[str, list[Path]], manifest: dict, out: Path) -> None:
    """Parts numbered 0, 1, ... in each folder, named with the export id, full but for the last."""
    for folder, files in parts.items():
        assert [f.name for f in files] == [f"part-{n:05d}-{manifest['export_id']}.parquet" for n in range(len(files))]
        rows = [pq.ParquetFile(f).metadata.num_rows for f in files]
        assert rows[:-1] == [ROWS_PER_PART] * (len(files) - 1) and 0 < rows[-1] <= ROWS_PER_PART, folder
    listed = sorted(f.relative_to(out).as_posix() for files in parts.values() for f in files)
    assert listed == sorted(s["name"] for s in manifest["shards"])


def test_opendatalab_parts_have_their_columns_and_one_row_per_subset_and_hash(built):
    root, _ = built
    out = root / "opendatalab"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layout"] == "opendatalab" and manifest["columns"] == [n for n, _ in OPENDATALAB_SCHEMA]
    subsets = sorted(p for p in out.iterdir() if p.is_dir())
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["_SUCCESS", "manifest.json"]
    assert [p.name for p in subsets] == ["laion1B-nolang", "laion2B-en", "laion2B-multi"]
    parts = parts_by_folder(subsets)
    check_part_names(parts, manifest, out)
    written = {subset: [pq.read_table(file) for file in files] for subset, files in parts.items()}
    for subset, tables in written.items():
        assert all([(f.name, f.type) for f in table.schema] == OPENDATALAB_SCHEMA for table in tables), subset
        hashes = [int(i) for table in tables for i in table["id"].to_pylist()]
        assert hashes == sorted(set(hashes)), subset  # numbered in hash order, one row per hash
    exported = pa.concat_tables([table for tables in written.values() for table in tables])
    expected = expected_opendatalab(root)
    assert wide_rows(root).num_rows > len(expected) > 2 * ROWS_PER_PART  # duplicate hashes were folded
    assert_same_rows(exported, pa.Table.from_pylist(list(expected.values()), schema=pa.schema(OPENDATALAB_SCHEMA)))
    # Exactly the picked row of each hash: assert_same_rows rounds floats, and picks may differ beyond that.
    assert {(subset, row["id"]): exact(row) for subset, tables in written.items() for table in tables
            for row in table.to_pylist()} == {key: exact(row) for key, row in expected.items()}
    assert manifest["totals"]["rows"] == len(expected)
    assert set(exported["image_suffix"].to_pylist()) == {"jpg", "png", "webp", "gif"}


def laion5b_downloader_tasks(base_path: Path) -> list[dict]:
    """OpenDataLab's add_task.py (laion5b-downloader) without redis and logging: every part of every
    folder whose name contains "laion" becomes one task per row. Theirs evaluates `id` with eval();
    ast.literal_eval accepts the same integer literals (and nothing that runs)."""
    tasks = []
    for name in os.listdir(base_path):
        if "laion" not in name:
            continue
        for file_name in os.listdir(f"{base_path}/{name}"):
            filename = f"{base_path}/{name}/{file_name}"
            dir_path = f"/LAION-5B/{name}/{os.path.basename(filename).split('-')[1]}/"
            df = pd.read_parquet(filename)
            for _, row in df.iterrows():
                image_id = ast.literal_eval(row.get("id"))
                assert isinstance(image_id, int), row.get("id")
                image_type = row.get("image_suffix", "jpg")
                tasks.append({"img_path": f"{dir_path}{image_id}.{image_type}", "img_url": row.get("URL"),
                              "file_name": filename})
    return tasks


def test_the_downloaders_task_builder_gives_every_wide_row_one_unique_image_path(built):
    root, _ = built
    tasks = laion5b_downloader_tasks(root / "opendatalab")
    paths = [task["img_path"] for task in tasks]
    assert len(set(paths)) == len(paths)
    pattern = re.compile(r"/LAION-5B/(laion[^/]+)/(\d{5})/(-?\d+)\.(jpg|png|webp|gif|bmp|tiff|avif|heic)")
    tasked = {}
    for task in tasks:
        match = pattern.fullmatch(task["img_path"])
        assert match, task
        tasked[match[1], int(match[3])] = (task["img_url"], match[4])
    wide = wide_rows(root).to_pylist()
    wanted = {(row["subset"], row["hash"]): row for row in wide}
    assert set(tasked) == set(wanted) and len(tasks) == len(wanted)
    for key, (url, suffix) in tasked.items():
        assert url == wanted[key]["url"], key
        known = wanted[key]["image_suffix"]
        assert suffix == (known if known not in (None, "unknown") else "jpg"), key


def test_opendatalab_wide_is_every_column_partitioned_by_file_name(built):
    root, _ = built
    out = root / "opendatalab-wide"
    manifest = json.loads((out / "manifest.json").read_text())
    expected = wide_rows(root)
    assert manifest["layout"] == "opendatalab-wide" and manifest["columns"] == expected.column_names
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "manifest.json", "wide"]
    folders = sorted((out / "wide").iterdir())
    file_names = sorted(set(expected["file_name"].to_pylist()))
    assert [f.name for f in folders] == [f"file_name={name}" for name in file_names]
    parts = parts_by_folder(folders)
    check_part_names(parts, manifest, out)
    stored = [(f.name, f.type) for f in expected.schema if f.name != "file_name"]
    for folder, files in parts.items():
        assert all([(f.name, f.type) for f in pq.read_schema(file)] == stored for file in files), folder
        hashes = [h for f in files for h in pq.read_table(f, columns=["hash"])["hash"].to_pylist()]
        assert hashes == sorted(hashes), folder

    partitioning = ds.partitioning(pa.schema([("file_name", pa.string())]), flavor="hive")
    exported = ds.dataset(out / "wide", format="parquet", partitioning=partitioning).to_table()
    assert exported.column_names == [n for n, _ in stored] + ["file_name"]
    assert_same_rows(exported, expected.select(exported.column_names))
    assert manifest["totals"]["rows"] == expected.num_rows


def test_a_partition_folder_name_reads_back_as_the_file_name_it_encodes(tmp_path):
    name = "part 7/of=9%41?#[x].snappy.parquet"  # %41 unescaped would read back as "A"
    folder = tmp_path / f"file_name={hive_escape(name)}"
    folder.mkdir()
    pq.write_table(pa.table({"n": [1]}), folder / "part-00000.parquet")
    partitioning = ds.partitioning(pa.schema([("file_name", pa.string())]), flavor="hive")
    assert ds.dataset(tmp_path, partitioning=partitioning).to_table()["file_name"].to_pylist() == [name]


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def without_usage(manifest: bytes) -> dict:
    """A manifest less the one field naming the export folder (how to read it)."""
    return {k: v for k, v in json.loads(manifest).items() if k not in ("laion5b_downloader", "read_with")}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_two_exports_are_byte_equal_and_a_rerun_is_a_no_op(built, run_cli, layout):
    root, config = built
    again = root / f"{layout}-again"
    assert run_cli(*export_args(config, layout, again))[0] == 0
    first, second = files_in(root / layout), files_in(again)
    assert without_usage(first.pop("manifest.json")) == without_usage(second.pop("manifest.json"))
    assert first == second and len(first) > 3
    stamps = {p: p.stat().st_mtime_ns for p in (root / layout).rglob("*.parquet")}
    code, stdout, _ = run_cli(*export_args(config, layout, root / layout))
    assert code == 0 and "already complete, nothing written" in stdout
    assert {p: p.stat().st_mtime_ns for p in (root / layout).rglob("*.parquet")} == stamps


def test_an_interrupted_opendatalab_export_resumes_to_the_same_parts(built, run_cli, monkeypatch):
    import etl.export.object_store as store
    import etl.export.shards as export

    root, config = built
    out = root / "resumed"
    real_put, published = store.LocalTarget.put_file, []

    def dying_put(self, local, name):
        if len(published) == 3:
            raise KeyboardInterrupt("killed while publishing")
        published.append(name)
        real_put(self, local, name)

    monkeypatch.setattr(store.LocalTarget, "put_file", dying_put)
    with pytest.raises(KeyboardInterrupt):
        main(export_args(config, "opendatalab", out))
    assert not (out / "_SUCCESS").exists() and len(list(out.rglob("part-*.parquet"))) == 3
    monkeypatch.setattr(store.LocalTarget, "put_file", real_put)
    monkeypatch.setattr(export, "_stage", lambda *a, **k: pytest.fail("a complete staging area was rewritten"))
    assert run_cli(*export_args(config, "opendatalab", out))[0] == 0
    resumed, fresh = files_in(out), files_in(root / "opendatalab")
    assert without_usage(resumed.pop("manifest.json")) == without_usage(fresh.pop("manifest.json"))
    assert resumed == fresh


def test_opendatalab_export_to_object_storage_holds_the_local_parts(built, run_cli, s3_env):
    import boto3

    root, config = built
    client = boto3.client("s3", endpoint_url=s3_env)
    client.create_bucket(Bucket="opendatalab")
    args = export_args(config, "opendatalab", "s3://opendatalab/laion5b")
    assert run_cli(*args)[0] == 0
    listed = client.list_objects_v2(Bucket="opendatalab", Prefix="laion5b/")["Contents"]
    objects = {o["Key"][len("laion5b/"):]: client.get_object(Bucket="opendatalab", Key=o["Key"])["Body"].read()
               for o in listed}
    local = files_in(root / "opendatalab")
    assert without_usage(objects.pop("manifest.json")) == without_usage(local.pop("manifest.json"))
    assert objects == local
    code, stdout, _ = run_cli(*args)
    assert code == 0 and "already complete, nothing written" in stdout


@pytest.mark.parametrize("layout", LAYOUTS)
def test_columns_with_an_opendatalab_layout_is_refused_before_any_engine_starts(built, run_cli, no_engine, layout):
    root, config = built
    out = root / f"refused-{layout}"
    code, _, err = run_cli(*export_args(config, layout, out), "--columns", "hash")
    line = one_line(err)
    assert code == 2 and "--columns" in line and f"the {layout} layout has fixed columns" in line, line
    assert not out.exists()


def test_help_names_the_layouts_and_the_default(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--layout {img2dataset,opendatalab,opendatalab-wide}" in text and "(default: img2dataset)" in text
