"""Validate a table version against its contract in a few aggregate queries; GX classes state the rules.

Rule kinds: `expect` rules name a Great Expectations class directly; `duplicates` and `sql` rules
are reported as `UnexpectedRowsExpectation`s (a query returning the bad rows); `coverage` rules
are a non-null proportion bounded below by the previous run's value; `completeness` rules compare
each subset's rows and part files with the configured totals (`sources.<subset>.expected_rows` /
`expected_parts`). Schema rules (names, order, types) are generated from the contract's columns.

Letting GX evaluate the rules cost a table dozens of scans: one `batch.validate` per rule made
16-53 queries (30-111 Spark jobs) per demo table on JVM Spark, and one suite per table still made
13-65 jobs (GX bundles only some metrics into one aggregate). So the figures are computed here,
with GX's own formulas (what counts, the percentages, `mostly`, empty tables): schema rules from
the DataFrame's schema (no scan); not-null figures from the table's file statistics where the
store states them (TableStore.null_counts); every other not-null, between, in-set, pair-equal,
coverage and completeness figure in ONE aggregate query; a sample of unexpected values in one more, only when
some rule found any; one query per `duplicates` rule (its keys aggregated once, the totals and
per-subset figures riding along the most duplicated values; one more for the per-subset figures
of a rule whose keys lack the subset) and per `sql` rule. GX still builds each `expect` and `coverage` rule
(checking its arguments) and evaluates the ones with a class or an argument not counted here.
The results are plain `RuleResult`s: severity decides what they mean, not GX.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Mapping, Optional

from pyspark.sql import DataFrame

from etl.project.config import Config
from etl.project.contracts import Contract, RuleSpec
from etl.quality.results import FAIL, Histogram, RuleResult, allowance

SAMPLE_SIZE = 20
BAD_ROWS = "dq_bad_rows"  # the column a sql rule's count of bad rows rides in
POSITION = "dq_position"  # a row's place in the scan, to sample unexpected values in scan order
# Spark simpleString -> the type name GX's ExpectColumnValuesToBeOfType compares with.
SPARK_TYPE_CLASSES = {"bigint": "LongType", "int": "IntegerType", "string": "StringType",
                      "double": "DoubleType", "float": "FloatType", "boolean": "BooleanType",
                      "timestamp": "TimestampType"}
SCHEMA_COLUMNS, SCHEMA_TYPE_PREFIX = "schema_columns", "schema_type_"
# The lineage columns a table's rows name their subset and their source part file with.
SUBSET_COLUMN, PART_COLUMN = "subset", "file_name"
# Rule parameters that describe a rule to people and the report, not arguments of its GX class.
NOT_GX_ARGUMENTS = ("max_unexpected", "max_drop", "expect", "contract_type")
# The GX classes whose figures the aggregate query computes, with the arguments it understands;
# a rule with any other argument (row_condition, strict_min, ...) is left to GX.
COUNTED_ARGUMENTS = {
    "ExpectColumnValuesToNotBeNull": {"column", "mostly"},
    "ExpectColumnValuesToBeBetween": {"column", "min_value", "max_value", "mostly"},
    "ExpectColumnValuesToBeInSet": {"column", "value_set", "mostly"},
    "ExpectColumnPairValuesToBeEqual": {"column_A", "column_B", "ignore_row_if", "mostly"},
}


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

    def validate(self, contract: Contract, df: DataFrame, known_nulls: Optional[Mapping[str, int]] = None
                 ) -> list[RuleResult]:
        """The contract's rules on `df`; `known_nulls` (column -> nulls, from the table's file
        statistics) answers the not-null rules of those columns without reading them."""
        rules = schema_rules(contract) + [self._overridden(contract.table, r) for r in contract.rules]
        # A rule a GX class states is that GX expectation first: GX checks its arguments and names it.
        expectations = [self._expectation(contract, rule) for rule in rules]
        counted = [(rule, e) for rule, e in zip(rules, expectations) if e is not None and _counted(rule, e)]
        completeness = any(rule.kind == "completeness" for rule in rules)
        duplicates = any(rule.kind == "duplicates" for rule in rules)
        figures = _aggregate(df, counted, self._expected if completeness else {},
                             subsets=duplicates and SUBSET_COLUMN in contract.column_names, known_nulls=known_nulls)
        results = []
        for rule, expectation in zip(rules, expectations):
            name = QUERY_EXPECTATION if expectation is None else type(expectation).__name__
            if rule.kind == "completeness":
                results.append(_completeness_result(contract.table, rule, name, figures, self._expected))
            elif rule.id == SCHEMA_COLUMNS or "contract_type" in rule.params:
                results.append(_result(contract.table, rule, name, _schema_outcome(rule, df)))
            elif rule.kind == "duplicates":
                results.append(_result(contract.table, rule, name, _duplicates_outcome(df, rule, figures.subsets)))
            elif rule.kind == "sql":
                results.append(_result(contract.table, rule, name, _query_outcome(df, rule, f"dq_batch_{contract.table}")))
            elif rule.id in figures.outcomes:
                results.append(_result(contract.table, rule, name, figures.outcomes[rule.id],
                                       self._previous.get((contract.table, rule.id))))
            else:
                results.append(_result(contract.table, rule, name, self._gx_outcome(contract.table, df, expectation)))
        return results

    def _gx_outcome(self, table: str, df: DataFrame, expectation) -> "Outcome":
        """A rule GX evaluates itself: one `batch.validate`, its result read into an Outcome."""
        asset = self._source.add_dataframe_asset(f"{table}_{len(self._source.assets)}")
        batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": df})
        # SUMMARY: millions of unexpected values are counted, never collected.
        outcome = batch.validate(expectation, result_format={"result_format": "SUMMARY",
                                                             "partial_unexpected_count": SAMPLE_SIZE})
        result = outcome.result or {}
        error = (outcome.exception_info or {}).get("exception_message") if not outcome.success else None
        return Outcome(success=bool(outcome.success), observed=result.get("observed_value"),
                       unexpected_count=result.get("unexpected_count"),
                       unexpected_percent=result.get("unexpected_percent"),
                       sample=(result.get("partial_unexpected_list") or [])[:SAMPLE_SIZE], error=error)

    def _overridden(self, table: str, rule: RuleSpec) -> RuleSpec:
        override = dict(self._overrides.get(f"{table}.{rule.id}", {}))
        if not override:
            return rule
        severity = override.pop("severity", rule.severity)
        return RuleSpec(rule.id, rule.kind, severity, {**rule.params, **override}, rule.description)

    def _expectation(self, contract: Contract, rule: RuleSpec):
        """The rule's GX expectation; None for the rules computed here from rows, not by a GX class."""
        if rule.kind in QUERY_KINDS:
            return None
        expectations = self._gx.expectations
        params = {k: v for k, v in rule.params.items() if k not in NOT_GX_ARGUMENTS}
        if rule.kind == "expect":
            return getattr(expectations, rule.params["expect"])(**params)
        previous = self._previous.get((contract.table, rule.id))
        floor = 0.0 if previous is None else previous * (1 - float(rule.params.get("max_drop", 0.2)))
        return expectations.ExpectColumnProportionOfNonNullValuesToBeBetween(column=rule.params["column"], min_value=floor)


