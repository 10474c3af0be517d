"""Indexing img2dataset output folders (files, webdataset, parquet, tfrecord) into image index rows.

The folders are built here the way img2dataset 1.47 writes them: one `{shard:05d}.parquet` per
shard (input columns first, then key/status/… and sha256), `{shard}_stats.json`, and the images
as `{key}.jpg` whatever their real type (as with `--disable_all_reencoding True`).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from etl.engine.hashing import laion_hash
from etl.ingest.images import (
    IMAGE_SUFFIXES,
    INDEX_DDL,
    INDEX_SCHEMA,
    ShardReadError,
    index_batches,
    list_shards,
    read_shard_index,
    sniff_image_suffix,
)
from helpers import serve_folder


def pillow_image(pillow_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 90)).save(buffer, format=pillow_format)
    return buffer.getvalue()


def ftyp_box(major: bytes, *compatible: bytes) -> bytes:
    """The ISO-BMFF `ftyp` box that opens AVIF / HEIC files, followed by a few other bytes."""
    payload = b"ftyp" + major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (len(payload) + 4).to_bytes(4, "big") + payload + b"\x00\x00\x01\x00meta"


GARBAGE = b"<!DOCTYPE html><html><body>Not Found</body></html>"

# sample index within the shard -> (image bytes saved as {key}.jpg, expected image_suffix)
SUCCESS_IMAGES = {
    0: (pillow_image("JPEG"), "jpg"),
    1: (pillow_image("PNG"), "png"),
    2: (pillow_image("WEBP"), "webp"),
    3: (pillow_image("GIF"), "gif"),
    4: (pillow_image("BMP"), "bmp"),
    5: (pillow_image("TIFF"), "tiff"),
    6: (ftyp_box(b"avif", b"avif", b"mif1", b"miaf", b"MA1B"), "avif"),
    7: (ftyp_box(b"heic", b"mif1", b"heic"), "heic"),
    8: (GARBAGE, "unknown"),
}
FAILED_SAMPLES = (9, 10)


def sample_key(shard_id: int, sample: int) -> str:
    return f"{shard_id:05d}{sample:04d}"


def shard_metadata(shard_id: int) -> list[dict]:
    """img2dataset result rows of one shard, with the input's `hash` saved as an extra column."""
    rows = []
    for sample in [*SUCCESS_IMAGES, *FAILED_SAMPLES]:
        url = f"https://example.com/{shard_id}/{sample}.jpg"
        caption = f"caption {shard_id} {sample}"
        succeeded = sample in SUCCESS_IMAGES
        rows.append(
            {
                "url": url,
                "caption": caption,
                "hash": laion_hash(url, caption),
                "key": sample_key(shard_id, sample),
                "status": "success" if succeeded else "failed_to_download",
                "error_message": None if succeeded else "HTTP Error 404: Not Found",
                "width": 8 if succeeded else None,
                "height": 6 if succeeded else None,
                "original_width": 16 if succeeded else None,
                "original_height": 12 if succeeded else None,
                "sha256": f"{sample:064x}" if succeeded else None,
            }
        )
    return rows


