"""The data-quality report: one self-contained HTML page per run, for people.

`render_report(run)` turns a `RunQuality` into a page that opens offline and prints well: inline
CSS, plots as inline SVG (text drawn as paths), no script, no font, stylesheet or image fetched
from anywhere. The run's verdict comes first, then a summary of every table, the quarantine, the
coverage of the wide table over the last runs and one section per table with its rules, duplicate
figures, offending keys and distributions.

The markup is the Jinja2 template `templates/report.html.j2` (autoescaped: every value from the
run is HTML-escaped by the template, never by hand) and the style `templates/report.css`, inlined
at render time. This module only prepares what the template shows: plain dicts of text already
formatted (thousands separators, percentages, plurals), so the template holds no arithmetic.

Stable hooks for tests and tools: `#verdict` (with `data-verdict`, `data-run-id`,
`data-command`), `#summary`, `#quarantine` (`tr[data-reason][data-rows]`), `#coverage`,
`section.table-section[data-table]` (`dd.rows[data-rows]`),
`tr.rule.<status>[data-rule-id][data-status][data-severity]` (with `data-unexpected` when the rule
counts unexpected values), `figure.plot` (`.histogram[data-column]`, `.coverage`),
`[data-duplicated-values]`, `[data-rows-involved]`, `ul.sample`. Values in `data-*` attributes are
plain (no thousands separators), so they can be compared exactly. A build's tables say whether
they were published (`.published.yes`/`.published.no`); a dq run publishes nothing, so its tables
say `.validated`. Rule ids (`.rule-name`) break only after an underscore.

A table's schema checks (the column list and one type check per column) are one row,
`tr.rule[data-rule-id="schema"]`, with the columns in `details.schema` (open when a check broke;
`tr.schema-column[data-column][data-type][data-status]`). Duplicate rules show their figures per
subset (`table.dup-subsets tr[data-subset]`) and the values with the most rows (`table.dup-values`);
the completeness rule shows each subset beside its expected totals (`table.completeness
tr.completeness-subset[data-subset]`, with `data-expected-rows`, `data-rows`, `data-difference`,
`data-share`, `data-parts-read`, `data-expected-parts`, `data-whole`).
"""

from __future__ import annotations

import html
import json
import math
import re
from datetime import datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional

import jinja2
from markupsafe import Markup

from etl.quality.results import (FAIL, FAIL_VERDICT, PASS_VERDICT, WARN, WARN_VERDICT, CoveragePoint, Histogram,
                                 RuleResult, RunQuality, TableQuality, allowance, verdict_of)

STATUSES = (FAIL_VERDICT, WARN_VERDICT, PASS_VERDICT)  # worst first: the order rules are listed in
VERDICT_COLOURS = {PASS_VERDICT: "#1a7f37", WARN_VERDICT: "#bf8700", FAIL_VERDICT: "#cf222e"}
VERDICT_MEANING = {
    PASS_VERDICT: "Every rule holds.",
    WARN_VERDICT: "Every blocking rule holds; some warnings need a look.",
    FAIL_VERDICT: "A blocking rule broke.",
}
STOPPED = "The build stopped before it finished."
KEPT_PREVIOUS = " Tables marked \u201cnot published\u201d kept their previous version."
VALIDATED_ONLY = " This dq run validated the current versions; it rebuilt and published nothing."
DQ_COMMAND = "dq"  # the command that validates without rebuilding (etl.build.runs.execute_dq)
SEVERITY_HINT = {"fail": "blocks publishing", "warn": "reported"}
DUPLICATE_KEYS = ("duplicated_values", "rows_involved")
# Details the report lays out itself; any other detail is listed as it is.
LAID_OUT_KEYS = (*DUPLICATE_KEYS, "allowed", "per_subset", "values", "subsets", "off")
# The validator's schema checks (etl.quality.validation.schema_rules), shown as one row per table.
SCHEMA_COLUMNS, SCHEMA_TYPE_PREFIX, SCHEMA_ROW = "schema_columns", "schema_type_", "schema"
PROBLEMS_LIMIT = 12  # broken rules named in the verdict; all of them are in the table sections
SAMPLE_LIMIT = 50  # offending keys shown per rule
TEXT_LIMIT = 400  # characters of an observed value shown
DASH, MORE = "\u2014", ", \u2026"
TEMPLATE = "report.html.j2"


