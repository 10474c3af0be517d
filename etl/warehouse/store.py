"""The table writer: the one place that knows the storage format, partition overwrite and rollback.

Delta: a partial rebuild uses `replaceWhere` with the DataFrame filtered by the same predicate
(on Sail, `partitionOverwriteMode=dynamic` silently overwrites the whole table, and rows outside
a replaceWhere predicate are appended instead of refused). Every commit carries the run id as
its `userMetadata`. Versions, written-row counts and restores go through delta-rs, so they mean
the same whatever engine wrote the table. Parquet (JVM tests only): the named partition folders
are removed and the new rows appended (dynamic overwrite would keep an emptied partition's old
rows), and a copy of the previous files taken before the write stands in for a version to restore.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import pyarrow.fs as pafs
from pyspark.sql import DataFrame

from etl.project.tables import DATABASE
from etl.ingest.storage import exists, filesystem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteResult:
    rows_written: Optional[int]
    version: Optional[int]


def replace_predicate(replace: Mapping[str, Sequence[str]]) -> str:
    return " and ".join(f"{column} in ({', '.join(sql_string(v) for v in values)})"
                        for column, values in replace.items())


def sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def write_table(spark, df: DataFrame, path: str, fmt: str, partition_by: Sequence[str],
                replace: Optional[Mapping[str, Sequence[str]]] = None,
                run_id: Optional[str] = None) -> WriteResult:
    """Overwrite the table at `path`; with `replace`, only the partitions it names."""
    partial = bool(replace) and set(replace) <= set(partition_by) and table_exists(path, fmt)
    predicate = replace_predicate(replace) if partial else None
    if predicate:
        df = df.filter(predicate)
    writer = df.write.format(fmt).mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if fmt == "delta":
        writer = writer.option("replaceWhere", predicate) if predicate else writer.option("overwriteSchema", "true")
        if run_id:
            writer = writer.option("userMetadata", run_id)
        before = delta_version(path)
        writer.save(path)
        after = delta_version(path)
        # Replacing nothing with nothing makes no commit: then no row was written.
        return WriteResult(rows_written=_delta_rows_written(path) if after != before else 0, version=after)
    if predicate:
        # Dynamic overwrite only replaces partitions the new rows land in; an emptied subset
        # would keep its old rows. So: drop the named partitions, then append.
        _delete_partitions(path, replace)
        writer = writer.mode("append")
    writer.save(path)
    if not table_exists(path, fmt):
        return WriteResult(rows_written=0, version=None)
    written = spark.read.format(fmt).load(path)
    return WriteResult(rows_written=(written.filter(predicate) if predicate else written).count(), version=None)


def _delete_partitions(path: str, replace: Mapping[str, Sequence[str]]) -> None:
    fs, inner = filesystem(path)
    folders = [inner.rstrip("/")]
    for column, values in replace.items():
        folders = [f"{folder}/{column}={value}" for folder in folders for value in values]
    for folder in folders:
        if fs.get_file_info(folder).type != pafs.FileType.NotFound:
            fs.delete_dir(folder)


def append_rows(df: DataFrame, path: str, fmt: str, run_id: Optional[str] = None) -> None:
    """Blind append (safe to retry): the run bookkeeping tables grow by one run at a time."""
    writer = df.write.format(fmt).mode("append")
    if fmt == "delta" and run_id:
        writer = writer.option("userMetadata", run_id)
    writer.save(path)


def table_exists(path: str, fmt: str) -> bool:
    if fmt == "delta":
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(path)
    # A parquet table is its data files: Spark leaves a bare folder behind an empty write.
    if not exists(path):
        return False
    fs, inner = filesystem(path)
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    return any(i.type == pafs.FileType.File and i.path.endswith(".parquet") for i in infos)


def delta_version(path: str) -> Optional[int]:
    from deltalake import DeltaTable

    return DeltaTable(path).version() if DeltaTable.is_deltatable(path) else None


def _delta_rows_written(path: str) -> Optional[int]:
    from deltalake import DeltaTable

    metrics = DeltaTable(path).history(limit=1)[0].get("operationMetrics") or {}
    rows = metrics.get("numOutputRows")
    return None if rows is None else int(rows)


def table_rows(spark, path: str, fmt: str, subsets: Optional[Sequence[str]] = None) -> int:
    """Rows in the table's current version (only `subsets`' partitions when given).

    Delta: summed from the log's per-file record counts, no data scanned.
    """
    if fmt == "delta":
        from deltalake import DeltaTable

        actions = DeltaTable(path).get_add_actions(flatten=True)
        counts = actions.column("num_records").to_pylist()
        if subsets is not None and "partition.subset" in actions.column_names:
            keep = [value in subsets for value in actions.column("partition.subset").to_pylist()]
            counts = [count for count, kept in zip(counts, keep) if kept]
        return sum(count or 0 for count in counts)
    df = spark.read.format(fmt).load(path)
    return (df.filter(replace_predicate({"subset": subsets})) if subsets is not None else df).count()


class Rollback:
    """Taken before a write; `restore()` makes the previous state current again.

    Delta: restore the previous version with delta-rs (a new commit; history keeps the rejected
    version for inspection), or remove a table this write created. Parquet: put back a copy.
    """

    def __init__(self, path: str, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self.previous_version = delta_version(path) if fmt == "delta" else None
        self._backup = None
        if fmt != "delta" and exists(path):
            if "://" in path:
                raise NotImplementedError(f"{path}: parquet tables on object storage cannot be rolled back")
            self._backup = path.rstrip("/") + ".rollback"
            shutil.rmtree(self._backup, ignore_errors=True)
            shutil.copytree(path, self._backup)

    def restore(self, run_id: str) -> Optional[int]:
        """Undo the write; returns the version now current (None when the table is gone)."""
        if self.fmt == "delta":
            from deltalake import CommitProperties, DeltaTable

            if self.previous_version is None:
                self._remove_table()
                return None
            DeltaTable(self.path).restore(self.previous_version,
                                          commit_properties=CommitProperties(custom_metadata={"userMetadata": run_id}))
            return self.previous_version
        shutil.rmtree(self.path, ignore_errors=True)
        if self._backup:
            shutil.move(self._backup, self.path)
        return None

    def discard(self) -> None:
        if self._backup:
            shutil.rmtree(self._backup, ignore_errors=True)

    def _remove_table(self) -> None:
        fs, inner = filesystem(self.path)
        fs.delete_dir(inner)
        log.warning("%s: removed the table this run had created", self.path)


def register_table(spark, name: str, path: str, fmt: str, partitioned: bool) -> None:
    """(Re)register `laion.<name>` over the table at `path` in the session catalog."""
    if not table_exists(path, fmt):  # e.g. a parquet table whose only write was empty
        spark.sql(f"drop table if exists {DATABASE}.{name}")
        return
    spark.sql(f"create table if not exists {DATABASE}.{name} using {fmt} location {sql_string(path)}")
    if fmt != "delta":
        if partitioned:
            spark.sql(f"alter table {DATABASE}.{name} recover partitions")
        spark.sql(f"refresh table {DATABASE}.{name}")
