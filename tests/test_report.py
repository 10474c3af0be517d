"""The HTML data-quality report: planted figures on the page, escaping, no external resources,
and the page as headless Chromium (Debian's `chromium`) renders it: verdict, figures, drawn plots."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from etl.quality.plots import coverage_svg, histogram_svg
from etl.quality.results import CoveragePoint, Histogram, RuleResult, RunQuality, TableQuality
from etl.quality.report import VERDICT_COLOURS, render_report, write_report
from helpers import Node, parse, squash

EVIL = '<script>alert("x")</script> & "quotes"'
DUP_IDS = (4711, 4712, 90001, 123456789012)
BROKEN_KEYS = (-42, 17)


# --- the planted run ---------------------------------------------------------------------------


def rule(table, rule_id, success, severity="fail", **kwargs) -> RuleResult:
    kwargs.setdefault("expectation", "ExpectColumnValuesToNotBeNull")
    kwargs.setdefault("description", f"{rule_id} holds")
    return RuleResult(table=table, rule_id=rule_id, severity=severity, success=success, **kwargs)


def hist(column, lo, hi, counts, nulls=0) -> Histogram:
    step = (hi - lo) / len(counts)
    return Histogram(column, tuple(lo + i * step for i in range(len(counts) + 1)), tuple(counts), nulls)


def planted_run() -> RunQuality:
    wide = "dms_laion_wide"
    joined = TableQuality("ods_laion_joined", "ods", version=7, rows=1_234_567, published=True, rules=[
        rule("ods_laion_joined", "url_not_null", True, unexpected_count=0, unexpected_percent=0.0),
        rule("ods_laion_joined", "schema_contract", True, expectation="ExpectTableColumnsToMatchOrderedList",
             description="columns, order and types match the contract"),
    ])
    wide_table = TableQuality(wide, "dms", version=3, rows=987_654, published=False, rules=[
        rule(wide, "sample_id_unique", False, severity="warn", expectation="ExpectColumnValuesToBeUnique",
             description="sample_id is unique", unexpected_count=25, unexpected_percent=0.00253,
             sample=DUP_IDS, details={"duplicated_values": 12, "rows_involved": 25}),
        rule(wide, "punsafe_in_range", False, severity="fail", expectation="ExpectColumnValuesToBeBetween",
             description="punsafe is within [0, 1]", observed_value={"min": -0.5, "max": 1.75},
             unexpected_count=31, unexpected_percent=0.00314, sample=BROKEN_KEYS),
        rule(wide, "image_suffix_known", False, severity="warn", expectation="ExpectColumnValuesToBeInSet",
             description="image_suffix is one of jpg, png, webp", unexpected_count=5,
             unexpected_percent=0.0005, sample=("bmp", "tiff")),
        rule(wide, "hash_matches_recomputed", True, description="source hash equals the recomputed hash",
             observed_value=1.0),
        rule(wide, "rows_reconcile", True, description="DMS rows = joined ODS rows per subset",
             observed_value=987_654),
    ], histograms=[
        hist("aesthetic_score", 0.0, 10.0, [3, 40, 260, 900, 1500, 1200, 640, 210, 44, 6], nulls=321),
        hist("punsafe", 0.0, 1.0, [2400, 900, 300, 120, 80, 40, 30, 20, 15, 9], nulls=4),
        hist("pwatermark", 0.0, 1.0, [1800, 700, 400, 300, 250, 200, 180, 120, 90, 60]),
        hist("similarity", 0.2, 0.5, [10, 300, 900, 1400, 1100, 600, 250, 80, 20, 5]),
    ])
    return RunQuality(
        run_id="20250301T101500123456Z-ab12cd", started_at="2025-03-01T10:15:00+00:00",
        finished_at="2025-03-01T10:27:42+00:00", engine="sail", warehouse="/data/laion/warehouse",
        tables=[joined, wide_table],
        coverage_history=[
            CoveragePoint("20250215T090000654321Z-111111", "2025-02-15T09:12:00Z", 0.612, 0.874),
            CoveragePoint("20250222T090000000001Z-222222", "2025-02-22T09:10:00Z", 0.618, 0.871),
            CoveragePoint("20250301T101500123456Z-ab12cd", "2025-03-01T10:27:42+00:00", 0.497, 0.869),
        ],
        quarantine={"url is null": 3, "unreadable values": 1},
        failure="dms_laion_wide: rule punsafe_in_range (severity fail) broke; version 2 stays current",
    )


# OpenDataLab's duplicated sample_ids per subset, and a few duplicated hashes with their subsets.
ODL_SAMPLE_IDS = {"laion1B-nolang": (2_078_466, 4_200_001), "laion2B-en": (48_200_147, 97_000_003),
                  "laion2B-multi": (6_414_262, 12_900_017)}
DUP_HASHES = (("laion2B-en", -8_817_411_911_216_315_136, 3), ("laion2B-multi", 5_220_047_713_842_012, 2))
SCHEMA = (("sample_id", "bigint"), ("hash", "bigint"), ("subset", "string"))
# (subset, expected rows, rows, parts read, expected parts): whole and matching, whole and 7 short, a partial build.
TOTALS = (("laion1B-nolang", 1_000, 1_000, 4, 4), ("laion2B-en", 2_000, 1_993, 8, 8),
          ("laion2B-multi", 3_000, 750, 2, 8))


def schema_checks(table, wrong_type: str | None = None) -> list[RuleResult]:
    """What the validator records for a contract of SCHEMA: the column list, then one check per type."""
    names = [name for name, _ in SCHEMA]
    checks = [rule(table, "schema_columns", True, expectation="ExpectTableColumnsToMatchOrderedList",
                   description="columns are exactly the contract's, in its order", observed_value=names,
                   details={"columns": names})]
    for name, kind in SCHEMA:
        checks.append(rule(table, f"schema_type_{name}", name != wrong_type, expectation="ExpectColumnValuesToBeOfType",
                           description=f"{name} is {kind}", observed_value="StringType" if name == wrong_type else kind,
                           details={"column": name, "type": kind}))
    return checks


def dq_run() -> RunQuality:
    """A run with schema checks (one table's broken), per-subset duplicates and completeness figures."""
    base, wide = "ods_laion_base", "dms_laion_wide"
    sample_ids = {subset: {"duplicated_values": values, "rows_involved": rows}
                  for subset, (values, rows) in ODL_SAMPLE_IDS.items()}
    hashes = {"laion2B-en": {"duplicated_values": 1, "rows_involved": 3},
              "laion2B-multi": {"duplicated_values": 1, "rows_involved": 2}}
    subsets = [{"subset": subset, "expected_rows": expected, "rows": rows, "difference": rows - expected,
                "share": rows / expected, "parts_read": parts, "expected_parts": expected_parts,
                "whole": parts >= expected_parts} for subset, expected, rows, parts, expected_parts in TOTALS]
    return RunQuality("r-dq", "2025-01-01T00:00:00", "2025-01-01T00:01:00", "sail", "/wh", tables=[
        TableQuality(base, "ods", 1, 100, True, rules=[
            *schema_checks(base),
            rule(base, "duplicate_hash_per_subset", False, severity="warn", expectation="UnexpectedRowsExpectation",
                 description="subset, hash held by more than one row (none allowed)", observed_value=2,
                 unexpected_count=2, sample=tuple(f"({s}, {h})" for s, h, _ in DUP_HASHES),
                 details={"duplicated_values": 2, "rows_involved": 5, "allowed": 0, "per_subset": hashes,
                          "values": [{"subset": s, "hash": h, "rows": n} for s, h, n in DUP_HASHES]}),
        ]),
        TableQuality(wide, "dms", 2, 3_743, False, rules=[
            *schema_checks(wide, wrong_type="hash"),
            rule(wide, "duplicate_sample_id", False, severity="warn", expectation="UnexpectedRowsExpectation",
                 description="sample_id values held by more than one row", observed_value=56_692_875,
                 unexpected_count=56_692_875,
                 details={"duplicated_values": 56_692_875, "rows_involved": 114_100_021, "allowed": 1_000,
                          "per_subset": sample_ids, "values": [{"sample_id": 77, "rows": 9}]}),
            rule(wide, "rows_match_published_totals", False, severity="warn", expectation="UnexpectedRowsExpectation",
                 description="rows per subset equal its expected_rows", observed_value=3_743 / 6_000,
                 unexpected_count=1, details={"subsets": subsets, "off": ["laion2B-en"]}),
        ]),
    ])


@pytest.fixture(scope="module")
def run() -> RunQuality:
    return planted_run()


@pytest.fixture(scope="module")
def page(run) -> str:
    return render_report(run)


def row_text(row: Node) -> str:
    return " ".join(squash(cell.text()) for cell in row.children if cell.tag in {"td", "th"})


# --- the page as text --------------------------------------------------------------------------


def test_verdict_comes_first_with_the_run_facts(page, run):
    dom = parse(page)
    body_elements = [node for node in dom.order if node.tag in {"header", "section"}]
    assert body_elements[0].attrs.get("id") == "verdict", "the verdict is the first block on the page"
    verdict = dom.root.find(id="verdict")
    assert verdict.attrs["data-verdict"] == "fail" and {"verdict", "fail"} <= verdict.classes
    assert verdict.attrs["data-run-id"] == run.run_id
    text = squash(verdict.text())
    assert text.startswith("FAIL")
    assert squash(verdict.find("p", cls="verdict-meaning").text()) == \
        "A blocking rule broke. Tables marked “not published” kept their previous version."
    for fact in (run.run_id, "2025-03-01T10:15:00+00:00", "2025-03-01T10:27:42+00:00", "12 min 42 s", "sail",
                 "/data/laion/warehouse", run.failure):
        assert fact in text, fact
    assert "1 failed, 2 warned, 4 passed, on 2 tables; 1 table not published" in text
    # the broken rules are named in the verdict, worst first, with their figures and a link
    problems = [squash(li.text()) for li in verdict.find_all("li")]
    assert problems[0].startswith("FAIL dms_laion_wide · punsafe_in_range")
    assert "31 unexpected, 0.00314 %" in problems[0]
    assert any("sample_id_unique" in p and "12 duplicated values, 25 rows involved" in p for p in problems)
    assert verdict.find("a", href="#rule-dms_laion_wide-punsafe_in_range")
    assert page.index('id="verdict"') < page.index('id="summary"') < page.index('class="table-section')


def test_summary_lists_every_table_with_counts(page):
    summary = parse(page).root.find(id="summary")
    rows = {row.attrs["data-table"]: [squash(td.text()) for td in row.find_all("td")]
            for row in summary.find_all("tr", cls="table-row")}
    assert rows["ods_laion_joined"] == ["ods", "ods_laion_joined", "7", "1,234,567", "yes", "2", "0", "0", "PASS"]
    assert rows["dms_laion_wide"] == ["dms", "dms_laion_wide", "3", "987,654", "no", "2", "2", "1", "FAIL"]


def test_rules_duplicates_and_samples(page):
    dom = parse(page).root
    wide = dom.find("section", cls="table-section", data_table="dms_laion_wide")
    assert squash(wide.find("dd", cls="rows").text()) == "987,654"
    statuses = [row.attrs["data-status"] for row in wide.find_all("tr", cls="rule")]
    assert statuses == ["fail", "warn", "warn", "pass", "pass"], "broken rules are listed first"

    broken = wide.find("tr", cls="rule fail", data_rule_id="punsafe_in_range")
    cells = [squash(td.text()) for td in broken.find_all("td")]
    assert cells[0] == "FAIL" and cells[3].startswith("fail")
    assert squash(broken.find("div", cls="hint").text()) == "blocks publishing"
    assert "{min: -0.5, max: 1.75}" in cells[4] and cells[5] == "31 (0.00314 %)"
    assert broken.attrs["data-unexpected"] == "31"
    assert "data-unexpected" not in wide.find("tr", cls="rule", data_rule_id="rows_reconcile").attrs

    dup = wide.find("tr", cls="rule warn", data_rule_id="sample_id_unique")
    assert squash(dup.find("td", cls="unexpected").text()) == "25 (0.00253 %)"
    extra = wide.find("tr", cls="rule-extra", data_rule_id="sample_id_unique")
    figures = extra.find("p", cls="dup-figures")
    assert figures.attrs["data-duplicated-values"] == "12" and figures.attrs["data-rows-involved"] == "25"
    assert squash(figures.text()) == "12 duplicated values · 25 rows involved"
    assert [squash(li.text()) for li in extra.find("ul", cls="sample").find_all("li")] == \
        [str(key) for key in DUP_IDS]
    keys = wide.find("tr", cls="rule-extra", data_rule_id="punsafe_in_range").find("ul", cls="sample")
    assert [squash(li.text()) for li in keys.find_all("li")] == ["-42", "17"]


def test_quarantine_coverage_and_plots(page):
    dom = parse(page).root
    quarantine = dom.find(id="quarantine")
    assert row_text(quarantine.find("tr", data_reason="url is null")) == "url is null 3"
    assert quarantine.find("tr", data_reason="url is null").attrs["data-rows"] == "3"
    assert row_text(quarantine.find("tr", cls="total")) == "total 4"

    coverage = dom.find(id="coverage")
    assert coverage.find("figure", cls="plot coverage").find("svg")
    points = coverage.find_all("tr", cls="coverage-point")
    assert len(points) == 3 and "current" in points[-1].classes
    assert row_text(points[-1]).endswith("49.7 % −12.1 pt 86.9 % −0.2 pt")

    figures = dom.find("section", data_table="dms_laion_wide").find_all("figure", cls="plot histogram")
    assert [f.attrs["data-column"] for f in figures] == ["aesthetic_score", "punsafe", "pwatermark", "similarity"]
    assert squash(figures[0].find("figcaption").text()) == \
        "aesthetic_score: 4,803 values in 10 bins from 0 to 10; 321 null (6.26 %)"
    assert all(len(f.find_all("path")) > 20 for f in figures)
    assert not dom.find("section", data_table="ods_laion_joined").find_all("figure")


def test_ids_are_unique_across_inline_plots(page):
    ids = re.findall(r'(?<![\w-])id="([^"]+)"', page)
    duplicated = {i for i in ids if ids.count(i) > 1}
    assert not duplicated, f"ids used twice: {sorted(duplicated)[:5]}"
    # every in-page reference (glyphs, clip paths, links) points at an id that exists
    refs = set(re.findall(r'href="#([^"]+)"', page)) | set(re.findall(r"url\(#([^)]+)\)", page))
    assert refs and refs <= set(ids)


def schema_row(section: Node) -> tuple[Node, Node]:
    """A table's one schema row and the <details> under it."""
    rows = [row for row in section.find_all("tr", cls="rule") if row.attrs["data-rule-id"].startswith("schema")]
    assert [row.attrs["data-rule-id"] for row in rows] == ["schema"], "one schema row per table"
    return rows[0], section.find("tr", cls="rule-extra", data_rule_id="schema").find("details", cls="schema")


def assert_schema_rows(dom: Node) -> None:
    base = dom.find("section", cls="table-section", data_table="ods_laion_base")
    row, details = schema_row(base)
    assert row.attrs["data-status"] == "pass" and "open" not in details.attrs, "a passing schema is folded"
    assert squash(row.find("td", cls="description").text()).startswith("schema matches the contract")
    columns = [(tr.attrs["data-column"], tr.attrs["data-type"], tr.attrs["data-status"])
               for tr in details.find_all("tr", cls="schema-column")]
    assert columns == [(name, kind, "pass") for name, kind in SCHEMA]
    assert squash(details.find("summary").text()) == "3 columns and their types"

    wide = dom.find("section", cls="table-section", data_table="dms_laion_wide")
    row, details = schema_row(wide)
    assert (row.attrs["data-status"], "open" in details.attrs) == ("fail", True), "a broken schema is unfolded"
    assert squash(row.find("td", cls="description").text()).startswith("schema matches the contract — failing: hash")
    assert squash(details.find("summary").text()) == "3 columns and their types; failing: hash"
    statuses = {tr.attrs["data-column"]: tr.attrs["data-status"] for tr in details.find_all("tr", cls="schema-column")}
    assert statuses == {"sample_id": "pass", "hash": "fail", "subset": "pass"}
    assert "StringType" in squash(details.find("tr", cls="schema-column", data_column="hash").text())


def assert_duplicate_tables(dom: Node) -> None:
    base = dom.find("section", cls="table-section", data_table="ods_laion_base")
    extra = base.find("tr", cls="rule-extra", data_rule_id="duplicate_hash_per_subset")
    assert squash(extra.find("p", cls="dup-figures").text()) == "2 duplicated values · 5 rows involved · none allowed"
    per_subset = {tr.attrs["data-subset"]: (tr.attrs["data-duplicated-values"], tr.attrs["data-rows-involved"])
                  for tr in extra.find("table", cls="dup-subsets").find_all("tr") if "data-subset" in tr.attrs}
    assert per_subset == {"laion2B-en": ("1", "3"), "laion2B-multi": ("1", "2")}
    values = [[squash(td.text()) for td in tr.find_all("td")] for tr in extra.find("table", cls="dup-values").find_all("tr")
              if "data-rows" in tr.attrs]
    assert values == [[subset, str(h), str(n)] for subset, h, n in DUP_HASHES]

    wide = dom.find("section", cls="table-section", data_table="dms_laion_wide")
    extra = wide.find("tr", cls="rule-extra", data_rule_id="duplicate_sample_id")
    assert "at most 1,000 values allowed" in squash(extra.find("p", cls="dup-figures").text())
    shown = {tr.attrs["data-subset"]: [squash(td.text()) for td in tr.find_all("td")]
             for tr in extra.find("table", cls="dup-subsets").find_all("tr") if "data-subset" in tr.attrs}
    assert shown == {subset: [subset, f"{values:,}", f"{rows:,}", f"{rows - values:,}"]
                     for subset, (values, rows) in ODL_SAMPLE_IDS.items()}


def assert_completeness(dom: Node) -> None:
    wide = dom.find("section", cls="table-section", data_table="dms_laion_wide")
    table = wide.find("tr", cls="rule-extra", data_rule_id="rows_match_published_totals").find("table", cls="completeness")
    rows = {tr.attrs["data-subset"]: tr for tr in table.find_all("tr", cls="completeness-subset")}
    assert list(rows) == [subset for subset, *_ in TOTALS]
    for subset, expected, actual, parts, expected_parts in TOTALS:
        attrs = rows[subset].attrs
        assert (attrs["data-expected-rows"], attrs["data-rows"], attrs["data-difference"], attrs["data-parts-read"],
                attrs["data-expected-parts"]) == tuple(map(str, (expected, actual, actual - expected, parts, expected_parts)))
        assert float(attrs["data-share"]) == actual / expected
    cells = {subset: [squash(td.text()) for td in row.find_all("td")] for subset, row in rows.items()}
    assert cells["laion1B-nolang"] == ["laion1B-nolang", "1,000", "1,000", "+0", "100.0 %", "4 / 4", "every part; rows match"]
    assert cells["laion2B-en"] == ["laion2B-en", "2,000", "1,993", "−7", "99.7 %", "8 / 8",
                                   "every part; 7 rows fewer than expected"]
    assert cells["laion2B-multi"] == ["laion2B-multi", "3,000", "750", "−2,250", "25.0 %", "2 / 8",
                                      "2 of 8 parts (25.0 %): reported, not judged"]
    assert "off" in rows["laion2B-en"].classes and "partial" in rows["laion2B-multi"].classes
    assert [squash(td.text()) for td in table.find("tr", cls="total").find_all("td")][:5] == \
        ["all", "6,000", "3,743", "−2,257", "62.4 %"]
    row = wide.find("tr", cls="rule", data_rule_id="rows_match_published_totals")
    assert squash(row.find("td", cls="observed").text()) == "62.4 % of the expected rows"


def test_schema_checks_are_one_row_per_table_folded_unless_broken():
    page = render_report(dq_run())
    dom = parse(page).root
    assert_schema_rows(dom)
    assert "schema_type_" not in page
    summary = {row.attrs["data-table"]: [squash(td.text()) for td in row.find_all("td")][5:8]
               for row in dom.find(id="summary").find_all("tr", cls="table-row")}
    assert summary == {"ods_laion_base": ["1", "1", "0"], "dms_laion_wide": ["0", "2", "1"]}, "schema counts once"
    problems = [squash(li.text()) for li in dom.find(id="verdict").find_all("li")]
    assert sum(p.startswith("FAIL dms_laion_wide · schema — schema matches the contract — failing: hash")
               for p in problems) == 1
    assert dom.find(id="verdict").find("a", href="#rule-dms_laion_wide-schema")


def test_duplicates_and_completeness_are_tables_per_subset():
    dom = parse(render_report(dq_run())).root
    assert_duplicate_tables(dom)
    assert_completeness(dom)
    assert "at most 0" not in render_report(dq_run())
    problems = [squash(li.text()) for li in dom.find(id="verdict").find_all("li")]
    assert any(p.startswith("WARN dms_laion_wide · rows_match_published_totals") and p.endswith("(laion2B-en: −7 rows)")
               for p in problems), problems


def assert_self_contained(html: str) -> None:
    lowered = html.lower()
    assert "<script" not in lowered
    assert not re.search(r"""\b(src|href|srcset|action|poster|data)\s*=\s*["']?\s*(https?:|//|file:)""", lowered)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:|//)", lowered)
    for token in ("@import", "<link", "<iframe", "<object", "<embed", "<img", "@font-face", " on"):
        if token == " on":
            assert not re.search(r"<[^>]+\son[a-z]+\s*=", lowered), "an event handler attribute"
        else:
            assert token not in lowered, token


def test_page_is_self_contained(page):
    assert_self_contained(page)
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page


def test_everything_from_the_run_is_escaped():
    table = "dms_laion_wide"
    run = RunQuality(
        run_id=f"run-{EVIL}", started_at=EVIL, finished_at="not a time", engine=EVIL, warehouse=EVIL,
        tables=[TableQuality(table, f"dms{EVIL}", version=None, rows=10, published=True, rules=[
            rule(table, f"rule{EVIL}", False, severity="warn", description=EVIL, expectation=EVIL,
                 observed_value={EVIL: [EVIL]}, sample=(EVIL, {"url": EVIL}),
                 details={"duplicated_values": EVIL, EVIL: EVIL}),
            rule(table, "per_subset", False, severity="warn", sample=(EVIL,),
                 details={"duplicated_values": 1, "rows_involved": 2, "allowed": 0,
                          "per_subset": {EVIL: {"duplicated_values": 1, "rows_involved": 2}},
                          "values": [{EVIL: EVIL, "rows": 2}]}),
            rule(table, "completeness", False, severity="warn", observed_value=0.5, details={"off": [EVIL], "subsets": [
                {"subset": EVIL, "expected_rows": 2, "rows": 1, "difference": -1, "share": 0.5, "parts_read": 1,
                 "expected_parts": None, "whole": True}]}),
            rule(table, f"schema_type_{EVIL}", False, expectation=EVIL, description=EVIL, observed_value=EVIL,
                 details={"column": EVIL, "type": EVIL}),
        ], histograms=[hist(f"col {EVIL} costs $5 and $", 0.0, 1.0, [1, 2, 3], nulls=1)])],
        coverage_history=[CoveragePoint(f"run-{EVIL}$", f"$when{EVIL}", 0.5, 0.25)],
        quarantine={EVIL: 2}, failure=EVIL)
    html = render_report(run)
    assert_self_contained(html)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in html
    dom = parse(html).root
    assert EVIL in dom.find(id="verdict").text()  # shown as text, not as markup
    assert dom.find("tr", cls="rule warn", data_rule_id=f"rule{EVIL}")


@pytest.mark.parametrize("statuses, failure, verdict, meaning", [
    ([], None, "pass", "Every rule holds."),
    ([("pass", "fail"), ("broken", "warn")], None, "warn", "Every blocking rule holds; some warnings need a look."),
    ([("pass", "fail")], "the engine died", "fail", "The build stopped before it finished."),
])
def test_verdicts(statuses, failure, verdict, meaning):
    rules = [rule("t", name, name == "pass", severity=severity) for name, severity in statuses]
    run = RunQuality("r1", "2025-01-01T00:00:00", "2025-01-01T00:00:03.5", "sail", "/wh",
                     tables=[TableQuality("t", "ods", 0, 0, True, rules)], failure=failure)
    html = render_report(run)
    header = parse(html).root.find(id="verdict")
    assert header.attrs["data-verdict"] == verdict and squash(header.text()).startswith(verdict.upper())
    assert squash(header.find("p", cls="verdict-meaning").text()) == meaning
    assert (failure is None) == (not header.find_all("p", cls="failure"))
    assert "3.5 s" in header.text()
    assert len(header.find_all("li")) == len([s for s in statuses if s[0] != "pass"])
    assert "id=\"coverage\"" not in html and "id=\"quarantine\"" not in html  # nothing to show
    assert_self_contained(html)


def test_verdict_names_at_most_a_dozen_broken_rules():
    rules = [rule("t", f"r{i:02d}", False, severity="warn") for i in range(15)]
    run = RunQuality("r1", "", "", "sail", "/wh", tables=[TableQuality("t", "ods", 1, 5, True, rules)])
    dom = parse(render_report(run)).root
    items = [squash(li.text()) for li in dom.find(id="verdict").find_all("li")]
    assert len(items) == 13 and items[-1] == "… and 3 more in the tables below"
    assert len(dom.find_all("tr", cls="rule warn")) == 15


def test_report_and_plots_are_deterministic(run, tmp_path):
    path = write_report(run, tmp_path / "deep" / "er" / "report.html")
    assert path.read_bytes() == render_report(planted_run()).encode("utf-8")
    points = planted_run().coverage_history
    assert coverage_svg(points) == coverage_svg(points)
    assert "<metadata" not in coverage_svg(points) and "<!--" not in coverage_svg(points)
    with pytest.raises(ValueError, match="2 bin edges for 2 counts"):
        histogram_svg(Histogram("x", (0.0, 1.0), (1, 2)))


def test_a_dq_run_says_validated_and_a_build_published():
    dq = dq_run()
    dq.command = "dq"
    for table in dq.tables:
        table.published = True  # what execute_dq records: the current version stays current
    dom = parse(render_report(dq)).root
    verdict = dom.find(id="verdict")
    assert verdict.attrs["data-command"] == "dq"
    assert squash(verdict.find("p", cls="verdict-meaning").text()) == (
        "A blocking rule broke. This dq run validated the current versions; it rebuilt and published nothing.")
    summary = dom.find(id="summary")
    assert [squash(th.text()) for th in summary.find_all("th")][4] == "validated"
    assert [squash(td.text()) for tr in summary.find_all("tr", cls="table-row") for td in tr.find_all("td")][4::9] == \
        ["validated", "validated"]
    for section in dom.find_all("section", cls="table-section"):
        facts = {squash(div.find("dt").text()): squash(div.find("dd").text()) for div in section.find_all("div")
                 if div.parent.tag == "dl" and "table-facts" in div.parent.classes}
        assert facts["this run"] == "validated, not rebuilt" and "published" not in facts
    assert not dom.find_all(cls="published"), "a dq run publishes nothing"

    build = parse(render_report(dq_run())).root  # the same tables from a build: one published, one rolled back
    states = {tr.attrs["data-table"]: squash(tr.find_all("td")[4].text())
              for tr in build.find(id="summary").find_all("tr", cls="table-row")}
    assert states == {"ods_laion_base": "yes", "dms_laion_wide": "no"}
    wide = build.find("section", cls="table-section", data_table="dms_laion_wide")
    assert squash(wide.find("span", cls="published no").text()) == "no — the previous version stays current"
    assert not build.find_all(cls="validated")


def one_of_everything() -> RunQuality:
    """A run where every count on the page is 1: each must read as singular."""
    table = "dms_laion_wide"
    return RunQuality("r1", "2025-01-01T00:00:00", "2025-01-01T00:00:01", "sail", "/wh", tables=[
        TableQuality(table, "dms", 1, 1, False, rules=[
            rule(table, "schema_columns", True, expectation="ExpectTableColumnsToMatchOrderedList",
                 observed_value=["sample_id"], details={"columns": ["sample_id"]}),
            rule(table, "schema_type_sample_id", False, observed_value="StringType",
                 details={"column": "sample_id", "type": "bigint"}),
            rule(table, "duplicate_sample_id", False, severity="warn", unexpected_count=1, observed_value=1,
                 details={"duplicated_values": 1, "rows_involved": 1, "allowed": 1}),
            rule(table, "rows_match_published_totals", False, severity="warn", observed_value=0.5, details={
                "off": ["laion2B-en"], "subsets": [
                    {"subset": "laion2B-en", "expected_rows": 2, "rows": 1, "difference": -1, "share": 0.5,
                     "parts_read": 1, "expected_parts": 1, "whole": True},
                    {"subset": "laion1B-nolang", "expected_rows": 2, "rows": 1, "difference": -1, "share": 0.5,
                     "parts_read": 0, "expected_parts": 1, "whole": False}]}),
        ], histograms=[hist("punsafe", 0.0, 1.0, [1], nulls=1)])],
        coverage_history=[CoveragePoint("r1", "2025-01-01T00:00:01", 0.5, 0.5)], quarantine={"url is null": 1})


def test_counts_of_one_are_singular():
    text = squash(parse(render_report(one_of_everything())).root.text())
    for phrase in ("on 1 table; 1 table not published",
                   "1 duplicated value · 1 row involved · at most 1 value allowed",
                   "(1 duplicated value, 1 row involved)", "(laion2B-en: −1 row)", "1 check broke",
                   "1 column and its type", "every part; 1 row fewer than expected", "0 of 1 part (",
                   "1 row could not be accepted", "1 run; the last point", "1 value in 1 bin"):
        assert phrase in text, phrase
    # a figure 1 followed by a plural noun, anywhere on the page ("1 pass" counts a status, not passes)
    wrong = sorted(set(re.findall(r"(?<![\d.,+\-−])1 (?!pass\b)(?:[a-z]+ )?[a-z]+s\b", text)))
    assert not wrong, wrong


# --- the page in a real browser ------------------------------------------------------------------


def chromium_binary() -> str:
    path = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if path is None:
        reason = "chromium is not installed (scripts/setup.sh --test installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: it is required on CI")
        pytest.skip(reason)
    return path


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--hide-scrollbars", "--force-device-scale-factor=1",
             "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}"]
    result = subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, run):
    """The planted report opened by headless Chromium: its DOM and a screenshot."""
    binary = chromium_binary()
    folder = tmp_path_factory.mktemp("browser")
    report = write_report(run, folder / "report.html")
    dom = chromium(binary, folder / "profile-dom", "--dump-dom", report.as_uri()).stdout
    screenshot = folder / "page.png"
    chromium(binary, folder / "profile-shot", f"--screenshot={screenshot}", "--window-size=1200,3000",
             report.as_uri())
    return dom, screenshot


