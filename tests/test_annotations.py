"""mindone's training annotations from the wide table: real img2dataset downloads (`files` output)
from a local server, the rebuild folds the images in, `laion-etl annotations` writes the dir,text
CSVs, and every listed image is opened from the data folder."""

from __future__ import annotations

import csv
import filecmp
import io
import os
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from etl import laion_hash
from etl.cli import main
from etl.export.annotations import annotation_line
from helpers import read_delta, serve_folder

# Captions that need CSV quoting (comma, quote, newline) and UTF-8.
CAPTIONS = ["a plain caption", "a caption, with a comma", 'a "quoted" caption', "two\nlines", "ünïcödé 画像",
            "a png saved as jpg", "the seventh image"]
MISSING = 2  # URLs the server does not have: rows without an image


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def config_text(root: Path, images: list[str]) -> str:
    return (f"warehouse: {root / 'warehouse'}\nspark: {{shuffle_partitions: 2}}\n"
            f"sources:\n  laion2B-en:\n    base: {root / 'sources/base/*.parquet'}\n"
            f"    joined: {root / 'sources/joined/*.parquet'}\n"
            f"images: [{', '.join(images)}]\n")


def joined_table(samples: list[tuple[str, str]]) -> pa.Table:
    count = len(samples)
    urls, texts = (list(column) for column in zip(*samples))
    return pa.table({"URL": urls, "TEXT": texts, "WIDTH": [600] * count, "HEIGHT": [800] * count,
                     "similarity": [0.3] * count, "hash": [laion_hash(u, t) for u, t in samples],
                     "punsafe": [0.1] * count, "pwatermark": [0.1] * count, "LANGUAGE": ["en"] * count})


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory, img2dataset_bin):
    """A wide table built with the images img2dataset downloaded as `files` into `<root>/data/part_1`
    (3 images per shard folder), and a joined row sharing an image with another: (root, config)."""
    root = tmp_path_factory.mktemp("annotations")
    www = root / "www"
    www.mkdir()
    for index in range(len(CAPTIONS)):
        buffer = io.BytesIO()
        Image.new("RGB", (16 + index, 16), (30 * index, 90, 200)).save(buffer, format="PNG" if index == 5 else "JPEG")
        (www / f"image{index}.img").write_bytes(buffer.getvalue())
    with serve_folder(www) as url:
        samples = [(f"{url}/image{i}.img", caption) for i, caption in enumerate(CAPTIONS)]
        samples += [(f"{url}/missing{i}.jpg", f"a missing image {i}") for i in range(MISSING)]
        count = len(samples)
        (root / "sources/base").mkdir(parents=True)
        (root / "sources/joined").mkdir()
        pq.write_table(pa.table({"SAMPLE_ID": list(range(count)), "URL": [u for u, _ in samples],
                                 "TEXT": [t for _, t in samples], "HEIGHT": [600] * count, "WIDTH": [800] * count,
                                 "LICENSE": ["?"] * count, "NSFW": ["UNLIKELY"] * count,
                                 "similarity": [0.3] * count}), root / "sources/base/part-00000.parquet")
        pq.write_table(joined_table(samples), root / "sources/joined/part-00000.parquet")
        # img2dataset's input as `laion-etl export` writes it (tests/test_readme.py runs that loop).
        (root / "url_list").mkdir()
        pq.write_table(joined_table(samples).select(["URL", "TEXT", "hash"]), root / "url_list/part-00000.parquet")
        subprocess.run(
            [img2dataset_bin, "--url_list", str(root / "url_list"), "--input_format", "parquet",
             "--url_col", "URL", "--caption_col", "TEXT", "--save_additional_columns", '["hash"]',
             "--output_format", "files", "--output_folder", str(root / "data/part_1"),
             "--disable_all_reencoding", "True", "--processes_count", "1", "--thread_count", "4",
             "--number_sample_per_shard", "3", "--enable_wandb", "False", "--distributor", "multiprocessing",
             "--retries", "0", "--timeout", "5"],
            check=True, capture_output=True, timeout=300, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
        )  # fmt: skip
    # A second joined part repeats one downloaded sample: two wide rows, one image.
    pq.write_table(joined_table(samples[:1]), root / "sources/joined/part-00001.parquet")
    config = root / "annotations.yaml"
    config.write_text(config_text(root, [str(root / "data/part_1")]))
    assert cli("build", "--config", str(config))[0] == 0
    return root, config


def wide_images(root: Path) -> dict[str, str]:
    """image_path -> caption of every wide row with an image (read by delta-rs, not the engine)."""
    rows = read_delta(root / "warehouse/dms/dms_laion_wide").to_pylist()
    images = {r["image_path"]: r["text"] for r in rows if r["image_path"] is not None}
    assert len(rows) == len(CAPTIONS) + MISSING + 1 and len(images) == len(CAPTIONS)
    return images


