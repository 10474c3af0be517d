"""The table store: the one place that knows the table format (Delta or parquet).

Everything the pipeline does with a table goes through a `TableStore` chosen once from the
config's `format` by `table_store()`: write (whole, or only the named partitions), append, read
(a given version), row count, version, history, restore, register in the session catalog.
Callers never ask which format they have; a new format is a new subclass.

Delta: a partial rebuild uses `replaceWhere` with the DataFrame filtered by the same predicate
(on Sail, `partitionOverwriteMode=dynamic` silently overwrites the whole table, and rows outside
a replaceWhere predicate are appended instead of refused). Every commit carries the run id as
its `userMetadata`. Versions, history, row counts and restores go through delta-rs (Sail parses
no `DESCRIBE HISTORY` or `RESTORE`), so they mean the same whatever engine wrote the table.

A Delta table keeps file statistics (min, max, nulls) for its columns that are not text
(`delta.dataSkippingStatsColumns`, set when a write replaces the whole table; row counts are
always kept): the numbers a query filters or joins on (hash, sample_id, scores, sizes) let it
skip files, URLs and captions would not, and Delta's guidance is to keep long strings out of
the statistics. (It did not change the write time measurably: JVM, 10M rows of URL and TEXT,
19.5 / 19.9 s with it, 19.4 / 19.1 s without, alternating in one session.) A text column's nulls
are still known without a scan: every Parquet footer counts each column's nulls, and the checks'
not-null rules take them from there (`null_counts`).

A Delta log that cannot be parsed (a commit file cut short) fails naming the table and the file,
where delta-rs says only `Kernel error: Json error`; `set_aside` moves such a table out of the
way, never deleting it, for `build --force` to rebuild it from scratch.

Parquet (JVM engine only: Sail's dynamic overwrite replaces the whole table): the named partition
folders are removed and the new rows appended (dynamic overwrite would keep an emptied
partition's old rows); there are no versions, so a copy of the files taken before a write
stands in for the version to restore.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping, Optional, Sequence
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
from pyspark.sql import DataFrame

from etl.engine.paths import engine_path
from etl.ingest.storage import exists, filesystem, null_counts
from etl.project.config import Config
from etl.project.contracts import Contract
from etl.project.tables import DATABASE
from etl.s3_settings import S3Settings

log = logging.getLogger(__name__)

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FOOTER_READERS = 8  # footers read at once: on an object store each is a request or two


class BrokenTableError(RuntimeError):
    """A table whose log cannot be read; the message names the table's path and the log file."""


class PartialWriteError(RuntimeError):
    """A partial rebuild whose rows the table's current schema cannot take; the message says what to run."""


@dataclass(frozen=True)
class WriteResult:
    rows_written: Optional[int]
    version: Optional[int]


class Rollback(ABC):
    """Taken before a write; `restore()` makes the state before it current again."""

    @abstractmethod
    def restore(self, run_id: str) -> Optional[int]:
        """Undo the write; returns the version now current (None when there is none, or no table)."""

    def discard(self) -> None:
        """The write is kept: let go of whatever was saved to undo it."""