def render_report(run: RunQuality) -> str:
    """The whole page for `run` as one HTML string."""
    return _template().render(page=_page(run))


def write_report(run: RunQuality, path) -> Path:
    """Write the page for `run` to `path` (UTF-8, parent folders created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(run), encoding="utf-8")
    return path


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    # Read through importlib.resources: the templates are package data, also inside the --py-files zip.
    folder = resources.files("etl.quality.templates")
    environment = jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: folder.joinpath(name).read_text(encoding="utf-8")),
        autoescape=True, finalize=_escaped, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=True)
    return environment.get_template(TEMPLATE)


def _escaped(value: Any) -> Markup:
    """Every `{{ value }}` as the page has always spelled it (`&quot;`, as html.escape does; MarkupSafe
    writes `&#34;`): reports of older and newer runs diff cleanly. Markup (the SVG plots) stays as it is."""
    return value if isinstance(value, Markup) else Markup(html.escape(str(value), quote=True))


# --- the page's data -----------------------------------------------------------------------------


def _page(run: RunQuality) -> dict:
    verdict = run.verdict
    validated_only = run.command == DQ_COMMAND
    shown = {table.table: _shown(table.rules) for table in run.tables}
    counts = _status_counts(rule for rows in shown.values() for rule, _ in rows)
    unpublished = [] if validated_only else [t for t in run.tables if not t.published]
    rule_counts = (f"{_n(counts[FAIL_VERDICT])} failed, {_n(counts[WARN_VERDICT])} warned, "
                   f"{_n(counts[PASS_VERDICT])} passed, on {_plural(len(run.tables), 'table')}")
    if unpublished:
        rule_counts += f"; {_plural(len(unpublished), 'table')} not published"
    problems = [(t, r) for t in run.tables for r, _ in shown[t.table] if r.status != PASS_VERDICT]
    facts = [("run id", run.run_id, True), ("command", run.command, False),
             ("started", run.started_at or DASH, False), ("finished", run.finished_at or DASH, False)]
    took = _duration(run.started_at, run.finished_at)
    if took:
        facts.append(("took", took, False))
    facts += [("engine", run.engine or DASH, False), ("warehouse", run.warehouse or DASH, True)]
    return {
        "title": f"{verdict.upper()} \u00b7 data quality \u00b7 run {run.run_id}",
        "verdict": verdict,
        "run_id": run.run_id,
        "command": run.command,
        "validated_only": validated_only,
        "meaning": _meaning(run),
        "rule_counts": rule_counts,
        "failure": run.failure,
        "problems": [{"status": rule.status, "anchor": _rule_anchor(table.table, rule.rule_id), "table": table.table,
                      "rule_id_parts": _id_parts(rule.rule_id), "description": rule.description,
                      "figures": _figures_inline(rule)} for table, rule in problems[:PROBLEMS_LIMIT]],
        "more_problems": _n(len(problems) - PROBLEMS_LIMIT) if len(problems) > PROBLEMS_LIMIT else None,
        "facts": [{"name": name, "value": value, "code": code} for name, value, code in facts],
        "tables": [_summary_row(table, shown[table.table], validated_only) for table in run.tables],
        "quarantine": _quarantine(run.quarantine),
        "coverage": _coverage(run.coverage_history, run.run_id),
        "sections": [_table_section(table, shown[table.table], validated_only) for table in run.tables],
        "finished": run.finished_at or DASH,
    }


def _meaning(run: RunQuality) -> str:
    verdict = run.verdict
    text = VERDICT_MEANING[verdict]
    if verdict == FAIL_VERDICT and verdict_of(run.rules) != FAIL_VERDICT:
        text = STOPPED  # no rule broke: the failure message says why
    if run.command == DQ_COMMAND:
        return text + VALIDATED_ONLY
    if any(not table.published for table in run.tables):
        text += KEPT_PREVIOUS
    return text


def _state(table: TableQuality, validated_only: bool) -> dict:
    """What the run did with the table: a build published it or kept the previous version; a dq run
    only validated it."""
    if validated_only:
        return {"css": "validated", "short": "validated", "long": "validated, not rebuilt"}
    if table.published:
        return {"css": "published yes", "short": "yes", "long": "yes"}
    return {"css": "published no", "short": "no", "long": "no \u2014 the previous version stays current"}


def _summary_row(table: TableQuality, shown: list, validated_only: bool) -> dict:
    counts = _status_counts(rule for rule, _ in shown)
    return {"table": table.table, "layer": table.layer, "anchor": _table_anchor(table.table),
            "version": _version(table.version), "rows": _n(table.rows), "verdict": table.verdict,
            "state": _state(table, validated_only),
            "counts": [{"status": status, "count": _n(counts[status]),
                        "hot": bool(counts[status]) and status != PASS_VERDICT}
                       for status in (PASS_VERDICT, WARN_VERDICT, FAIL_VERDICT)]}


def _quarantine(quarantine: dict) -> Optional[dict]:
    if not quarantine:
        return None
    total = sum(int(rows) for rows in quarantine.values())
    ordered = sorted(quarantine.items(), key=lambda item: (-int(item[1]), str(item[0])))
    return {"rows_text": _plural(total, "row"), "total": _n(total),
            "reasons": [{"reason": reason, "rows": int(rows), "rows_text": _n(rows)} for reason, rows in ordered]}


def _coverage(points: list[CoveragePoint], run_id: str) -> Optional[dict]:
    if not points:
        return None
    rows, previous = [], None
    for point in points:
        rows.append({"run_id": point.run_id, "finished": point.finished_at or DASH, "current": point.run_id == run_id,
                     "aesthetic": _share(point.aesthetic_share, previous and previous.aesthetic_share),
                     "image": _share(point.image_share, previous and previous.image_share)})
        previous = point
    from etl.quality.plots import coverage_svg  # matplotlib takes a second to load: only for a page with plots

    return {"svg": Markup(coverage_svg(points, id_prefix="coverage")),
            "runs": _plural(len(points), "run"), "points": rows}


def _table_section(table: TableQuality, shown: list, validated_only: bool) -> dict:
    counts = _status_counts(rule for rule, _ in shown)
    return {"table": table.table, "layer": table.layer, "verdict": table.verdict, "anchor": _table_anchor(table.table),
            "rows": int(table.rows), "rows_text": _n(table.rows), "version": _version(table.version),
            "state": _state(table, validated_only),
            "counts": {status: _n(counts[status]) for status in STATUSES},
            "rules": [_rule_row(table, rule, checks) for rule, checks in shown],
            "histograms": [_histogram(table, hist) for hist in table.histograms]}


def _histogram(table: TableQuality, hist: Histogram) -> dict:
    from etl.quality.plots import histogram_svg

    total = sum(int(c) for c in hist.counts)
    caption = f"{_plural(total, 'value')} in {_plural(len(hist.counts), 'bin')}"
    if hist.bins:
        caption += f" from {_fmt(float(hist.bins[0]))} to {_fmt(float(hist.bins[-1]))}"
    nulls = int(hist.nulls)
    caption += f"; {_n(nulls)} null"
    if nulls and total + nulls:
        caption += f" ({_percent(100 * nulls / (total + nulls))})"
    return {"column": hist.column, "caption": caption,
            "svg": Markup(histogram_svg(hist, id_prefix=f"hist-{table.table}-{hist.column}"))}


def _rule_row(table: TableQuality, rule: RuleResult, schema_checks: tuple) -> dict:
    unexpected = None
    if rule.unexpected_count is not None or rule.unexpected_percent is not None:
        unexpected = {"count": _n(rule.unexpected_count) if rule.unexpected_count is not None else DASH,
                      "percent": None if rule.unexpected_percent is None else _percent(rule.unexpected_percent)}
    return {"status": rule.status, "anchor": _rule_anchor(table.table, rule.rule_id), "rule_id": rule.rule_id,
            "rule_id_parts": _id_parts(rule.rule_id), "severity": rule.severity,
            "hint": SEVERITY_HINT.get(rule.severity, ""), "description": rule.description,
            "expectation": rule.expectation, "observed": _observed(rule), "unexpected": unexpected,
            "unexpected_plain": None if rule.unexpected_count is None else int(rule.unexpected_count),
            "schema": _schema_columns(schema_checks) if schema_checks else None,
            "extra": None if schema_checks else _rule_extra(rule)}


def _shown(rules: list[RuleResult]) -> list[tuple[RuleResult, tuple[RuleResult, ...]]]:
    """The rows of a rules table, broken first: each rule with no checks under it, except the schema
    checks, which become one "schema matches the contract" row carrying them."""
    checks = tuple(r for r in rules if r.rule_id == SCHEMA_COLUMNS or r.rule_id.startswith(SCHEMA_TYPE_PREFIX))
    shown = [(rule, ()) for rule in rules if not any(rule is check for check in checks)]
    if checks:
        shown.insert(0, (_schema_row(checks), checks))
    return sorted(shown, key=lambda item: STATUSES.index(item[0].status))


def _schema_row(checks: tuple[RuleResult, ...]) -> RuleResult:
    broken = [check for check in checks if not check.success]
    failing = _failing_columns(checks)
    description = "schema matches the contract"
    if failing:
        description += f" — failing: {', '.join(failing)}"
    types = sum(1 for check in checks if check.rule_id.startswith(SCHEMA_TYPE_PREFIX))
    expectations = sorted({check.expectation for check in checks})
    return RuleResult(
        table=checks[0].table, rule_id=SCHEMA_ROW, expectation=", ".join(expectations), description=description,
        severity=FAIL if any(check.severity == FAIL for check in (broken or checks)) else WARN,
        success=not broken, observed_value=f"{_plural(types, 'column')} checked" if not broken
        else f"{_plural(len(broken), 'check')} broke")


def _column_of(check: RuleResult) -> str:
    return str((check.details or {}).get("column") or check.rule_id[len(SCHEMA_TYPE_PREFIX):])


def _failing_columns(checks: tuple[RuleResult, ...]) -> list[str]:
    """The columns a broken schema check names: a wrong type, or missing, extra or misplaced in the list."""
    failing = []
    for check in checks:
        if check.success:
            continue
        if check.rule_id == SCHEMA_COLUMNS:
            expected = list((check.details or {}).get("columns") or [])
            found = check.observed_value if isinstance(check.observed_value, list) else []
            differing = [c for c in expected if c not in found] + [c for c in found if c not in expected]
            if not differing and expected and found:
                differing = [e for e, f in zip(expected, found) if e != f]  # same columns, another order
            failing += differing or ["column list"]
        else:
            failing.append(_column_of(check))
    return list(dict.fromkeys(failing))


def _schema_columns(checks: tuple[RuleResult, ...]) -> dict:
    """The contract's columns with their types and each check's status, folded unless a check broke."""
    by_column = {_column_of(c): c for c in checks if c.rule_id.startswith(SCHEMA_TYPE_PREFIX)}
    listing = next((c for c in checks if c.rule_id == SCHEMA_COLUMNS), None)
    order = list((listing.details or {}).get("columns") or []) if listing else []
    columns = order + [c for c in by_column if c not in order]
    failing = _failing_columns(checks)
    summary = f"{_plural(len(columns), 'column')} and {'its type' if len(columns) == 1 else 'their types'}"
    if failing:
        summary += f"; failing: {', '.join(failing)}"
    rows = []
    for index, column in enumerate(columns, 1):
        check = by_column.get(column)
        status = check.status if check else (PASS_VERDICT if column not in failing else FAIL_VERDICT)
        rows.append({"index": index, "column": column, "status": status,
                     "type": str((check.details or {}).get("type", "")) if check else "",
                     "observed": "" if check is None or check.success else _fmt(check.observed_value, 120)})
    listed = None
    if listing is not None:
        listed = {"status": listing.status,
                  "state": "as the contract lists them" if listing.success else f"found {_fmt(listing.observed_value)}"}
    return {"open": any(not check.success for check in checks), "count": len(columns), "summary": summary,
            "listing": listed, "columns": rows}


def _rule_extra(rule: RuleResult) -> Optional[dict]:
    """Duplicate figures, completeness per subset, other details and the offending keys, under the rule's row."""
    details = dict(rule.details or {})
    extra: dict[str, Any] = {"figures": None, "per_subset": None, "completeness": None, "others": None,
                             "top_values": None, "sample": None}
    if any(key in details for key in DUPLICATE_KEYS):
        extra["figures"] = {
            "attrs": {f"data-{key.replace('_', '-')}": _fmt(details[key], key=True)
                      for key in DUPLICATE_KEYS if key in details},
            "duplicated_values": _counted(details, "duplicated_values", "duplicated value"),
            "rows_involved": _counted(details, "rows_involved", "row involved", "rows involved"),
            "allowed": allowance(details["allowed"]) if isinstance(details.get("allowed"), int) else None}
    if isinstance(details.get("per_subset"), dict) and details["per_subset"]:
        extra["per_subset"] = _duplicates_per_subset(details["per_subset"])
    if isinstance(details.get("subsets"), list):
        extra["completeness"] = _completeness(details["subsets"])
    others = {k: v for k, v in details.items() if k not in LAID_OUT_KEYS}
    if others:
        extra["others"] = [{"name": str(key).replace("_", " "), "value": _fmt(value)} for key, value in others.items()]
    if isinstance(details.get("values"), list) and details["values"]:
        extra["top_values"] = _duplicated_values(details["values"], details.get("duplicated_values"))
    elif rule.sample:
        sample = list(rule.sample)
        shown = sample[:SAMPLE_LIMIT]
        extra["sample"] = {
            "label": "offending keys, a sample" if any(key in details for key in DUPLICATE_KEYS)
            else "unexpected values, a sample",
            "more": f" (first {len(shown)} of {len(sample)})" if len(sample) > len(shown) else "",
            "shown": [_fmt(item, 200, key=True) for item in shown]}
    return extra if any(value is not None for value in extra.values()) else None


