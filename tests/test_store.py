"""The Delta table store on Sail: every store check (tests/store_checks.py), then what only Delta keeps.

The parquet store runs the same checks on the JVM engine, in tests/test_jvm.py.
"""

from __future__ import annotations

import pytest

from helpers import demo_config, read_delta
from etl.engine.session import open_session
from etl.project.config import load_config
from etl.warehouse.store import DeltaStore, ParquetStore, table_store
from store_checks import CHECKS, RUN_ID, rows, write


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    return load_config(demo_config(root / "sources", root / "warehouse", root / "demo.yaml"))


@pytest.fixture(scope="module")
def spark(config):
    with open_session(config) as session:
        yield session


@pytest.fixture
def store(config):
    return table_store(config)


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__[len("check_"):])
def test_delta_store(spark, store, tmp_path, check):
    check(spark, store, str(tmp_path / "table"))


def test_the_config_format_chooses_the_store(tmp_path):
    delta = load_config(demo_config(tmp_path / "sources", tmp_path / "warehouse", tmp_path / "delta.yaml"))
    parquet = load_config(demo_config(tmp_path / "sources", tmp_path / "warehouse", tmp_path / "parquet.yaml",
                                      engine="spark", fmt="parquet"))
    assert type(table_store(delta)) is DeltaStore
    assert type(table_store(parquet)) is ParquetStore


def test_restore_is_a_new_commit_and_the_rejected_version_stays_readable(spark, store, tmp_path):
    path = str(tmp_path / "table")
    write(spark, store, path, [(1, "en one", "en"), (3, "nolang three", "nolang")])
    rollback = store.rollback_point(path)
    rejected = write(spark, store, path, [(7, "rejected", "en")], replace={"subset": ["en"]}, run_id="rejected-run")

    assert rollback.restore(RUN_ID) == 0
    assert store.version(path) == rejected.version + 1
    latest = store.history(path, limit=1)[0]
    assert (latest["operation"], latest["userMetadata"]) == ("RESTORE", RUN_ID)
    assert sorted(tuple(r) for r in store.read(spark, path, version=rejected.version).collect()) == [
        (3, "nolang three", "nolang"), (7, "rejected", "en")]
    assert rows(spark, store, path) == [(1, "en one", "en"), (3, "nolang three", "nolang")]


def test_every_write_commits_with_the_run_id(spark, store, tmp_path):
    path = str(tmp_path / "table")
    first = write(spark, store, path, [(1, "en one", "en")], run_id="run-1")
    second = write(spark, store, path, [(2, "en two", "en")], replace={"subset": ["en"]}, run_id="run-2")

    assert (first.version, second.version) == (0, 1)
    assert [commit.get("userMetadata") for commit in store.history(path)] == ["run-2", "run-1"]
    # delta-rs, not the engine, reads what the store wrote: the rows are in the table itself.
    assert read_delta(path).to_pylist() == [{"id": 2, "name": "en two", "subset": "en"}]


def test_a_partial_rebuild_with_nulls_where_the_table_says_not_null_is_refused_before_writing(spark, store, tmp_path):
    from deltalake import DeltaTable
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    from etl.warehouse.store import PartialWriteError

    path = str(tmp_path / "table")
    strict = StructType([StructField("id", LongType()), StructField("name", StringType(), nullable=False),
                         StructField("subset", StringType(), nullable=False)])
    loose = StructType([StructField("id", LongType()), StructField("name", StringType()),
                        StructField("subset", StringType(), nullable=False)])
    store.write(spark, spark.createDataFrame([(1, "en one", "en"), (3, "nolang three", "nolang")], strict), path,
                ["subset"], None, RUN_ID)
    assert [f.nullable for f in DeltaTable(path).schema().fields] == [True, False, False]
    version = store.version(path)

    # The schemas differ but no row is null (an engine reading every column as nullable): written.
    store.write(spark, spark.createDataFrame([(2, "en two", "en")], loose), path, ["subset"], {"subset": ["en"]}, RUN_ID)
    assert rows(spark, store, path) == [(2, "en two", "en"), (3, "nolang three", "nolang")]
    # A null there, in a partition being replaced: refused naming the column, nothing written.
    with pytest.raises(PartialWriteError, match=r"hold nulls in name, .* rebuild the whole table once"):
        store.write(spark, spark.createDataFrame([(4, None, "en")], loose), path, ["subset"], {"subset": ["en"]}, RUN_ID)
    assert store.version(path) == version + 1
    # A whole rebuild replaces the schema.
    store.write(spark, spark.createDataFrame([(4, None, "en")], loose), path, ["subset"], None, RUN_ID)
    assert rows(spark, store, path) == [(4, None, "en")]
