"""Run a build plan: materialise each table's SELECT into its table, layer by layer, behind a gate.

For each table: bind the input views it names, run its SQL, check the result's schema against
the contract, write it (only the chosen subset partitions when `--subsets` is given), replace its
rows in the quarantine table (source rows the ODS could not accept), validate the new version with
the contract's rules and, when a `fail` rule breaks, restore the previous version and stop: no
downstream table is built on it. Anything else that stops the build between the write and the
publication (checks that crash, the engine failing, an interrupt) is treated the same way, so a
version nobody checked never stays current. Writes are serialised: one writer per table at a time.

The quarantine costs a second scan of the source files (the rejected rows are a query of their
own), about a tenth of a Sail build, so it runs only where rows were rejected. Every source row is
either accepted or rejected, and the footers count the source rows without a scan; so where the
table's SQL cannot make more rows than it reads (`never_adds_rows`: no join, set operation,
generator or grouping set) and the write committed as many rows as the footers count, nothing was
rejected and the quarantine's rows for those subsets are replaced by none, without reading a
source file. Otherwise the subsets whose rows fall short (the Delta log counts them per subset)
are scanned again for their rejected rows; a table whose SQL filters rows legitimately is always
scanned, which is correct, only slower. The alternatives cost more: counting the rejected rows in
the same scan needs observed metrics, which Sail 0.7.2 does not support ("collect metrics"), and
writing both outputs from one scan needs the rows cached. The ODS is written before its
quarantine; a run killed between the two has not recorded the table's inputs, so the next run
rebuilds both.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import reduce
from typing import Callable, Iterator, Mapping, Optional, Sequence

import sqlglot
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from sqlglot import exp
from sqlglot.errors import SqlglotError

from etl.build.inputs import SUBSET_COLUMN, WHOLE_TABLE
from etl.build.plan import BuildPlan
from etl.engine.session import engine_step
from etl.ingest.sources import RefusedFile, SourceError, SourceFile, UndecodableFileError, explain_read_failure
from etl.progress import step, timed
from etl.project.config import Config
from etl.project.contracts import ContractError
from etl.project.project import Project
from etl.project.tables import DATABASE, Table
from etl.quality.results import FAIL, WARN, RuleResult, TableQuality
from etl.build.views import SOURCE_VIEW_PREFIX, InputView
from etl.quality.validation import Validator, histograms
from etl.warehouse.meta import QUARANTINE, append_source_files, append_table_inputs, meta_path
from etl.warehouse.store import Rollback, WriteResult, table_store

log = logging.getLogger("etl")

UNCHANGED = "unchanged"  # a step's verdict when its inputs had not changed and it was skipped

class BuildError(RuntimeError):
    """A build step that cannot go on; the message names the table."""


class GateError(BuildError):
    """A new table version was not published (a `fail` rule broke, or its write or checks failed):
    the previous version was made current again, or the new table removed."""


@dataclass(frozen=True)
class StepResult:
    table: str
    layer: str
    rows_in: Optional[int]
    rows_out: Optional[int]
    quarantined: Optional[int]
    version: Optional[int]
    seconds: float
    verdict: str
    path: str


@dataclass
class BuildState:
    """What a build has done so far: kept up to date, so a failure can still be reported whole."""

    run_id: str
    validator: Optional[Validator]  # None when the plan rebuilds no table
    steps: list[StepResult] = field(default_factory=list)
    quality: list[TableQuality] = field(default_factory=list)
    published: dict[str, Optional[int]] = field(default_factory=dict)
    rolled_back: dict[str, Optional[int]] = field(default_factory=dict)
    refusals: dict[str, RuleResult] = field(default_factory=dict)  # ODS table -> its refused source files
    on_publish: Optional[Callable[[], None]] = None  # called after each table is published and recorded

    @property
    def quarantined_rows(self) -> int:
        return sum(s.quarantined or 0 for s in self.steps)


def register_existing_tables(spark, project: Project, config: Config) -> list[Table]:
    """Register every table already in the warehouse, so SQL can name it `laion.<table>`."""
    present = []
    store = table_store(config)
    for table in project.tables:
        path = table.path(config)
        if store.exists(path):
            store.register(spark, table.name, path, bool(table.partition_by(config)))
            present.append(table)
    return present


def run_build(spark, plan: BuildPlan, state: BuildState) -> None:
    config = plan.config
    spark.conf.set("spark.sql.shuffle.partitions", str(plan.shuffle_partitions))
    _set_aside_broken_tables(plan)
    register_existing_tables(spark, plan.project, config)
    known = plan.project.tables_by_name
    _apply_bad_file_policy(spark, plan, state)
    for table in plan.tables:
        _require_upstream(config, known, table)
        keys = plan.rebuild[table.name]
        if not keys:
            log.info("[%s] %s: inputs unchanged since it was built, skipped", table.layer, table.name)
            state.steps.append(_unchanged_step(table, config))
            continue
        outside_edit = plan.outside_edit(table)
        if outside_edit:
            log.warning("[%s] %s: %s: rebuilding all of it", table.layer, table.name, outside_edit)
        subsets = None if keys == (WHOLE_TABLE,) else keys
        with step(f"[{table.layer}] {table.name} <- {plan.describe_inputs(table, subsets)}") as timer:
            with _naming(table, config):
                rollback = table_store(config).rollback_point(table.path(config))
            # From the write until the table is published, whatever stops the build (a broken
            # `fail` rule, checks that crash, the engine failing, an interrupt) must not leave the
            # new, unchecked version current.
            written = None
            try:
                with _naming(table, config):
                    quarantined, written = _write_decodable_rows(spark, plan, table, state, subsets, rollback)
                with engine_step(f"{table.name}: checks"), timed(f"[{table.layer}] {table.name}: checks"):
                    quality = _validate(spark, plan, table, state, written.version)
                rows_in = plan.input_rows(table, subsets)  # after the write: it may have refused a file
                if rows_in is None and table.driving_table:
                    rows_in = table_store(config).rows(spark, known[table.driving_table].path(config), subsets)
                state.steps.append(StepResult(
                    table=table.name, layer=table.layer, rows_in=rows_in, rows_out=written.rows_written,
                    quarantined=quarantined, version=written.version, seconds=timer.elapsed(),
                    verdict=quality.verdict, path=table.path(config),
                ))
                broken = [r for r in quality.rules if r.severity == FAIL and not r.success]
                if broken:
                    raise GateError(_broken_rules_message(table.name, broken))
            except BaseException as exc:
                if written is None and isinstance(exc, (ContractError, SourceError)):
                    raise  # refused before anything was written (a contract break, a bad file): nothing to undo
                kept = _roll_back(spark, config, table, rollback, state)
                if not isinstance(exc, Exception):
                    raise  # an interrupt goes on as it is, once the table is back
                raise GateError(f"{exc}; {kept}" if isinstance(exc, GateError) else
                                f"{table.name} ({table.path(config)}): not published, {kept}: {exc}") from exc
        rollback.discard()
        quality.published = True
        state.published[table.name] = written.version
        _record_inputs(spark, plan, table, keys, state.run_id, written.version)
        if state.on_publish:
            state.on_publish()


def _set_aside_broken_tables(plan: BuildPlan) -> None:
    """Move the tables whose log cannot be read out of the way (--force), under the warehouse lock."""
    for name, path in plan.broken.items():
        aside = table_store(plan.config).set_aside(path)
        log.warning("%s: its Delta log cannot be read; moved it to %s and rebuilding %s from scratch", path, aside,
                    name)


@contextmanager
def _naming(table: Table, config: Config) -> Iterator[None]:
    """Engine and object-store errors name no table (Sail passes on only the innermost cause):
    prefix the table and its path, keeping the whole message for the CLI to condense."""
    try:
        yield
    except (BuildError, ContractError, SourceError):
        raise
    except Exception as exc:
        raise BuildError(f"{table.name} ({table.path(config)}): {exc}") from exc


def _unchanged_step(table: Table, config) -> StepResult:
    path = table.path(config)
    version = table_store(config).version(path)
    return StepResult(table=table.name, layer=table.layer, rows_in=None, rows_out=None, quarantined=None,
                      version=version, seconds=0.0, verdict=UNCHANGED, path=path)


def _apply_bad_file_policy(spark, plan: BuildPlan, state: BuildState) -> None:
    """Report refused source files against the ODS tables that would read them; stop under `fail`."""
    refused = plan.all_refused
    if not refused:
        return
    for table in plan.tables:
        _note_refusals(spark, plan, state, table)
    for file in refused:
        log.warning("refused %s (on_bad_file: %s)", file.message, plan.config.on_bad_file)
    if plan.config.on_bad_file == "fail":
        raise BuildError(f"{plan.refusal_message()}; on_bad_file is fail, so nothing was built "
                         f"(fix or remove the files, or set on_bad_file: skip to build without them)")


def _note_refusals(spark, plan: BuildPlan, state: BuildState, table: Table) -> None:
    """The table's refused source files as its `source_files_readable` result; under `fail` also
    recorded now in meta.source_files, as no table version will record them."""
    files = _refused_files(plan, table, None)
    if not files:
        return
    failing = plan.config.on_bad_file == "fail"
    rule = refused_files_rule(table.name, files, FAIL if failing else WARN)
    state.refusals[table.name] = rule
    if failing:
        append_source_files(spark, plan.project, plan.config, state.run_id, table.name, [], files, None)
        state.quality.append(TableQuality(table=table.name, layer=table.layer, version=None, rows=0,
                                          published=False, rules=[rule]))


def _write_decodable_rows(spark, plan: BuildPlan, table: Table, state: BuildState, subsets: Optional[tuple[str, ...]],
                          rollback: Rollback):
    """Bind the table's input views, write it and replace its quarantined rows: (rows quarantined, WriteResult).

    A source file whose footer reads but whose data the engine cannot decode shows only now, as
    an engine error naming no file; `explain_read_failure` finds it with pyarrow. It is then
    refused like the files refused at plan time: under `on_bad_file: fail` the build stops naming
    it (and undoes the write, when it was the quarantine's query that found it), under `skip` the
    table is written again without it (a write that failed committed nothing).
    """
    while True:
        written = None
        try:
            with engine_step(f"{table.name}: reading its inputs"):
                _bind_input_views(spark, plan, table, subsets or plan.subset_names)
            with engine_step(f"{table.name}: writing"):
                written = _write(spark, plan, table, _select(spark, table), state.run_id, subsets)
            with engine_step(f"{table.name}: quarantine"), timed(f"[{table.layer}] {table.name}: quarantine"):
                return _write_quarantine(spark, plan, table, written, state.run_id, subsets), written
        except ContractError:
            raise
        except Exception as exc:
            explained = explain_read_failure(exc, _read_files(plan, table, subsets))
            if not isinstance(explained, UndecodableFileError):
                raise
            plan.views[SOURCE_VIEW_PREFIX + explained.source.family].refuse(explained.source, explained.reason)
            log.warning("refused %s (on_bad_file: %s)", explained, plan.config.on_bad_file)
            _note_refusals(spark, plan, state, table)
            if plan.config.on_bad_file == "fail":
                if written is not None:
                    _roll_back(spark, plan.config, table, rollback, state)
                raise explained from exc


def _read_files(plan: BuildPlan, table: Table, subsets: Optional[Sequence[str]]) -> list[SourceFile]:
    return [f for view in plan.views_of(table) for f in view.read_files(subsets)]


def _refused_files(plan: BuildPlan, table: Table, subsets: Optional[Sequence[str]]) -> list[RefusedFile]:
    return [f for view in plan.views_of(table) for f in view.refused_files(subsets)]


def _record_inputs(spark, plan: BuildPlan, table: Table, keys: tuple[str, ...], run_id: str,
                   version: Optional[int]) -> None:
    """After publishing: which source files this version was built from, and each partition's signature."""
    subsets = None if keys == (WHOLE_TABLE,) else keys
    append_source_files(spark, plan.project, plan.config, run_id, table.name, _read_files(plan, table, subsets),
                        _refused_files(plan, table, subsets), version)
    signatures = {key: plan.signatures[(table.name, key)] for key in keys}
    append_table_inputs(spark, plan.project, plan.config, run_id, table.name, signatures, version,
                        datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _validate(spark, plan: BuildPlan, table: Table, state: BuildState, version: Optional[int]) -> TableQuality:
    store = table_store(plan.config)
    current = store.read(spark, table.path(plan.config))
    rules = state.validator.validate(table.contract, current, store.null_counts(table.path(plan.config)))
    if table.name in state.refusals:
        rules.append(state.refusals[table.name])
    quality = TableQuality(
        table=table.name, layer=table.layer, version=version,
        rows=store.rows(spark, table.path(plan.config)), published=False, rules=rules,
        histograms=histograms(current, table.contract.histograms),
    )
    state.quality.append(quality)
    return quality


def refused_files_rule(table: str, files: list, severity: str) -> RuleResult:
    return RuleResult(
        table=table, rule_id="source_files_readable", expectation="on_bad_file policy",
        description="every source file of the table can be read (unreadable, empty and duplicate files are refused)",
        severity=severity, success=False, observed_value=len(files), unexpected_count=len(files),
        sample=tuple(f.message for f in files[:20]),
        details={"refused_files": len(files), "policy": "fail" if severity == FAIL else "skip"},
    )


def _broken_rules_message(table: str, broken) -> str:
    first = broken[0]
    figure = first.details.get("error") or f"observed {first.observed_value}" + (
        f", {first.unexpected_count} unexpected" if first.unexpected_count else "")
    more = f" (and {len(broken) - 1} more fail rules)" if len(broken) > 1 else ""
    return f"{table}: rule {first.rule_id} broke ({first.description}; {figure}){more}"


def _roll_back(spark, config: Config, table: Table, rollback, state: BuildState) -> str:
    """Make the version before the write current again, or remove the table the write created;
    say which, or that rolling back failed (the table may then hold the unchecked version)."""
    try:
        restored = rollback.restore(state.run_id)
    except Exception as failure:
        log.error("%s: rolling back failed: %s", table.name, failure)
        return "and rolling it back failed (see the log): it may hold the unchecked version"
    state.rolled_back[table.name] = restored
    try:
        _reregister(spark, config, table, restored)
    except Exception as failure:  # the session may be what failed; the table itself is back
        log.warning("%s: rolled back, but not re-registered in the session: %s", table.name, failure)
    return f"version {restored} stays current" if restored is not None else "the new table was removed"


def _reregister(spark, config: Config, table: Table, restored: Optional[int]) -> None:
    if restored is None:
        spark.sql(f"drop table if exists {DATABASE}.{table.name}")
    else:
        table_store(config).register(spark, table.name, table.path(config), bool(table.partition_by(config)))


def _select(spark, table: Table):
    """The table's SELECT, refused before anything is written when its columns break the contract."""
    df = spark.sql(table.sql)
    actual = [(f.name, f.dataType.simpleString()) for f in df.schema.fields]
    problems = table.contract.schema_differences(actual)
    if problems:
        raise ContractError(f"{table.name}: the SELECT in {table.sql_file.name} breaks its contract "
                            f"{table.contract.path.name}: {'; '.join(problems)}")
    return df


def _write(spark, plan: BuildPlan, table: Table, df, run_id: str, subsets: Optional[tuple[str, ...]]):
    partition_by = table.partition_by(plan.config)
    whole = subsets is None or set(subsets) >= set(plan.config.subset_names)
    replace = {"subset": list(subsets)} if not whole and "subset" in partition_by else None
    store = table_store(plan.config)
    written = store.write(spark, df, table.path(plan.config), partition_by, replace, run_id)
    store.register(spark, table.name, table.path(plan.config), bool(partition_by))
    return written


def _write_quarantine(spark, plan: BuildPlan, table: Table, written: WriteResult, run_id: str,
                      subsets: Optional[tuple[str, ...]]) -> Optional[int]:
    """Replace this table's quarantined rows for the subsets being built; return how many (None
    when the table reads no view that can reject rows)."""
    views = [view for view in plan.views_of(table) if view.rejects_rows]
    if not views:
        return None
    built = tuple(subsets or plan.subset_names)
    rejecting = _subsets_with_rejections(spark, plan, table, views, written, built)
    store = table_store(plan.config)
    path = meta_path(plan.config, QUARANTINE)
    contract = plan.project.meta_contracts[QUARANTINE]
    if not rejecting and not store.exists(path):
        # The table's first version is made empty from its contract (every column nullable): a
        # write of the rejected-rows query cut to no rows, as before, had the engine plan it over
        # every source file just for its schema (1.3-1.8 s at 10M rows on Sail).
        store.append_rows(spark, path, contract, [], run_id)
    if store.exists(path) and not rejecting:
        rows = store.read(spark, path).limit(0)  # the table's own schema: nothing of the sources is read
    else:
        # A table format that keeps no empty table (parquet) takes its schema from the query that
        # fills it, which the engine then plans from the footers and never runs (limit 0).
        rejected = reduce(DataFrame.unionByName, [view.rejected_rows(spark, rejecting or built) for view in views])
        rows = rejected.select(F.lit(run_id).alias("run_id"), "file_name", "source_path", "reason", "original_values",
                               F.lit(table.name).alias("ods_table"), "subset")
        if not rejecting:
            rows = rows.limit(0)
    replace = {"ods_table": [table.name], "subset": list(built)}
    quarantined = store.write(spark, rows, path, contract.partition_by, replace, run_id)
    store.register(spark, QUARANTINE, path, True)
    return quarantined.rows_written


def _require_upstream(config: Config, known: Mapping[str, Table], table: Table) -> None:
    for name in table.upstream_tables:
        upstream = known.get(name)
        if upstream is None:
            raise BuildError(f"{table.name}: {table.sql_file.name} reads {DATABASE}.{name}, which no sql/ file defines")
        if not table_store(config).exists(upstream.path(config)):
            raise BuildError(f"{table.name}: needs {DATABASE}.{name}, which is not built yet at "
                             f"{upstream.path(config)} (build layer {upstream.layer} first)")


def _subsets_with_rejections(spark, plan: BuildPlan, table: Table, views: list[InputView], written: WriteResult,
                             built: tuple[str, ...]) -> tuple[str, ...]:
    """The built subsets where the views may have rejected rows: those whose rows in the table
    fall short of their source rows (footer counts), or all of them when that cannot be told."""
    if written.rows_written is None or not never_adds_rows(table.sql):
        return built
    if written.rows_written == sum(view.input_rows(built) for view in views):
        return ()
    if SUBSET_COLUMN not in table.partition_by(plan.config) or len(built) == 1:
        return built
    store = table_store(plan.config)
    path = table.path(plan.config)
    return tuple(subset for subset in built
                 if store.rows(spark, path, (subset,)) != sum(view.input_rows((subset,)) for view in views))


# Constructs that can make more rows than a query reads: joins, set operations, generators and
# grouping sets. A function sqlglot does not know is an Anonymous node, so generators go by name too.
_ROW_MAKERS = (exp.Join, exp.SetOperation, exp.Lateral, exp.Unnest, exp.Explode, exp.Posexplode, exp.Inline,
               exp.Stack, exp.UDTF, exp.Cube, exp.Rollup, exp.GroupingSets, exp.QueryTransform, exp.Values)
_GENERATOR_NAMES = {"explode", "explode_outer", "posexplode", "posexplode_outer", "inline", "inline_outer", "stack"}


def never_adds_rows(sql: str) -> bool:
    """Whether `sql` provably returns at most as many rows as its source rows (projections,
    filters, deduplication, grouped aggregates), so a table written with as many rows as its
    source files hold kept every one of them. Anything sqlglot cannot parse is assumed to add rows."""
    try:
        tree = sqlglot.parse_one(sql, read="spark")
    except SqlglotError:
        return False
    if tree.find(*_ROW_MAKERS):
        return False
    if any(node.name.lower() in _GENERATOR_NAMES for node in tree.find_all(exp.Anonymous)):
        return False
    return not any(_global_aggregate(select) for select in tree.find_all(exp.Select))


def _global_aggregate(select: exp.Select) -> bool:
    """An aggregate without GROUP BY: one row even from no row."""
    return not select.args.get("group") and any(
        aggregate.find_ancestor(exp.Select) is select and not aggregate.find_ancestor(exp.Window)
        for aggregate in select.find_all(exp.AggFunc))


def _bind_input_views(spark, plan: BuildPlan, table: Table, subsets: tuple[str, ...]) -> None:
    """Create the temp views the table's SQL reads (source files of `subsets` only)."""
    for name in table.input_views:
        view = plan.views.get(name)
        if view is None:
            raise BuildError(f"{table.name}: {table.sql_file.name} reads view {name!r}, "
                             "which the framework does not provide")
        view.bind(spark, subsets)
