"""Index img2dataset output folders: one row per download result, for `ods_image_index`.

An img2dataset output folder holds one `{shard:05d}.parquet` per shard with the result of every
URL (key, url, caption, status, …, plus saved extra columns such as `hash`) and, depending on
`--output_format`, the images themselves:

- `files`: `{shard}/{key}.jpg` beside `{key}.txt` / `{key}.json`
- `webdataset`: `{shard}.tar` with members `{key}.jpg`, `{key}.txt`, `{key}.json`
- `parquet`: a binary `jpg` column in the shard parquet itself
- `tfrecord`: `{shard}.tfrecord`; its images are not read here (rows are indexed, images absent)

img2dataset names every image after its `--encode_format` (`jpg` unless told otherwise), but with
`--disable_all_reencoding True` the bytes keep their real type, so the real type is sniffed from
the first bytes of each image. Only those first bytes are ever read.

`index_batches` runs the indexing inside the engine (`DataFrame.mapInArrow`), one shard per input
row, so thousands of shards are read in parallel by the executors, not by the driver.
"""

from __future__ import annotations

import math
import os
import re
import tarfile
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from etl.ingest.storage import filesystem

IMAGE_SUFFIXES = ("jpg", "png", "webp", "gif", "bmp", "tiff", "avif", "heic")
UNKNOWN_SUFFIX = "unknown"

# The file extensions / parquet column names img2dataset's `--encode_format` can produce.
ENCODE_FORMATS = ("jpg", "png", "webp")

# Enough for every magic number below, including a few ISO-BMFF compatible brands.
HEAD_BYTES = 64

SUCCESS_STATUS = "success"

INDEX_SCHEMA = pa.schema(
    [
        pa.field("folder", pa.string()),
        pa.field("file_name", pa.string()),
        pa.field("key", pa.string()),
        pa.field("url", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("status", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("original_width", pa.int32()),
        pa.field("original_height", pa.int32()),
        pa.field("sha256", pa.string()),
        pa.field("source_hash", pa.int64()),
        pa.field("output_format", pa.string()),
        pa.field("image_path", pa.string()),
        pa.field("image_suffix", pa.string()),
    ]
)

_SPARK_TYPE_NAMES = {pa.string(): "string", pa.int32(): "int", pa.int64(): "bigint"}

INDEX_DDL = ", ".join(f"{field.name} {_SPARK_TYPE_NAMES[field.type]}" for field in INDEX_SCHEMA)

# Columns copied from the shard parquet as they are (after casting); the saved `hash` column is
# renamed to source_hash so it cannot be confused with the hash the pipeline recomputes.
_SHARD_COLUMNS = (
    "key",
    "url",
    "caption",
    "status",
    "error_message",
    "width",
    "height",
    "original_width",
    "original_height",
    "sha256",
)
_SAVED_HASH_COLUMN = "hash"

_SHARD_FILE_NAME = re.compile(r"^\d+\.parquet$")

_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"heim", b"heis", b"hevm", b"hevs"})

# Reading one image head from object storage is one round trip; overlap them.
_HEAD_READ_THREADS = 16


class ShardReadError(OSError):
    """A shard of an img2dataset output folder (parquet, tar) could not be read."""