METADATA_SCHEMA = pa.schema(
    [
        ("url", pa.string()),
        ("caption", pa.string()),
        ("hash", pa.int64()),
        ("key", pa.string()),
        ("status", pa.string()),
        ("error_message", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("sha256", pa.string()),
    ]
)


def write_metadata(folder, shard_id: int) -> None:
    table = pa.Table.from_pylist(shard_metadata(shard_id), METADATA_SCHEMA)
    pq.write_table(table, folder / f"{shard_id:05d}.parquet")


def write_stats(folder, shard_id: int) -> None:
    (folder / f"{shard_id:05d}_stats.json").write_text(json.dumps({"count": 11, "successes": 9}))


def make_files_folder(folder, shard_ids=(0, 1)):
    folder.mkdir()
    for shard_id in shard_ids:
        write_metadata(folder, shard_id)
        images = folder / f"{shard_id:05d}"
        images.mkdir()
        for sample, (image, _) in SUCCESS_IMAGES.items():
            key = sample_key(shard_id, sample)
            (images / f"{key}.jpg").write_bytes(image)
            (images / f"{key}.txt").write_text(f"caption {shard_id} {sample}")
            (images / f"{key}.json").write_text("{}")
        write_stats(folder, shard_id)
    return folder


def make_webdataset_folder(folder, shard_ids=(0,)):
    folder.mkdir()
    for shard_id in shard_ids:
        write_metadata(folder, shard_id)
        with tarfile.open(folder / f"{shard_id:05d}.tar", "w") as tar:
            for sample, (image, _) in SUCCESS_IMAGES.items():
                key = sample_key(shard_id, sample)
                for extension, payload in (("jpg", image), ("txt", b"caption"), ("json", b"{}")):
                    member = tarfile.TarInfo(f"{key}.{extension}")
                    member.size = len(payload)
                    tar.addfile(member, io.BytesIO(payload))
        write_stats(folder, shard_id)
    return folder


def make_parquet_folder(folder, shard_ids=(0,)):
    """`--output_format parquet`: the images are a binary `jpg` column of the shard parquet."""
    folder.mkdir()
    for shard_id in shard_ids:
        rows = shard_metadata(shard_id)
        for row, sample in zip(rows, [*SUCCESS_IMAGES, *FAILED_SAMPLES]):
            row["jpg"] = SUCCESS_IMAGES[sample][0] if sample in SUCCESS_IMAGES else None
        schema = METADATA_SCHEMA.append(pa.field("jpg", pa.binary()))
        pq.write_table(pa.Table.from_pylist(rows, schema), folder / f"{shard_id:05d}.parquet")
        write_stats(folder, shard_id)
    return folder


def rows_by_key(table: pa.Table) -> dict[str, dict]:
    return {row["key"]: row for row in table.to_pylist()}


def expected_images(shard_id: int, image_path_of) -> dict[str, tuple]:
    """key -> (image_path, image_suffix) for every row of a shard built above."""
    expected = {}
    for sample, (_, suffix) in SUCCESS_IMAGES.items():
        key = sample_key(shard_id, sample)
        expected[key] = (image_path_of(key), suffix)
    for sample in FAILED_SAMPLES:
        expected[sample_key(shard_id, sample)] = (None, None)
    return expected


def image_columns(table: pa.Table) -> dict[str, tuple]:
    return {row["key"]: (row["image_path"], row["image_suffix"]) for row in table.to_pylist()}


# --- sniffing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head, suffix",
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "png"),
        (b"GIF87a\x08\x00", "gif"),
        (b"GIF89a\x08\x00", "gif"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "unknown"),
        (b"BM\x36\x00\x00\x00", "bmp"),
        (b"II*\x00\x08\x00\x00\x00", "tiff"),
        (b"MM\x00*\x00\x00\x00\x08", "tiff"),
        (ftyp_box(b"avif", b"avif", b"mif1", b"miaf"), "avif"),
        (ftyp_box(b"avis", b"avis", b"msf1"), "avif"),
        (ftyp_box(b"mif1", b"mif1", b"avif"), "avif"),
        (ftyp_box(b"heic", b"mif1", b"heic"), "heic"),
        (ftyp_box(b"heix", b"mif1", b"heix"), "heic"),
        (ftyp_box(b"hevc", b"msf1", b"hevc"), "heic"),
        (ftyp_box(b"mif1", b"mif1", b"heic"), "heic"),
        (ftyp_box(b"mif1", b"mif1", b"miaf"), "unknown"),
        (ftyp_box(b"isom", b"isom", b"mp41"), "unknown"),
        (GARBAGE, "unknown"),
        (b"", "unknown"),
        (b"\xff\xd8", "unknown"),
    ],
)
def test_sniff_image_suffix(head, suffix):
    assert sniff_image_suffix(head) == suffix


