"""Paths that may be local or `s3://`: globbing, listing and parquet footers via pyarrow.fs.

S3 is reached with this process's S3 settings (etl.s3_settings); credentials come from the usual
AWS variables, read by pyarrow itself.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import glob as local_glob
import os
import re
from dataclasses import dataclass
from typing import Optional

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from etl.s3_settings import current_s3_settings


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow filesystem and in-filesystem path for a local path or an `s3://` URI: the same
    object store, with the same retries and timeouts, as the engine reaches."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    if not uri.startswith("s3://"):
        return pafs.FileSystem.from_uri(uri)
    bucket_and_key = uri[len("s3://"):]
    options = current_s3_settings().pyarrow_kwargs(bucket_and_key.split("/", 1)[0])
    return pafs.S3FileSystem(**options), bucket_and_key.rstrip("/")


def glob_root(pattern: str) -> str:
    """The folder a glob searches: everything before the segment with its first wildcard."""
    prefix = pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    return prefix.rsplit("/", 1)[0] if prefix != pattern else pattern.rsplit("/", 1)[0]


def normal_location(path: str) -> str:
    """Where `path` points, in a form two locations compare in: local paths absolute with symlinks
    and `..` resolved, URIs with a lower-case scheme and `.`, `..` and doubled slashes folded."""
    if "://" in path:
        scheme, rest = path.split("://", 1)
        return f"{scheme.lower()}://{os.path.normpath('/' + rest).lstrip('/')}"
    if path.startswith("file:"):
        path = path[len("file:"):]
    return os.path.realpath(path)


def is_within(path: str, root: str) -> bool:
    """Whether `path` is `root` or lies under it (both as normal_location gives them)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def expand_glob(pattern: str) -> list[str]:
    """Files matching `pattern`, sorted; local patterns return absolute paths."""
    if not pattern.startswith("s3://"):
        return sorted(p for p in local_glob.glob(pattern) if os.path.isfile(p))
    fs, path = filesystem(pattern)
    root = glob_root(path)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted("s3://" + i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.path, path))


@dataclass(frozen=True)
class ParquetFooter:
    path: str
    num_rows: int
    schema: object  # pyarrow.Schema
    # Float columns whose row-group min equals max: NaNs may hide there, and Sail 0.7.2 reads
    # such a column as the constant, replacing every NaN with it (measured, silently).
    constant_float_columns: tuple[str, ...] = ()
    size: int = 0  # bytes
    modified_ns: Optional[int] = None  # modification time, ns since the epoch, where the store keeps one
    # Digest of the footer (row groups, offsets, statistics) and size: equal only for copies of one file.
    fingerprint: str = ""
    # What a Spark engine infers its schema from: the Parquet schema (physical and logical types)
    # and the Spark schema a Spark writer left in the footer. Files with equal ones read as one schema.
    spark_schema_source: str = ""

    @property
    def file_name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


def read_footer(path: str) -> ParquetFooter:
    """Row count and schema of one parquet file from its footer alone."""
    fs, inner = filesystem(path)
    info = fs.get_file_info(inner)
    with fs.open_input_file(inner) as handle:
        metadata = pq.ParquetFile(handle).metadata
        return ParquetFooter(path=path, num_rows=metadata.num_rows, schema=metadata.schema.to_arrow_schema(),
                             constant_float_columns=_constant_float_columns(metadata), size=info.size,
                             modified_ns=info.mtime_ns, fingerprint=_fingerprint(metadata, info.size),
                             spark_schema_source=_spark_schema_source(metadata))


def null_counts(path: str) -> dict[str, int]:
    """Each top-level column's nulls in one parquet file, from its footer's row-group statistics;
    a column some row group keeps no null count for is left out (its nulls are unknown)."""
    fs, inner = filesystem(path)
    with fs.open_input_file(inner) as handle:
        metadata = pq.ParquetFile(handle).metadata
    if metadata.num_row_groups == 0:
        return {name: 0 for name in metadata.schema.to_arrow_schema().names}
    counts: dict[str, int] = {}
    unknown: set[str] = set()
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            column = row_group.column(index)
            name = column.path_in_schema
            statistics = column.statistics
            if "." in name or statistics is None or not statistics.has_null_count:
                unknown.add(name.split(".", 1)[0])
                continue
            counts[name] = counts.get(name, 0) + statistics.null_count
    return {name: count for name, count in counts.items() if name not in unknown}