@pytest.fixture(scope="module")
def rendered_dq(tmp_path_factory) -> Node:
    """The per-subset tables and the schema rows as headless Chromium parses them."""
    binary = chromium_binary()
    folder = tmp_path_factory.mktemp("browser-dq")
    report = write_report(dq_run(), folder / "report.html")
    return parse(chromium(binary, folder / "profile", "--dump-dom", report.as_uri()).stdout).root


def test_browser_folds_passing_schemas_and_shows_the_tables_per_subset(rendered_dq):
    assert_schema_rows(rendered_dq)
    assert_duplicate_tables(rendered_dq)
    assert_completeness(rendered_dq)


def numbers(d: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", d)]


def test_browser_dom_shows_verdict_figures_and_drawn_plots(rendered):
    html, _ = rendered
    dom = parse(html).root
    verdict = dom.find(id="verdict")
    assert verdict.attrs["data-verdict"] == "fail" and squash(verdict.text()).startswith("FAIL")
    wide = dom.find("section", data_table="dms_laion_wide")
    figures = wide.find("p", cls="dup-figures")
    assert squash(figures.text()) == "12 duplicated values · 25 rows involved"
    sample = wide.find("tr", cls="rule-extra", data_rule_id="sample_id_unique").find("ul", cls="sample")
    assert [squash(li.text()) for li in sample.find_all("li")] == [str(key) for key in DUP_IDS]
    assert row_text(dom.find(id="quarantine").find("tr", data_reason="url is null")) == "url is null 3"
    plots = dom.find_all("figure", cls="plot")
    assert len(plots) == 5
    for plot in plots:
        paths = [p.attrs.get("d", "") for p in plot.find_all("path") if p.attrs.get("d")]
        coords = numbers(" ".join(paths))
        xs, ys = coords[0::2], coords[1::2]
        assert len(paths) > 20 and len(set(coords)) > 100, "the plot has real geometry"
        assert max(xs) - min(xs) > 100 and max(ys) - min(ys) > 100
        # glyphs are paths reached through <use>: the titles and labels are drawn, no font needed
        assert plot.find_all("use")


def _near(colour, target, tolerance=6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, target))


