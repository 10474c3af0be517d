"""Each SQL table on given input rows, against the exact rows it must give (as dbt unit tests do).

`tests/tables/<table>.yaml` holds `given:` rows for every view and `laion.<table>` the table's SQL
reads, and the `expect:` rows, worked out by hand from DESIGN.md and the SQL. The runner gives the
inputs the schemas the build gives them, runs `sql/<layer>/<table>.sql` as the build does, and
compares the result with the contract's schema (names, order, types), the expected row count and
the expected rows both ways (a multiset difference), so a failure names the table and its rows.

In the fixtures, a given row may leave columns out (they are null); an expected row names every
column. `!laion_hash [url, text]` is LAION's hash by its reference definition, mmh3 itself.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import mmh3
import pytest
import yaml

from etl.engine.session import open_session
from etl.ingest.images import INDEX_DDL
from etl.ingest.sources import accepted_rows, read_family
from etl.project.config import load_config
from etl.project.contracts import Contract, load_contract
from etl.project.project import load_project
from helpers import REPO, demo_config

FIXTURES = Path(__file__).parent / "tables"
SQL_FILES = {path.stem: path for path in sorted((REPO / "sql").glob("*/*.sql"))}
DATABASE_PREFIX = "laion."


class FixtureLoader(yaml.SafeLoader):
    """YAML plus `!laion_hash [url, text]`."""


def _laion_hash(loader: FixtureLoader, node: yaml.Node) -> int:
    url, text = loader.construct_sequence(node)
    return mmh3.hash64(((url or "") + (text or "")).encode("utf-8"))[0]


FixtureLoader.add_constructor("!laion_hash", _laion_hash)


@dataclass(frozen=True)
class TableCase:
    table: str
    sql: str
    contract: Contract
    given: dict[str, list[dict]]  # view or laion.<table> -> rows
    expect: list[dict]


def contract_of(table: str) -> Contract:
    return load_contract(REPO / "expectations" / SQL_FILES[table].parent.name / f"{table}.yaml")


def load_case(table: str) -> TableCase:
    sql_path = SQL_FILES[table]
    fixture = FIXTURES / f"{table}.yaml"
    assert fixture.is_file(), f"{table}: no fixture {fixture.relative_to(REPO)} for {sql_path.relative_to(REPO)}"
    spec = yaml.load(fixture.read_text(encoding="utf-8"), Loader=FixtureLoader)
    sql = sql_path.read_text(encoding="utf-8")
    for name in spec["given"]:
        # A given input the SQL never reads would be a fixture that tests nothing.
        assert re.search(rf"\b{re.escape(name)}\b", sql), f"{table}: given {name!r} is not read by {sql_path.name}"
    contract = contract_of(table)
    for row in spec["expect"]:
        assert list(row) == contract.column_names, \
            f"{table}: an expected row must name every column in contract order: {row}"
    return TableCase(table, sql, contract, spec["given"], spec["expect"])


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    """One Sail session for every table. Module scope, not session: pyspark's getOrCreate hands an
    open session to whatever calls it next, and the builds of later test modules open their own."""
    root = tmp_path_factory.mktemp("table_session")
    config = load_config(demo_config(root / "sources", root / "warehouse", root / "demo.yaml"),
                         overrides={"spark": {"shuffle_partitions": 2}})  # a handful of rows
    with open_session(config) as session:
        yield session


def input_schema(spark, name: str):
    """The schema the build gives input `name`: a table's contract, or the view as the
    framework binds it (etl/build/materialise.py)."""
    if name.startswith(DATABASE_PREFIX):
        return contract_of(name.removeprefix(DATABASE_PREFIX)).ddl
    if name.startswith("src_laion_"):
        family = load_project().families[name.removeprefix("src_laion_")]
        return accepted_rows(read_family(spark, family, [])).schema
    if name == "src_image_index":
        return INDEX_DDL
    if name == "cfg_subsets":
        return "subset string, default_language string"
    raise AssertionError(f"no schema known for input {name!r}")


def rows_frame(spark, rows: list[dict], schema, where: str):
    frame = spark.createDataFrame([], schema)
    names = frame.columns
    for row in rows:
        unknown = set(row) - set(names)
        assert not unknown, f"{where}: unknown columns {sorted(unknown)} in {row}"
    return spark.createDataFrame([tuple(row.get(name) for name in names) for row in rows], frame.schema)


@contextmanager
def given_inputs(spark, case: TableCase, folder: Path) -> Iterator[None]:
    """Temp views for the views, and `laion.<table>` tables (parquet under `folder`), dropped after,
    so no case sees another's inputs."""
    try:
        for name, rows in case.given.items():
            frame = rows_frame(spark, rows, input_schema(spark, name), f"{case.table}: given {name}")
            if name.startswith(DATABASE_PREFIX):
                # A temp view cannot have a qualified name: the upstream table is a real one.
                path = folder / name
                frame.write.mode("overwrite").parquet(str(path))
                spark.sql(f"drop table if exists {name}")
                spark.sql(f"create table {name} using parquet location '{path}'")
            else:
                frame.createOrReplaceTempView(name)
        yield
    finally:
        for name in case.given:
            spark.sql(f"drop {'table' if name.startswith(DATABASE_PREFIX) else 'view'} if exists {name}")