def _fingerprint(metadata: pq.FileMetaData, size: int) -> str:
    # The serialised footer, not `to_dict()`: that decodes string statistics and raises on a
    # column holding bytes that are not UTF-8.
    footer = io.BytesIO()
    metadata.write_metadata_file(footer)
    return hashlib.sha256(size.to_bytes(8, "little") + footer.getvalue()).hexdigest()


# The key-value entry in which Spark's parquet writer stores the Spark schema; its reader prefers it.
SPARK_SCHEMA_KEY = b"org.apache.spark.sql.parquet.row.metadata"


def _spark_schema_source(metadata: pq.FileMetaData) -> str:
    # The printed schema's first line names the Python object (its address), not the schema.
    printed = str(metadata.schema).split("\n", 1)[-1]
    stored = (metadata.metadata or {}).get(SPARK_SCHEMA_KEY, b"")
    return printed + "\n" + stored.decode("utf-8", "replace")


def file_stat(path: str) -> tuple[Optional[int], Optional[int]]:
    """Size in bytes and modification time (ns) of one file; (None, None) when it cannot be stat'ed."""
    try:
        fs, inner = filesystem(path)
        info = fs.get_file_info(inner)
    except (OSError, pa.ArrowException):
        return None, None
    return info.size, info.mtime_ns


def tree_bytes(root: str) -> int:
    """Total size of the files under `root` (0 when it does not exist)."""
    fs, inner = filesystem(root)
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    return sum(i.size for i in infos if i.type == pafs.FileType.File)


def _constant_float_columns(metadata: pq.FileMetaData) -> tuple[str, ...]:
    found = set()
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            column = row_group.column(index)
            stats = column.statistics
            if (column.physical_type in ("FLOAT", "DOUBLE") and stats is not None and stats.has_min_max
                    and stats.min == stats.max):
                found.add(column.path_in_schema)
    return tuple(sorted(found))


def exists(uri: str) -> bool:
    fs, inner = filesystem(uri)
    return fs.get_file_info(inner).type != pafs.FileType.NotFound


def read_table(path: str, columns: Optional[list[str]] = None) -> pa.Table:
    fs, inner = filesystem(path)
    return pq.read_table(inner, columns=columns, filesystem=fs)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_S3_ERROR_FIELD = re.compile(r"<(Code|Message|Resource|Key|BucketName)>([^<]*)</\1>")


def describe_storage_error(text: str) -> Optional[str]:
    """One line for an object-store error whose news is spread over several lines; None otherwise.

    The Rust object_store (inside Sail and delta-rs) puts the S3 error document after its first
    line (`Server returned non-2xx status code: 500 ...: <?xml ...`), and delta-rs prints its
    chain of causes one per line behind `↳` marks, so the first line alone says only `Generic S3
    error`. Here the S3 code, message and object (where the store names it) or the chained
    causes (the request, the retries, the reason) are joined into one line.
    """
    lines = [line.strip() for line in _ANSI.sub("", text).strip().splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    if "<Error>" in text:
        fields = dict(_S3_ERROR_FIELD.findall(text))
        status = lines[0].split("<", 1)[0].rstrip(": ")
        where = fields.get("Resource") or "/".join(filter(None, (fields.get("BucketName"), fields.get("Key"))))
        described = f"{status}: S3 {fields.get('Code', 'error')}: {fields.get('Message', '').rstrip('.')}"
        return described + (f" (object {where})" if where else "")
    if any(line.startswith("↳") for line in lines[1:]):
        return ": ".join(line.lstrip("↳ ").strip() for line in lines)
    return None
