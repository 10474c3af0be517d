"""The data-quality report: one self-contained HTML page per run, for people.

`render_report(run)` turns a `RunQuality` into a page that opens offline and prints well: inline
CSS, plots as inline SVG (text drawn as paths), no script, no font, stylesheet or image fetched
from anywhere. The run's verdict comes first, then a summary of every table, the quarantine, the
coverage of the wide table over the last runs and one section per table with its rules, duplicate
figures, offending keys and distributions. Every value from the run is HTML-escaped.

Stable hooks for tests and tools: `#verdict` (with `data-verdict`, `data-run-id`), `#summary`,
`#quarantine` (`tr[data-reason][data-rows]`), `#coverage`, `section.table-section[data-table]`
(`dd.rows[data-rows]`), `tr.rule.<status>[data-rule-id][data-status][data-severity]` (with
`data-unexpected` when the rule counts unexpected values), `figure.plot` (`.histogram[data-column]`,
`.coverage`), `[data-duplicated-values]`, `[data-rows-involved]`, `ul.sample`. Values in `data-*`
attributes are plain (no thousands separators), so they can be compared exactly.

A table's schema checks (the column list and one type check per column) are one row,
`tr.rule[data-rule-id="schema"]`, with the columns in `details.schema` (open when a check broke;
`tr.schema-column[data-column][data-type][data-status]`). Duplicate rules show their figures per
subset (`table.dup-subsets tr[data-subset]`) and the values with the most rows (`table.dup-values`);
the completeness rule shows each subset beside its expected totals (`table.completeness
tr.completeness-subset[data-subset]`, with `data-expected-rows`, `data-rows`, `data-difference`,
`data-share`, `data-parts-read`, `data-expected-parts`, `data-whole`).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any, Iterable, Optional

from etl.quality.results import (FAIL, FAIL_VERDICT, PASS_VERDICT, WARN, WARN_VERDICT, CoveragePoint, RuleResult,
                                 RunQuality, TableQuality, allowance, verdict_of)

STATUSES = (FAIL_VERDICT, WARN_VERDICT, PASS_VERDICT)  # worst first: the order rules are listed in
VERDICT_COLOURS = {PASS_VERDICT: "#1a7f37", WARN_VERDICT: "#bf8700", FAIL_VERDICT: "#cf222e"}
VERDICT_MEANING = {
    PASS_VERDICT: "Every rule holds.",
    WARN_VERDICT: "Every blocking rule holds; some warnings need a look.",
    FAIL_VERDICT: "A blocking rule broke.",
}
STOPPED = "The build stopped before it finished."
KEPT_PREVIOUS = " Tables marked \u201cnot published\u201d kept their previous version."
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


def render_report(run: RunQuality) -> str:
    """The whole page for `run` as one HTML string."""
    verdict = run.verdict
    title = f"{verdict.upper()} \u00b7 data quality \u00b7 run {run.run_id}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        f'<body class="verdict-{_e(verdict)}">',
        _verdict(run),
        "<main>",
        _summary(run),
        _quarantine(run.quarantine),
        _coverage(run.coverage_history, run.run_id),
        *(_table_section(table) for table in run.tables),
        "</main>",
        f'<footer>laion-etl data-quality report \u00b7 run <code>{_e(run.run_id)}</code> '
        f"\u00b7 finished {_e(run.finished_at or DASH)}</footer>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(part for part in parts if part)


def write_report(run: RunQuality, path) -> Path:
    """Write the page for `run` to `path` (UTF-8, parent folders created); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(run), encoding="utf-8")
    return path


# --- sections ----------------------------------------------------------------------------------


