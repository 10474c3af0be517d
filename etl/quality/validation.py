"""Validate a table version against its contract with Great Expectations, on the engine's DataFrame.

Each contract rule becomes one GX expectation: `expect` rules name a GX class directly;
`duplicates` and `sql` rules are `UnexpectedRowsExpectation`s (a query returning the bad rows);
`coverage` rules are a non-null proportion bounded below by the previous run's value;
`completeness` rules count each subset's rows and part files in one query and compare them with the
configured totals (`sources.<subset>.expected_rows` / `expected_parts`). Schema rules (names, order,
types) are generated from the contract's columns. The results are plain `RuleResult`s: severity
decides what they mean, not GX.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

from pyspark.sql import DataFrame

from etl.project.config import Config
from etl.project.contracts import Contract, RuleSpec
from etl.quality.results import FAIL, Histogram, RuleResult, allowance

SAMPLE_SIZE = 20
# Spark simpleString -> the type name GX's ExpectColumnValuesToBeOfType compares with.
SPARK_TYPE_CLASSES = {"bigint": "LongType", "int": "IntegerType", "string": "StringType",
                      "double": "DoubleType", "float": "FloatType", "boolean": "BooleanType",
                      "timestamp": "TimestampType"}
SCHEMA_COLUMNS, SCHEMA_TYPE_PREFIX = "schema_columns", "schema_type_"
# The lineage columns a table's rows name their subset and their source part file with.
SUBSET_COLUMN, PART_COLUMN = "subset", "file_name"
# Rule parameters that describe a rule to people and the report, not arguments of its GX class.
NOT_GX_ARGUMENTS = ("max_unexpected", "max_drop", "expect", "contract_type")


class Validator:
    """One GX context per run; `validate` evaluates a table's rules on a DataFrame."""

    def __init__(self, overrides: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 previous_values: Optional[Mapping[tuple[str, str], float]] = None,
                 expected_totals: Optional[Mapping[str, tuple[Optional[int], Optional[int]]]] = None) -> None:
        import great_expectations as gx

        _quiet_gx_module_loggers()
        self._gx = gx
        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = {"globally": False}
        self._source = self._context.data_sources.add_spark("laion")
        self._overrides = overrides or {}
        self._previous = previous_values or {}
        self._expected = expected_totals or {}

    def validate(self, contract: Contract, df: DataFrame) -> list[RuleResult]:
        asset = self._source.add_dataframe_asset(f"{contract.table}_{len(self._source.assets)}")
        batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": df})
        results = []
        for rule in schema_rules(contract) + [self._overridden(contract.table, r) for r in contract.rules]:
            expectation = self._expectation(contract, rule)
            # COMPLETE only where GX caps the rows it returns (its query rules); SUMMARY elsewhere,
            # so millions of unexpected values are counted, never collected.
            detail = "COMPLETE" if rule.kind in QUERY_KINDS else "SUMMARY"
            outcome = batch.validate(expectation, result_format={
                "result_format": detail, "partial_unexpected_count": SAMPLE_SIZE})
            if rule.kind == "completeness":
                results.append(_completeness_result(contract.table, rule, type(expectation).__name__, outcome,
                                                    self._expected))
                continue
            results.append(_rule_result(contract.table, rule, type(expectation).__name__, outcome,
                                        self._previous.get((contract.table, rule.id))))
        return results

    def _overridden(self, table: str, rule: RuleSpec) -> RuleSpec:
        override = dict(self._overrides.get(f"{table}.{rule.id}", {}))
        if not override:
            return rule
        severity = override.pop("severity", rule.severity)
        return RuleSpec(rule.id, rule.kind, severity, {**rule.params, **override}, rule.description)

    def _expectation(self, contract: Contract, rule: RuleSpec):
        expectations = self._gx.expectations
        params = {k: v for k, v in rule.params.items() if k not in NOT_GX_ARGUMENTS}
        if rule.kind == "expect":
            return getattr(expectations, rule.params["expect"])(**params)
        if rule.kind == "duplicates":
            per_subset = SUBSET_COLUMN in contract.column_names
            return expectations.UnexpectedRowsExpectation(
                unexpected_rows_query=duplicates_query(rule.params["columns"], per_subset))
        if rule.kind == "completeness":
            return expectations.UnexpectedRowsExpectation(unexpected_rows_query=COMPLETENESS_QUERY)
        if rule.kind == "sql":
            return expectations.UnexpectedRowsExpectation(unexpected_rows_query=rule.params["query"])
        previous = self._previous.get((contract.table, rule.id))
        floor = 0.0 if previous is None else previous * (1 - float(rule.params.get("max_drop", 0.2)))
        return expectations.ExpectColumnProportionOfNonNullValuesToBeBetween(column=rule.params["column"], min_value=floor)


def expected_totals(config: Config) -> dict[str, tuple[Optional[int], Optional[int]]]:
    """Subset -> (expected_rows, expected_parts) for each configured subset with an expected row count."""
    return {s.name: (s.expected_rows, s.expected_parts) for s in config.sources if s.expected_rows is not None}


