"""The contract checks give the same RuleResults whatever way they are computed.

`validation_pinned.json` holds the results the per-rule Great Expectations validator (one
`batch.validate` per rule, commit f176589) gave for the tables built here: every rule kind and
every GX class the contracts use, with planted faults, a table whose schema is off and an empty
table. The validator must keep giving exactly these figures, samples and details; each case also
checks a few figures against plain Python over the same rows, so the pinned file cannot hide a
wrong figure. Regenerate the file only when a figure's meaning changes on purpose:
`PIN_VALIDATION=1 pytest tests/test_validation.py`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from etl.engine.session import open_session
from etl.project.config import parse_config
from etl.project.contracts import Contract, ContractColumn, RuleSpec
from etl.quality.validation import Validator, histograms

PINNED = Path(__file__).parent / "validation_pinned.json"

WIDE_COLUMNS = (("subset", "string"), ("file_name", "string"), ("sample_id", "bigint"), ("hash", "bigint"),
                ("source_hash", "bigint"), ("url", "string"), ("score", "float"), ("similarity", "double"),
                ("nsfw", "string"), ("image_path", "string"))
WIDE_RULES = (
    RuleSpec("url_not_null", "expect", "fail", {"expect": "ExpectColumnValuesToNotBeNull", "column": "url"}),
    RuleSpec("image_mostly_there", "expect", "warn",
             {"expect": "ExpectColumnValuesToNotBeNull", "column": "image_path", "mostly": 0.5}),
    RuleSpec("score_in_range", "expect", "fail",
             {"expect": "ExpectColumnValuesToBeBetween", "column": "score", "min_value": 0, "max_value": 10}),
    RuleSpec("similarity_in_range", "expect", "fail",
             {"expect": "ExpectColumnValuesToBeBetween", "column": "similarity", "min_value": -1, "max_value": 1}),
    RuleSpec("sample_id_positive", "expect", "warn",
             {"expect": "ExpectColumnValuesToBeBetween", "column": "sample_id", "min_value": 0}),
    RuleSpec("nsfw_known", "expect", "warn",
             {"expect": "ExpectColumnValuesToBeInSet", "column": "nsfw", "value_set": ["UNLIKELY", "UNSURE", "NSFW"]}),
    RuleSpec("source_hash_matches", "expect", "warn",
             {"expect": "ExpectColumnPairValuesToBeEqual", "column_A": "source_hash", "column_B": "hash",
              "ignore_row_if": "either_value_is_missing"}, "the file's hash equals the recomputed one"),
    RuleSpec("duplicate_sample_id", "duplicates", "warn", {"columns": ["sample_id"]}),
    RuleSpec("duplicate_hash_per_subset", "duplicates", "fail", {"columns": ["subset", "hash"], "max_unexpected": 1}),
    RuleSpec("duplicate_url", "duplicates", "fail", {"columns": ["url"]}),
    RuleSpec("no_bad_urls", "sql", "warn", {"query": "select subset, url from {batch} where url like '%bad%'"}),
    RuleSpec("score_coverage", "coverage", "warn", {"column": "score", "max_drop": 0.1}),
    RuleSpec("image_coverage", "coverage", "warn", {"column": "image_path"}),
    RuleSpec("rows_match_totals", "completeness", "warn", {}),
)
NARROW_COLUMNS = (("id", "bigint"), ("name", "string"), ("value", "double"), ("missing", "string"))
NARROW_RULES = (
    RuleSpec("duplicate_id", "duplicates", "warn", {"columns": ["id"]}),
    RuleSpec("value_in_range", "expect", "fail",
             {"expect": "ExpectColumnValuesToBeBetween", "column": "value", "min_value": 0, "max_value": 1}),
    RuleSpec("missing_not_null", "expect", "fail", {"expect": "ExpectColumnValuesToNotBeNull", "column": "missing"}),
)
PREVIOUS = {("wide", "score_coverage"): 0.95}
# a: every part read and one row short; b: fewer parts than expected; c: not in the table at all.
EXPECTED_TOTALS = {"a": (31, 2), "b": (1000, 5), "c": (10, None)}


def contract(table: str, columns, rules) -> Contract:
    return Contract(table=table, layer="ods", grain="test rows", keys=(), columns=tuple(
        ContractColumn(name, kind) for name, kind in columns), partition_by=None, path=PINNED, rules=rules)


def wide_rows() -> list[tuple]:
    """40 rows over subsets a (30 rows, 2 parts) and b (10 rows, 1 part) with planted faults."""
    rows = []
    for i in range(40):
        subset, part = ("a", f"a-{i % 2}") if i < 30 else ("b", "b-0")
        sample_id = -i if i == 7 else (i % 4 if i % 5 == 0 else 1000 + i)  # rows 0, 5, 10 ... share 4 values
        hash_ = 99 if i in (3, 4, 5) else (98 if i in (33, 34) else 5000 + i)
        source_hash = None if i % 9 == 0 else (hash_ + 1 if i in (11, 12) else hash_)
        url = None if i in (2, 21) else (f"http://bad/{i}" if i in (8, 36) else f"http://x/{i}")
        score = None if i % 6 == 0 else (12.5 if i in (13, 14) else (-0.25 if i == 15 else i / 4))
        similarity = None if i == 1 else (i - 20) / 25
        nsfw = None if i % 8 == 0 else ("MAYBE" if i in (9, 10) else ("" if i == 19 else "UNLIKELY"))
        image_path = f"img/{i}.jpg" if i % 3 else None
        rows.append((subset, part, sample_id, hash_, source_hash, url, score, similarity, nsfw, image_path))
    return rows


NARROW_ROWS = [(1, 0.5, "x", "y"), (1, 1.5, "z", None), (2, None, None, "w")]


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    root = tmp_path_factory.mktemp("validation")
    config = parse_config({"warehouse": str(root), "sources": {"s": {"base": "b", "joined": "j"}}}, root)
    with open_session(config) as session:
        yield session


def wide_frame(spark):
    return spark.createDataFrame(wide_rows(), ", ".join(f"{name} {kind}" for name, kind in WIDE_COLUMNS)).coalesce(1)


def as_json(results) -> list[dict]:
    """RuleResults as JSON-shaped dicts, the form meta.dq_results stores them in."""
    return [json.loads(json.dumps(dataclasses.asdict(r), default=str)) for r in results]


@pytest.fixture(scope="module")
def validated(spark) -> dict[str, list[dict]]:
    """Case -> its RuleResults, as JSON."""
    wide = wide_frame(spark)
    # Off the contract: id is an int, value and name are swapped, missing is absent, extra is not in it.
    narrow = spark.createDataFrame(NARROW_ROWS, "id int, value double, name string, extra string").coalesce(1)
    validator = Validator(previous_values=PREVIOUS, expected_totals=EXPECTED_TOTALS)
    cases = {"wide": validator.validate(contract("wide", WIDE_COLUMNS, WIDE_RULES), wide),
             "wide_empty": validator.validate(contract("wide", WIDE_COLUMNS, WIDE_RULES), wide.limit(0)),
             "narrow": validator.validate(contract("narrow", NARROW_COLUMNS, NARROW_RULES), narrow)}
    return {case: as_json(results) for case, results in cases.items()}


def test_results_equal_the_per_rule_validators(validated):
    if os.environ.get("PIN_VALIDATION"):
        PINNED.write_text(json.dumps(validated, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    pinned = json.loads(PINNED.read_text(encoding="utf-8"))
    assert set(validated) == set(pinned)
    for case, results in pinned.items():
        assert [r["rule_id"] for r in validated[case]] == [r["rule_id"] for r in results], case
        for found, expected in zip(validated[case], results):
            assert found == expected, (case, expected["rule_id"])


def by_rule(results: list[dict]) -> dict[str, dict]:
    return {r["rule_id"]: r for r in results}


def test_figures_agree_with_plain_python(validated):
    rows = [dict(zip([name for name, _ in WIDE_COLUMNS], row)) for row in wide_rows()]
    found = by_rule(validated["wide"])
    assert found["url_not_null"]["unexpected_count"] == sum(r["url"] is None for r in rows) == 2
    scored = [r["score"] for r in rows if r["score"] is not None]
    assert found["score_in_range"]["unexpected_count"] == sum(not 0 <= s <= 10 for s in scored) == 3
    assert found["score_in_range"]["unexpected_percent"] == pytest.approx(300 / len(scored))
    assert sorted(found["nsfw_known"]["sample"]) == ["", "MAYBE", "MAYBE"]
    pairs = [r for r in rows if r["source_hash"] is not None and r["hash"] is not None]
    assert found["source_hash_matches"]["unexpected_count"] == sum(r["source_hash"] != r["hash"] for r in pairs) == 2
    sample_ids = Counter(r["sample_id"] for r in rows)
    duplicated = {k: n for k, n in sample_ids.items() if n > 1}
    details = found["duplicate_sample_id"]["details"]
    assert (details["duplicated_values"], details["rows_involved"]) == (len(duplicated), sum(duplicated.values()))
    per_subset = {}
    for subset in ("a", "b"):
        counts = Counter(r["sample_id"] for r in rows if r["subset"] == subset)
        values = [n for n in counts.values() if n > 1]
        per_subset[subset] = {"duplicated_values": len(values), "rows_involved": sum(values)}
    assert details["per_subset"] == per_subset
    assert found["duplicate_hash_per_subset"]["details"]["per_subset"] == {
        "a": {"duplicated_values": 1, "rows_involved": 3}, "b": {"duplicated_values": 1, "rows_involved": 2}}
    assert (found["duplicate_hash_per_subset"]["success"], found["duplicate_hash_per_subset"]["observed_value"]) == \
        (False, 2)
    assert found["no_bad_urls"]["unexpected_count"] == 2
    assert found["score_coverage"]["observed_value"] == pytest.approx(len(scored) / len(rows))
    completeness = found["rows_match_totals"]["details"]
    assert [(s["subset"], s["rows"], s["parts_read"], s["whole"]) for s in completeness["subsets"]] == \
        [("a", 30, 2, True), ("b", 10, 1, False), ("c", 0, 0, True)]
    assert completeness["off"] == ["a", "c"]


def test_stated_null_counts_answer_the_not_null_rules_as_the_query_does(spark, validated):
    wide = wide_frame(spark)
    table = contract("wide", WIDE_COLUMNS, WIDE_RULES)
    validator = Validator(previous_values=PREVIOUS, expected_totals=EXPECTED_TOTALS)
    truth = {"url": 2, "score": 7}  # score has no not-null rule: its count is not used
    assert as_json(validator.validate(table, wide, truth)) == validated["wide"]
    assert as_json(validator.validate(table, wide.limit(0), {"url": 0})) == validated["wide_empty"]
    # The figure is the stated one, not counted again (a wrong statement shows).
    stated = by_rule(as_json(validator.validate(table, wide, {"url": 5})))["url_not_null"]
    assert (stated["unexpected_count"], stated["unexpected_percent"]) == (5, 12.5)


def test_a_broken_query_is_its_rules_error_and_other_classes_are_left_to_gx(spark):
    df = spark.createDataFrame(NARROW_ROWS, "id bigint, value double, name string, missing string").coalesce(1)
    rules = (RuleSpec("broken", "sql", "warn", {"query": "select * from laion.not_built join {batch}"}),
             RuleSpec("name_pattern", "expect", "warn",
                      {"expect": "ExpectColumnValuesToMatchRegex", "column": "name", "regex": "^[xz]$"}),
             RuleSpec("value_above_half", "expect", "fail",
                      {"expect": "ExpectColumnValuesToBeBetween", "column": "value", "min_value": 0.5,
                       "strict_min": True}))
    found = by_rule([dataclasses.asdict(r) for r in Validator().validate(contract("narrow", NARROW_COLUMNS, rules), df)])
    assert found["broken"]["success"] is False and "not_built" in found["broken"]["details"]["error"].lower()
    assert (found["name_pattern"]["success"], found["name_pattern"]["unexpected_count"]) == (True, 0)
    value = found["value_above_half"]
    assert (value["success"], value["unexpected_count"], value["sample"]) == (False, 1, ("0.5",))
    assert value["unexpected_percent"] == pytest.approx(50.0)


def test_duplicates_report_the_most_duplicated_values_of_every_subset_and_zeros_where_none(spark):
    """More duplicated values than the sample holds, spread over subsets so that the overall top
    values come from several subsets' tops; subset c has none; sample ids and hashes repeat across
    subsets."""
    rows = []
    for value in range(30):  # subset a: hash 100+v held 2 + v % 4 times; b: hash 500+v held 2 + v % 7 times
        rows += [("a", 100 + value, value)] * (2 + value % 4)
        rows += [("b", 500 + value, value)] * (2 + value % 7) if value < 12 else [("b", 900 + value, 10_000 + value)]
    rows += [("c", 700 + n, 20_000 + n) for n in range(5)] + [("c", None, None)] * 3
    # Hashes subset a duplicates, also held by b: once (not a duplicate there), twice (one there too).
    rows += [("b", 100, 50_000)] + [("b", 101, 50_001)] * 2
    df = spark.createDataFrame(rows, "subset string, hash bigint, sample_id bigint").repartition(3)
    columns = (("subset", "string"), ("hash", "bigint"), ("sample_id", "bigint"))
    rules = (RuleSpec("by_subset_and_hash", "duplicates", "warn", {"columns": ["subset", "hash"]}),
             RuleSpec("by_sample_id", "duplicates", "warn", {"columns": ["sample_id"]}))
    found = by_rule([dataclasses.asdict(r) for r in Validator().validate(contract("dups", columns, rules), df)])

    for rule, names in (("by_subset_and_hash", ("subset", "hash")), ("by_sample_id", ("sample_id",))):
        def key(row):
            return tuple(row[("subset", "hash", "sample_id").index(name)] for name in names)

        counts = Counter(key(r) for r in rows if None not in key(r))
        duplicated = {k: n for k, n in counts.items() if n > 1}
        top = sorted(duplicated.items(), key=lambda item: (-item[1], *item[0]))[:20]
        details = found[rule]["details"]
        assert (details["duplicated_values"], details["rows_involved"]) == (len(duplicated), sum(duplicated.values()))
        assert found[rule]["unexpected_count"] == len(duplicated) and len(duplicated) > 20
        assert [(*(v[name] for name in names), v["rows"]) for v in details["values"]] == [(*k, n) for k, n in top], rule
        within = {s: [n for n in Counter(key(r) for r in rows if r[0] == s and None not in key(r)).values() if n > 1]
                  for s in "abc"}
        assert details["per_subset"] == {s: {"duplicated_values": len(within[s]), "rows_involved": sum(within[s])}
                                         for s in "abc"}, rule
        assert details["per_subset"]["c"] == {"duplicated_values": 0, "rows_involved": 0}
    top_subsets = {v["subset"] for v in found["by_subset_and_hash"]["details"]["values"]}
    assert top_subsets == {"a", "b"}, "the overall top values should come from two subsets' tops"


def test_histograms_count_each_value_in_its_bin_edges_and_outliers_included(spark):
    """Values on every bin edge (as low + i * width gives them), between edges, below and above
    the range (clamped into the edge bins) and nulls, against plain Python over the same edges."""
    low, high, bins = 0.0, 0.6, 24
    width = (high - low) / bins
    edges = [low + i * width for i in range(bins + 1)]
    values = edges + [e + width / 3 for e in edges[:-1]] + [-5.0, -0.0, 0.6, 0.7, 1e9] + [None] * 4
    df = spark.createDataFrame([(v, None if v is None else float(v) * 10) for v in values], "x double, y double")
    found = {h.column: h for h in histograms(df, {"x": (low, high, bins), "y": (0.0, 10.0, 20)})}

    def expected(column_values, low, high, bins):
        width = (high - low) / bins
        counts = [0] * bins
        for v in column_values:
            if v is not None:
                clamped = min(max(v, low), high)
                counts[next(i for i in range(bins) if low + i * width <= clamped and
                            (clamped < low + (i + 1) * width or (i == bins - 1 and clamped <= low + bins * width)))] += 1
        return tuple(counts)

    assert found["x"].counts == expected(values, low, high, bins) and found["x"].nulls == 4
    y_values = [None if v is None else float(v) * 10 for v in values]
    assert found["y"].counts == expected(y_values, 0.0, 10.0, 20) and found["y"].nulls == 4
    assert sum(found["x"].counts) == len(values) - 4 and found["x"].counts[0] >= 4
