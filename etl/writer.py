"""The table writer: the one place that knows the storage format and how to overwrite partitions.

Delta: a partial rebuild uses `replaceWhere` with the DataFrame filtered by the same predicate
(on Sail, `partitionOverwriteMode=dynamic` silently overwrites the whole table, and rows outside
a replaceWhere predicate are appended instead of refused). Parquet (JVM engine only): dynamic
partition overwrite, which is right there. Versions and written-row counts come from the Delta
log through delta-rs, so they mean the same whatever engine wrote the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from pyspark.sql import DataFrame

from etl.project import DATABASE


@dataclass(frozen=True)
class WriteResult:
    rows_written: Optional[int]
    version: Optional[int]


def partition_predicate(column: str, values: Sequence[str]) -> str:
    return f"{column} in ({', '.join(sql_string(v) for v in values)})"


def sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def write_table(spark, df: DataFrame, path: str, fmt: str, partition_by: Sequence[str],
                subsets: Optional[Sequence[str]]) -> WriteResult:
    """Write `df` to the table at `path`; with `subsets`, replace only those subset partitions."""
    partial = subsets is not None and "subset" in partition_by and table_exists(path, fmt)
    predicate = partition_predicate("subset", subsets) if partial else None
    if predicate:
        df = df.filter(predicate)
    writer = df.write.format(fmt).mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if fmt == "delta":
        writer = writer.option("replaceWhere", predicate) if predicate else writer.option("overwriteSchema", "true")
        writer.save(path)
        return WriteResult(rows_written=_delta_rows_written(path), version=delta_version(path))
    mode = "dynamic" if predicate else "static"
    spark.conf.set("spark.sql.sources.partitionOverwriteMode", mode)
    writer.save(path)
    written = spark.read.format(fmt).load(path)
    return WriteResult(rows_written=(written.filter(predicate) if predicate else written).count(), version=None)


def table_exists(path: str, fmt: str) -> bool:
    if fmt == "delta":
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(path)
    from etl.storage import exists

    return exists(path)


def delta_version(path: str) -> Optional[int]:
    from deltalake import DeltaTable

    return DeltaTable(path).version() if DeltaTable.is_deltatable(path) else None


def _delta_rows_written(path: str) -> Optional[int]:
    from deltalake import DeltaTable

    metrics = DeltaTable(path).history(limit=1)[0].get("operationMetrics") or {}
    rows = metrics.get("numOutputRows")
    return None if rows is None else int(rows)


def register_table(spark, name: str, path: str, fmt: str, partitioned: bool) -> None:
    """(Re)register `laion.<name>` over the table at `path` in the session catalog."""
    spark.sql(f"create table if not exists {DATABASE}.{name} using {fmt} location {sql_string(path)}")
    if fmt != "delta":
        if partitioned:
            spark.sql(f"alter table {DATABASE}.{name} recover partitions")
        spark.sql(f"refresh table {DATABASE}.{name}")


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
    return (df.filter(partition_predicate("subset", subsets)) if subsets is not None else df).count()
