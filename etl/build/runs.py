"""A run from start to report: open the session, build or validate, then record and report.

The run's row in `meta.runs` is written when it starts (status running) and rewritten after each
table it publishes, so a killed run still says which tables it had made current. Whatever happens
in between — success, a broken `fail` rule, an engine error — the run ends by appending its rule
results to `meta.dq_results`, finishing its `meta.runs` row and writing the HTML report, so every
result points at an exact table version and every failure is on the page.
"""

from __future__ import annotations

import importlib
import logging
import secrets
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional, Sequence

from etl.build.interrupts import RunInterrupted, interruptible, interruption
from etl.build.materialise import BuildState, StepResult, register_existing_tables, run_build
from etl.build.plan import BuildPlan
from etl.engine.session import abort_engine, engine_stalled, open_session
from etl.project.config import Config
from etl.project.project import Project
from etl.quality.report import write_report
from etl.quality.results import FAIL_VERDICT, CoveragePoint, RunQuality, TableQuality
from etl.quality.validation import Validator, expected_totals, histograms
from etl.redact import redact
from etl.warehouse.lock import warehouse_lock
from etl.warehouse.meta import (COVERAGE_RULES, COVERAGE_TABLE, INTERRUPTED, QUARANTINE, RunRecord, abandon_dead_runs,
                                append_dq_results, coverage_history, meta_path, previous_observed_values,
                                register_meta_tables, save_run)
from etl.warehouse.store import table_store

log = logging.getLogger("etl")
LATEST_REPORT = "latest.html"


@dataclass
class RunOutcome:
    run_id: str
    verdict: str
    report_path: Path
    steps: list[StepResult]
    quality: RunQuality
    latest_path: Optional[Path]  # latest.html when this run rewrote it; None when it left it alone
    error: Optional[BaseException] = None