@dataclass
class Outcome:
    """What evaluating one rule found, before it becomes a RuleResult; `sample` holds raw values
    (column values, (A, B) pairs, duplicated keys as dicts, or bad rows of a query)."""

    success: bool
    observed: Any = None
    unexpected_count: Optional[int] = None
    unexpected_percent: Optional[float] = None
    sample: list = field(default_factory=list)
    error: Optional[str] = None
    details: dict = field(default_factory=dict)


@dataclass
class Figures:
    """The aggregate query's answer: an Outcome per counted rule, and (rows, parts) per subset."""

    outcomes: dict[str, Outcome]
    completeness: Optional[dict[str, tuple[int, int]]] = None
    error: Optional[str] = None
    subsets: Optional[list[str]] = None  # the subsets the table holds, when asked for


def _counted(rule: RuleSpec, expectation) -> bool:
    if rule.kind == "coverage":
        return True
    allowed = COUNTED_ARGUMENTS.get(type(expectation).__name__)
    arguments = {k for k in rule.params if k not in NOT_GX_ARGUMENTS}
    if allowed is None or not arguments <= allowed:
        return False
    # The pair rule's default (both_values_are_missing) is left to GX.
    return rule.params.get("ignore_row_if", "either_value_is_missing") == "either_value_is_missing"