class TableStore(ABC):
    """A table format: how the tables at warehouse paths are written, read, versioned and restored."""

    format: str  # the Spark data source name, as the config's `format` spells it

    def __init__(self, s3: S3Settings) -> None:
        self.s3 = s3

    @abstractmethod
    def exists(self, path: str) -> bool:
        """A table is at `path` (a folder Spark left behind an empty write is none)."""

    @abstractmethod
    def version(self, path: str) -> Optional[int]:
        """The current version; None when the format keeps none or there is no table."""

    @abstractmethod
    def history(self, path: str, limit: Optional[int] = None) -> list[dict]:
        """The table's commits, newest first (operation, its metrics, userMetadata = run id)."""

    def read(self, spark, path: str, version: Optional[int] = None) -> DataFrame:
        """The table's rows, as of `version` when given (else the current version)."""
        if version is not None:
            raise ValueError(f"{path}: a {self.format} table has no versions to read")
        return spark.read.format(self.format).load(engine_path(path))

    @abstractmethod
    def read_rows(self, path: str, columns: list[str]) -> list[dict]:
        """The current rows of small tables, read without an engine."""

    @abstractmethod
    def rows(self, spark, path: str, subsets: Optional[Sequence[str]] = None) -> int:
        """Rows in the current version (only `subsets`' partitions when given)."""

    def null_counts(self, path: str) -> dict[str, int]:
        """Column -> nulls in the current version, where the format knows them without a scan;
        the columns left out are counted by a query."""
        return {}

    def write(self, spark, df: DataFrame, path: str, partition_by: Sequence[str],
              replace: Optional[Mapping[str, Sequence[str]]] = None, run_id: Optional[str] = None) -> WriteResult:
        """Overwrite the table at `path`; with `replace`, only the partitions it names."""
        partial = bool(replace) and set(replace) <= set(partition_by) and self.exists(path)
        if partial:
            df = df.filter(replace_predicate(replace))
            self._check_partial_schema(path, df)
        writer = df.write.format(self.format).mode("overwrite")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        if not partial:
            writer = writer.options(**self._table_options(df, partition_by))
        return self._save(spark, writer, path, replace if partial else None, run_id)

    def _check_partial_schema(self, path: str, df: DataFrame) -> None:
        """Refuse, before writing, rows a partial rebuild cannot add under the table's current schema."""

    def _table_options(self, df: DataFrame, partition_by: Sequence[str]) -> dict[str, str]:
        """Format options of a write that replaces the whole table (its properties)."""
        return {}

    @abstractmethod
    def _save(self, spark, writer, path: str, replace: Optional[Mapping[str, Sequence[str]]],
              run_id: Optional[str]) -> WriteResult:
        """Run the prepared overwrite: of the whole table, or of the partitions `replace` names."""

    @abstractmethod
    def append_rows(self, spark, path: str, contract: Contract, rows: list[tuple], run_id: str) -> None:
        """Blind append of a few rows (safe to retry), creating the table the first time: the run
        bookkeeping tables grow by one run at a time."""

    @abstractmethod
    def upsert_row(self, spark, path: str, contract: Contract, row: tuple, key: str, run_id: str) -> None:
        """Insert `row` into the existing table, replacing the row with the same `key`, in one write."""

    @abstractmethod
    def rollback_point(self, path: str) -> Rollback:
        """Taken before a write that the publish gate may undo."""

    def set_aside(self, path: str) -> str:
        """Move the (broken) table at `path` to a sibling folder, never deleting it; return where it went."""
        aside = f"{path.rstrip('/')}.broken-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
        fs, inner = filesystem(path)
        fs.move(inner, filesystem(aside)[1])
        return aside

    def register(self, spark, name: str, path: str, partitioned: bool) -> None:
        """(Re)register `laion.<name>` over the table at `path` in the session catalog."""
        if not self.exists(path):  # e.g. a parquet table whose only write was empty
            spark.sql(f"drop table if exists {DATABASE}.{name}")
            return
        for statement in self.registration_sql(name, engine_path(path), partitioned):
            spark.sql(statement)

    def registration_sql(self, name: str, location: str, partitioned: bool) -> list[str]:
        """The statements that make `laion.<name>` the table at `location` in a catalog."""
        return [f"create table if not exists {DATABASE}.{name} using {self.format} location {sql_string(location)}",
                *self._refresh_sql(name, partitioned)]

    def _refresh_sql(self, name: str, partitioned: bool) -> list[str]:
        """Bring a registered table up to date with what a write changed under it: nothing to do
        where the table's own log says what it holds, as Delta's does."""
        return []