def _rgb(hex_colour: str) -> tuple:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def test_browser_screenshot_is_drawn(rendered):
    Image = pytest.importorskip("PIL.Image")
    _, screenshot = rendered
    with Image.open(screenshot) as image:
        image = image.convert("RGB")
        assert image.size == (1200, 3000)
        colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200, "the screenshot is (nearly) blank"
    counts = {colour: n for n, colour in colours}

    def pixels(target):
        return sum(n for colour, n in counts.items() if _near(colour, target))

    assert pixels(_rgb(VERDICT_COLOURS["fail"])) > 5000, "the FAIL banner is not painted"
    bars = tuple(round(0.85 * c + 0.15 * 255) for c in _rgb("#4c72b0"))  # bar colour at alpha 0.85
    assert pixels(bars) > 2000, "the histograms' bars are not painted"
    assert pixels(_rgb("#8c3fa8")) > 100, "the coverage line is not painted"


# --- what Chromium lays out: boxes of the coverage chart, line breaks in rule ids -----------------
# The test's own copy of a page gets a script that measures the layout and writes it into the DOM,
# which --dump-dom hands back; the report itself never holds a script.

MEASURE_SVG_GROUPS = """
const boxes = {};
for (const group of document.querySelectorAll('svg g[id]')) {
  const r = group.getBoundingClientRect();
  boxes[group.id] = [r.left, r.top, r.right, r.bottom];
}
document.body.setAttribute('data-measured', JSON.stringify(boxes));
"""