def _verdict(run: RunQuality) -> str:
    verdict = run.verdict
    counts = _status_counts(rule for table in run.tables for rule, _ in _shown(table.rules))
    unpublished = [t for t in run.tables if not t.published]
    summary = (f"{_n(counts[FAIL_VERDICT])} failed, {_n(counts[WARN_VERDICT])} warned, "
               f"{_n(counts[PASS_VERDICT])} passed, on {_plural(len(run.tables), 'table')}")
    if unpublished:
        summary += f"; {_plural(len(unpublished), 'table')} not published"
    facts = [("run id", f"<code>{_e(run.run_id)}</code>"),
             ("started", _e(run.started_at or DASH)),
             ("finished", _e(run.finished_at or DASH))]
    took = _duration(run.started_at, run.finished_at)
    if took:
        facts.append(("took", _e(took)))
    facts += [("engine", _e(run.engine or DASH)),
              ("warehouse", f"<code>{_e(run.warehouse or DASH)}</code>")]
    out = [f'<header id="verdict" class="verdict {_e(verdict)}" data-verdict="{_e(verdict)}" '
           f'data-run-id="{_e(run.run_id)}">',
           f'<div class="verdict-word">{_e(verdict.upper())}</div>',
           '<div class="verdict-body">',
           f"<h1>Data quality of run <code>{_e(run.run_id)}</code></h1>",
           f'<p class="verdict-meaning">{_e(_meaning(run))}</p>',
           f'<p class="verdict-counts">Rules: {summary}.</p>']
    if run.failure:
        out.append(f'<p class="failure"><strong>The build stopped:</strong> '
                   f"<span>{_e(run.failure)}</span></p>")
    problems = [(t, r) for t in run.tables for r, _ in _shown(t.rules) if r.status != PASS_VERDICT]
    if problems:
        out.append('<ul class="problems">')
        for table, rule in problems[:PROBLEMS_LIMIT]:
            out.append(f'<li class="{_e(rule.status)}"><span class="badge {_e(rule.status)}">'
                       f"{_e(rule.status.upper())}</span> "
                       f'<a href="#{_rule_anchor(table.table, rule.rule_id)}">'
                       f"{_e(table.table)} \u00b7 {_e(rule.rule_id)}</a> \u2014 "
                       f"{_e(rule.description)}{_figures_inline(rule)}</li>")
        if len(problems) > PROBLEMS_LIMIT:
            out.append(f'<li class="more">\u2026 and {_n(len(problems) - PROBLEMS_LIMIT)} more '
                       "in the tables below</li>")
        out.append("</ul>")
    out.append('<dl class="facts">')
    out += [f"<div><dt>{_e(name)}</dt><dd>{value}</dd></div>" for name, value in facts]
    out += ["</dl>", "</div>", "</header>"]
    return "\n".join(out)


def _meaning(run: RunQuality) -> str:
    verdict = run.verdict
    text = VERDICT_MEANING[verdict]
    if verdict == FAIL_VERDICT and verdict_of(run.rules) != FAIL_VERDICT:
        text = STOPPED  # no rule broke: the failure message says why
    if any(not table.published for table in run.tables):
        text += KEPT_PREVIOUS
    return text


def _summary(run: RunQuality) -> str:
    out = ['<section id="summary">', "<h2>Tables</h2>"]
    if not run.tables:
        out += ['<p class="empty">No table was validated in this run.</p>', "</section>"]
        return "\n".join(out)
    out += ['<table class="summary">', "<thead><tr>",
            "<th>layer</th><th>table</th><th class=num>version</th><th class=num>rows</th>"
            "<th>published</th><th class=num>pass</th><th class=num>warn</th>"
            "<th class=num>fail</th><th>verdict</th>",
            "</tr></thead>", "<tbody>"]
    for table in run.tables:
        counts = _status_counts(rule for rule, _ in _shown(table.rules))
        cells = [f"<td>{_e(table.layer)}</td>",
                 f'<td><a href="#{_table_anchor(table.table)}">{_e(table.table)}</a></td>',
                 f"<td class=num>{_e(_version(table.version))}</td>",
                 f"<td class=num>{_n(table.rows)}</td>",
                 f"<td>{_published(table)}</td>"]
        for status in (PASS_VERDICT, WARN_VERDICT, FAIL_VERDICT):
            hot = f" {status}" if counts[status] and status != PASS_VERDICT else ""
            cells.append(f'<td class="num count{hot}">{_n(counts[status])}</td>')
        cells.append(f'<td><span class="badge {_e(table.verdict)}">'
                     f"{_e(table.verdict.upper())}</span></td>")
        out.append(f'<tr class="table-row {_e(table.verdict)}" data-table="{_e(table.table)}">'
                   + "".join(cells) + "</tr>")
    out += ["</tbody>", "</table>", "</section>"]
    return "\n".join(out)


