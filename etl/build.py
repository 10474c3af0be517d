"""Run a build plan: materialise each table's SELECT into its table, layer by layer.

For each table: bind the input views it names, run its SQL, check the result's schema against
the contract, write it (only the chosen subset partitions when `--subsets` is given) and
register it as `laion.<table>`. Writes are serialised: one writer per table at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from etl.config import Config
from etl.contracts import ContractError
from etl.images import INDEX_DDL, index_batches
from etl.plan import IMAGE_VIEW, SOURCE_VIEWS, BuildPlan
from etl.progress import step
from etl.project import DATABASE, Table, discover_tables
from etl.sources import read_family
from etl.writer import register_table, table_exists, table_rows, write_table

SUBSET_DEFAULTS_VIEW = "cfg_subsets"


class BuildError(RuntimeError):
    """A build step that cannot go on; the message names the table."""


@dataclass(frozen=True)
class StepResult:
    table: str
    layer: str
    rows_in: Optional[int]
    rows_out: Optional[int]
    version: Optional[int]
    seconds: float
    path: str


def register_existing_tables(spark, config: Config) -> list[Table]:
    """Register every table already in the warehouse, so SQL can name it `laion.<table>`."""
    present = []
    for table in discover_tables():
        path = table.path(config)
        if table_exists(path, config.format):
            register_table(spark, table.name, path, config.format, bool(table.partition_by(config)))
            present.append(table)
    return present


def run_build(spark, plan: BuildPlan) -> list[StepResult]:
    config = plan.config
    register_existing_tables(spark, config)
    known = {t.name: t for t in discover_tables()}
    results = []
    for table in plan.tables:
        _require_upstream(config, known, table)
        _bind_input_views(spark, plan, table)
        rows_in = plan.input_rows(table)
        if rows_in is None and table.driving_table:
            rows_in = table_rows(spark, known[table.driving_table].path(config), config.format, plan.subsets)
        with step(f"[{table.layer}] {table.name} <- {plan.describe_inputs(table)}") as timer:
            written = _materialise(spark, plan, table)
        results.append(StepResult(
            table=table.name, layer=table.layer, rows_in=rows_in, rows_out=written.rows_written,
            version=written.version, seconds=timer.seconds, path=table.path(config),
        ))
    return results


def _materialise(spark, plan: BuildPlan, table: Table):
    df = spark.sql(table.sql)
    actual = [(f.name, f.dataType.simpleString()) for f in df.schema.fields]
    problems = table.contract.schema_differences(actual)
    if problems:
        raise ContractError(f"{table.name}: the SELECT in {table.sql_path.name} breaks its contract "
                            f"{table.contract.path.name}: {'; '.join(problems)}")
    partition_by = table.partition_by(plan.config)
    written = write_table(spark, df, table.path(plan.config), plan.config.format, partition_by, plan.subsets)
    register_table(spark, table.name, table.path(plan.config), plan.config.format, bool(partition_by))
    return written


def _require_upstream(config: Config, known: dict[str, Table], table: Table) -> None:
    for name in table.upstream_tables:
        upstream = known.get(name)
        if upstream is None:
            raise BuildError(f"{table.name}: {table.sql_path.name} reads {DATABASE}.{name}, which no sql/ file defines")
        if not table_exists(upstream.path(config), config.format):
            raise BuildError(f"{table.name}: needs {DATABASE}.{name}, which is not built yet at "
                             f"{upstream.path(config)} (build layer {upstream.layer} first)")


def _bind_input_views(spark, plan: BuildPlan, table: Table) -> None:
    for view in table.input_views:
        if view in SOURCE_VIEWS:
            read_family(spark, SOURCE_VIEWS[view], plan.source_files[SOURCE_VIEWS[view]]).createOrReplaceTempView(view)
        elif view == IMAGE_VIEW:
            _image_index_source(spark, plan).createOrReplaceTempView(view)
        elif view == SUBSET_DEFAULTS_VIEW:
            rows = [(s.name, s.language) for s in plan.config.sources]
            spark.createDataFrame(rows, "subset string, default_language string").createOrReplaceTempView(view)
        else:
            raise BuildError(f"{table.name}: {table.sql_path.name} reads view {view!r}, which the framework does not provide")


def _image_index_source(spark, plan: BuildPlan):
    shards = [(s.folder, s.file_name) for s in plan.image_shards]
    if not shards:
        return spark.createDataFrame([], INDEX_DDL)
    listing = spark.createDataFrame(shards, "folder string, file_name string")
    # One shard per task: the work is opening image files, which parallelises well.
    return listing.repartition(min(len(shards), 64)).mapInArrow(index_batches, INDEX_DDL)