def _counted(details: dict, key: str, one: str, many: Optional[str] = None) -> Optional[dict]:
    """A figure and the words after it, singular when the figure is 1."""
    if key not in details:
        return None
    value = details[key]
    return {"value": _fmt(value), "words": one if _is_one(value) else (many or one + "s")}


def _duplicates_per_subset(per_subset: dict) -> list[dict]:
    """OpenDataLab's duplicate table: per subset, the values held by more than one of its rows."""
    rows = []
    for subset, figures in per_subset.items():
        values, involved = int(figures.get("duplicated_values", 0)), int(figures.get("rows_involved", 0))
        rows.append({"subset": subset, "duplicated": values, "rows": involved, "duplicated_text": _n(values),
                     "rows_text": _n(involved), "beyond_text": _n(involved - values)})
    return rows


def _duplicated_values(values: list, total: Any) -> dict:
    """The duplicated values with the most rows, each with its key columns (its subset among them)."""
    columns = [key for key in values[0] if key != "rows"]
    shown = values[:SAMPLE_LIMIT]
    of = f" (the first {len(shown)} of {_fmt(total)})" if isinstance(total, int) and total > len(shown) else ""
    return {"of": of, "columns": columns,
            "rows": [{"rows": int(value.get("rows", 0)), "rows_text": _n(value.get("rows")),
                      "cells": [{"column": c, "value": _fmt(value.get(c), 200, key=True)} for c in columns]}
                     for value in shown]}