def _quarantine(quarantine: dict) -> str:
    if not quarantine:
        return ""
    total = sum(int(rows) for rows in quarantine.values())
    out = ['<section id="quarantine">', "<h2>Quarantine</h2>",
           f"<p>{_plural(total, 'row')} could not be accepted by the ODS and were kept in the "
           "quarantine table with their source file and original values.</p>",
           '<table class="quarantine">',
           "<thead><tr><th>reason</th><th class=num>rows</th></tr></thead>", "<tbody>"]
    for reason, rows in sorted(quarantine.items(), key=lambda item: (-int(item[1]), str(item[0]))):
        out.append(f'<tr data-reason="{_e(reason)}" data-rows="{int(rows)}"><td>{_e(reason)}</td>'
                   f"<td class=num>{_n(rows)}</td></tr>")
    out += [f'<tr class="total"><td>total</td><td class=num>{_n(total)}</td></tr>',
            "</tbody>", "</table>", "</section>"]
    return "\n".join(out)


def _coverage(points: list[CoveragePoint], run_id: str) -> str:
    if not points:
        return ""
    from etl.quality.plots import coverage_svg

    out = ['<section id="coverage">', "<h2>Coverage over the last runs</h2>",
           "<p>Share of wide-table rows with an aesthetic score and with a downloaded image, "
           "oldest run first.</p>",
           '<figure class="plot coverage" role="img" '
           'aria-label="coverage of the wide table over the last runs">',
           coverage_svg(points, id_prefix="coverage"),
           f"<figcaption>{_plural(len(points), 'run')}; the last point is the latest run."
           "</figcaption>",
           "</figure>",
           '<table class="coverage">',
           "<thead><tr><th>run</th><th>finished</th><th class=num>with aesthetic score</th>"
           "<th class=num>with image</th></tr></thead>", "<tbody>"]
    previous: Optional[CoveragePoint] = None
    for point in points:
        current = " current" if point.run_id == run_id else ""
        out.append(f'<tr class="coverage-point{current}" data-run-id="{_e(point.run_id)}">'
                   f"<td><code>{_e(point.run_id)}</code></td>"
                   f"<td>{_e(point.finished_at or DASH)}</td>"
                   f"<td class=num>{_share(point.aesthetic_share, previous and previous.aesthetic_share)}</td>"
                   f"<td class=num>{_share(point.image_share, previous and previous.image_share)}</td></tr>")
        previous = point
    out += ["</tbody>", "</table>", "</section>"]
    return "\n".join(out)


def _table_section(table: TableQuality) -> str:
    verdict = table.verdict
    counts = _status_counts(rule for rule, _ in _shown(table.rules))
    out = [f'<section class="table-section {_e(verdict)}" id="{_table_anchor(table.table)}" '
           f'data-table="{_e(table.table)}">',
           f'<h2><span class="layer">{_e(table.layer)}</span> {_e(table.table)} '
           f'<span class="badge {_e(verdict)}">{_e(verdict.upper())}</span></h2>',
           '<dl class="facts table-facts">',
           f'<div><dt>rows</dt><dd class="rows" data-rows="{int(table.rows)}">{_n(table.rows)}</dd></div>',
           f"<div><dt>Delta version</dt><dd>{_e(_version(table.version))}</dd></div>",
           f"<div><dt>published</dt><dd>{_published(table, long=True)}</dd></div>",
           f"<div><dt>rules</dt><dd>{_n(counts[PASS_VERDICT])} pass \u00b7 "
           f"{_n(counts[WARN_VERDICT])} warn \u00b7 {_n(counts[FAIL_VERDICT])} fail</dd></div>",
           "</dl>"]
    out.append(_rules_table(table))
    if table.histograms:
        from etl.quality.plots import histogram_svg

        out += ["<h3>Distributions</h3>", '<div class="plots">']
        for hist in table.histograms:
            out += [f'<figure class="plot histogram" data-column="{_e(hist.column)}" role="img" '
                    f'aria-label="distribution of {_e(hist.column)}">',
                    histogram_svg(hist, id_prefix=f"hist-{table.table}-{hist.column}"),
                    f"<figcaption>{_histogram_caption(hist)}</figcaption>",
                    "</figure>"]
        out.append("</div>")
    out.append("</section>")
    return "\n".join(out)