# For each rule id: its text and the text before each line break, from the boxes of its characters.
MEASURE_RULE_ID_LINES = """
const found = [];
for (const name of document.querySelectorAll('td.rule-id .rule-name')) {
  const chars = [];
  const walker = document.createTreeWalker(name, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let i = 0; i < node.data.length; i++) {
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      chars.push([node.data[i], range.getBoundingClientRect().top]);
    }
  }
  const text = chars.map(c => c[0]).join('');
  const before = [];
  for (let i = 1; i < chars.length; i++) {
    if (chars[i][1] > chars[i - 1][1] + 2) before.push(text.slice(0, i));
  }
  found.push({text: text, breaks: before});
}
document.body.setAttribute('data-measured', JSON.stringify(found));
"""


def measured(folder: Path, html: str, script: str, width: int) -> object:
    """What `script` measured in `html` laid out by headless Chromium in a window `width` pixels wide."""
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / "probe.html"
    page.write_text(html.replace("</body>", f"<script>{script}</script></body>"), encoding="utf-8")
    dumped = chromium(chromium_binary(), folder / "profile", f"--window-size={width},2000", "--dump-dom",
                      page.as_uri()).stdout
    return json.loads(parse(dumped).root.find("body").attrs["data-measured"])


def coverage_points(shares: list[tuple[float, float]]) -> list[CoveragePoint]:
    return [CoveragePoint(f"202503{day:02d}T101500000000Z-{day:06x}", f"2025-03-{day:02d}T10:27:42+00:00", a, i)
            for day, (a, i) in enumerate(shares, 1)]