def _completeness(subsets: list) -> dict:
    """Each subset's rows beside its expected rows, and how many of its parts the table holds."""
    rows = []
    for item in subsets:
        expected_parts = item.get("expected_parts")
        whole, difference = bool(item.get("whole")), int(item["difference"])
        state = "partial" if not whole else ("match" if difference == 0 else "off")
        if not whole:
            coverage = (f"{_n(item['parts_read'])} of {_plural(expected_parts, 'part')} "
                        f"({_percent(100 * item['parts_read'] / expected_parts)}): reported, not judged")
        elif difference == 0:
            coverage = "every part; rows match"
        else:
            coverage = (f"every part; {_plural(abs(difference), 'row')} "
                        f"{'more' if difference > 0 else 'fewer'} than expected")
        rows.append({
            "state": state,
            "attrs": {f"data-{key.replace('_', '-')}": _plain(item.get(key), key=True)
                      for key in ("subset", "expected_rows", "rows", "difference", "share", "parts_read",
                                  "expected_parts", "whole")},
            "cells": [item["subset"], _n(item["expected_rows"]), _n(item["rows"]), _signed(difference),
                      _percent(100 * float(item["share"])),
                      f"{_n(item['parts_read'])} / {_n(expected_parts)}" if expected_parts is not None
                      else _n(item["parts_read"]),
                      coverage]})
    total = None
    if len(subsets) > 1:
        expected, actual = sum(int(i["expected_rows"]) for i in subsets), sum(int(i["rows"]) for i in subsets)
        total = [_n(expected), _n(actual), _signed(actual - expected), _percent(100 * actual / expected)]
    return {"rows": rows, "total": total}