def _rule_columns(rule: RuleSpec) -> list[str]:
    if "column_A" in rule.params:
        return [rule.params["column_A"], rule.params["column_B"]]
    return [rule.params["column"]]


def _unexpected(rule: RuleSpec, expectation):
    """The rule's (rows considered, unexpected rows) conditions, as GX's Spark metrics define them."""
    from pyspark.sql import functions as F

    name = type(expectation).__name__
    columns = [F.col(c) for c in _rule_columns(rule)]
    if name == "ExpectColumnPairValuesToBeEqual":
        considered = columns[0].isNotNull() & columns[1].isNotNull()
        return considered, considered & (columns[0] != columns[1])
    column = columns[0]
    if name == "ExpectColumnValuesToNotBeNull":
        return F.lit(True), column.isNull()
    if name == "ExpectColumnValuesToBeInSet":
        return column.isNotNull(), column.isNotNull() & ~column.isin(list(expectation.value_set))
    low, high = expectation.min_value, expectation.max_value
    within = (column >= low if low is not None else F.lit(True)) & (column <= high if high is not None else F.lit(True))
    return column.isNotNull(), column.isNotNull() & ~within


def _aggregate(df: DataFrame, counted: list[tuple[RuleSpec, Any]],
               expected: Mapping[str, tuple[Optional[int], Optional[int]]], subsets: bool = False,
               known_nulls: Optional[Mapping[str, int]] = None) -> Figures:
    """Every counted rule's figures, every expected subset's rows and parts and (`subsets`) the
    names of the subsets the table holds, in one query, then a sample of each rule's unexpected
    values in one more when any rule found some.

    The query counts per lineage group (subset, part file) and the groups, a few per part file,
    are added up here: every figure is a count or a sum, and a part file is a group of its own.
    Sets of part names in one global aggregate, as before, made JVM Spark give up its compiled
    hash aggregation for every figure of the query: at 10M rows, ods_laion_base 7.6-8.3 s that
    way, 4.0-4.7 s this way (dms_laion_wide 9.2 -> 4.2-5.8 s); Sail's time is about the same.

    A not-null rule on a column in `known_nulls` takes its count from there and the query does
    not read the column: reading ods_laion_base's URLs only to find none null was 0.4 of the
    query's 0.85 s at 10M rows on Sail.
    """
    from pyspark.sql import functions as F

    present = set(df.columns)
    outcomes = {rule.id: Outcome(success=False, error=_not_in_table(_rule_columns(rule), present))
                for rule, _ in counted if _not_in_table(_rule_columns(rule), present)}
    evaluated = [(rule, e) for rule, e in counted if rule.id not in outcomes]
    # Over no rows a count is 0 and a sum null, as GX reports an empty table's figures.
    counts, sums = {"rows": F.count(F.lit(1))}, {}
    stated = known_nulls or {}
    known = {index: stated[rule.params["column"]] for index, (rule, expectation) in enumerate(evaluated)
             if type(expectation).__name__ == "ExpectColumnValuesToNotBeNull" and rule.params["column"] in stated}
    for index, (rule, expectation) in enumerate(evaluated):
        if index in known:
            continue
        if rule.kind == "coverage":
            counts[f"nonnull_{index}"] = F.count(rule.params["column"])
            continue
        considered, unexpected = _unexpected(rule, expectation)
        if type(expectation).__name__ == "ExpectColumnPairValuesToBeEqual":
            # GX counts pairs (0 on an empty table) but sums single columns' flags (null on one).
            counts[f"considered_{index}"] = F.count(F.when(considered, 1))
            counts[f"unexpected_{index}"] = F.count(F.when(unexpected, 1))
        else:
            sums[f"nulls_{index}"] = F.sum(F.when(considered, 0).otherwise(1))
            sums[f"unexpected_{index}"] = F.sum(F.when(unexpected, 1).otherwise(0))
    lineage = {SUBSET_COLUMN, PART_COLUMN} <= present
    subsets = subsets and SUBSET_COLUMN in present
    if not evaluated and not (lineage and expected) and not subsets:  # schema rules alone need no query
        return Figures(outcomes, {} if lineage else None)
    keys = [c for c in (SUBSET_COLUMN, PART_COLUMN) if c in present] if lineage or subsets else []
    aggregates = [column.alias(name) for name, column in {**counts, **sums}.items()]
    groups = [group.asDict() for group in df.groupBy(*keys).agg(*aggregates).collect()]
    row = {name: sum(g[name] for g in groups) for name in counts}
    row.update({name: _sum_of_known([g[name] for g in groups]) for name in sums})
    total = row["rows"]
    # As the query's sum would be: null over no rows.
    row.update({f"unexpected_{index}": nulls if total else None for index, nulls in known.items()})
    for index, (rule, expectation) in enumerate(evaluated):
        outcomes[rule.id] = _counted_outcome(rule, expectation, total, row, index)
    _add_samples(df, [(rule, e) for rule, e in evaluated if outcomes[rule.id].unexpected_count], outcomes)
    completeness = None
    if lineage:
        completeness = {name: (sum(g["rows"] for g in groups if g[SUBSET_COLUMN] == name),
                               len({g[PART_COLUMN] for g in groups if g[SUBSET_COLUMN] == name} - {None}))
                        for name in sorted(expected)}
    held = sorted({g[SUBSET_COLUMN] for g in groups} - {None}) if subsets else None
    return Figures(outcomes, completeness,
                   None if lineage else f"the table has no {SUBSET_COLUMN} and {PART_COLUMN} columns", held)