def test_sniff_ignores_brands_beyond_the_ftyp_box():
    # 'avif' right after a 16-byte box that lists no compatible brands belongs to the next box.
    head = (16).to_bytes(4, "big") + b"ftypmif1\x00\x00\x00\x00" + b"avif"
    assert sniff_image_suffix(head) == "unknown"


def test_sniff_real_pillow_images_cover_every_raster_suffix():
    sniffed = {sniff_image_suffix(image[:64]) for image, _ in SUCCESS_IMAGES.values()}
    assert sniffed == set(IMAGE_SUFFIXES) | {"unknown"}


# --- list_shards ------------------------------------------------------------------------------


def test_list_shards_sorts_and_ignores_everything_but_shard_parquets(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    for name in ("00002.parquet", "00000.parquet", "00010.parquet", "00001.parquet"):
        (folder / name).write_bytes(b"")
    for name in ("00000_stats.json", "00000.tar", "stats.json", "notes.parquet", "00001.parquet.tmp"):
        (folder / name).write_bytes(b"")
    (folder / "00000").mkdir()
    (folder / "99999.parquet").mkdir()  # a directory, not a shard

    assert list_shards(str(folder)) == ["00000.parquet", "00001.parquet", "00002.parquet", "00010.parquet"]
    assert list_shards(str(folder) + "/") == ["00000.parquet", "00001.parquet", "00002.parquet", "00010.parquet"]


def test_list_shards_of_a_missing_folder_names_it(tmp_path):
    missing = str(tmp_path / "never_downloaded")
    with pytest.raises(FileNotFoundError, match="never_downloaded"):
        list_shards(missing)


# --- read_shard_index per output format -------------------------------------------------------


def test_files_output(tmp_path):
    folder = str(make_files_folder(tmp_path / "files_out"))

    table = read_shard_index(folder, "00001.parquet")

    assert table.schema == INDEX_SCHEMA
    assert table.num_rows == 11
    assert image_columns(table) == expected_images(1, lambda key: f"{folder}/00001/{key}.jpg")
    assert set(table.column("output_format").to_pylist()) == {"files"}
    assert set(table.column("folder").to_pylist()) == {folder}
    assert set(table.column("file_name").to_pylist()) == {"00001.parquet"}


def test_files_output_rows_carry_metadata_and_source_hash(tmp_path):
    folder = str(make_files_folder(tmp_path / "files_out"))

    rows = rows_by_key(read_shard_index(folder, "00000.parquet"))

    assert rows["000000002"] == {
        "folder": folder,
        "file_name": "00000.parquet",
        "key": "000000002",
        "url": "https://example.com/0/2.jpg",
        "caption": "caption 0 2",
        "status": "success",
        "error_message": None,
        "width": 8,
        "height": 6,
        "original_width": 16,
        "original_height": 12,
        "sha256": f"{2:064x}",
        "source_hash": laion_hash("https://example.com/0/2.jpg", "caption 0 2"),
        "output_format": "files",
        "image_path": f"{folder}/00000/000000002.jpg",
        "image_suffix": "webp",
    }
    failed = rows["000000009"]
    assert (failed["status"], failed["error_message"]) == ("failed_to_download", "HTTP Error 404: Not Found")
    assert [failed[name] for name in ("width", "sha256", "image_path", "image_suffix")] == [None] * 4
    assert failed["source_hash"] == laion_hash("https://example.com/0/9.jpg", "caption 0 9")


def test_trailing_slash_is_stripped_from_folder_and_paths(tmp_path):
    folder = str(make_files_folder(tmp_path / "files_out"))

    rows = rows_by_key(read_shard_index(folder + "/", "00000.parquet"))

    assert rows["000000000"]["folder"] == folder
    assert rows["000000000"]["image_path"] == f"{folder}/00000/000000000.jpg"


def test_success_row_whose_image_file_is_missing_has_no_image(tmp_path):
    folder = make_files_folder(tmp_path / "files_out", shard_ids=(0,))
    (folder / "00000" / "000000001.jpg").unlink()

    rows = rows_by_key(read_shard_index(str(folder), "00000.parquet"))

    assert (rows["000000001"]["image_path"], rows["000000001"]["image_suffix"]) == (None, None)
    assert rows["000000000"]["image_suffix"] == "jpg"


def test_webdataset_output(tmp_path):
    folder = str(make_webdataset_folder(tmp_path / "wds_out"))

    table = read_shard_index(folder, "00000.parquet")

    assert table.schema == INDEX_SCHEMA
    assert image_columns(table) == expected_images(0, lambda key: f"{folder}/00000.tar#{key}.jpg")
    assert set(table.column("output_format").to_pylist()) == {"webdataset"}


def test_parquet_output(tmp_path):
    folder = str(make_parquet_folder(tmp_path / "parquet_out"))

    table = read_shard_index(folder, "00000.parquet")

    assert table.schema == INDEX_SCHEMA
    assert image_columns(table) == expected_images(0, lambda key: f"{folder}/00000.parquet#{key}")
    assert set(table.column("output_format").to_pylist()) == {"parquet"}
    assert rows_by_key(table)["000000007"]["source_hash"] == laion_hash("https://example.com/0/7.jpg", "caption 0 7")


def test_success_row_with_null_image_bytes_has_no_image(tmp_path):
    folder = tmp_path / "parquet_out"
    folder.mkdir()
    rows = shard_metadata(0)[:2]
    rows[0]["jpg"], rows[1]["jpg"] = None, SUCCESS_IMAGES[1][0]
    schema = METADATA_SCHEMA.append(pa.field("jpg", pa.binary()))
    pq.write_table(pa.Table.from_pylist(rows, schema), folder / "00000.parquet")

    assert image_columns(read_shard_index(str(folder), "00000.parquet")) == {
        "000000000": (None, None),
        "000000001": (f"{folder}/00000.parquet#000000001", "png"),
    }


def test_tfrecord_output_indexes_rows_without_images(tmp_path):
    folder = tmp_path / "tfrecord_out"
    folder.mkdir()
    write_metadata(folder, 0)
    (folder / "00000.tfrecord").write_bytes(b"\x00" * 32)

    table = read_shard_index(str(folder), "00000.parquet")

    assert table.num_rows == 11
    assert set(table.column("output_format").to_pylist()) == {"tfrecord"}
    assert set(table.column("image_path").to_pylist()) == {None}
    assert set(table.column("image_suffix").to_pylist()) == {None}


def test_shard_with_no_images_beside_it_is_format_none(tmp_path):
    folder = tmp_path / "metadata_only"
    folder.mkdir()
    write_metadata(folder, 0)

    table = read_shard_index(str(folder), "00000.parquet")

    assert set(table.column("output_format").to_pylist()) == {"none"}
    assert set(table.column("image_path").to_pylist()) == {None}


# --- type drift and broken shards -------------------------------------------------------------


def test_type_drift_is_cast_to_the_index_schema(tmp_path):
    folder = tmp_path / "drifted"
    folder.mkdir()
    hashes = [laion_hash("u1", "t1"), laion_hash("u2", "t2"), laion_hash("u3", "t3")]
    drifted = pa.table(
        {
            "url": ["u1", "u2", "u3"],
            "hash": pa.array([str(hashes[0]), f" {hashes[1]} ", "not a number"], pa.large_string()),
            "key": ["000000000", "000000001", "000000002"],
            "status": ["success", "failed_to_resize", "success"],
            "error_message": pa.nulls(3, pa.null()),
            "width": pa.array([512.0, float("nan"), 640.0], pa.float64()),
            "height": pa.nulls(3, pa.null()),
            "original_width": pa.array([1024, None, 2048], pa.int64()),
            "original_height": pa.array([768.0, None, 1.5e3], pa.float32()),
        }
    )
    pq.write_table(drifted, folder / "00000.parquet")

    table = read_shard_index(str(folder), "00000.parquet")

    assert table.schema == INDEX_SCHEMA
    assert table.column("source_hash").to_pylist() == [hashes[0], hashes[1], None]
    assert table.column("width").to_pylist() == [512, None, 640]
    assert table.column("height").to_pylist() == [None, None, None]
    assert table.column("original_width").to_pylist() == [1024, None, 2048]
    assert table.column("original_height").to_pylist() == [768, None, 1500]
    assert table.column("caption").to_pylist() == [None, None, None]
    assert table.column("sha256").to_pylist() == [None, None, None]
    assert table.column("error_message").to_pylist() == [None, None, None]


@pytest.mark.parametrize(
    "saved_hash, expected",
    [
        (pa.array([-7361397186564436992.0, None]), [-7361397186564436992, None]),
        (pa.array([123, None], pa.int32()), [123, None]),
        (pa.array([2**64 - 1, None], pa.uint64()), [-1, None]),
        (pa.array(["-9223372036854775807", None]), [-9223372036854775807, None]),
        (pa.nulls(2, pa.null()), [None, None]),
    ],
)
def test_saved_hash_is_tolerated_as_any_numeric_type(tmp_path, saved_hash, expected):
    folder = tmp_path / "hash_types"
    folder.mkdir()
    pq.write_table(pa.table({"key": ["000000000", "000000001"], "hash": saved_hash}), folder / "00000.parquet")

    assert read_shard_index(str(folder), "00000.parquet").column("source_hash").to_pylist() == expected


def test_shard_without_saved_hash_has_null_source_hash(tmp_path):
    folder = tmp_path / "no_hash"
    folder.mkdir()
    pq.write_table(pa.table({"key": ["000000000"], "url": ["u"]}), folder / "00000.parquet")

    assert read_shard_index(str(folder), "00000.parquet").column("source_hash").to_pylist() == [None]


def test_corrupt_shard_parquet_raises_naming_the_file(tmp_path):
    folder = make_files_folder(tmp_path / "files_out")
    (folder / "00001.parquet").write_bytes(b"PAR1 this is not a parquet file")

    with pytest.raises(ShardReadError, match=r"files_out/00001\.parquet"):
        read_shard_index(str(folder), "00001.parquet")
    assert read_shard_index(str(folder), "00000.parquet").num_rows == 11


def test_missing_shard_parquet_raises_naming_the_file(tmp_path):
    folder = make_files_folder(tmp_path / "files_out", shard_ids=(0,))

    with pytest.raises(ShardReadError, match=r"files_out/00007\.parquet"):
        read_shard_index(str(folder), "00007.parquet")


def test_corrupt_tar_raises_naming_the_tar(tmp_path):
    folder = make_webdataset_folder(tmp_path / "wds_out")
    (folder / "00000.tar").write_bytes(b"\x01" * 1500)

    with pytest.raises(ShardReadError, match=r"wds_out/00000\.tar"):
        read_shard_index(str(folder), "00000.parquet")


def test_parquet_without_key_column_is_not_a_shard(tmp_path):
    folder = tmp_path / "foreign"
    folder.mkdir()
    pq.write_table(pa.table({"URL": ["u"], "TEXT": ["t"]}), folder / "00000.parquet")

    with pytest.raises(ShardReadError, match=r"no key column.*foreign/00000\.parquet"):
        read_shard_index(str(folder), "00000.parquet")


# --- real img2dataset output ------------------------------------------------------------------

@pytest.fixture
def image_server(tmp_path):
    """A local HTTP server with one image per type, all under their real extensions."""
    root = tmp_path / "www"
    root.mkdir()
    for sample, (image, suffix) in SUCCESS_IMAGES.items():
        (root / f"{sample}.{suffix}").write_bytes(image)
    with serve_folder(root) as url:
        yield url


@pytest.mark.parametrize("output_format", ["files", "webdataset", "parquet"])
def test_real_img2dataset_output(tmp_path, image_server, img2dataset_bin, output_format):
    urls = [f"{image_server}/{sample}.{suffix}" for sample, (_, suffix) in SUCCESS_IMAGES.items()]
    urls.append(f"{image_server}/missing.jpg")
    captions = [f"caption {index}" for index in range(len(urls))]
    pq.write_table(
        pa.table({"URL": urls, "TEXT": captions, "hash": [laion_hash(u, t) for u, t in zip(urls, captions)]}),
        tmp_path / "input.parquet",
    )
    folder = tmp_path / "out"
    subprocess.run(
        [img2dataset_bin, "--url_list", str(tmp_path / "input.parquet"), "--input_format", "parquet",
         "--url_col", "URL", "--caption_col", "TEXT", "--save_additional_columns", '["hash"]',
         "--output_format", output_format, "--output_folder", str(folder),
         "--disable_all_reencoding", "True", "--number_sample_per_shard", "5",
         "--processes_count", "1", "--thread_count", "4", "--enable_wandb", "False",
         "--distributor", "multiprocessing"],
        check=True, capture_output=True, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}, timeout=300,
    )  # fmt: skip

    shards = list_shards(str(folder))
    rows = [row for shard in shards for row in read_shard_index(str(folder), shard).to_pylist()]

    assert shards == ["00000.parquet", "00001.parquet"]
    by_url = {row["url"]: row for row in rows}
    assert {url: by_url[url]["image_suffix"] for url in urls} == {
        **{url: suffix for url, (_, suffix) in zip(urls, SUCCESS_IMAGES.values())},
        urls[-1]: None,
    }
    assert all(row["source_hash"] == laion_hash(row["url"], row["caption"]) for row in rows)
    assert {row["output_format"] for row in rows} == {output_format}
    first = by_url[urls[0]]
    shard_id = first["key"][:5]
    assert first["image_path"] == {
        "files": f"{folder}/{shard_id}/{first['key']}.jpg",
        "webdataset": f"{folder}/{shard_id}.tar#{first['key']}.jpg",
        "parquet": f"{folder}/{shard_id}.parquet#{first['key']}",
    }[output_format]