def _rules_table(table: TableQuality) -> str:
    if not table.rules:
        return '<p class="empty">No rules ran on this table.</p>'
    out = ["<h3>Rules</h3>", '<table class="rules">',
           "<thead><tr><th>status</th><th>rule</th><th>what it asks</th><th>severity</th>"
           "<th>observed</th><th class=num>unexpected</th></tr></thead>", "<tbody>"]
    for rule, schema_checks in _shown(table.rules):
        status = rule.status
        attrs = (f'class="rule {_e(status)}" id="{_rule_anchor(table.table, rule.rule_id)}" '
                 f'data-rule-id="{_e(rule.rule_id)}" data-status="{_e(status)}" '
                 f'data-severity="{_e(rule.severity)}"')
        if rule.unexpected_count is not None:
            attrs += f' data-unexpected="{int(rule.unexpected_count)}"'
        out.append(
            f"<tr {attrs}>"
            f'<td class="status"><span class="badge {_e(status)}">{_e(status.upper())}</span></td>'
            f'<td class="rule-id"><code>{_e(rule.rule_id)}</code></td>'
            f'<td class="description">{_e(rule.description)}'
            f'<div class="expectation">{_e(rule.expectation)}</div></td>'
            f'<td class="severity">{_e(rule.severity)}'
            f'<div class="hint">{_e(SEVERITY_HINT.get(rule.severity, ""))}</div></td>'
            f'<td class="observed">{_e(_observed(rule))}</td>'
            f'<td class="num unexpected">{_unexpected(rule)}</td></tr>')
        extra = _schema_columns(schema_checks) if schema_checks else _rule_extra(rule)
        if extra:
            out.append(f'<tr class="rule-extra {_e(status)}" data-rule-id="{_e(rule.rule_id)}">'
                       f'<td></td><td colspan="5">{extra}</td></tr>')
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


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


def _schema_columns(checks: tuple[RuleResult, ...]) -> str:
    """The contract's columns with their types and each check's status, folded unless a check broke."""
    broken = any(not check.success for check in checks)
    by_column = {_column_of(c): c for c in checks if c.rule_id.startswith(SCHEMA_TYPE_PREFIX)}
    listing = next((c for c in checks if c.rule_id == SCHEMA_COLUMNS), None)
    order = list((listing.details or {}).get("columns") or []) if listing else []
    columns = order + [c for c in by_column if c not in order]
    failing = _failing_columns(checks)
    summary = f"{_plural(len(columns), 'column')} and their types"
    if failing:
        summary += f"; failing: {', '.join(failing)}"
    out = [f'<details class="schema" data-columns="{len(columns)}"{" open" if broken else ""}>',
           f"<summary>{_e(summary)}</summary>"]
    if listing is not None:
        state = "as the contract lists them" if listing.success else \
            f"found {_fmt(listing.observed_value)}"
        out.append(f'<p class="schema-list {_e(listing.status)}" data-status="{_e(listing.status)}">'
                   f"column names and order: {_e(state)}</p>")
    out += ['<table class="schema-columns">',
            "<thead><tr><th class=num>#</th><th>column</th><th>contract type</th><th>status</th>"
            "<th>observed</th></tr></thead>", "<tbody>"]
    for index, column in enumerate(columns, 1):
        check = by_column.get(column)
        status = check.status if check else (PASS_VERDICT if column not in failing else FAIL_VERDICT)
        kind = str((check.details or {}).get("type", "")) if check else ""
        observed = "" if check is None or check.success else _fmt(check.observed_value, 120)
        out.append(f'<tr class="schema-column {_e(status)}" data-column="{_e(column)}" data-type="{_e(kind)}" '
                   f'data-status="{_e(status)}"><td class=num>{index}</td><td><code>{_e(column)}</code></td>'
                   f"<td><code>{_e(kind or DASH)}</code></td>"
                   f'<td><span class="badge {_e(status)}">{_e(status.upper())}</span></td>'
                   f"<td>{_e(observed)}</td></tr>")
    out += ["</tbody>", "</table>", "</details>"]
    return "".join(out)