# --- formatting --------------------------------------------------------------------------------


def _n(value: Any) -> str:
    """An integer count with thousands separators."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return _fmt(value)


def _fmt(value: Any, limit: int = TEXT_LIMIT, key: bool = False) -> str:
    """Any observed value as short plain text; a key's numbers are shown as they are (no thousands
    separators), so they can be copied and looked up."""
    text = _plain(value, key)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _plain(value: Any, key: bool = False) -> str:
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if key else f"{value:,}"
    if isinstance(value, float):
        if key or math.isnan(value) or math.isinf(value):
            return repr(value)
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.0f}" if abs(value) >= 1e6 else f"{value:.6g}"
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_plain(v, key)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        head = ", ".join(_plain(v, key) for v in items[:20])
        return f"[{head}{MORE if len(items) > 20 else ''}]"
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def _is_one(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) == 1


def _id_parts(rule_id: str) -> list[str]:
    """A rule id cut after each underscore: the template puts a line-break opportunity there and nowhere else."""
    return re.findall(r"[^_]*_|[^_]+$", rule_id) or [rule_id]


def _observed(rule: RuleResult) -> str:
    """The observed value; a completeness rule's is its share of the expected rows."""
    value = rule.observed_value
    if isinstance((rule.details or {}).get("subsets"), list) and isinstance(value, (int, float)):
        return f"{_percent(100 * value)} of the expected rows"
    return _fmt(value)


