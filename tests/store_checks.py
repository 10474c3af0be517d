"""What every table store must do, written once for every format.

Each check takes a session, the store under test and a fresh table path, and asserts. Sail runs
them against the Delta store in tests/test_store.py. tests/test_jvm.py runs this module as a
script in a process of its own (the engine is chosen once per process) on the JVM engine, once
with a Delta config and once with a parquet one (parquet runs only there: Sail's dynamic
partition overwrite replaces the whole table): `python store_checks.py CONFIG ROOT` opens the
config's session and runs every check, one line per check, exit code 1 if any failed.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from etl.project.contracts import Contract, ContractColumn

ROWS_DDL = "id bigint, name string, subset string"
RUN_ID = "20260101T000000000000Z-abcdef"
KEYED = Contract(table="keyed", layer="meta", grain="one row per id", keys=("id",),
                 columns=(ContractColumn("id", "string"), ContractColumn("count", "bigint")), partition_by=(),
                 path=Path("keyed.yaml"))


def rows(spark, store, path: str, subset: str | None = None) -> list[tuple]:
    df = store.read(spark, path)
    if subset is not None:
        df = df.filter(f"subset = '{subset}'")
    return sorted(tuple(r) for r in df.select("id", "name", "subset").collect())


def write(spark, store, path: str, data: list[tuple], replace: dict | None = None, run_id: str = RUN_ID):
    return store.write(spark, spark.createDataFrame(data, ROWS_DDL), path, ["subset"], replace, run_id)


def check_partition_replace_keeps_the_other_partitions(spark, store, path):
    write(spark, store, path, [(1, "en one", "en"), (2, "en two", "en"), (3, "nolang three", "nolang")])
    # The new data also holds a stray `nolang` row: it must not land, nor may the old ones go.
    result = write(spark, store, path, [(4, "en four", "en"), (9, "stray", "nolang")], replace={"subset": ["en"]})
    assert rows(spark, store, path, "nolang") == [(3, "nolang three", "nolang")]
    assert rows(spark, store, path, "en") == [(4, "en four", "en")]
    assert result.rows_written == 1
    assert store.rows(spark, path) == 2 and store.rows(spark, path, ["en"]) == 1


def check_partition_replace_empties_a_partition_without_new_rows(spark, store, path):
    write(spark, store, path, [(1, "en one", "en"), (3, "nolang three", "nolang")])
    result = write(spark, store, path, [(9, "stray", "nolang")], replace={"subset": ["en"]})
    assert rows(spark, store, path) == [(3, "nolang three", "nolang")]
    assert result.rows_written == 0


def check_a_write_without_replace_overwrites_the_whole_table(spark, store, path):
    write(spark, store, path, [(1, "en one", "en"), (3, "nolang three", "nolang")])
    write(spark, store, path, [(5, "en five", "en")])
    assert rows(spark, store, path) == [(5, "en five", "en")]


def check_restore_makes_the_previous_state_current(spark, store, path):
    write(spark, store, path, [(1, "en one", "en"), (3, "nolang three", "nolang")])
    previous_version = store.version(path)
    rollback = store.rollback_point(path)
    write(spark, store, path, [(7, "rejected", "en")], replace={"subset": ["en"]})
    assert rows(spark, store, path, "en") == [(7, "rejected", "en")]
    assert rollback.restore(RUN_ID) == previous_version
    assert rows(spark, store, path) == [(1, "en one", "en"), (3, "nolang three", "nolang")]


def check_restore_removes_a_table_the_write_created(spark, store, path):
    rollback = store.rollback_point(path)
    write(spark, store, path, [(1, "en one", "en")])
    assert store.exists(path)
    assert rollback.restore(RUN_ID) is None
    assert not store.exists(path)


def check_a_kept_write_stays(spark, store, path):
    write(spark, store, path, [(1, "en one", "en")])
    rollback = store.rollback_point(path)
    write(spark, store, path, [(2, "en two", "en")])
    rollback.discard()
    assert rows(spark, store, path) == [(2, "en two", "en")]


def check_register_names_the_current_table(spark, store, path):
    write(spark, store, path, [(1, "en one", "en"), (3, "nolang three", "nolang")])
    store.register(spark, "store_check", path, partitioned=True)
    write(spark, store, path, [(4, "en four", "en")], replace={"subset": ["en"]})
    store.register(spark, "store_check", path, partitioned=True)
    assert sorted(tuple(r) for r in spark.sql("select id, subset from laion.store_check").collect()) == [
        (3, "nolang"), (4, "en")]


def check_append_and_upsert_row_keep_one_row_per_key(spark, store, path):
    store.append_rows(spark, path, KEYED, [("a", 1), ("b", 1)], RUN_ID)  # creates the table
    store.append_rows(spark, path, KEYED, [("c", 1)], RUN_ID)
    store.upsert_row(spark, path, KEYED, ("b", 2), "id", RUN_ID)
    store.upsert_row(spark, path, KEYED, ("d", 1), "id", RUN_ID)
    expected = [{"id": "a", "count": 1}, {"id": "b", "count": 2}, {"id": "c", "count": 1}, {"id": "d", "count": 1}]
    assert sorted(store.read_rows(path, ["id", "count"]), key=lambda r: r["id"]) == expected
    # The engine reads what the store wrote, as the catalog's analysts do.
    assert sorted(tuple(r) for r in store.read(spark, path).collect()) == [tuple(row.values()) for row in expected]
    # Appends and upserts alike carry the run id (no history without versions).
    assert {commit.get("userMetadata") for commit in store.history(path)} == (
        set() if store.version(path) is None else {RUN_ID})


def check_every_commit_carries_the_run_id(spark, store, path):
    write(spark, store, path, [(1, "en one", "en"), (3, "nolang three", "nolang")], run_id="run-write")
    write(spark, store, path, [(4, "en four", "en")], replace={"subset": ["en"]}, run_id="run-replace")
    rollback = store.rollback_point(path)
    write(spark, store, path, [(7, "rejected", "en")], replace={"subset": ["en"]}, run_id="run-rejected")
    rollback.restore("run-restore")
    if store.version(path) is None:  # a format without versions keeps no history
        assert store.history(path) == []
        return
    history = store.history(path)  # newest first; engines name a table's first commit differently
    assert [commit.get("userMetadata") for commit in history] == ["run-restore", "run-rejected", "run-replace",
                                                                  "run-write"]
    assert history[0]["operation"] == "RESTORE"


def check_an_earlier_version_reads_as_it_was(spark, store, path):
    first = write(spark, store, path, [(1, "en one", "en"), (3, "nolang three", "nolang")])
    write(spark, store, path, [(4, "en four", "en")], replace={"subset": ["en"]})
    if first.version is None:  # a format without versions refuses to read one
        try:
            store.read(spark, path, version=0)
        except ValueError as exc:
            assert "no versions" in str(exc)
            return
        raise AssertionError("reading a version of a table without versions did not fail")
    as_it_was = store.read(spark, path, version=first.version).select("id", "name", "subset").collect()
    assert sorted(tuple(r) for r in as_it_was) == [(1, "en one", "en"), (3, "nolang three", "nolang")]
    assert rows(spark, store, path) == [(3, "nolang three", "nolang"), (4, "en four", "en")]


def check_file_statistics_are_kept_for_the_columns_that_are_not_text(spark, store, path):
    """Delta keeps min, max and null counts of the numbers (id), none of the text (name); row
    counts always. Parquet keeps no table log at all."""
    write(spark, store, path, [(1, "en one", "en"), (5, "nolang five", "nolang")])
    assert store.rows(spark, path) == 2
    if store.format != "delta":
        assert not (Path(path) / "_delta_log").exists()
        return
    import pyarrow as pa
    from deltalake import DeltaTable

    table = DeltaTable(path)
    assert table.metadata().configuration == {"delta.dataSkippingStatsColumns": "id"}
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    assert sorted(a["min.id"] for a in actions) == [1, 5] and sorted(a["num_records"] for a in actions) == [1, 1]
    assert not [key for key in actions[0] if key.endswith(".name")], actions[0]


def check_null_counts_stated_are_the_current_rows_nulls(spark, store, path):
    """A store states a column's nulls only where its files say them (Delta: their Parquet
    footers, the text columns too) and only for the current version: the files a partition
    replace removed no longer count. Parquet states none. The folder's name needs escaping in a
    URI (the Delta log holds the files percent-encoded)."""
    path = f"{path} space é"
    write(spark, store, path, [(1, None, "en"), (None, None, "en"), (3, "nolang three", "nolang")])
    write(spark, store, path, [(None, "en four", "en"), (5, None, "en")], replace={"subset": ["en"]})
    df = store.read(spark, path)
    counted = {column: df.where(f"{column} is null").count() for column in ("id", "name")}
    assert counted == {"id": 1, "name": 1}
    stated = store.null_counts(path)
    if store.format != "delta":
        assert stated == {}
        return
    assert {column: stated[column] for column in counted} == counted, stated
    assert "subset" not in stated  # a partition value is in no file's footer


CHECKS = [check for name, check in sorted(globals().items()) if name.startswith("check_")]


def run_all(config_path: str, root: str) -> int:
    """Every check against the config's store, each on a table of its own under `root`."""
    from etl.engine.session import open_session
    from etl.project.config import load_config
    from etl.warehouse.store import table_store

    config = load_config(config_path)
    store = table_store(config)
    failed = 0
    with open_session(config) as spark:
        for check in CHECKS:
            try:
                check(spark, store, str(Path(root) / check.__name__))
                print(f"ok {check.__name__}")
            except Exception:
                failed += 1
                print(f"FAILED {check.__name__}\n{traceback.format_exc()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_all(*sys.argv[1:]))