def _rule_extra(rule: RuleResult) -> str:
    """Duplicate figures, completeness per subset, other details and the offending keys, under the rule's row."""
    parts = []
    details = dict(rule.details or {})
    if any(key in details for key in DUPLICATE_KEYS):
        attrs = "".join(f' data-{key.replace("_", "-")}="{_e(_fmt(details[key], key=True))}"'
                        for key in DUPLICATE_KEYS if key in details)
        figures = []
        if "duplicated_values" in details:
            figures.append(f'<strong class="duplicated-values">{_e(_fmt(details["duplicated_values"]))}'
                           "</strong> duplicated values")
        if "rows_involved" in details:
            figures.append(f'<strong class="rows-involved">{_e(_fmt(details["rows_involved"]))}'
                           "</strong> rows involved")
        if isinstance(details.get("allowed"), int):
            figures.append(f'<span class="allowed">{_e(allowance(details["allowed"]))}</span>')
        parts.append(f'<p class="dup-figures"{attrs}>' + " \u00b7 ".join(figures) + "</p>")
    if isinstance(details.get("per_subset"), dict) and details["per_subset"]:
        parts.append(_duplicates_per_subset(details["per_subset"]))
    if isinstance(details.get("subsets"), list):
        parts.append(_completeness(details["subsets"]))
    others = {k: v for k, v in details.items() if k not in LAID_OUT_KEYS}
    if others:
        parts.append('<dl class="details">' + "".join(
            f'<div><dt>{_e(str(key).replace("_", " "))}</dt><dd>{_e(_fmt(value))}</dd></div>'
            for key, value in others.items()) + "</dl>")
    if isinstance(details.get("values"), list) and details["values"]:
        parts.append(_duplicated_values(details["values"], details.get("duplicated_values")))
    elif rule.sample:
        sample = list(rule.sample)
        shown = sample[:SAMPLE_LIMIT]
        if any(key in details for key in DUPLICATE_KEYS):
            label = "offending keys, a sample"
        else:
            label = "unexpected values, a sample"
        more = f" (first {len(shown)} of {len(sample)})" if len(sample) > len(shown) else ""
        parts.append(f'<div class="sample-block"><span class="sample-label">{label}'
                     f"{_e(more)}:</span> "
                     '<ul class="sample">' + "".join(f"<li><code>{_e(_fmt(item, 200, key=True))}</code></li>"
                                                     for item in shown) + "</ul></div>")
    return "".join(parts)


def _duplicates_per_subset(per_subset: dict) -> str:
    """OpenDataLab's duplicate table: per subset, the values held by more than one of its rows."""
    out = ['<table class="dup-subsets">',
           "<thead><tr><th>subset</th><th class=num>duplicated values</th><th class=num>rows involved</th>"
           "<th class=num>rows beyond one per value</th></tr></thead>", "<tbody>"]
    for subset, figures in per_subset.items():
        values, rows = int(figures.get("duplicated_values", 0)), int(figures.get("rows_involved", 0))
        out.append(f'<tr data-subset="{_e(subset)}" data-duplicated-values="{values}" data-rows-involved="{rows}">'
                   f"<td>{_e(subset)}</td><td class=num>{_n(values)}</td><td class=num>{_n(rows)}</td>"
                   f"<td class=num>{_n(rows - values)}</td></tr>")
    out += ["</tbody>", "</table>"]
    return "".join(out)


def _duplicated_values(values: list, total: Any) -> str:
    """The duplicated values with the most rows, each with its key columns (its subset among them)."""
    columns = [key for key in values[0] if key != "rows"]
    shown = values[:SAMPLE_LIMIT]
    of = f" (the first {len(shown)} of {_fmt(total)})" if isinstance(total, int) and total > len(shown) else ""
    out = [f'<div class="dup-values-block"><span class="sample-label">duplicated values with the most rows'
           f"{_e(of)}:</span>", '<table class="dup-values">',
           "<thead><tr>" + "".join(f"<th>{_e(c)}</th>" for c in columns) + "<th class=num>rows</th></tr></thead>",
           "<tbody>"]
    for value in shown:
        out.append(f'<tr data-rows="{int(value.get("rows", 0))}">'
                   + "".join(f'<td data-column="{_e(c)}"><code>{_e(_fmt(value.get(c), 200, key=True))}</code></td>'
                             for c in columns)
                   + f'<td class=num>{_n(value.get("rows"))}</td></tr>')
    out += ["</tbody>", "</table>", "</div>"]
    return "".join(out)