def _quiet_gx_module_loggers() -> None:
    """Some GX modules pin their logger at INFO; let them follow the `great_expectations` logger."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("great_expectations."):
            logging.getLogger(name).setLevel(logging.NOTSET)


def schema_rules(contract: Contract) -> list[RuleSpec]:
    """The schema contract as rules: the ordered column list, then each column's type."""
    names = [c.name for c in contract.columns]
    rules = [RuleSpec(SCHEMA_COLUMNS, "expect", FAIL,
                      {"expect": "ExpectTableColumnsToMatchOrderedList", "column_list": names},
                      "columns are exactly the contract's, in its order")]
    for column in contract.columns:
        rules.append(RuleSpec(f"{SCHEMA_TYPE_PREFIX}{column.name}", "expect", FAIL,
                              {"expect": "ExpectColumnValuesToBeOfType", "column": column.name,
                               "type_": SPARK_TYPE_CLASSES[column.type], "contract_type": column.type},
                              f"{column.name} is {column.type}"))
    return rules


def duplicates_query(columns: list[str], per_subset: bool = False) -> str:
    """One row per duplicated value with its row count; the totals ride along on every row.

    `per_subset`: every row also carries `subset_figures`, `<subset>=<duplicated values>/<rows
    involved>;…` counted within each subset (how OpenDataLab reports LAION's duplicates), from the
    same grouping of the batch as the totals.
    """
    keys = ", ".join(columns)
    not_null = " and ".join(f"{c} is not null" for c in columns)
    if not per_subset:
        return (
            f"select {keys}, row_count, count(*) over () as duplicated_values, sum(row_count) over () as rows_involved "
            f"from (select {keys}, count(*) as row_count from {{batch}} where {not_null} group by {keys} having count(*) > 1) "
            f"order by row_count desc, {keys}"
        )
    groups = ", ".join(columns if SUBSET_COLUMN in columns else [SUBSET_COLUMN, *columns])
    # Subset names are safe names (letters, digits, '.', '_', '-'), so '=', '/' and ';' separate.
    return (
        f"with counted as (select {groups}, count(*) as n from {{batch}} where {not_null} group by {groups}), "
        f"subsets as (select concat_ws(';', collect_list(concat({SUBSET_COLUMN}, '=', cast(values_ as string), '/', "
        f"cast(rows_ as string)))) as subset_figures from (select {SUBSET_COLUMN}, "
        f"sum(case when n > 1 then 1 else 0 end) as values_, sum(case when n > 1 then n else 0 end) as rows_ "
        f"from counted group by {SUBSET_COLUMN})), "
        f"duplicated as (select {keys}, sum(n) as row_count from counted group by {keys} having sum(n) > 1) "
        f"select {keys}, row_count, count(*) over () as duplicated_values, sum(row_count) over () as rows_involved, "
        f"subset_figures from duplicated cross join subsets order by row_count desc, {keys}"
    )


# Every subset's rows and part files, in one pass; the rule compares them with the configured totals.
COMPLETENESS_QUERY = (f"select {SUBSET_COLUMN}, count(*) as row_count, count(distinct {PART_COLUMN}) as parts_read "
                      f"from {{batch}} group by {SUBSET_COLUMN} order by {SUBSET_COLUMN}")
QUERY_KINDS = ("duplicates", "sql", "completeness")


def _per_subset(figures: Optional[str]) -> dict[str, dict[str, int]]:
    """`subset_figures` of a duplicates query as {subset: {duplicated_values, rows_involved}}, by name."""
    per_subset = {}
    for item in (figures or "").split(";"):
        if item:
            subset, counts = item.rsplit("=", 1)
            values, rows = counts.split("/")
            per_subset[subset] = {"duplicated_values": int(values), "rows_involved": int(rows)}
    return dict(sorted(per_subset.items()))


def _completeness_result(table: str, rule: RuleSpec, expectation: str, outcome,
                         expected: Mapping[str, tuple[Optional[int], Optional[int]]]) -> RuleResult:
    """Each subset with an expected row count, side by side with what the table holds.

    A subset whose part files are all in the table (or that has no expected part count) must hold
    exactly its expected rows; one built from fewer parts reports its share and does not break the rule.
    """
    result = outcome.result or {}
    error = (outcome.exception_info or {}).get("exception_message") if not outcome.success else None
    found = {row[SUBSET_COLUMN]: row for row in (result.get("details") or {}).get("unexpected_rows") or []}
    subsets, off = [], []
    for subset, (expected_rows, expected_parts) in sorted(expected.items()):
        row = found.get(subset) or {}
        rows, parts = int(row.get("row_count") or 0), int(row.get("parts_read") or 0)
        whole = expected_parts is None or parts >= expected_parts
        subsets.append({"subset": subset, "expected_rows": expected_rows, "rows": rows,
                        "difference": rows - expected_rows, "share": rows / expected_rows,
                        "parts_read": parts, "expected_parts": expected_parts, "whole": whole})
        if whole and rows != expected_rows:
            off.append(subset)
    expected_total = sum(s["expected_rows"] for s in subsets)
    rows_total = sum(s["rows"] for s in subsets)
    details: dict = {"subsets": subsets, "off": off}
    if error:
        details["error"] = error
    return RuleResult(table=table, rule_id=rule.id, expectation=expectation, description=describe(rule),
                      severity=rule.severity, success=not error and not off,
                      observed_value=rows_total / expected_total if expected_total else None,
                      unexpected_count=len(off), details=details)