def _sum_of_known(values: list) -> Optional[int]:
    """The sum of the values that are not null; null when none is (a sum over no rows)."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _not_in_table(columns: list[str], present) -> Optional[str]:
    """Why a rule cannot be evaluated: the columns it names that the table lacks (None: it has them all)."""
    absent = [c for c in columns if c not in present]
    return f"column {', '.join(absent)} is not in the table" if absent else None


def _counted_outcome(rule: RuleSpec, expectation, total: int, row: Mapping[str, Any], index: int) -> Outcome:
    """GX's result for the rule from the aggregate's figures: its success rule, its percentages."""
    if rule.kind == "coverage":
        # GX: a proportion of nothing is 0 (an int, as GX reports it).
        observed = row[f"nonnull_{index}"] / total if total else 0
        return Outcome(success=observed >= expectation.min_value, observed=observed)
    name = type(expectation).__name__
    unexpected = row[f"unexpected_{index}"]
    mostly = expectation.mostly
    if name == "ExpectColumnPairValuesToBeEqual":
        considered = row[f"considered_{index}"]
        success = not total or not considered or _mostly(considered, unexpected, mostly)
        percent = unexpected / considered * 100 if total and considered else None
        return Outcome(success=success, unexpected_count=unexpected, unexpected_percent=percent)
    if name == "ExpectColumnValuesToNotBeNull":
        # GX judges not-null rules on every row, not on the non-null ones.
        success = not total or _mostly(total, unexpected, mostly)
        percent = unexpected / total * 100 if total else None
        return Outcome(success=success, unexpected_count=unexpected, unexpected_percent=percent)
    nonnull = total - row[f"nulls_{index}"] if total else 0
    success = unexpected is None or not nonnull or _mostly(nonnull, unexpected, mostly)
    percent = unexpected / nonnull * 100 if unexpected is not None and nonnull else None
    return Outcome(success=success, unexpected_count=unexpected, unexpected_percent=percent)


def _mostly(considered: int, unexpected: int, mostly: float) -> bool:
    return (considered - unexpected) / considered >= mostly


def _add_samples(df: DataFrame, found: list[tuple[RuleSpec, Any]], outcomes: dict[str, Outcome]) -> None:
    """Up to SAMPLE_SIZE unexpected values of each rule that found some, in one query: a union of
    one branch per rule, each carrying every sampled column (null where not its own).

    Each branch keeps its first values in scan order (a top-k over the row's position), so a run
    samples the same values as the last: a plain limit under a union, like GX's own
    `filter().limit()` on Sail, keeps whichever rows come first, a different set each run.
    """
    from pyspark.sql import functions as F

    if not found:
        return
    types = dict(df.dtypes)
    sampled = sorted({c for rule, _ in found for c in _rule_columns(rule)})
    # Only the sampled columns are read: Sail (0.7.2) reads every column under its row-position
    # operator (ods_laion_joined's pair rule at 10M rows: 1.0 s that way, 0.1 s this way).
    positioned = df.select(*sampled).withColumn(POSITION, F.monotonically_increasing_id())
    branches = []
    for index, (rule, expectation) in enumerate(found):
        own = _rule_columns(rule)
        branches.append(positioned.where(_unexpected(rule, expectation)[1]).select(
            F.lit(index).alias("rule"), POSITION,
            *[(F.col(c) if c in own else F.lit(None).cast(types[c])).alias(f"value_{n}") for n, c in enumerate(sampled)],
        ).orderBy(POSITION).limit(SAMPLE_SIZE))
    for row in sorted(reduce(DataFrame.unionAll, branches).collect(), key=lambda r: (r["rule"], r[POSITION])):
        rule = found[row["rule"]][0]
        values = [row[f"value_{sampled.index(c)}"] for c in _rule_columns(rule)]
        outcomes[rule.id].sample.append(values[0] if len(values) == 1 else tuple(values))


def _query_outcome(df: DataFrame, rule: RuleSpec, view: str) -> Outcome:
    """A `sql` rule in one query: its bad rows' count rides along on the first SAMPLE_SIZE of them.

    The query names the table `{batch}`; an engine refusing it (a typo, a table not built) is
    the rule's error, as GX reported it, not the run's.
    """
    from pyspark.errors import PySparkException

    df.createOrReplaceTempView(view)
    query = rule.params["query"].replace("{batch}", view)
    try:
        rows = df.sparkSession.sql(f"select *, count(*) over () as {BAD_ROWS} from ({query}) limit {SAMPLE_SIZE}").collect()
    except PySparkException as exc:
        return Outcome(success=False, error=str(exc))
    finally:
        df.sparkSession.catalog.dropTempView(view)
    bad = rows[0][BAD_ROWS] if rows else 0
    return Outcome(success=bad <= int(rule.params.get("max_unexpected", 0)), observed=bad, unexpected_count=bad,
                   sample=[{k: v for k, v in row.asDict().items() if k != BAD_ROWS} for row in rows])


def _schema_outcome(rule: RuleSpec, df: DataFrame) -> Outcome:
    """A schema rule from the DataFrame's schema: GX's observed values, no scan."""
    if rule.id == SCHEMA_COLUMNS:
        return Outcome(success=df.columns == list(rule.params["column_list"]), observed=df.columns)
    column = rule.params["column"]
    fields = {f.name: f for f in df.schema.fields}
    error = _not_in_table([column], fields)
    if error:
        return Outcome(success=False, error=error)
    observed = type(fields[column].dataType).__name__
    return Outcome(success=observed == rule.params["type_"], observed=observed)


def _duplicates_outcome(df: DataFrame, rule: RuleSpec, subsets: Optional[list[str]]) -> Outcome:
    """Values of the rule's columns held by more than one row (null keys aside): the totals, the
    SAMPLE_SIZE most duplicated values and, given the table's `subsets`, each subset's figures
    (how OpenDataLab reports LAION's duplicates; a subset with none reports zeros).

    The keys are aggregated once: the totals (and a key subset's figures) ride along the
    duplicated values as window figures, and only the top ones come back. A union of one branch
    per figure, as before, aggregated all the keys once per branch on both engines (JVM Spark
    reuses the shuffle, not the aggregation; Sail neither): 5.5 s for LAION's sample_id rule at
    10M rows on Sail, 1.9 s this way. Where the subset is not a key column, the aggregation also
    counts each value's rows per subset, and the figures of values duplicated within one subset
    are window figures too; a second query for them (a semi-join to the duplicated values, as
    before) aggregated the keys again: 1.0-1.3 s more at 10M rows on Sail.
    """
    from pyspark.sql import functions as F

    columns = rule.params["columns"]
    error = _not_in_table(columns, df.columns)
    if error:
        return Outcome(success=False, error=error)
    keyed = df.where(" and ".join(f"{c} is not null" for c in columns))
    subset_is_key = subsets is not None and SUBSET_COLUMN in columns
    # Where the subset is not a key, each value's rows are also counted per subset (LAION has
    # three), so one aggregation gives the values duplicated within a subset as well.
    within = [] if subset_is_key or subsets is None else list(enumerate(subsets))
    per_subset = [F.count(F.when(F.col(SUBSET_COLUMN) == name, 1)).alias(f"in_subset_{i}") for i, name in within]
    duplicated = keyed.groupBy(*columns).agg(F.count(F.lit(1)).alias("row_count"), *per_subset).where("row_count > 1")
    figures = [F.expr("count(1) over ()").alias("duplicated_values"), F.expr("sum(row_count) over ()").alias("rows_involved")]
    for i, _ in within:
        figures += [F.expr(f"count(case when in_subset_{i} > 1 then 1 end) over ()").alias(f"subset_values_{i}"),
                    F.expr(f"sum(case when in_subset_{i} > 1 then in_subset_{i} else 0 end) over ()").alias(f"subset_rows_{i}")]
    ranking = [F.col("row_count").desc(), *columns]
    if subset_is_key:
        # Each subset's top values hold the overall top ones; every subset comes with its figures.
        order = ", ".join(["row_count desc", *columns])
        figures += [F.expr(f"count(1) over (partition by {SUBSET_COLUMN})").alias("subset_values"),
                    F.expr(f"sum(row_count) over (partition by {SUBSET_COLUMN})").alias("subset_rows"),
                    F.expr(f"row_number() over (partition by {SUBSET_COLUMN} order by {order})").alias("subset_rank")]
        rows = duplicated.select(*columns, "row_count", *figures).where(f"subset_rank <= {SAMPLE_SIZE}").collect()
    else:
        rows = duplicated.select(*columns, "row_count", *figures).orderBy(*ranking).limit(SAMPLE_SIZE).collect()
    values = sorted(rows, key=lambda r: (-r["row_count"], *(r[c] for c in columns)))[:SAMPLE_SIZE]
    bad = int(rows[0]["duplicated_values"]) if rows else 0
    details: dict = {"duplicated_values": bad, "rows_involved": int(rows[0]["rows_involved"]) if rows else 0}
    # Per-subset figures come with the duplicated values: a table with none reports none.
    if subsets is not None and bad:
        found = ({r[SUBSET_COLUMN]: (r["subset_values"], r["subset_rows"]) for r in rows} if subset_is_key
                 else {name: (rows[0][f"subset_values_{i}"], rows[0][f"subset_rows_{i}"]) for i, name in within})
        details["per_subset"] = {name: {"duplicated_values": int(found.get(name, (0, 0))[0]),
                                        "rows_involved": int(found.get(name, (0, 0))[1])} for name in subsets}
    details["values"] = [{**{c: r[c] for c in columns}, "rows": int(r["row_count"])} for r in values]
    return Outcome(success=bad <= int(rule.params.get("max_unexpected", 0)), observed=bad, unexpected_count=bad,
                   sample=[_key(r, columns) for r in values], details=details)


# Rules counted here from a query's rows, reported as the GX class they ran as before: rows a query returns.
QUERY_KINDS = ("duplicates", "sql", "completeness")
QUERY_EXPECTATION = "UnexpectedRowsExpectation"


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


def _completeness_result(table: str, rule: RuleSpec, expectation: str, figures: Figures,
                         expected: Mapping[str, tuple[Optional[int], Optional[int]]]) -> RuleResult:
    """Each subset with an expected row count, side by side with what the table holds.

    A subset whose part files are all in the table (or that has no expected part count) must hold
    exactly its expected rows; one built from fewer parts reports its share and does not break the rule.
    """
    found = figures.completeness or {}
    subsets, off = [], []
    for subset, (expected_rows, expected_parts) in sorted(expected.items()):
        rows, parts = found.get(subset, (0, 0))
        whole = expected_parts is None or parts >= expected_parts
        subsets.append({"subset": subset, "expected_rows": expected_rows, "rows": rows,
                        "difference": rows - expected_rows, "share": rows / expected_rows,
                        "parts_read": parts, "expected_parts": expected_parts, "whole": whole})
        if whole and rows != expected_rows:
            off.append(subset)
    expected_total = sum(s["expected_rows"] for s in subsets)
    rows_total = sum(s["rows"] for s in subsets)
    details: dict = {"subsets": subsets, "off": off}
    if figures.error:
        details["error"] = figures.error
    return RuleResult(table=table, rule_id=rule.id, expectation=expectation, description=describe(rule),
                      severity=rule.severity, success=not figures.error and not off,
                      observed_value=rows_total / expected_total if expected_total else None,
                      unexpected_count=len(off), details=details)


def _result(table: str, rule: RuleSpec, expectation: str, outcome: Outcome, previous: Optional[float] = None) -> RuleResult:
    details: dict = {}
    if outcome.error:
        details["error"] = outcome.error
    details.update(outcome.details)
    if rule.kind == "duplicates":
        details["allowed"] = int(rule.params.get("max_unexpected", 0))
    if rule.kind == "coverage":
        details["previous"] = previous
    if "contract_type" in rule.params:
        details.update(column=rule.params["column"], type=rule.params["contract_type"])
    if rule.id == SCHEMA_COLUMNS:
        details["columns"] = list(rule.params["column_list"])
    return RuleResult(
        table=table, rule_id=rule.id, expectation=expectation, description=describe(rule),
        severity=rule.severity, success=outcome.success and not outcome.error, observed_value=outcome.observed,
        unexpected_count=outcome.unexpected_count, unexpected_percent=outcome.unexpected_percent,
        sample=tuple(str(v) for v in outcome.sample[:SAMPLE_SIZE]), details=details,
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
    """Equal-width histograms of several columns in one query; values outside the range go to the edge bins.

    Each value's bin is computed (its offset over the width, floored, then moved by one where
    that disagrees with the edges `low + i * width` themselves, so a value on an edge lands
    where comparing it with the edges puts it) and each column's bins are counted by a
    group-by, the columns' group-bys in one union. Counting every bin with its own expression,
    as before, cost 2.9-3.0 s for the wide table's four histograms at 10M rows on Sail; this
    costs 0.8-0.9 s.
    """
    from pyspark.sql import functions as F

    if not specs:
        return []
    per_column = []
    for number, (column, (low, high, bins)) in enumerate(specs.items()):
        width = (high - low) / bins
        # greatest() skips nulls, so the null checks come first.
        clamped = (f"case when {column} is not null then least(greatest(cast({column} as double), "
                   f"{_double(low)}), {_double(high)}) end")
        estimate = (f"case when value is not null then least(greatest(cast(floor((value - {_double(low)}) / "
                    f"{_double(width)}) as int), 0), {bins - 1}) end")
        per_column.append(
            df.selectExpr(f"{clamped} as value").selectExpr("value", f"{estimate} as estimate")
            .selectExpr(f"""case when value < {_bin_edge(low, width, "estimate")} then estimate - 1
                                 when estimate < {bins - 1} and value >= {_bin_edge(low, width, "estimate + 1")}
                                 then estimate + 1
                                 else estimate end as bin""")
            .groupBy("bin").count().select(F.lit(number).alias("histogram"), "bin", "count"))
    counted = {(row["histogram"], row["bin"]): row["count"] for row in reduce(DataFrame.unionAll, per_column).collect()}
    result = []
    for number, (column, (low, high, bins)) in enumerate(specs.items()):
        width = (high - low) / bins
        result.append(Histogram(
            column=column,
            bins=tuple(round(low + i * width, 10) for i in range(bins + 1)),
            counts=tuple(int(counted.get((number, i), 0)) for i in range(bins)),
            nulls=int(counted.get((number, None), 0)),
        ))
    return result


def _bin_edge(low: float, width: float, index: str) -> str:
    """SQL for the edge `low + index * width`, the double arithmetic that gives the report its edges."""
    return f"({_double(low)} + cast({index} as double) * {_double(width)})"


def _double(value: float) -> str:
    """`value` as a SQL double literal, exactly: a bare 0.5 is a decimal, which Sail compares to
    a double by rounding the double (0.49999999999999994 counted as 0.5), and Sail's cast of a
    17-digit decimal to double can miss by one ulp (0.024999999999999998 read as 0.025)."""
    return f"{value!r}D"
