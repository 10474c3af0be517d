"""The run bookkeeping tables under `<warehouse>/meta/`: runs, dq_results, quarantine,
source_files, table_inputs.

Their schemas are contracts in `expectations/meta/`. `runs`, `dq_results`, `source_files` and
`table_inputs` grow by blind appends (one run at a time); `quarantine` is replaced per
(ods_table, subset) like the ODS partitions it belongs to, so rerunning a build does not pile up
copies of rejected rows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Optional

from etl.project.config import Config
from etl.project.project import META_LAYER, Project
from etl.project.tables import WIDE_TABLE
from etl.quality.results import CoveragePoint, RuleResult
from etl.warehouse.store import table_store

RUNS, DQ_RESULTS, QUARANTINE = "runs", "dq_results", "quarantine"
SOURCE_FILES, TABLE_INPUTS = "source_files", "table_inputs"
META_TABLES = (RUNS, DQ_RESULTS, QUARANTINE, SOURCE_FILES, TABLE_INPUTS)
COVERAGE_TABLE = WIDE_TABLE
COVERAGE_RULES = {"aesthetic": "aesthetic_coverage", "image": "image_coverage"}
HISTORY_RUNS = 20


def meta_path(config: Config, name: str) -> str:
    return config.table_path(META_LAYER, name)


def register_meta_tables(spark, project: Project, config: Config) -> None:
    store = table_store(config)
    for name in META_TABLES:
        path = meta_path(config, name)
        if store.exists(path):
            store.register(spark, name, path, bool(project.meta_contracts[name].partition_by))


def to_json(value: Any) -> Optional[str]:
    if value is None:
        return None
    return json.dumps(value, default=str, sort_keys=True)


RUNNING, INTERRUPTED, ABANDONED = "running", "interrupted", "abandoned"  # statuses besides succeeded/failed


@dataclass
class RunRecord:
    run_id: str
    command: str
    started_at: str
    engine: str
    format: str
    layers: str = ""
    subsets: str = ""
    status: str = RUNNING
    verdict: str = "fail"
    finished_at: str = ""
    published: dict = None
    rolled_back: dict = None
    quarantined_rows: int = 0
    report_path: str = ""
    message: str = ""

    def row(self) -> tuple:
        return (self.run_id, self.command, self.status, self.verdict, self.started_at, self.finished_at,
                self.engine, self.format, self.layers, self.subsets, to_json(self.published or {}),
                to_json(self.rolled_back or {}), self.quarantined_rows, self.report_path, self.message)


def save_run(spark, project: Project, config: Config, record: RunRecord, register: bool = True) -> None:
    """Insert or replace the run's row in one commit: written when the run starts (status running),
    after every table it publishes, and when it ends; a killed run keeps its last state.
    `register=False` leaves the session's catalog alone (a stopped engine: Delta needs none)."""
    contract = project.meta_contracts[RUNS]
    path = meta_path(config, RUNS)
    store = table_store(config)
    if not store.exists(path):
        _append(spark, project, config, RUNS, [record.row()], record.run_id)
        return
    store.upsert_row(spark, path, contract, record.row(), "run_id", record.run_id)
    if register:
        store.register(spark, RUNS, path, False)


def abandon_dead_runs(spark, project: Project, config: Config, run_id: str) -> list[str]:
    """Runs still `running` when this one holds the warehouse lock are dead (killed, or their machine
    was): mark them `abandoned`, so no run stays `running` forever. Returns their ids."""
    contract = project.meta_contracts[RUNS]
    dead = [row for row in read_meta_rows(config, RUNS, contract.column_names)
            if row["status"] == RUNNING and row["run_id"] != run_id]
    for row in dead:
        row.update(status=ABANDONED, message=f"found dead by run {run_id}")
        table_store(config).upsert_row(spark, meta_path(config, RUNS), contract,
                                       tuple(row[c] for c in contract.column_names), "run_id", run_id)
    return [row["run_id"] for row in dead]


def append_dq_results(spark, project: Project, config: Config, run_id: str, versions: dict[str, Optional[int]],
                      results: list[RuleResult]) -> None:
    if not results:
        return
    rows = [(run_id, r.table, versions.get(r.table), r.rule_id, r.expectation, r.description, r.severity,
             bool(r.success), r.status, to_json(_plain(r.observed_value)),
             None if r.unexpected_count is None else int(r.unexpected_count),
             None if r.unexpected_percent is None else float(r.unexpected_percent),
             to_json(list(r.sample)), to_json(r.details)) for r in results]
    _append(spark, project, config, DQ_RESULTS, rows, run_id)


def append_source_files(spark, project: Project, config: Config, run_id: str, table: str, files: list, refused: list,
                        version: Optional[int]) -> None:
    """The files a table version was built from (status read) and the ones refused for it."""
    rows = [(run_id, table, f.subset, f.family, f.path, f.footer.size, f.footer.modified_ns, f.footer.fingerprint,
             f.footer.num_rows, "read", None, version) for f in files]
    rows += [(run_id, table, f.subset, f.family, f.path, f.size, f.modified_ns, None, None, "refused", f.reason, None)
             for f in refused]
    if rows:
        _append(spark, project, config, SOURCE_FILES, rows, run_id)