def _figures_inline(rule: RuleResult) -> Optional[str]:
    """The one or two numbers that say how bad a broken rule is, for the verdict's list."""
    details = rule.details or {}
    if "duplicated_values" in details or "rows_involved" in details:
        bits = [f"{figure['value']} {figure['words']}" for figure in
                (_counted(details, "duplicated_values", "duplicated value"),
                 _counted(details, "rows_involved", "row involved", "rows involved")) if figure]
        return ", ".join(bits)
    if isinstance(details.get("subsets"), list) and details.get("off"):
        off = [item for item in details["subsets"] if item.get("subset") in details["off"]]
        return "; ".join(f"{item['subset']}: {_signed(int(item['difference']))} "
                         f"{'row' if abs(int(item['difference'])) == 1 else 'rows'}" for item in off)
    if rule.unexpected_count is not None:
        text = f"{rule.unexpected_count:,} unexpected"
        if rule.unexpected_percent is not None:
            text += f", {_percent(rule.unexpected_percent)}"
        return text
    if rule.observed_value is not None:
        return f"observed {_fmt(rule.observed_value, 80)}"
    return None


def _signed(value: int) -> str:
    return f"{value:+,}".replace("-", "\u2212")


def _percent(value: float) -> str:
    value = float(value)
    if value == 0:
        return "0 %"
    return f"{value:.3g} %" if abs(value) < 10 else f"{value:.1f} %"


def _share(value: float, previous: Optional[float]) -> dict:
    """A coverage share, and its change since the previous run when it moved."""
    delta = None
    if previous is not None:
        change = (float(value) - float(previous)) * 100
        if abs(change) >= 0.05:
            delta = {"css": "up" if change > 0 else "down",
                     "text": f"{'+' if change > 0 else chr(0x2212)}{abs(change):.1f} pt"}
    return {"text": f"{float(value) * 100:.1f} %", "delta": delta}


def _version(version: Optional[int]) -> str:
    return "\u2014" if version is None else str(version)


def _plural(count: Any, word: str) -> str:
    return f"{_n(count)} {word}{'' if _is_one(count) else 's'}"


def _status_counts(rules: Iterable[RuleResult]) -> dict[str, int]:
    counts = {status: 0 for status in STATUSES}
    for rule in rules:
        counts[rule.status] += 1
    return counts


def _duration(started: str, finished: str) -> Optional[str]:
    try:
        start, end = _parse_time(started), _parse_time(finished)
        seconds = (end - start).total_seconds()
    except (TypeError, ValueError):
        return None
    if seconds < 0:
        return None
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{seconds:.1f} s"


def _parse_time(text: str) -> datetime:
    text = str(text).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def _anchor(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "x"


def _table_anchor(table: str) -> str:
    return "table-" + _anchor(table)


def _rule_anchor(table: str, rule_id: str) -> str:
    return f"rule-{_anchor(table)}-{_anchor(rule_id)}"