class DeltaStore(TableStore):
    format = "delta"

    def _table(self, path: str):
        """The table at `path` through delta-rs; a log it cannot parse fails naming the file
        (delta-rs says only `Kernel error: Json error ...`)."""
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError

        try:
            return DeltaTable(path, storage_options=self._storage_options(path))
        except DeltaError as exc:
            unreadable = unreadable_log_file(path)
            if unreadable is None:
                raise
            log_file, reason = unreadable
            raise BrokenTableError(f"the Delta log of {path} is broken: {log_file} cannot be read ({reason})") from exc

    def _storage_options(self, path: str) -> Optional[dict[str, str]]:
        return self.s3.delta_storage_options() if path.startswith("s3://") else None

    def _table_options(self, df: DataFrame, partition_by: Sequence[str]) -> dict[str, str]:
        from pyspark.sql.types import AtomicType, BinaryType, StringType

        indexed = [f.name for f in df.schema.fields if f.name not in partition_by and _PLAIN_NAME.fullmatch(f.name)
                   and isinstance(f.dataType, AtomicType) and not isinstance(f.dataType, (StringType, BinaryType))]
        return {"delta.dataSkippingStatsColumns": ",".join(indexed)} if indexed else {}

    def _check_partial_schema(self, path: str, df: DataFrame) -> None:
        """A replaceWhere keeps the table's schema, NOT NULL columns included: rows with a null where an
        older SQL never had one (the DMD's file_name, since joined-only hashes have rows) would fail
        mid-write with Delta's `NOT NULL constraint violated`; only a whole rebuild replaces the schema.
        The rows are looked at only where the schemas differ (an engine may read every column as nullable)."""
        from pyspark.sql import functions as F

        required = {field.name for field in self._table(path).schema().fields if not field.nullable}
        loosened = [field.name for field in df.schema.fields if field.nullable and field.name in required]
        if not loosened:
            return
        counts = df.select(*[F.count(F.when(F.col(name).isNull(), 1)).alias(name) for name in loosened]).first()
        with_nulls = [name for name in loosened if counts[name]]
        if with_nulls:
            raise PartialWriteError(
                f"{path}: the new rows hold nulls in {', '.join(with_nulls)}, which this table's current version "
                "(written by an older SQL) declares NOT NULL, and a partial rebuild keeps that schema: rebuild the "
                "whole table once (a build without --subsets)")

    def exists(self, path: str) -> bool:
        return self._table_if_any(path) is not None

    def version(self, path: str) -> Optional[int]:
        table = self._table_if_any(path)
        return None if table is None else table.version()

    def _table_if_any(self, path: str):
        """The table at `path`, None where no Delta log is; one that cannot be read raises
        BrokenTableError (delta-rs's own check looks only for a commit file), so every command
        stops at its first look at the table."""
        from deltalake import DeltaTable

        if not DeltaTable.is_deltatable(path, storage_options=self._storage_options(path)):
            return None
        return self._table(path)

    def history(self, path: str, limit: Optional[int] = None) -> list[dict]:
        return self._table(path).history(limit)

    def read(self, spark, path: str, version: Optional[int] = None) -> DataFrame:
        reader = spark.read.format(self.format)
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(engine_path(path))

    def read_rows(self, path: str, columns: list[str]) -> list[dict]:
        return self._table(path).to_pyarrow_table(columns=columns).to_pylist()

    def rows(self, spark, path: str, subsets: Optional[Sequence[str]] = None) -> int:
        """Summed from the log's per-file record counts, no data scanned."""
        actions = self._table(path).get_add_actions(flatten=True)
        counts = actions.column("num_records").to_pylist()
        if subsets is not None and "partition.subset" in actions.column_names:
            keep = [value in subsets for value in actions.column("partition.subset").to_pylist()]
            counts = [count for count, kept in zip(counts, keep) if kept]
        return sum(count or 0 for count in counts)

    def null_counts(self, path: str) -> dict[str, int]:
        """Summed from the Parquet footers of the current version's files (the log keeps no
        statistics for text columns): a column a footer has no null count for is left out, and a
        table whose files do not hold its rows as they are (deletion vectors, column mapping:
        reader protocol above 1) gets nothing."""
        table = self._table(path)
        if table.protocol().min_reader_version != 1:
            return {}
        with ThreadPoolExecutor(FOOTER_READERS) as pool:
            per_file = list(pool.map(null_counts, current_data_files(table)))
        if not per_file:
            return {}
        known = set.intersection(*(set(counts) for counts in per_file))
        return {name: sum(counts[name] for counts in per_file) for name in sorted(known)}

    def _save(self, spark, writer, path, replace, run_id) -> WriteResult:
        if replace:
            writer = writer.option("replaceWhere", replace_predicate(replace))
        else:
            writer = writer.option("overwriteSchema", "true")
        if run_id:
            writer = writer.option("userMetadata", run_id)
        before = self.version(path)
        writer.save(engine_path(path))
        after = self.version(path)
        # Replacing nothing with nothing makes no commit: then no row was written.
        return WriteResult(rows_written=self._rows_written(path) if after != before else 0, version=after)

    def _rows_written(self, path: str) -> Optional[int]:
        metrics = self.history(path, limit=1)[0].get("operationMetrics") or {}
        rows = metrics.get("numOutputRows")
        if rows is None and metrics.get("numFiles") == "0":
            return 0  # JVM Delta leaves numOutputRows out of a commit that added no file
        return None if rows is None else int(rows)

    def append_rows(self, spark, path, contract, rows, run_id) -> None:
        """Written by delta-rs, as `upsert_row` is: a few rows in milliseconds, where a write
        through the JVM engine took 0.8 s each (11 a build) once the engine was warm."""
        import pyarrow as pa
        from deltalake import write_deltalake

        table = pa.Table.from_pylist([dict(zip(contract.column_names, row)) for row in rows],
                                     schema=_arrow_schema(contract))
        write_deltalake(path, table, mode="append", partition_by=list(contract.partition_by) or None,
                        storage_options=self._storage_options(path), commit_properties=_commit_properties(run_id))

    def upsert_row(self, spark, path, contract, row, key, run_id) -> None:
        import pyarrow as pa

        source = pa.Table.from_pylist([dict(zip(contract.column_names, row))], schema=_arrow_schema(contract))
        (self._table(path).merge(source, predicate=f"target.{key} = source.{key}", source_alias="source",
                                 target_alias="target", commit_properties=_commit_properties(run_id))
         .when_matched_update_all().when_not_matched_insert_all().execute())

    def restore(self, path: str, version: int, run_id: str) -> None:
        """Make `version` current again by a new commit: history keeps the versions after it."""
        self._table(path).restore(version, commit_properties=_commit_properties(run_id))

    def rollback_point(self, path: str) -> Rollback:
        return DeltaRollback(self, path)