def read_annotations(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == ["dir", "text"]
    frame = pd.read_csv(path)  # what mindone's loader reads, written as mindone's own script writes it
    assert list(zip(frame["dir"], frame["text"])) == [tuple(line) for line in lines[1:]]
    assert frame.to_csv(index=False, sep=",").encode() == path.read_bytes()
    return [tuple(line) for line in lines[1:]]


def assert_lists_every_image(listed: list[tuple[Path, str]], images: dict[str, str]) -> None:
    """Every listed file opens as an image, every wide-table image is listed exactly once, with its caption."""
    for path, _ in listed:
        with Image.open(path) as image:
            image.load()
    assert sorted((str(path), text) for path, text in listed) == sorted(images.items())


def test_annotations_per_part_and_per_folder(downloaded):
    root, config = downloaded
    images, data = wide_images(root), root / "data"
    shard_folders = sorted(p.name for p in (data / "part_1").iterdir() if p.is_dir())
    assert shard_folders == ["00000", "00001", "00002"]

    code, stdout, stderr = cli("annotations", "--config", str(config), "--out", str(root / "by_part"))
    assert code == 0, stderr
    assert f"{len(CAPTIONS)} images in 1 CSV file" in stdout
    assert f"{MISSING} without an image (skipped); 1 sharing an image" in stdout
    assert sorted(p.name for p in (root / "by_part").iterdir()) == ["_SUCCESS", "manifest.json", "part_1.csv"]
    lines = read_annotations(root / "by_part/part_1.csv")
    assert [d for d, _ in lines] == sorted(d for d, _ in lines) and lines[0][0].startswith("part_1/00000/")
    assert_lists_every_image([(data / d, t) for d, t in lines], images)

    code, _, stderr = cli("annotations", "--config", str(config), "--out", str(root / "by_folder"), "--per", "folder")
    assert code == 0, stderr
    csvs = sorted(p.name for p in (root / "by_folder/part_1").iterdir())
    assert csvs == [f"{shard}.csv" for shard in shard_folders]
    listed = []
    for name in csvs:
        for directory, text in read_annotations(root / "by_folder/part_1" / name):
            assert directory.startswith(f"{name[:-len('.csv')]}/")  # mindone: relative to the part folder
            listed.append((data / "part_1" / directory, text))
    assert_lists_every_image(listed, images)

    # Byte-stable: a rerun refused without --overwrite, and with it the same bytes.
    before = {p.relative_to(root / "by_part"): p.read_bytes() for p in (root / "by_part").rglob("*") if p.is_file()}
    code, _, stderr = cli("annotations", "--config", str(config), "--out", str(root / "by_part"))
    assert code == 2 and "holds earlier annotations; pass --overwrite" in stderr
    assert cli("annotations", "--config", str(config), "--out", str(root / "by_part"), "--overwrite")[0] == 0
    after = {p.relative_to(root / "by_part"): p.read_bytes() for p in (root / "by_part").rglob("*") if p.is_file()}
    assert after == before
    code, _, _ = cli("annotations", "--config", str(config), "--out", str(root / "by_part_again"))
    assert code == 0 and not filecmp.dircmp(root / "by_part", root / "by_part_again").diff_files


def test_annotations_filter(downloaded):
    root, config = downloaded
    images = wide_images(root)
    code, stdout, stderr = cli("annotations", "--config", str(config), "--out", str(root / "filtered"),
                               "--where", "text like 'a %'")
    assert code == 0, stderr
    lines = read_annotations(root / "filtered/part_1.csv")
    assert_lists_every_image([(root / "data" / d, t) for d, t in lines],
                             {path: text for path, text in images.items() if text.startswith("a ")})
    matched = [r for r in read_delta(root / "warehouse/dms/dms_laion_wide").to_pylist() if r["text"].startswith("a ")]
    without = sum(r["image_path"] is None for r in matched)
    assert f"rows: {len(matched)} in " in stdout and f"; {without} without an image (skipped); " in stdout


def test_annotations_refused_before_any_engine_starts(downloaded, no_engine):
    root, config = downloaded
    (root / "foreign").mkdir()
    (root / "foreign/notes.txt").write_text("mine")
    for out, extra, message in [
            (root / "data/part_1/annotations", [], "is inside the image folder"),
            (root / "foreign", ["--overwrite"], "holds files no annotations run wrote (notes.txt)"),
            (root / "refused", ["--where", "nope > 1"], "unknown column in filter predicate: nope"),
            (root / "refused", ["--preset", "nope"], "unknown filter preset 'nope'"),
            ("s3://bucket/annotations", [], "annotations go to a local folder")]:
        code, _, stderr = cli("annotations", "--config", str(config), "--out", str(out), *extra)
        assert code == 2 and message in stderr, stderr
    assert (root / "foreign/notes.txt").read_text() == "mine" and not (root / "refused").exists()


def test_member_uris_are_written_as_they_are():
    parts = {"/data/part_1": "part_1", "s3://bucket/part_2": "part_2"}
    tar = "/data/part_1/00003.tar#000030001.jpg"
    assert annotation_line(tar, parts, "part") == ("part_1.csv", tar)
    assert annotation_line(tar, parts, "folder") == ("part_1/00003.csv", tar)
    member = "s3://bucket/part_2/00000.parquet#000000007"
    assert annotation_line(member, parts, "folder") == ("part_2/00000.csv", member)
    assert annotation_line("/data/part_1/00000/000000001.jpg", parts, "part") == ("part_1.csv",
                                                                                  "part_1/00000/000000001.jpg")