def _shown(rows) -> str:
    return "\n".join(f"    {row.asDict()}" for row in rows)


def table_differences(spark, case: TableCase, folder: Path) -> list[str]:
    """What the table's SQL gives on the given rows, where it differs from the case: [] when equal."""
    with given_inputs(spark, case, folder):
        actual = spark.sql(case.sql)
        schema = [(field.name, field.dataType.simpleString()) for field in actual.schema.fields]
        contract = [(column.name, column.type) for column in case.contract.columns]
        if schema != contract:
            return [f"{case.table}: schema {schema}, contract {contract}"]
        expected = rows_frame(spark, case.expect, case.contract.ddl, f"{case.table}: expect")
        problems = []
        count = actual.count()
        if count != len(case.expect):
            problems.append(f"{case.table}: {count} rows, expected {len(case.expect)}")
        only_actual = actual.exceptAll(expected).collect()
        if only_actual:
            problems.append(f"{case.table}: {len(only_actual)} row(s) not expected:\n{_shown(only_actual)}")
        only_expected = expected.exceptAll(actual).collect()
        if only_expected:
            problems.append(f"{case.table}: {len(only_expected)} expected row(s) missing:\n{_shown(only_expected)}")
        return problems


@pytest.mark.parametrize("table", sorted(SQL_FILES))
def test_table_gives_the_expected_rows(spark, tmp_path, table):
    problems = table_differences(spark, load_case(table), tmp_path)
    assert not problems, "\n".join(problems)


def test_a_wrong_expected_row_is_reported_with_its_table_and_both_rows(spark, tmp_path):
    case = load_case("ods_laion_base")
    right = case.expect[0]
    assert right["width"] != right["height"]
    # The mistake the base files invite: width and height left as published.
    wrong = {**right, "width": right["height"], "height": right["width"]}
    problems = table_differences(spark, replace(case, expect=[wrong, *case.expect[1:]]), tmp_path)
    assert len(problems) == 2, problems
    not_expected, missing = problems
    assert not_expected.startswith("ods_laion_base: 1 row(s) not expected:")
    assert f"'width': {right['width']}, 'height': {right['height']}" in not_expected
    assert missing.startswith("ods_laion_base: 1 expected row(s) missing:")
    assert f"'width': {wrong['width']}, 'height': {wrong['height']}" in missing


# `on a.x = b.x and a.y = b.y ...` up to the line that does not continue the condition.
JOIN_CONDITION = re.compile(r"\bon\s+(\w+\.\w+\s*=\s*\w+\.\w+(?:\s+and\s+\w+\.\w+\s*=\s*\w+\.\w+)*)", re.I)
EQUATED_COLUMN = re.compile(r"\w+\.(\w+)\s*=\s*\w+\.\w+")


def keys_named_after_subset(sql: str) -> list[str]:
    """The join conditions that name subset before hash: JVM Spark's sort-merge join sorts by its
    keys in the written order, and subset first makes every comparison a full-row one (see the
    SQL files' headers)."""
    found = []
    for condition in JOIN_CONDITION.findall(sql):
        columns = EQUATED_COLUMN.findall(condition)
        if "subset" in columns and "hash" in columns and columns.index("subset") < columns.index("hash"):
            found.append(" ".join(condition.split()))
    return found


def test_joins_on_subset_and_hash_name_hash_first():
    planted = "select * from a left join b\n    on a.subset = b.subset\n    and a.hash = b.hash\n"
    assert keys_named_after_subset(planted) == ["a.subset = b.subset and a.hash = b.hash"]
    assert keys_named_after_subset("select * from a left join b\n    on a.hash = b.hash\n    and a.subset = b.subset\n") == []

    assert {name: keys_named_after_subset(path.read_text()) for name, path in SQL_FILES.items()} == \
        {name: [] for name in SQL_FILES}