def append_table_inputs(spark, project: Project, config: Config, run_id: str, table: str,
                        signatures: dict[str, Optional[str]], version: Optional[int], recorded_at: str) -> None:
    """Record what each rebuilt partition of `table` was built from (see etl/build/inputs.py)."""
    rows = [(run_id, table, key, signature, version, recorded_at) for key, signature in signatures.items()
            if signature is not None]
    if rows:
        _append(spark, project, config, TABLE_INPUTS, rows, run_id)


def recorded_signatures(config: Config) -> dict[tuple[str, str], str]:
    """The latest recorded signature of every (table, subset), read without an engine."""
    rows = read_meta_rows(config, TABLE_INPUTS, ["run_id", "table_name", "subset", "signature"])
    return {key: row["signature"] for key, row in _latest(rows, lambda r: (r["table_name"], r["subset"])).items()}


def recorded_versions(config: Config) -> dict[str, Optional[int]]:
    """The table version the latest build of each table published (None for parquet tables)."""
    rows = read_meta_rows(config, TABLE_INPUTS, ["run_id", "table_name", "table_version"])
    return {table: row["table_version"] for table, row in _latest(rows, lambda r: r["table_name"]).items()}


def _latest(rows: list[dict], key) -> dict:
    """The row of the latest run (run ids sort by start time) for each `key(row)`."""
    latest: dict = {}
    for row in rows:
        group = key(row)
        if group not in latest or row["run_id"] > latest[group]["run_id"]:
            latest[group] = row
    return latest


def run_ids(config: Config) -> set[str]:
    """Every run's id: each run has its row from its start, before it writes anything."""
    return {row["run_id"] for row in read_meta_rows(config, RUNS, ["run_id"])}


def read_meta_rows(config: Config, name: str, columns: list[str]) -> list[dict]:
    """Rows of a meta table through delta-rs or pyarrow (no engine needed; [] when it does not exist)."""
    path = meta_path(config, name)
    store = table_store(config)
    return store.read_rows(path, columns) if store.exists(path) else []


def _append(spark, project: Project, config: Config, name: str, rows: list[tuple], run_id: str) -> None:
    path = meta_path(config, name)
    store = table_store(config)
    store.append_rows(spark, path, project.meta_contracts[name], rows, run_id)
    store.register(spark, name, path, bool(project.meta_contracts[name].partition_by))


def _plain(value: Any) -> Any:
    """GX observed values can be numpy scalars or NaN; JSON wants plain numbers or null."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def previous_observed_values(spark, config: Config, before_run: str) -> dict[tuple[str, str], float]:
    """The latest numeric observed value of each (table, rule) from earlier runs."""
    path = meta_path(config, DQ_RESULTS)
    store = table_store(config)
    if not store.exists(path):
        return {}
    rows = (store.read(spark, path)
            .filter(f"run_id < '{before_run}' and observed_value is not null")
            .selectExpr("table_name", "rule_id", "observed_value", "run_id")
            .orderBy("run_id").collect())
    values = {}
    for row in rows:
        value = json.loads(row.observed_value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[(row.table_name, row.rule_id)] = float(value)
    return values


def coverage_history(spark, config: Config, limit: int = HISTORY_RUNS) -> list[CoveragePoint]:
    """Aesthetic and image coverage of the wide table over the last runs that measured both."""
    path = meta_path(config, DQ_RESULTS)
    store = table_store(config)
    if not store.exists(path):
        return []
    rule_ids = ", ".join(f"'{rule}'" for rule in COVERAGE_RULES.values())
    rows = (store.read(spark, path)
            .filter(f"table_name = '{COVERAGE_TABLE}' and rule_id in ({rule_ids})")
            .select("run_id", "rule_id", "observed_value").collect())
    by_run: dict[str, dict[str, float]] = {}
    for row in rows:
        value = json.loads(row.observed_value) if row.observed_value else None
        if isinstance(value, (int, float)):
            by_run.setdefault(row.run_id, {})[row.rule_id] = float(value)
    finished = _finish_times(spark, config)
    points = [CoveragePoint(run_id, finished.get(run_id, run_id), shares[COVERAGE_RULES["aesthetic"]],
                            shares[COVERAGE_RULES["image"]])
              for run_id, shares in sorted(by_run.items()) if len(shares) == len(COVERAGE_RULES)]
    return points[-limit:]


def _finish_times(spark, config: Config) -> dict[str, str]:
    path = meta_path(config, RUNS)
    store = table_store(config)
    if not store.exists(path):
        return {}
    return {r.run_id: r.finished_at for r in store.read(spark, path).select("run_id", "finished_at").collect()}
