"""Plain-text tables for the terminal: the build plan, the build summary, the table inventory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from etl.project.config import Config
from etl.build.inputs import WHOLE_TABLE
from etl.project.project import Project
from etl.project.tables import DATABASE
from etl.warehouse.store import table_store


def format_rows(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(row, widths)))
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "").isdigit()


def format_plan(plan) -> str:
    subsets = ", ".join(plan.subset_names)
    scope = ("rewrite whole tables (--force)" if plan.force else "replace these subset partitions" if plan.subsets
             else "rebuild the partitions whose inputs changed")
    header = (f"build plan: engine {plan.config.engine}, format {plan.config.format}, "
              f"warehouse {plan.config.warehouse}\nsubsets: {subsets} ({scope})\n"
              f"input: {plan.input_bytes / 1e6:,.1f} MB, {plan.shuffle_partitions} shuffle partitions"
              f"{'' if plan.config.spark.shuffle_partitions else ' (auto: one per 256 MB, at least one per core)'}")
    rows = [(i + 1, t.layer, f"{DATABASE}.{t.name}", plan.describe_inputs(t), ",".join(t.partition_by(plan.config)) or "-",
             _rebuild_cell(plan.rebuild[t.name], plan.config.subset_names, plan.outside_edit(t)))
            for i, t in enumerate(plan.tables)]
    refused = "".join(f"\nrefused ({plan.config.on_bad_file}): {f.message}" for f in plan.all_refused)
    return (header + "\n" + format_rows(("step", "layer", "table", "inputs", "partitioned by", "rebuild"), rows)
            + refused)


def _rebuild_cell(keys: Sequence[str], subsets: Sequence[str], outside_edit: Optional[str]) -> str:
    if not keys:
        return "nothing (inputs unchanged)"
    cell = "all" if keys == (WHOLE_TABLE,) or set(keys) >= set(subsets) else ",".join(keys)
    return f"{cell} ({outside_edit})" if outside_edit else cell


def plural(count: int, noun: str) -> str:
    """`1 table`, `2 tables`: the count with its noun (regular plurals only)."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def format_results(results, config: Config, wall_seconds: float) -> str:
    """The steps' table, then the run's total: its wall time (session start, checks and
    bookkeeping included), not the sum of the steps' own seconds."""
    rows = [(r.layer, f"{DATABASE}.{r.table}", r.rows_in, r.rows_out, r.quarantined, r.version, r.verdict, r.seconds)
            for r in results]
    built = [r for r in results if r.verdict != "unchanged"]
    header = ("layer", "table", "rows in", "rows out", "quarantined", "version", "checks", "seconds")
    unchanged = len(results) - len(built)
    skipped = f" ({unchanged} unchanged, skipped)" if unchanged else ""
    return (format_rows(header, rows) + f"\n{plural(len(built), 'table')} built{skipped} in {wall_seconds:.1f} s "
            f"under {config.warehouse}")


def format_rule_failures(run) -> str:
    """Per table, the rules that did not pass; the report has everything."""
    rows = [(f"{DATABASE}.{t.table}", t.version, r.rule_id, r.status, r.observed_value if r.unexpected_count is None
             else r.unexpected_count) for t in run.tables for r in t.rules if not r.success]
    checked = f"{plural(len(run.rules), 'rule')} on {plural(len(run.tables), 'table')}"
    if not rows:
        return f"{checked}: all pass"
    return format_rows(("table", "version", "rule", "status", "observed / unexpected"), rows) + f"\n{checked}"


@dataclass(frozen=True)
class TableInfo:
    name: str
    layer: str
    version: Optional[int]
    rows: Optional[int]
    path: str


def table_inventory(spark, project: Project, config: Config) -> list[TableInfo]:
    """Every table present in the warehouse with its current version and row count."""
    inventory = []
    store = table_store(config)
    for table in project.tables:
        path = table.path(config)
        if not store.exists(path):
            continue
        inventory.append(TableInfo(table.name, table.layer, store.version(path), store.rows(spark, path), path))
    return inventory


def format_tables(inventory: list[TableInfo]) -> str:
    if not inventory:
        return "no tables yet: run `laion-etl build --config ...` first"
    rows = [(f"{DATABASE}.{t.name}", t.layer, t.version, t.rows, t.path) for t in inventory]
    return format_rows(("table", "layer", "version", "rows", "path"), rows)