def _completeness(subsets: list) -> str:
    """Each subset's rows beside its expected rows, and how many of its parts the table holds."""
    out = ['<table class="completeness">',
           "<thead><tr><th>subset</th><th class=num>expected rows</th><th class=num>rows</th>"
           "<th class=num>difference</th><th class=num>share</th><th class=num>parts read</th>"
           "<th>coverage</th></tr></thead>", "<tbody>"]
    for item in subsets:
        expected_parts = item.get("expected_parts")
        whole, difference = bool(item.get("whole")), int(item["difference"])
        state = "partial" if not whole else ("match" if difference == 0 else "off")
        if not whole:
            coverage = f"{_n(item['parts_read'])} of {_n(expected_parts)} parts ({_percent(100 * item['parts_read'] / expected_parts)}): reported, not judged"
        elif difference == 0:
            coverage = "every part; rows match"
        else:
            coverage = f"every part; {_fmt(abs(difference))} rows {'more' if difference > 0 else 'fewer'} than expected"
        parts = f"{_n(item['parts_read'])} / {_n(expected_parts)}" if expected_parts is not None else _n(item["parts_read"])
        attrs = "".join(f' data-{key.replace("_", "-")}="{_e(_plain(item.get(key), key=True))}"'
                        for key in ("subset", "expected_rows", "rows", "difference", "share", "parts_read",
                                    "expected_parts", "whole"))
        out.append(f'<tr class="completeness-subset {state}"{attrs}>'
                   f"<td>{_e(item['subset'])}</td><td class=num>{_n(item['expected_rows'])}</td>"
                   f"<td class=num>{_n(item['rows'])}</td><td class=num>{_e(_signed(difference))}</td>"
                   f"<td class=num>{_e(_percent(100 * float(item['share'])))}</td><td class=num>{parts}</td>"
                   f"<td>{_e(coverage)}</td></tr>")
    if len(subsets) > 1:
        expected, rows = sum(int(i["expected_rows"]) for i in subsets), sum(int(i["rows"]) for i in subsets)
        out.append(f'<tr class="total"><td>all</td><td class=num>{_n(expected)}</td><td class=num>{_n(rows)}</td>'
                   f"<td class=num>{_e(_signed(rows - expected))}</td>"
                   f"<td class=num>{_e(_percent(100 * rows / expected))}</td><td></td><td></td></tr>")
    out += ["</tbody>", "</table>"]
    return "".join(out)


# --- formatting --------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _n(value: Any) -> str:
    """An integer count with thousands separators, escaped."""
    try:
        return _e(f"{int(value):,}")
    except (TypeError, ValueError):
        return _e(_fmt(value))


def _fmt(value: Any, limit: int = TEXT_LIMIT, key: bool = False) -> str:
    """Any observed value as short plain text (not escaped); a key's numbers are shown as they
    are (no thousands separators), so they can be copied and looked up."""
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


def _observed(rule: RuleResult) -> str:
    """The observed value; a completeness rule's is its share of the expected rows."""
    value = rule.observed_value
    if isinstance((rule.details or {}).get("subsets"), list) and isinstance(value, (int, float)):
        return f"{_percent(100 * value)} of the expected rows"
    return _fmt(value)


def _unexpected(rule: RuleResult) -> str:
    if rule.unexpected_count is None and rule.unexpected_percent is None:
        return "\u2014"
    text = _n(rule.unexpected_count) if rule.unexpected_count is not None else "\u2014"
    if rule.unexpected_percent is not None:
        text += f' <span class="percent">({_e(_percent(rule.unexpected_percent))})</span>'
    return text