class DeltaRollback(Rollback):
    """Restore the previous version with delta-rs (the rejected version stays in the history for
    inspection), or remove a table the write created."""

    def __init__(self, store: DeltaStore, path: str) -> None:
        self.store, self.path = store, path
        self.previous_version = store.version(path)

    def restore(self, run_id: str) -> Optional[int]:
        # A write that failed may have committed nothing (or, for a new table, left files but no log).
        if self.previous_version is None:
            if exists(self.path):
                fs, inner = filesystem(self.path)
                fs.delete_dir(inner)
                log.warning("%s: removed the table this run had created", self.path)
            return None
        if self.store.version(self.path) != self.previous_version:
            self.store.restore(self.path, self.previous_version, run_id)
        return self.previous_version


DELTA_LOG = "_delta_log"
_COMMIT_FILE = re.compile(r"(\d{20})\.json\Z")


def current_data_files(table) -> list[str]:
    """The data files of a delta-rs `DeltaTable`'s current version, as URIs a reader opens: delta-rs
    gives them as the log holds them, percent-encoded ("wh%20space")."""
    return [unquote(uri) for uri in table.file_uris()]


def unreadable_log_file(path: str) -> Optional[tuple[str, str]]:
    """The first file of the Delta log at `path` that is not what Delta writes there, and why; None
    when each parses (or the log cannot be listed: then the failure is the store's, not the log's).

    The files read are the ones a reader needs: `_last_checkpoint` and the commits after it.
    """
    fs, inner = filesystem(path)
    folder = f"{inner.rstrip('/')}/{DELTA_LOG}"
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        names = sorted(info.base_name for info in infos if info.type == pafs.FileType.File)
        since = -1
        if "_last_checkpoint" in names:
            try:
                since = int(json.loads(_read_text(fs, f"{folder}/_last_checkpoint"))["version"])
            except (ValueError, KeyError, TypeError) as exc:
                return f"{path.rstrip('/')}/{DELTA_LOG}/_last_checkpoint", f"not a checkpoint pointer: {exc}"
        for name in names:
            match = _COMMIT_FILE.match(name)
            problem = _commit_problem(_read_text(fs, f"{folder}/{name}")) if match and int(match[1]) > since else None
            if problem:
                return f"{path.rstrip('/')}/{DELTA_LOG}/{name}", problem
    except (OSError, pa.ArrowException):
        return None
    return None


def _read_text(fs: pafs.FileSystem, inner: str) -> str:
    with fs.open_input_stream(inner) as stream:
        return stream.read().decode("utf-8", errors="replace")


def _commit_problem(text: str) -> Optional[str]:
    """Why a commit file is not one JSON action per line, or None."""
    if not text.strip():
        return "empty commit file"
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                json.loads(line)
            except ValueError as exc:
                return f"line {number}: {exc}"
    return None


