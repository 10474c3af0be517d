"""Reading a family's files one by one, what depends only on a file's schema is worked out once:
the Spark schema JVM Spark infers with a job per file (keyed by what Spark infers from, nothing
else) and the normalising expressions; the files' frames are unioned pairwise, rows in order."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import etl.ingest.sources as sources
from etl.engine.session import open_session
from etl.ingest.sources import FamilyReader, SourceFile, _load, _union_all
from etl.ingest.storage import SPARK_SCHEMA_KEY, read_footer
from etl.project.config import load_config
from etl.project.project import load_project
from helpers import assert_same_rows, demo_config

ROWS = {"SAMPLE_ID": [1, 2], "URL": ["u1", "u2"], "TEXT": ["t1", "t2"], "WIDTH": [10, 20]}


def write(path: Path, table: pa.Table, metadata: dict | None = None) -> SourceFile:
    pq.write_table(table.replace_schema_metadata(metadata) if metadata else table, path)
    return SourceFile(family="base", subset="laion2B-en", footer=read_footer(str(path)))


def source_files(tmp_path: Path) -> dict[str, SourceFile]:
    plain = pa.table(ROWS)
    return {
        "first": write(tmp_path / "first.parquet", plain),
        "alike": write(tmp_path / "alike.parquet", pa.table({**ROWS, "URL": ["other", "urls"]})),
        "wider": write(tmp_path / "wider.parquet", plain.set_column(3, "WIDTH", pa.array([10.0, 20.0]))),
        "spark_written": write(tmp_path / "spark_written.parquet", plain,
                               {SPARK_SCHEMA_KEY: json.dumps({"type": "struct", "fields": []})}),
        "dictionary": write(tmp_path / "dictionary.parquet",
                            plain.set_column(1, "URL", plain["URL"].dictionary_encode())),
    }


def test_files_share_a_key_exactly_when_spark_would_infer_them_alike(tmp_path):
    files = source_files(tmp_path)
    key = {name: source.footer.spark_schema_source for name, source in files.items()}

    assert key["alike"] == key["first"]  # other values, same schema
    assert key["wider"] != key["first"]  # a column's physical type differs
    assert key["spark_written"] != key["first"]  # Spark's reader prefers the schema its writer stored
    # Dictionary encoding is not in the Parquet schema (JVM Spark reads it as plain values); Sail,
    # which tells it apart, is never given a schema (below).
    assert key["dictionary"] == key["first"]
    assert "0x" not in key["first"]  # the printed schema, not the Python object's address


class RecordingReader:
    """`spark.read` of a session that records each file read and the schema it was given."""

    def __init__(self, reads: list, given=None) -> None:
        self.reads, self.given = reads, given

    def schema(self, schema) -> "RecordingReader":
        return RecordingReader(self.reads, schema)

    def parquet(self, path: str) -> "InferredFrame":
        self.reads.append((Path(path).name, self.given))
        return InferredFrame(f"schema of {Path(path).name}" if self.given is None else self.given)


class InferredFrame:
    def __init__(self, schema: str) -> None:
        self.schema = schema


class JvmSession:
    def __init__(self) -> None:
        self.reads: list = []
        self.read = RecordingReader(self.reads)


class ConnectSession(JvmSession):
    pass


ConnectSession.__module__ = "pyspark.sql.connect.session"


def read_in_order(session, files: dict[str, SourceFile], names: list[str], monkeypatch) -> list:
    # Decoding dictionary columns builds Spark expressions, which need a real session.
    monkeypatch.setattr("etl.ingest.sources._decode_dictionaries", lambda frame, schema: frame)
    columns = load_project().families["base"].columns
    schemas: dict = {}
    for name in names:
        source = files[name]
        _load(session, source, columns, {f.name.lower(): f for f in source.footer.schema}, schemas)
    return session.reads


def test_the_jvm_is_given_the_schema_it_inferred_for_a_file_alike(tmp_path, monkeypatch):
    files = source_files(tmp_path)

    reads = read_in_order(JvmSession(), files, ["first", "wider", "alike", "spark_written", "dictionary"],
                          monkeypatch)

    assert reads == [("first.parquet", None), ("wider.parquet", None),
                     ("alike.parquet", "schema of first.parquet"), ("spark_written.parquet", None),
                     ("dictionary.parquet", "schema of first.parquet")]


def test_a_spark_connect_session_is_never_given_a_schema(tmp_path, monkeypatch):
    files = source_files(tmp_path)

    reads = read_in_order(ConnectSession(), files, ["first", "alike", "dictionary"], monkeypatch)

    assert reads == [("first.parquet", None), ("alike.parquet", None), ("dictionary.parquet", None)]


@pytest.mark.parametrize("count", range(1, 10))
def test_frames_are_unioned_pairwise_every_row_in_order(count):
    class Rows(list):
        def unionByName(self, other):
            return Rows(self + other)

    assert _union_all([Rows([index]) for index in range(count)]) == list(range(count))


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    root = tmp_path_factory.mktemp("family_reader")
    config = load_config(demo_config(root / "sources", root / "warehouse", root / "demo.yaml"))
    with open_session(config) as session:
        yield session


def test_a_files_expressions_are_built_once_per_schema_and_read_it_as_its_own(spark, tmp_path, monkeypatch):
    files = source_files(tmp_path)
    names = ["first", "alike", "wider", "dictionary"]
    family = load_project().families["base"]
    alone = {name: FamilyReader(spark, family).read(files[name]).toArrow() for name in names}
    built = []
    normalised = sources._normalised
    monkeypatch.setattr(sources, "_normalised", lambda by_lower, column: built.append(column.name) or normalised(by_lower, column))

    reader = FamilyReader(spark, family)
    together = {name: reader.read(files[name]).toArrow() for name in names}

    # first, alike and dictionary (its values decoded) have one engine schema; wider another.
    assert built == [column.name for column in family.columns] * 2
    for name in names:
        assert_same_rows(together[name], alone[name])
    assert together["alike"].column("url").to_pylist() == ["other", "urls"]
    assert together["alike"].column("file_name").to_pylist() == ["alike.parquet"] * 2