def _figures_inline(rule: RuleResult) -> str:
    """The one or two numbers that say how bad a broken rule is, for the verdict's list."""
    details = rule.details or {}
    if "duplicated_values" in details or "rows_involved" in details:
        bits = []
        if "duplicated_values" in details:
            bits.append(f"{_fmt(details['duplicated_values'])} duplicated values")
        if "rows_involved" in details:
            bits.append(f"{_fmt(details['rows_involved'])} rows involved")
        return f' <span class="figures">({_e(", ".join(bits))})</span>'
    if isinstance(details.get("subsets"), list) and details.get("off"):
        off = [item for item in details["subsets"] if item.get("subset") in details["off"]]
        text = "; ".join(f"{item['subset']}: {_signed(int(item['difference']))} rows" for item in off)
        return f' <span class="figures">({_e(text)})</span>'
    if rule.unexpected_count is not None:
        text = f"{rule.unexpected_count:,} unexpected"
        if rule.unexpected_percent is not None:
            text += f", {_percent(rule.unexpected_percent)}"
        return f' <span class="figures">({_e(text)})</span>'
    if rule.observed_value is not None:
        return f' <span class="figures">(observed {_e(_fmt(rule.observed_value, 80))})</span>'
    return ""


def _histogram_caption(hist) -> str:
    total = sum(int(c) for c in hist.counts)
    text = (f"<code>{_e(hist.column)}</code>: {_plural(total, 'value')} in "
            f"{_plural(len(hist.counts), 'bin')}")
    if hist.bins:
        text += f" from {_e(_fmt(float(hist.bins[0])))} to {_e(_fmt(float(hist.bins[-1])))}"
    nulls = int(hist.nulls)
    text += f"; {_n(nulls)} null"
    if nulls and total + nulls:
        text += f" ({_e(_percent(100 * nulls / (total + nulls)))})"
    return text


def _signed(value: int) -> str:
    return f"{value:+,}".replace("-", "\u2212")


def _percent(value: float) -> str:
    value = float(value)
    if value == 0:
        return "0 %"
    return f"{value:.3g} %" if abs(value) < 10 else f"{value:.1f} %"


def _share(value: float, previous: Optional[float]) -> str:
    text = _e(f"{float(value) * 100:.1f} %")
    if previous is not None:
        delta = (float(value) - float(previous)) * 100
        if abs(delta) >= 0.05:
            sign = "+" if delta > 0 else "\u2212"
            css = "up" if delta > 0 else "down"
            text += f' <span class="delta {css}">{sign}{abs(delta):.1f} pt</span>'
    return text


def _published(table: TableQuality, long: bool = False) -> str:
    if table.published:
        return '<span class="published yes">yes</span>'
    text = "no \u2014 the previous version stays current" if long else "no"
    return f'<span class="published no">{text}</span>'


def _version(version: Optional[int]) -> str:
    return "\u2014" if version is None else str(version)


def _plural(count: int, word: str) -> str:
    return f"{_n(count)} {word}{'' if count == 1 else 's'}"


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