def _rule_result(table: str, rule: RuleSpec, expectation: str, outcome, previous: Optional[float]) -> RuleResult:
    result = outcome.result or {}
    error = (outcome.exception_info or {}).get("exception_message") if not outcome.success else None
    observed = result.get("observed_value")
    details: dict = {}
    if error:
        details["error"] = error
    if rule.kind in ("duplicates", "sql"):
        rows = (result.get("details") or {}).get("unexpected_rows") or []
        bad = int(observed or 0)
        allowed = int(rule.params.get("max_unexpected", 0))
        if rule.kind == "duplicates":
            columns = rule.params["columns"]
            details.update(duplicated_values=bad, rows_involved=int(rows[0]["rows_involved"]) if rows else 0,
                           allowed=allowed)
            if rows and "subset_figures" in rows[0]:
                details["per_subset"] = _per_subset(rows[0]["subset_figures"])
            details["values"] = [{**{c: row[c] for c in columns}, "rows": int(row["row_count"])}
                                 for row in rows[:SAMPLE_SIZE]]
            sample = tuple(_key(row, columns) for row in rows[:SAMPLE_SIZE])
        else:
            sample = tuple(str(dict(row)) for row in rows[:SAMPLE_SIZE])
        return RuleResult(table=table, rule_id=rule.id, expectation=expectation, description=describe(rule),
                          severity=rule.severity, success=not error and bad <= allowed, observed_value=bad,
                          unexpected_count=bad, sample=sample, details=details)
    if rule.kind == "coverage":
        details["previous"] = previous
    if "contract_type" in rule.params:
        details.update(column=rule.params["column"], type=rule.params["contract_type"])
    if rule.id == SCHEMA_COLUMNS:
        details["columns"] = list(rule.params["column_list"])
    return RuleResult(
        table=table, rule_id=rule.id, expectation=expectation, description=describe(rule),
        severity=rule.severity, success=bool(outcome.success), observed_value=observed,
        unexpected_count=result.get("unexpected_count"), unexpected_percent=result.get("unexpected_percent"),
        sample=tuple(str(v) for v in (result.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]), details=details,
    )


def _key(row: Mapping[str, Any], columns: list[str]) -> str:
    values = [str(row[c]) for c in columns]
    return values[0] if len(values) == 1 else "(" + ", ".join(values) + ")"


def describe(rule: RuleSpec) -> str:
    """The rule in words, for the report: the contract's description, else one made from it."""
    if rule.description:
        return rule.description
    p = rule.params
    if rule.kind == "duplicates":
        return f"{', '.join(p['columns'])} held by more than one row ({allowance(p.get('max_unexpected', 0))})"
    if rule.kind == "completeness":
        return ("rows per subset equal its expected_rows when every part is built; "
                "a build of fewer parts reports its share")
    if rule.kind == "coverage":
        return f"share of non-null {p['column']} drops by at most {p.get('max_drop', 0.2):.0%} from the previous run"
    name = p.get("expect", "")
    if name == "ExpectColumnValuesToNotBeNull":
        return f"{p['column']} is never null"
    if name == "ExpectColumnValuesToBeBetween":
        return f"{p['column']} is within [{p.get('min_value')}, {p.get('max_value')}]"
    if name == "ExpectColumnValuesToBeInSet":
        return f"{p['column']} is one of {', '.join(map(str, p['value_set']))}"
    return f"{name} {', '.join(f'{k}={v}' for k, v in p.items() if k != 'expect')}"


def histograms(df: DataFrame, specs: Mapping[str, tuple[float, float, int]]) -> list[Histogram]:
    """Equal-width histograms of several columns in one pass; values outside the range go to the edge bins."""
    if not specs:
        return []
    expressions = []
    for column, (low, high, bins) in specs.items():
        width = (high - low) / bins
        # greatest() skips nulls, so the null check comes first.
        clamped = f"case when {column} is not null then least(greatest(cast({column} as double), {low}), {high}) end"
        for index in range(bins):
            upper = "<=" if index == bins - 1 else "<"
            expressions.append(f"sum(case when {clamped} >= {low + index * width} and {clamped} {upper} "
                               f"{low + (index + 1) * width} then 1 else 0 end) as `{column}__{index}`")
        expressions.append(f"sum(case when {column} is null then 1 else 0 end) as `{column}__nulls`")
    row = df.selectExpr(*expressions).collect()[0].asDict()
    result = []
    for column, (low, high, bins) in specs.items():
        width = (high - low) / bins
        result.append(Histogram(
            column=column,
            bins=tuple(round(low + i * width, 10) for i in range(bins + 1)),
            counts=tuple(int(row[f"{column}__{i}"] or 0) for i in range(bins)),
            nulls=int(row[f"{column}__nulls"] or 0),
        ))
    return result
