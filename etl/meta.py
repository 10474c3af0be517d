"""The run bookkeeping tables under `<warehouse>/meta/`: runs, dq_results, quarantine.

Their schemas are contracts in `expectations/meta/`. `runs` and `dq_results` grow by blind
appends (one run at a time); `quarantine` is replaced per (ods_table, subset) like the ODS
partitions it belongs to, so rerunning a build does not pile up copies of rejected rows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Optional

from etl.config import Config
from etl.contracts import Contract, load_contract
from etl.project import CONTRACTS_DIR
from etl.quality import CoveragePoint, RuleResult
from etl.writer import append_rows, register_table, table_exists

META_LAYER = "meta"
RUNS, DQ_RESULTS, QUARANTINE = "runs", "dq_results", "quarantine"
COVERAGE_TABLE = "dms_laion_wide"
COVERAGE_RULES = {"aesthetic": "aesthetic_coverage", "image": "image_coverage"}
HISTORY_RUNS = 20


def meta_contract(name: str) -> Contract:
    return load_contract(CONTRACTS_DIR / META_LAYER / f"{name}.yaml")


def meta_path(config: Config, name: str) -> str:
    return config.table_path(META_LAYER, name)


def register_meta_tables(spark, config: Config) -> None:
    for name in (RUNS, DQ_RESULTS, QUARANTINE):
        path = meta_path(config, name)
        if table_exists(path, config.format):
            register_table(spark, name, path, config.format, bool(meta_contract(name).partition_by))


def to_json(value: Any) -> Optional[str]:
    if value is None:
        return None
    return json.dumps(value, default=str, sort_keys=True)


@dataclass
class RunRecord:
    run_id: str
    command: str
    started_at: str
    engine: str
    format: str
    layers: str = ""
    subsets: str = ""
    status: str = "failed"
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


def append_run(spark, config: Config, record: RunRecord) -> None:
    contract = meta_contract(RUNS)
    df = spark.createDataFrame([record.row()], contract.ddl)
    _append(spark, config, RUNS, df, record.run_id)


def append_dq_results(spark, config: Config, run_id: str, versions: dict[str, Optional[int]],
                      results: list[RuleResult]) -> None:
    if not results:
        return
    rows = [(run_id, r.table, versions.get(r.table), r.rule_id, r.expectation, r.description, r.severity,
             bool(r.success), r.status, to_json(_plain(r.observed_value)),
             None if r.unexpected_count is None else int(r.unexpected_count),
             None if r.unexpected_percent is None else float(r.unexpected_percent),
             to_json(list(r.sample)), to_json(r.details)) for r in results]
    _append(spark, config, DQ_RESULTS, spark.createDataFrame(rows, meta_contract(DQ_RESULTS).ddl), run_id)


def _append(spark, config: Config, name: str, df, run_id: str) -> None:
    path = meta_path(config, name)
    append_rows(df, path, config.format, run_id)
    register_table(spark, name, path, config.format, bool(meta_contract(name).partition_by))


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
    if not table_exists(path, config.format):
        return {}
    rows = (spark.read.format(config.format).load(path)
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
    if not table_exists(path, config.format):
        return []
    rule_ids = ", ".join(f"'{rule}'" for rule in COVERAGE_RULES.values())
    rows = (spark.read.format(config.format).load(path)
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
    if not table_exists(path, config.format):
        return {}
    return {r.run_id: r.finished_at for r in spark.read.format(config.format).load(path).select("run_id", "finished_at").collect()}