_CSS = """
:root {
  --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa;
  --pass: #1a7f37; --pass-bg: #dafbe1; --warn: #bf8700; --warn-ink: #7d4e00; --warn-bg: #fff8c5;
  --fail: #cf222e; --fail-bg: #ffebe9;
}
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { margin: 0 auto; max-width: 1180px; padding: 24px; color: var(--ink); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }
code { font-family: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace;
  font-size: 0.92em; overflow-wrap: anywhere; }
h1 { font-size: 22px; margin: 0 0 6px; }
h2 { font-size: 19px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 8px; }
a { color: inherit; }
.verdict { display: flex; gap: 20px; align-items: stretch; border: 3px solid var(--line);
  border-radius: 10px; overflow: hidden; }
.verdict-word { flex: 0 0 210px; display: flex; align-items: center; justify-content: center;
  font-size: 50px; font-weight: 800; letter-spacing: 0.04em; color: #fff; }
.verdict-body { flex: 1; padding: 16px 18px 14px 0; min-width: 0; }
.verdict.pass { border-color: var(--pass); background: var(--pass-bg); }
.verdict.pass .verdict-word { background: var(--pass); }
.verdict.warn { border-color: var(--warn); background: var(--warn-bg); }
.verdict.warn .verdict-word { background: var(--warn); color: #1f2328; }
.verdict.fail { border-color: var(--fail); background: var(--fail-bg); }
.verdict.fail .verdict-word { background: var(--fail); }
.verdict-meaning { font-size: 16px; font-weight: 600; margin: 0 0 4px; }
.verdict-counts { margin: 0 0 8px; }
.failure { margin: 8px 0; padding: 8px 10px; background: #fff; border-left: 4px solid var(--fail);
  white-space: pre-wrap; overflow-wrap: anywhere; }
.problems { margin: 8px 0; padding-left: 0; list-style: none; }
.problems li { margin: 3px 0; }
.facts { display: flex; flex-wrap: wrap; gap: 4px 22px; margin: 10px 0 0; }
.facts div { min-width: 0; }
.facts dt { display: inline; color: var(--muted); }
.facts dt::after { content: ":"; }
.facts dd { display: inline; margin: 0 0 0 4px; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { text-align: left; vertical-align: top; padding: 5px 8px; border-bottom: 1px solid var(--line); }
th { background: var(--soft); font-weight: 600; font-size: 13px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.quarantine, table.coverage { width: auto; min-width: 420px; }
tr.total td { font-weight: 700; }
.badge { display: inline-block; min-width: 46px; padding: 1px 7px; border-radius: 10px; font-size: 12px;
  font-weight: 700; text-align: center; border: 1px solid; vertical-align: middle; }
.badge.pass { color: var(--pass); background: var(--pass-bg); border-color: var(--pass); }
.badge.warn { color: var(--warn-ink); background: var(--warn-bg); border-color: var(--warn); }
.badge.fail { color: #fff; background: var(--fail); border-color: var(--fail); }
td.count.warn { color: var(--warn-ink); font-weight: 700; }
td.count.fail { color: var(--fail); font-weight: 700; }
.published.no { color: var(--fail); font-weight: 700; }
tr.rule.fail td, tr.rule-extra.fail td { background: var(--fail-bg); }
tr.rule.warn td, tr.rule-extra.warn td { background: var(--warn-bg); }
tr.rule.fail td.status { box-shadow: inset 4px 0 var(--fail); }
tr.rule.warn td.status { box-shadow: inset 4px 0 var(--warn); }
tr.rule.pass td.status { box-shadow: inset 4px 0 var(--pass); }
tr.rule:has(+ tr.rule-extra) td { border-bottom: none; }
td.observed { max-width: 320px; overflow-wrap: anywhere; }
.expectation, .hint { color: var(--muted); font-size: 12px; }
.percent { color: var(--muted); }
.dup-figures { margin: 0 0 4px; }
.allowed { color: var(--muted); }
table.dup-subsets, table.dup-values, table.completeness { width: auto; min-width: 420px; background: #fff; }
tr.completeness-subset.off td { color: var(--warn-ink); font-weight: 700; }
details.schema summary { cursor: pointer; color: var(--muted); }
details.schema[open] summary { color: var(--ink); font-weight: 600; }
table.schema-columns { width: auto; min-width: 420px; background: #fff; }
tr.schema-column.fail td { background: var(--fail-bg); }
.dup-figures strong { font-size: 16px; }
dl.details { display: flex; flex-wrap: wrap; gap: 2px 18px; margin: 0 0 4px; }
dl.details dt { display: inline; color: var(--muted); }
dl.details dt::after { content: ":"; }
dl.details dd { display: inline; margin: 0 0 0 4px; }
.sample-label { color: var(--muted); }
ul.sample { display: inline; margin: 0; padding: 0; list-style: none; }
ul.sample li { display: inline-block; margin: 2px 6px 2px 0; padding: 0 5px; background: #fff;
  border: 1px solid var(--line); border-radius: 4px; }
.layer { color: var(--muted); font-weight: 400; text-transform: uppercase; font-size: 14px; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
figure.plot { margin: 0; padding: 6px; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
figure.plot svg { display: block; max-width: 100%; height: auto; }
figure.plot.coverage { width: fit-content; max-width: 100%; }
figcaption { color: var(--muted); font-size: 12px; padding: 2px 4px 0; }
tr.coverage-point.current td { font-weight: 700; }
.delta.down { color: var(--fail); }
.delta.up { color: var(--pass); }
.empty { color: var(--muted); }
footer { margin-top: 36px; padding-top: 8px; border-top: 1px solid var(--line); color: var(--muted); font-size: 12px; }
@page { size: A4; margin: 12mm; }
@media print {
  body { padding: 0; max-width: none; font-size: 11px; }
  a { text-decoration: none; }
  .verdict, tr, figure, .dup-figures { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  section.table-section { break-before: auto; }
}
""".strip()
