"""Paths that may be local or `s3://`: globbing, listing and parquet footers via pyarrow.fs.

The S3 endpoint comes from the environment (`AWS_ENDPOINT_URL`, set from the config's
`s3.endpoint` by the session factory), credentials from the usual AWS variables.
"""

from __future__ import annotations

import fnmatch
import glob as local_glob
import os
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlencode

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow filesystem and in-filesystem path for a local path or an `s3://` URI.

    For S3 the endpoint comes from AWS_ENDPOINT_URL (boto3's name) or AWS_ENDPOINT (Sail's),
    with http when the endpoint says so or AWS_ALLOW_HTTP is true, so pyarrow reaches the same
    object store as the engine. Credentials come from the usual AWS environment variables.
    """
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    if not uri.startswith("s3://"):
        return pafs.FileSystem.from_uri(uri)
    options = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT")
    if endpoint:
        scheme, separator, host = endpoint.partition("://")
        if separator:
            options["endpoint_override"] = host.rstrip("/")
            options["scheme"] = scheme
        else:
            options["endpoint_override"] = endpoint.rstrip("/")
            allow_http = os.environ.get("AWS_ALLOW_HTTP", "").strip().lower() in ("true", "1", "yes")
            options["scheme"] = "http" if allow_http else "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return pafs.FileSystem.from_uri(f"{uri}?{urlencode(options)}" if options else uri)


def expand_glob(pattern: str) -> list[str]:
    """Files matching `pattern`, sorted; local patterns return absolute paths."""
    if not pattern.startswith("s3://"):
        return sorted(p for p in local_glob.glob(pattern) if os.path.isfile(p))
    fs, path = filesystem(pattern)
    prefix = path.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    root = prefix.rsplit("/", 1)[0]
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
                             modified_ns=info.mtime_ns)


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