def sniff_image_suffix(head: bytes) -> str:
    """Real type of an image from its first bytes: one of IMAGE_SUFFIXES or 'unknown'."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith(b"BM"):
        return "bmp"
    if head[4:8] == b"ftyp":
        return _sniff_iso_bmff_brand(head)
    return UNKNOWN_SUFFIX


def _sniff_iso_bmff_brand(head: bytes) -> str:
    """avif / heic from an `ftyp` box: the major brand decides, else the compatible brands."""
    box_size = int.from_bytes(head[0:4], "big")
    major_brand = head[8:12]
    # Compatible brands start after the 4-byte minor version; the box may outrun the head.
    brands_end = min(box_size, len(head)) if box_size >= 16 else len(head)
    compatible_brands = {head[offset : offset + 4] for offset in range(16, brands_end - 3, 4)}
    for brands in ({major_brand}, compatible_brands):
        if brands & _AVIF_BRANDS:
            return "avif"
        if brands & _HEIC_BRANDS:
            return "heic"
    return UNKNOWN_SUFFIX


def _strip_trailing_slash(folder: str) -> str:
    return folder.rstrip("/") or folder


def list_shards(folder: str) -> list[str]:
    """Sorted shard parquet file names (`00000.parquet`, …) of one img2dataset output folder.

    Everything else img2dataset writes there (`*_stats.json`, tars, image folders) is ignored.
    Raises FileNotFoundError naming the folder if it does not exist.
    """
    fs, path = filesystem(_strip_trailing_slash(folder))
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"img2dataset output folder not found: {folder}")
    entries = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    return sorted(
        entry.base_name
        for entry in entries
        if entry.type == pafs.FileType.File and _SHARD_FILE_NAME.match(entry.base_name)
    )


def read_shard_index(folder: str, shard_file: str) -> pa.Table:
    """Rows of one shard normalised to INDEX_SCHEMA, with image_path and image_suffix for rows
    whose image exists (both null when the status is not success or the image is absent)."""
    if not _SHARD_FILE_NAME.match(shard_file):
        raise ValueError(f"not an img2dataset shard parquet name: {shard_file!r}")
    folder = _strip_trailing_slash(folder)
    shard_id = shard_file[: -len(".parquet")]
    fs, folder_path = filesystem(folder)
    shard_uri = f"{folder}/{shard_file}"

    try:
        with fs.open_input_file(f"{folder_path}/{shard_file}") as source:
            shard = pq.ParquetFile(source)
            image_column = _image_column(shard.schema_arrow)
            metadata_columns = [name for name in shard.schema_arrow.names if name != image_column]
            rows = shard.read(columns=metadata_columns)
            if image_column is not None:
                images = _parquet_image_heads(shard, image_column, shard_uri)
    except (OSError, pa.ArrowException) as error:
        raise ShardReadError(f"cannot read img2dataset shard parquet {shard_uri}: {error}") from error
    if "key" not in rows.column_names:
        raise ShardReadError(f"not an img2dataset shard parquet (no key column): {shard_uri}")

    if image_column is not None:
        output_format = "parquet"
    else:
        output_format, images = _sidecar_image_heads(fs, folder, folder_path, shard_id)

    return _normalise(rows, folder, shard_file, output_format, images)


def index_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """For DataFrame.mapInArrow(index_batches, INDEX_DDL): input batches have columns
    (folder string, file_name string), one shard per row; yields INDEX_SCHEMA batches."""
    for batch in batches:
        folders = batch.column("folder").to_pylist()
        file_names = batch.column("file_name").to_pylist()
        for folder, file_name in zip(folders, file_names):
            yield from read_shard_index(folder, file_name).to_batches()


def _image_column(schema: pa.Schema) -> Optional[str]:
    """The binary image column of a `parquet`-format shard, if this shard is one."""
    for name in ENCODE_FORMATS:
        index = schema.get_field_index(name)
        if index >= 0 and (
            pa.types.is_binary(schema.field(index).type) or pa.types.is_large_binary(schema.field(index).type)
        ):
            return name
    return None


# key -> (image_path, first bytes of the image)
ImageHeads = dict[str, tuple[str, bytes]]


def _parquet_image_heads(shard: pq.ParquetFile, image_column: str, shard_uri: str) -> ImageHeads:
    """Heads of the images stored in the shard parquet, read in batches to bound memory."""
    images: ImageHeads = {}
    for batch in shard.iter_batches(batch_size=256, columns=["key", image_column]):
        heads = pc.binary_slice(batch.column(image_column), 0, HEAD_BYTES)
        for key, head in zip(batch.column("key").to_pylist(), heads.to_pylist()):
            if key is not None and head is not None:
                images[str(key)] = (f"{shard_uri}#{key}", head)
    return images


def _sidecar_image_heads(
    fs: pafs.FileSystem, folder: str, folder_path: str, shard_id: str
) -> tuple[str, ImageHeads]:
    """Output format and image heads of a shard whose images sit beside its parquet."""
    tar_info, directory_info, tfrecord_info = fs.get_file_info(
        [f"{folder_path}/{shard_id}.tar", f"{folder_path}/{shard_id}", f"{folder_path}/{shard_id}.tfrecord"]
    )
    if tar_info.type == pafs.FileType.File:
        return "webdataset", _tar_image_heads(fs, tar_info.path, f"{folder}/{shard_id}.tar")
    if directory_info.type == pafs.FileType.Directory:
        return "files", _directory_image_heads(fs, directory_info.path, f"{folder}/{shard_id}")
    if tfrecord_info.type == pafs.FileType.File:
        return "tfrecord", {}
    return "none", {}


def _image_member_key(name: str) -> Optional[str]:
    """Sample key of an image file / tar member (`{key}.jpg`), None for captions, json, etc."""
    key, _, extension = os.path.basename(name).partition(".")
    return key if extension in ENCODE_FORMATS else None


def _tar_image_heads(fs: pafs.FileSystem, tar_path: str, tar_uri: str) -> ImageHeads:
    """Heads of the images in a webdataset tar, streamed member by member (never seeks, never
    holds more than one member's head, so object storage serves it as one sequential read)."""
    images: ImageHeads = {}
    try:
        with fs.open_input_stream(tar_path, compression=None) as stream, tarfile.open(
            fileobj=stream, mode="r|"
        ) as tar:
            for member in tar:
                key = _image_member_key(member.name) if member.isfile() else None
                if key is not None:
                    images[key] = (f"{tar_uri}#{member.name}", tar.extractfile(member).read(HEAD_BYTES))
    except (OSError, tarfile.TarError, pa.ArrowException) as error:
        raise ShardReadError(f"cannot read img2dataset shard tar {tar_uri}: {error}") from error
    return images


def _directory_image_heads(fs: pafs.FileSystem, directory_path: str, directory_uri: str) -> ImageHeads:
    """Heads of the images in a `files`-format shard folder."""
    entries = fs.get_file_info(pafs.FileSelector(directory_path, recursive=False))
    image_files = [
        (key, entry)
        for entry in entries
        if entry.type == pafs.FileType.File and (key := _image_member_key(entry.base_name)) is not None
    ]

    def read_head(entry: pafs.FileInfo) -> bytes:
        try:
            with fs.open_input_stream(entry.path, compression=None) as image:
                return image.read(HEAD_BYTES)
        except (OSError, pa.ArrowException) as error:
            raise ShardReadError(f"cannot read image {directory_uri}/{entry.base_name}: {error}") from error

    with ThreadPoolExecutor(max_workers=_HEAD_READ_THREADS) as pool:
        heads = pool.map(read_head, [entry for _, entry in image_files])
        return {
            key: (f"{directory_uri}/{entry.base_name}", head)
            for (key, entry), head in zip(image_files, heads)
        }


def _normalise(
    rows: pa.Table, folder: str, shard_file: str, output_format: str, images: ImageHeads
) -> pa.Table:
    """Cast the shard's columns to INDEX_SCHEMA and attach each successful row's image."""
    row_count = rows.num_rows
    columns: dict[str, pa.ChunkedArray | pa.Array] = {
        "folder": pa.repeat(pa.scalar(folder), row_count),
        "file_name": pa.repeat(pa.scalar(shard_file), row_count),
    }
    for name in _SHARD_COLUMNS:
        target = INDEX_SCHEMA.field(name).type
        columns[name] = (
            _cast_tolerantly(rows.column(name), target) if name in rows.column_names else pa.nulls(row_count, target)
        )
    columns["source_hash"] = (
        _cast_tolerantly(rows.column(_SAVED_HASH_COLUMN), pa.int64())
        if _SAVED_HASH_COLUMN in rows.column_names
        else pa.nulls(row_count, pa.int64())
    )
    columns["output_format"] = pa.repeat(pa.scalar(output_format), row_count)

    image_paths: list[Optional[str]] = []
    image_suffixes: list[Optional[str]] = []
    for key, status in zip(columns["key"].to_pylist(), columns["status"].to_pylist()):
        image = images.get(key) if status == SUCCESS_STATUS else None
        image_paths.append(image[0] if image else None)
        image_suffixes.append(sniff_image_suffix(image[1]) if image else None)
    columns["image_path"] = pa.array(image_paths, pa.string())
    columns["image_suffix"] = pa.array(image_suffixes, pa.string())

    return pa.Table.from_arrays([columns[field.name] for field in INDEX_SCHEMA], schema=INDEX_SCHEMA)


def _cast_tolerantly(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """Cast a drifted column: all-null, floats with NaN, numbers as strings, strings as numbers."""
    source = column.type
    if pa.types.is_null(source) or source == target:
        return column.cast(target)
    if pa.types.is_integer(target):
        if pa.types.is_floating(source):
            # NaN is how pandas wrote missing integers; a cast would refuse it.
            return pc.if_else(pc.is_nan(column), None, column).cast(target, safe=False)
        if pa.types.is_string(source) or pa.types.is_large_string(source):
            try:
                return column.cast(target)
            except pa.ArrowInvalid:
                return pa.chunked_array(
                    [pa.array([_parse_integer(value) for value in column.to_pylist()], target)], target
                )
        # Integers of another width (or uint64 hashes) wrap exactly like LAION's signed int64.
        return column.cast(target, safe=False)
    return column.cast(target)


def _parse_integer(text: Optional[str]) -> Optional[int]:
    """Integer from text such as ' 42 ', '42.0' or '4.2e1'; None when it is not a number."""
    if text is None:
        return None
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) else None