def new_run_id() -> str:
    """Sorts by start time; the random tail keeps two runs started together apart."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _import_quality_libraries_in_background(checks_ahead: bool = True) -> None:
    """Import Great Expectations (when the run will check a table) and matplotlib in a background
    thread, so neither the run's first checks nor its report wait for them.

    They take 4-5 s and ~0.9 s to import on the bench machine, time a run otherwise spends on its
    critical path while the engine starts and works. The modules they share with the engine's
    client (pyspark, grpc, protobuf) are imported first, in the calling thread, so the two
    threads never import one module at once (an import cycle across threads can hand one of them
    a half-made module). The Validator and the report, when they import them, wait on the import
    lock for what is still loading; an import that failed is raised there, where the run reports it.
    """
    import pyspark.sql  # noqa: F401  (see above)
    import pyspark.sql.connect.session  # noqa: F401

    def import_them() -> None:
        for module in ("great_expectations", "etl.quality.plots") if checks_ahead else ("etl.quality.plots",):
            try:
                importlib.import_module(module)
            except Exception:  # noqa: BLE001  raised again by the importer that needs it
                pass

    threading.Thread(target=import_them, name="import quality libraries", daemon=True).start()


def execute_build(config: Config, plan: BuildPlan, submitted: bool = False) -> RunOutcome:
    # A build with nothing to rebuild checks nothing: it neither imports Great Expectations (4-5 s)
    # nor waits for it.
    checks_ahead = plan.rebuilds_anything
    _import_quality_libraries_in_background(checks_ahead)
    run_id = new_run_id()
    record = RunRecord(run_id=run_id, command="build", started_at=_now(), engine=config.engine,
                       format=config.format, layers=",".join(plan.layers), subsets=",".join(plan.subset_names))
    with warehouse_lock(config, run_id, "build"), open_session(config, submitted=submitted) as spark, \
            interruptible(abort_engine), _recorded_if_stopped(spark, plan.project, config, record):
        register_meta_tables(spark, plan.project, config)
        abandon_dead_runs(spark, plan.project, config, run_id)
        save_run(spark, plan.project, config, record)
        validator = (Validator(config.dq_rules, previous_observed_values(spark, config, run_id), expected_totals(config))
                     if checks_ahead else None)
        state = BuildState(run_id=run_id, validator=validator)

        def publish_progress() -> None:
            record.published = dict(state.published)
            save_run(spark, plan.project, config, record)

        state.on_publish = publish_progress
        error = None
        try:
            run_build(spark, plan, state)
        except (Exception, RunInterrupted) as exc:  # recorded and reported below, then re-raised by the caller
            record.published, record.rolled_back = state.published, state.rolled_back
            if isinstance(interruption(exc), RunInterrupted):
                raise interruption(exc) from exc
            if engine_stalled():  # the engine is gone: no results or report to write, only the run's row
                raise
            error = exc
        record.published, record.rolled_back = state.published, state.rolled_back
        record.quarantined_rows = state.quarantined_rows
        outcome = _finish(spark, plan.project, config, record, state.quality, error)
    outcome.steps = state.steps
    return outcome


@contextmanager
def _recorded_if_stopped(spark, project: Project, config: Config, record: RunRecord) -> Iterator[None]:
    """A run stopped by a signal, or by an engine that made no progress, says so in `meta.runs`,
    with what it published and rolled back. The engine may be gone by then: the row is written
    without it where the format allows (Delta)."""
    try:
        yield
    except (Exception, RunInterrupted) as error:
        exc = interruption(error)
        if isinstance(exc, RunInterrupted):
            record.status, record.message = INTERRUPTED, str(exc)
        elif engine_stalled():
            record.status, record.message = "failed", _failure_message(exc)
        else:
            raise
        record.finished_at = _now()
        try:
            save_run(spark, project, config, record, register=False)
        except Exception:  # the stop's news matters more than the bookkeeping's
            log.warning("could not record run %s as %s", record.run_id, record.status, exc_info=True)
        if exc is error:
            raise
        raise exc from error


def execute_dq(project: Project, config: Config, table_names: Optional[Sequence[str]] = None, submitted: bool = False) -> RunOutcome:
    """Validate the current versions of the tables (all present ones by default); nothing is rebuilt."""
    _import_quality_libraries_in_background()
    run_id = new_run_id()
    record = RunRecord(run_id=run_id, command="dq", started_at=_now(), engine=config.engine, format=config.format)
    tables = [t for t in project.tables if table_names is None or t.name in table_names]
    with warehouse_lock(config, run_id, "dq"), open_session(config, submitted=submitted) as spark, \
            interruptible(abort_engine), _recorded_if_stopped(spark, project, config, record):
        register_meta_tables(spark, project, config)
        abandon_dead_runs(spark, project, config, run_id)
        save_run(spark, project, config, record)
        register_existing_tables(spark, project, config)
        validator = Validator(config.dq_rules, previous_observed_values(spark, config, run_id), expected_totals(config))
        quality = []
        store = table_store(config)
        for table in tables:
            path = table.path(config)
            if not store.exists(path):
                log.warning("%s: not built yet, nothing to validate", table.name)
                continue
            current = store.read(spark, path)
            quality.append(TableQuality(
                table=table.name, layer=table.layer, version=store.version(path),
                rows=store.rows(spark, path), published=True,
                rules=validator.validate(table.contract, current, store.null_counts(path)),
                histograms=histograms(current, table.contract.histograms),
            ))
        return _finish(spark, project, config, record, quality, None)


def _finish(spark, project: Project, config: Config, record: RunRecord, quality: list[TableQuality],
            error: Optional[BaseException]) -> RunOutcome:
    finished = _now()
    run_quality = RunQuality(run_id=record.run_id, started_at=record.started_at, finished_at=finished,
                             engine=config.engine, warehouse=config.warehouse, tables=quality,
                             failure=_failure_message(error), command=record.command)
    run_quality.quarantine = _quarantine_counts(spark, config, record)
    versions = {t.table: t.version for t in quality}
    append_dq_results(spark, project, config, record.run_id, versions, run_quality.rules)
    run_quality.coverage_history = coverage_history(spark, config)
    _add_current_coverage(run_quality)
    report_path = Path(config.reports) / f"{record.run_id}.html"
    write_report(run_quality, report_path)
    # A run that checked no table (a build with nothing to rebuild) has nothing to say about the
    # current tables: latest.html keeps the last page that did, warnings and all.
    latest_path = Path(config.reports) / LATEST_REPORT if quality or error is not None else None
    if latest_path is not None:
        shutil.copyfile(report_path, latest_path)
    record.finished_at = finished
    record.verdict = run_quality.verdict
    record.status = "failed" if error is not None or run_quality.verdict == FAIL_VERDICT else "succeeded"
    record.report_path = str(report_path)
    record.message = run_quality.failure or ""
    save_run(spark, project, config, record)
    return RunOutcome(run_id=record.run_id, verdict=run_quality.verdict, report_path=report_path, steps=[],
                      quality=run_quality, latest_path=latest_path, error=error)


def _failure_message(error: Optional[BaseException]) -> Optional[str]:
    if error is None:
        return None
    text = redact(str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _quarantine_counts(spark, config: Config, record: RunRecord) -> dict[str, int]:
    """Rows quarantined by this run, per reason."""
    path = meta_path(config, QUARANTINE)
    store = table_store(config)
    if record.command != "build" or not store.exists(path):
        return {}
    rows = (store.read(spark, path).filter(f"run_id = '{record.run_id}'")
            .groupBy("reason").count().collect())
    return {row.reason: int(row["count"]) for row in sorted(rows, key=lambda r: r.reason)}


def _add_current_coverage(run: RunQuality) -> None:
    """The history comes from earlier runs' results; this run's point is in `run.rules`."""
    shares = {r.rule_id: r.observed_value for r in run.rules if r.table == COVERAGE_TABLE}
    values = [shares.get(rule) for rule in COVERAGE_RULES.values()]
    if all(isinstance(v, (int, float)) for v in values) and not any(p.run_id == run.run_id for p in run.coverage_history):
        run.coverage_history.append(CoveragePoint(run.run_id, run.finished_at, float(values[0]), float(values[1])))