# --- inside the engine ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark():
    from pysail.spark import SparkConnectServer
    from pyspark.sql import SparkSession

    server = SparkConnectServer(ip="127.0.0.1", port=0)
    server.start(background=True)
    host, port = server.listening_address
    session = SparkSession.builder.remote(f"sc://{host}:{port}").getOrCreate()
    yield session
    session.stop()
    server.stop()


def test_index_batches_runs_in_map_in_arrow_on_sail(spark, tmp_path):
    folders = {
        "files": str(make_files_folder(tmp_path / "files_out")),
        "webdataset": str(make_webdataset_folder(tmp_path / "wds_out")),
        "parquet": str(make_parquet_folder(tmp_path / "parquet_out")),
    }
    shards = [(folder, shard) for folder in folders.values() for shard in list_shards(folder)]
    expected = pa.concat_tables(read_shard_index(folder, shard) for folder, shard in shards)

    index = spark.createDataFrame(shards, "folder string, file_name string").mapInArrow(index_batches, INDEX_DDL)

    assert index.schema.simpleString() == f"struct<{INDEX_DDL.replace(' ', ':').replace(',:', ',')}>"
    actual = index.toArrow()
    assert actual.num_rows == 4 * 11
    assert sorted(actual.to_pylist(), key=lambda row: (row["folder"], row["key"])) == sorted(
        expected.to_pylist(), key=lambda row: (row["folder"], row["key"])
    )
    suffixes = {
        (row["output_format"], row["key"]): row["image_suffix"] for row in actual.to_pylist()
    }
    assert suffixes[("webdataset", "000000006")] == "avif"
    assert suffixes[("parquet", "000000007")] == "heic"
    assert suffixes[("files", "000010008")] == "unknown"