class ParquetStore(TableStore):
    format = "parquet"

    def exists(self, path: str) -> bool:
        # A parquet table is its data files: Spark leaves a bare folder behind an empty write.
        if not exists(path):
            return False
        fs, inner = filesystem(path)
        infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
        return any(i.type == pafs.FileType.File and i.path.endswith(".parquet") for i in infos)

    def version(self, path: str) -> Optional[int]:
        return None

    def history(self, path: str, limit: Optional[int] = None) -> list[dict]:
        return []

    def read_rows(self, path: str, columns: list[str]) -> list[dict]:
        import pyarrow.dataset as ds

        fs, inner = filesystem(path)
        return ds.dataset(inner, filesystem=fs, format="parquet", partitioning="hive").to_table(columns=columns).to_pylist()

    def rows(self, spark, path: str, subsets: Optional[Sequence[str]] = None) -> int:
        df = self.read(spark, path)
        return (df.filter(replace_predicate({"subset": subsets})) if subsets is not None else df).count()

    def _save(self, spark, writer, path, replace, run_id) -> WriteResult:
        if replace:
            # Dynamic overwrite only replaces partitions the new rows land in; an emptied subset
            # would keep its old rows. So: drop the named partitions, then append.
            _delete_partitions(path, replace)
            writer = writer.mode("append")
        writer.save(engine_path(path))
        if not self.exists(path):
            return WriteResult(rows_written=0, version=None)
        written = self.read(spark, path)
        if replace:
            written = written.filter(replace_predicate(replace))
        return WriteResult(rows_written=written.count(), version=None)

    def append_rows(self, spark, path, contract, rows, run_id) -> None:
        spark.createDataFrame(rows, contract.ddl).write.format(self.format).mode("append").save(engine_path(path))

    def upsert_row(self, spark, path, contract, row, key, run_id) -> None:
        # The bookkeeping tables are small: rewrite the table whole.
        position = contract.column_names.index(key)
        others = [tuple(r) for r in self.read(spark, path).collect() if r[key] != row[position]]
        (spark.createDataFrame(others + [row], contract.ddl).write.mode("overwrite").format(self.format)
         .save(engine_path(path)))

    def rollback_point(self, path: str) -> Rollback:
        return ParquetRollback(path)

    def _refresh_sql(self, name: str, partitioned: bool) -> list[str]:
        # A catalog table over plain files knows only the partitions and files it has seen.
        recover = [f"alter table {DATABASE}.{name} recover partitions"] if partitioned else []
        return [*recover, f"refresh table {DATABASE}.{name}"]


class ParquetRollback(Rollback):
    """A copy of the table's files, put back on restore (local warehouses only)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._backup = None
        if exists(path):
            if "://" in path:
                raise NotImplementedError(f"{path}: parquet tables on object storage cannot be rolled back")
            self._backup = path.rstrip("/") + ".rollback"
            shutil.rmtree(self._backup, ignore_errors=True)
            shutil.copytree(path, self._backup)

    def restore(self, run_id: str) -> Optional[int]:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._backup:
            shutil.move(self._backup, self.path)
        return None

    def discard(self) -> None:
        if self._backup:
            shutil.rmtree(self._backup, ignore_errors=True)


STORES = {store.format: store for store in (DeltaStore, ParquetStore)}


def table_store(config: Config) -> TableStore:
    """The store for the config's table format, reaching object storage with the config's S3 settings."""
    return STORES[config.format](S3Settings.from_config(config))


def replace_predicate(replace: Mapping[str, Sequence[str]]) -> str:
    return " and ".join(f"{column} in ({', '.join(sql_string(v) for v in values)})"
                        for column, values in replace.items())


def sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _delete_partitions(path: str, replace: Mapping[str, Sequence[str]]) -> None:
    fs, inner = filesystem(path)
    folders = [inner.rstrip("/")]
    for column, values in replace.items():
        folders = [f"{folder}/{column}={value}" for folder in folders for value in values]
    for folder in folders:
        if fs.get_file_info(folder).type != pafs.FileType.NotFound:
            fs.delete_dir(folder)


def _commit_properties(run_id: str):
    from deltalake import CommitProperties

    return CommitProperties(custom_metadata={"userMetadata": run_id})


def _arrow_schema(contract: Contract):
    import pyarrow as pa

    types = {"string": pa.string(), "bigint": pa.int64(), "int": pa.int32(), "double": pa.float64(),
             "float": pa.float32(), "boolean": pa.bool_()}
    return pa.schema([(c.name, types[c.type]) for c in contract.columns])