# Twelve runs; lines in the lower left, where the legend used to be; and the planted run's three.
COVERAGE_CASES = {
    "many": coverage_points([(0.4 + 0.02 * n, 0.85 - 0.01 * n) for n in range(12)]),
    "low": coverage_points([(0.01, 0.03), (0.02, 0.05), (0.04, 0.08), (0.05, 0.1), (0.06, 0.12)]),
    "few": planted_run().coverage_history,
}


def intersect(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_browser_coverage_labels_and_legend_never_overlap(tmp_path):
    figures = "".join(f"<figure>{coverage_svg(points, id_prefix=name)}</figure>"
                      for name, points in COVERAGE_CASES.items())
    boxes = measured(tmp_path, f"<!DOCTYPE html><html><body>{figures}</body></html>", MEASURE_SVG_GROUPS, 1200)
    for name, points in COVERAGE_CASES.items():
        labels = {int(key.rsplit("-", 1)[1]): box for key, box in boxes.items() if key.startswith(f"{name}-xlabel-")}
        assert len(points) - 1 in labels, f"{name}: the latest run is labelled"
        assert len(labels) >= min(len(points), 3), f"{name}: labels {sorted(labels)}"
        overlapping = [(a, b) for a in labels for b in labels if a < b and intersect(labels[a], labels[b])]
        assert not overlapping, f"{name}: x labels overlap: {overlapping}"
        legend = boxes[f"{name}-legend"]
        for line in ("line-aesthetic", "line-image"):
            drawn = boxes[f"{name}-{line}"]
            assert drawn[2] - drawn[0] > 100 or len(points) == 1, f"{name}: {line} is drawn"
            assert not intersect(legend, drawn), f"{name}: the legend {legend} covers {line} {drawn}"
    assert len([key for key in boxes if key.startswith("many-xlabel-")]) < 12, "twelve runs do not fit: thinned"


def test_browser_breaks_rule_ids_only_after_an_underscore(tmp_path):
    lines = measured(tmp_path, render_report(dq_run()), MEASURE_RULE_ID_LINES, 420)
    assert {item["text"] for item in lines} >= {"duplicate_sample_id", "rows_match_published_totals"}
    broken = [item for item in lines if item["breaks"]]
    assert broken, "the narrow window wraps no rule id: the check would prove nothing"
    for item in broken:
        assert all(before.endswith("_") for before in item["breaks"]), item
