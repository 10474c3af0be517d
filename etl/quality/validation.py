"""Validate a table version against its contract with Great Expectations, on the engine's DataFrame.

Each contract rule becomes one GX expectation: `expect` rules name a GX class directly;
`duplicates` and `sql` rules are `UnexpectedRowsExpectation`s (a query returning the bad rows);
`coverage` rules are a non-null proportion bounded below by the previous run's value. Schema
rules (names, order, types) are generated from the contract's columns. The results are plain
`RuleResult`s: severity decides what they mean, not GX.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

from pyspark.sql import DataFrame

from etl.project.contracts import Contract, RuleSpec
from etl.quality.results import FAIL, Histogram, RuleResult

SAMPLE_SIZE = 20
# Spark simpleString -> the type name GX's ExpectColumnValuesToBeOfType compares with.
SPARK_TYPE_CLASSES = {"bigint": "LongType", "int": "IntegerType", "string": "StringType",
                      "double": "DoubleType", "float": "FloatType", "boolean": "BooleanType",
                      "timestamp": "TimestampType"}


class Validator:
    """One GX context per run; `validate` evaluates a table's rules on a DataFrame."""

    def __init__(self, overrides: Optional[Mapping[str, Mapping[str, Any]]] = None,
                 previous_values: Optional[Mapping[tuple[str, str], float]] = None) -> None:
        import great_expectations as gx

        _quiet_gx_module_loggers()
        self._gx = gx
        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = {"globally": False}
        self._source = self._context.data_sources.add_spark("laion")
        self._overrides = overrides or {}
        self._previous = previous_values or {}

    def validate(self, contract: Contract, df: DataFrame) -> list[RuleResult]:
        asset = self._source.add_dataframe_asset(f"{contract.table}_{len(self._source.assets)}")
        batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": df})
        results = []
        for rule in schema_rules(contract) + [self._overridden(contract.table, r) for r in contract.rules]:
            expectation = self._expectation(contract.table, rule)
            # COMPLETE only where GX caps the rows it returns (its query rules); SUMMARY elsewhere,
            # so millions of unexpected values are counted, never collected.
            detail = "COMPLETE" if rule.kind in ("duplicates", "sql") else "SUMMARY"
            outcome = batch.validate(expectation, result_format={
                "result_format": detail, "partial_unexpected_count": SAMPLE_SIZE})
            results.append(_rule_result(contract.table, rule, type(expectation).__name__, outcome,
                                        self._previous.get((contract.table, rule.id))))
        return results

    def _overridden(self, table: str, rule: RuleSpec) -> RuleSpec:
        override = dict(self._overrides.get(f"{table}.{rule.id}", {}))
        if not override:
            return rule
        severity = override.pop("severity", rule.severity)
        return RuleSpec(rule.id, rule.kind, severity, {**rule.params, **override}, rule.description)

    def _expectation(self, table: str, rule: RuleSpec):
        expectations = self._gx.expectations
        params = {k: v for k, v in rule.params.items() if k not in ("max_unexpected", "max_drop", "expect")}
        if rule.kind == "expect":
            return getattr(expectations, rule.params["expect"])(**params)
        if rule.kind == "duplicates":
            return expectations.UnexpectedRowsExpectation(unexpected_rows_query=duplicates_query(rule.params["columns"]))
        if rule.kind == "sql":
            return expectations.UnexpectedRowsExpectation(unexpected_rows_query=rule.params["query"])
        previous = self._previous.get((table, rule.id))
        floor = 0.0 if previous is None else previous * (1 - float(rule.params.get("max_drop", 0.2)))
        return expectations.ExpectColumnProportionOfNonNullValuesToBeBetween(column=rule.params["column"], min_value=floor)


def _quiet_gx_module_loggers() -> None:
    """Some GX modules pin their logger at INFO; let them follow the `great_expectations` logger."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("great_expectations."):
            logging.getLogger(name).setLevel(logging.NOTSET)


def schema_rules(contract: Contract) -> list[RuleSpec]:
    """The schema contract as rules: the ordered column list, then each column's type."""
    names = [c.name for c in contract.columns]
    rules = [RuleSpec("schema_columns", "expect", FAIL,
                      {"expect": "ExpectTableColumnsToMatchOrderedList", "column_list": names},
                      "columns are exactly the contract's, in its order")]
    for column in contract.columns:
        rules.append(RuleSpec(f"schema_type_{column.name}", "expect", FAIL,
                              {"expect": "ExpectColumnValuesToBeOfType", "column": column.name,
                               "type_": SPARK_TYPE_CLASSES[column.type]},
                              f"{column.name} is {column.type}"))
    return rules


def duplicates_query(columns: list[str]) -> str:
    """One row per duplicated value with its row count; the totals ride along on every row."""
    keys = ", ".join(columns)
    not_null = " and ".join(f"{c} is not null" for c in columns)
    return (
        f"select {keys}, row_count, count(*) over () as duplicated_values, sum(row_count) over () as rows_involved "
        f"from (select {keys}, count(*) as row_count from {{batch}} where {not_null} group by {keys} having count(*) > 1) "
        f"order by row_count desc, {keys}"
    )


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
            sample = tuple(_key(row, columns) for row in rows[:SAMPLE_SIZE])
        else:
            sample = tuple(str(dict(row)) for row in rows[:SAMPLE_SIZE])
        return RuleResult(table=table, rule_id=rule.id, expectation=expectation, description=describe(rule),
                          severity=rule.severity, success=not error and bad <= allowed, observed_value=bad,
                          unexpected_count=bad, sample=sample, details=details)
    if rule.kind == "coverage":
        details["previous"] = previous
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
        return f"{', '.join(p['columns'])} held by more than one row (at most {p.get('max_unexpected', 0)} values)"
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
