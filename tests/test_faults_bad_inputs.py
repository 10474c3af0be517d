"""Bad source rows and columns (issue 6): each test plants one faulty part file in the planted tree,
builds on Sail and reads the tables back with delta-rs. A fault is either reconciled (the exact
values are shown) or its rows go to the quarantine with a reason naming the column, and the rows
read always equal the rows kept plus the rows quarantined. A file the engine cannot decode stops
the build with one line naming it and why.

Tiny files hide a trap: a float column whose statistics say min == max is read through pyarrow
(Sail reads NaNs there as the constant), so files meant for the engine's own reader have two rows
with distinct floats, and `assert_engine_reads` says so.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl import laion_hash
from etl.ingest.storage import read_footer
from helpers import (REPO, assert_same_rows, need_java, one_line, read_delta, runs, write_planted_config,
                     write_planted_project)
from jvm_jobs import jvm_env
from planted import B, D, F, WIDE_SCHEMA, expected_wide_rows
from source_reads import SourceReads

FAMILY_FOLDERS = {
    "base": ("laion2B-en", "laion1B-nolang"),
    "joined": ("laion2B-en-joined", "laion1B-nolang-joined"),
    "aesthetic": ("laion2B-en-aesthetic", "improved_aesthetics_4.5plus"),
}
PLANTED_NAME = "part-00009.parquet"
JOINED_SCHEMA = pa.schema([("URL", pa.string()), ("TEXT", pa.string()), ("WIDTH", pa.int32()), ("HEIGHT", pa.int32()),
                           ("similarity", pa.float64()), ("hash", pa.int64()), ("punsafe", pa.float32()),
                           ("pwatermark", pa.float32()), ("LANGUAGE", pa.string())])


def sample(n: int) -> tuple[str, str]:
    """A sample of this module's own, in no planted file."""
    return f"http://bad-inputs.example/{n}.jpg", f"planted sample number {n}"


def joined_values(i: int) -> dict:
    """Row i of `joined_table`: distinct floats per row (exact in float32)."""
    return {"width": 100 + i, "height": 200 + i, "similarity": 0.25 + i / 8, "punsafe": 0.125 + i / 16,
            "pwatermark": 0.5 + i / 16}


def base_rows_with_float_ids(sample_ids: list[float], heights: list, widths: list) -> pa.Table:
    """Three base rows (F, sample 1, sample 2) whose SAMPLE_ID column is float, as in some LAION copies."""
    urls_and_texts = [F, sample(1), sample(2)]
    return pa.table({
        "SAMPLE_ID": sample_ids, "URL": [s[0] for s in urls_and_texts], "TEXT": [s[1] for s in urls_and_texts],
        "HEIGHT": heights, "WIDTH": widths, "LICENSE": ["?"] * 3, "NSFW": ["UNLIKELY"] * 3,
        "similarity": [0.125, 0.25, 0.375]})


def joined_table(samples, columns: dict | None = None, schema: pa.Schema = JOINED_SCHEMA) -> pa.Table:
    """Joined rows for `samples` (values from `joined_values`, hash correct, LANGUAGE en),
    with some columns replaced: a replaced column takes its type from its values."""
    rows = [joined_values(i) for i in range(len(samples))]
    values = {"URL": [s[0] for s in samples], "TEXT": [s[1] for s in samples],
              "WIDTH": [r["width"] for r in rows], "HEIGHT": [r["height"] for r in rows],
              "similarity": [r["similarity"] for r in rows], "hash": [laion_hash(*s) for s in samples],
              "punsafe": [r["punsafe"] for r in rows], "pwatermark": [r["pwatermark"] for r in rows],
              "LANGUAGE": ["en"] * len(samples)}
    replaced = columns or {}
    fields = [pa.field(name, pa.array(replaced[name]).type if name in replaced else schema.field(name).type)
              for name in values]
    return pa.table({**values, **replaced}, schema=pa.schema(fields))


def wide_row(sample_: tuple, i: int, **changes) -> dict:
    """The wide row of joined row i of a planted part file: no base, aesthetic or image row."""
    values = joined_values(i)
    row = {"sample_id": None, "url": sample_[0], "text": sample_[1], "width": values["width"],
           "height": values["height"], "similarity": values["similarity"], "hash": laion_hash(*sample_),
           "punsafe": values["punsafe"], "pwatermark": values["pwatermark"], "image_suffix": None, "license": None,
           "nsfw": None, "aesthetic_score": None, "language": "en", "file_name": PLANTED_NAME, "image_path": None,
           "subset": "laion2B-en"}
    return {**row, **changes}


def assert_engine_reads(path: Path) -> None:
    """The file goes through the engine's own parquet reader, not the pyarrow detour."""
    assert read_footer(str(path)).constant_float_columns == ()


@dataclass
class Planted:
    sources: Path
    warehouse: Path
    config: Path

    def plant(self, folder: str, table: pa.Table) -> Path:
        path = self.sources / folder / PLANTED_NAME
        pq.write_table(table, path)
        return path

    def build(self, run_cli, *options: str) -> tuple[int, str, str]:
        return run_cli("build", "--config", str(self.config), *options)

    def table(self, layer: str, name: str) -> list[dict]:
        return read_delta(self.warehouse / layer / name).to_pylist()

    def planted_rows(self, family: str) -> dict[str, dict]:
        """The ODS rows that came from the planted file, by url."""
        return {r["url"]: r for r in self.table("ods", f"ods_laion_{family}") if r["file_name"] == PLANTED_NAME}

    def quarantined(self, family: str) -> list[dict]:
        path = self.warehouse / "meta/quarantine"
        rows = read_delta(path).to_pylist() if path.exists() else []
        return [r for r in rows if r["ods_table"] == f"ods_laion_{family}"]

    def reasons(self, family: str) -> Counter:
        return Counter((r["file_name"], r["reason"]) for r in self.quarantined(family))

    def assert_rows_add_up(self, family: str) -> None:
        """Rows in the family's part files = rows in its ODS table + its quarantined rows."""
        read = sum(pq.ParquetFile(p).metadata.num_rows
                   for folder in FAMILY_FOLDERS[family] for p in (self.sources / folder).glob("*.parquet"))
        kept, quarantined = len(self.table("ods", f"ods_laion_{family}")), len(self.quarantined(family))
        assert read == kept + quarantined, f"{family}: {read} read, {kept} kept, {quarantined} quarantined"

    def assert_wide(self, *extra: dict, changed: dict | None = None) -> None:
        """dms_laion_wide is the planted wide table with rows changed (by url) and extra rows."""
        rows = [{**r, **(changed or {}).get(r["url"], {})} for r in expected_wide_rows(self.sources)]
        expected = pa.Table.from_pylist(rows + list(extra), schema=WIDE_SCHEMA)
        wide = read_delta(self.warehouse / "dms/dms_laion_wide")
        assert_same_rows(wide.select(WIDE_SCHEMA.names), expected)


@pytest.fixture
def planted(tmp_path) -> Planted:
    config = write_planted_project(tmp_path)
    return Planted(tmp_path / "sources", tmp_path / "warehouse", config)


def build_ok(planted: Planted, run_cli, *options: str) -> str:
    code, _, err = planted.build(run_cli, *options)
    assert code == 0, err
    return err


def assert_one_line_failure(code: int, err: str, expected: str) -> None:
    """Exit 1 and the error is one line, no traceback."""
    assert code == 1
    assert one_line(err) == expected, err
    assert "Traceback" not in err


# --- a required column missing: every row of the file is quarantined ------------------------------

def test_a_joined_file_without_url_is_quarantined_whole_naming_the_column(planted, run_cli):
    planted.plant("laion2B-en-joined", joined_table([sample(1), sample(2)]).drop_columns(["URL"]))

    build_ok(planted, run_cli)

    assert planted.reasons("joined") == {(PLANTED_NAME, "file lacks required column url"): 2}
    rejected = planted.quarantined("joined")
    assert sorted(json.loads(r["original_values"])["TEXT"] for r in rejected) == [sample(1)[1], sample(2)[1]]
    assert {r["source_path"] for r in rejected} == {str(planted.sources / "laion2B-en-joined" / PLANTED_NAME)}
    planted.assert_rows_add_up("joined")
    planted.assert_wide()


def test_a_base_file_without_text_is_quarantined_whole_naming_the_column(planted, run_cli):
    planted.plant("laion2B-en", pa.table({
        "SAMPLE_ID": [40, 41], "URL": [F[0], sample(1)[0]], "HEIGHT": [1, 2], "WIDTH": [3, 4],
        "LICENSE": ["?", "?"], "NSFW": ["UNLIKELY", "UNLIKELY"], "similarity": [0.5, 0.25]}))

    build_ok(planted, run_cli)

    assert planted.reasons("base") == {(PLANTED_NAME, "file lacks required column text"): 2}
    assert sorted(json.loads(r["original_values"])["SAMPLE_ID"] for r in planted.quarantined("base")) == [40, 41]
    planted.assert_rows_add_up("base")
    planted.assert_wide()  # F gets no sample_id: its base row was not accepted


# --- names: aliases and case --------------------------------------------------------------------

def test_aesthetic_and_AESTHETIC_SCORE_are_one_score_in_either_source(planted, run_cli):
    # Each aesthetic source gets a part with the other name than its planted file uses. B's 6.25
    # comes from improved_aesthetics (second in priority); now laion2B-en-aesthetic has B too.
    other = sample(1)
    lower = planted.plant("improved_aesthetics_4.5plus", pa.table({
        "URL": [D[0], other[0]], "TEXT": [D[1], other[1]], "aesthetic": pa.array([7.0, 6.5], pa.float32())}))
    upper = planted.plant("laion2B-en-aesthetic", pa.table({
        "URL": [B[0], other[0]], "TEXT": [B[1], other[1]], "AESTHETIC_SCORE": [4.75, 5.25]}))
    assert_engine_reads(lower)
    assert_engine_reads(upper)

    build_ok(planted, run_cli)

    scores = {(r["source_name"], r["url"]): (r["source_rank"], r["aesthetic_score"])
              for r in planted.table("ods", "ods_laion_aesthetic") if r["file_name"] == PLANTED_NAME}
    assert scores == {("improved_aesthetics_4.5plus", D[0]): (1, np.float32(7.0)),
                      ("improved_aesthetics_4.5plus", other[0]): (1, np.float32(6.5)),
                      ("laion2B-en-aesthetic", B[0]): (0, np.float32(4.75)),
                      ("laion2B-en-aesthetic", other[0]): (0, np.float32(5.25))}
    assert planted.quarantined("aesthetic") == []
    planted.assert_rows_add_up("aesthetic")
    planted.assert_wide(changed={D[0]: {"aesthetic_score": 7.0}, B[0]: {"aesthetic_score": 4.75}})


def test_a_file_with_both_aesthetic_and_AESTHETIC_SCORE_is_quarantined_as_ambiguous(planted, run_cli):
    planted.plant("laion2B-en-aesthetic", pa.table({
        "URL": [D[0], F[0]], "TEXT": [D[1], F[1]], "aesthetic": [7.0, 6.0], "AESTHETIC_SCORE": [3.0, 2.0]}))

    build_ok(planted, run_cli)

    assert planted.reasons("aesthetic") == {
        (PLANTED_NAME, "aesthetic_score is ambiguous: the file has columns aesthetic, AESTHETIC_SCORE"): 2}
    assert sorted(json.loads(r["original_values"])["AESTHETIC_SCORE"] for r in planted.quarantined("aesthetic")) \
        == [2.0, 3.0]
    planted.assert_rows_add_up("aesthetic")
    planted.assert_wide()


def test_columns_that_differ_only_in_case_are_quarantined_as_ambiguous(planted, run_cli):
    both = joined_table([sample(1), sample(2)]).append_column("url", pa.array(["http://x/1", "http://x/2"]))

    planted.plant("laion2B-en-joined", both)
    build_ok(planted, run_cli)

    assert planted.reasons("joined") == {(PLANTED_NAME, "url is ambiguous: the file has columns URL, url"): 2}
    originals = sorted((json.loads(r["original_values"])["URL"], json.loads(r["original_values"])["url"])
                       for r in planted.quarantined("joined"))
    assert originals == [(sample(1)[0], "http://x/1"), (sample(2)[0], "http://x/2")]
    planted.assert_rows_add_up("joined")
    planted.assert_wide()


def test_all_lower_case_column_names_are_read(planted, run_cli):
    samples = [sample(1), sample(2)]
    lower = joined_table(samples, {"LANGUAGE": ["de", None]})
    path = planted.plant("laion2B-en-joined", lower.rename_columns([n.lower() for n in lower.column_names]))
    assert_engine_reads(path)

    build_ok(planted, run_cli)

    assert planted.quarantined("joined") == []
    planted.assert_rows_add_up("joined")
    planted.assert_wide(wide_row(samples[0], 0, language="de"), wide_row(samples[1], 1))  # null: subset's default


def test_mixed_case_column_names_are_read(planted, run_cli):
    # F is joined-only in the planted tree: a base row in a mixed-case file gives it its base fields.
    path = planted.plant("laion2B-en", pa.table({
        "Sample_Id": [42, 43], "Url": [F[0], sample(1)[0]], "Text": [F[1], sample(1)[1]], "Height": [50, 51],
        "Width": [60, 61], "License": ["cc0", "?"], "Nsfw": ["UNSURE", "NSFW"], "Similarity": [0.3, 0.25]}))
    assert_engine_reads(path)

    build_ok(planted, run_cli)

    rows = {url: (r["sample_id"], r["width"], r["height"], r["license"], r["nsfw"], r["hash"])
            for url, r in planted.planted_rows("base").items()}
    assert rows == {F[0]: (42, 50, 60, "cc0", "UNSURE", laion_hash(*F)),  # base files swap W/H back
                    sample(1)[0]: (43, 51, 61, "?", "NSFW", laion_hash(*sample(1)))}
    assert planted.quarantined("base") == []
    planted.assert_rows_add_up("base")
    planted.assert_wide(changed={F[0]: {"sample_id": 42, "license": "cc0", "nsfw": "UNSURE"}})


# --- numbers as strings, floats as integers -------------------------------------------------------

def test_width_as_string_takes_whole_numbers_and_quarantines_the_rest(planted, run_cli):
    samples = [sample(n) for n in range(1, 7)]
    path = planted.plant("laion2B-en-joined", joined_table(samples, {
        "WIDTH": ["800", " 801 ", "802.0", "", "abc", "640.5"], "HEIGHT": ["600", "601", "602", "603", "604", "605"]}))
    assert_engine_reads(path)

    build_ok(planted, run_cli)

    kept = {url: (r["width"], r["height"]) for url, r in planted.planted_rows("joined").items()}
    assert kept == {samples[0][0]: (800, 600), samples[1][0]: (801, 601), samples[2][0]: (802, 602),
                    samples[3][0]: (None, 603)}  # a blank is a missing width, not a broken one
    assert planted.reasons("joined") == {(PLANTED_NAME, "width is not a valid int"): 2}
    assert sorted(json.loads(r["original_values"])["WIDTH"] for r in planted.quarantined("joined")) == ["640.5", "abc"]
    planted.assert_rows_add_up("joined")
    planted.assert_wide(*(wide_row(samples[i], i, width=width, height=600 + i)
                          for i, width in enumerate([800, 801, 802, None])))


def test_float_sample_ids_nan_is_null_and_a_fraction_is_quarantined(planted, run_cli):
    path = planted.plant("laion2B-en", base_rows_with_float_ids([43.0, float("nan"), 44.5], [1.0, 2.0, 3.0],
                                                                [4.0, 5.0, 6.0]))
    assert_engine_reads(path)

    build_ok(planted, run_cli)

    kept = {url: (r["sample_id"], r["width"], r["height"]) for url, r in planted.planted_rows("base").items()}
    assert kept == {F[0]: (43, 1, 4), sample(1)[0]: (None, 2, 5)}
    assert planted.reasons("base") == {(PLANTED_NAME, "sample_id is not a valid bigint"): 1}
    assert json.loads(planted.quarantined("base")[0]["original_values"])["SAMPLE_ID"] == 44.5  # never truncated to 44
    planted.assert_rows_add_up("base")
    planted.assert_wide(changed={F[0]: {"sample_id": 43, "license": "?", "nsfw": "UNLIKELY"}})


def test_nan_beside_one_repeated_sample_id_is_not_read_as_that_value(planted, run_cli, caplog):
    # Statistics say min == max == 45: Sail 0.7.2 would read the NaN as 45, so pyarrow decodes this file.
    path = planted.plant("laion2B-en", base_rows_with_float_ids([45.0, float("nan"), 45.0], [1, 2, 3], [4, 5, 6]))
    assert read_footer(str(path)).constant_float_columns == ("SAMPLE_ID",)
    caplog.set_level(logging.INFO, logger="etl.ingest.sources")

    build_ok(planted, run_cli)

    kept = {url: r["sample_id"] for url, r in planted.planted_rows("base").items()}
    assert kept == {F[0]: 45, sample(1)[0]: None, sample(2)[0]: 45}
    assert f"{path}: float statistics with min == max; reading it through pyarrow" in caplog.messages
    assert planted.quarantined("base") == []
    planted.assert_rows_add_up("base")
    planted.assert_wide(changed={F[0]: {"sample_id": 45, "license": "?", "nsfw": "UNLIKELY"}})


def test_hash_as_string_is_kept_as_the_source_hash_and_junk_is_quarantined(planted, run_cli):
    samples = [sample(n) for n in range(1, 5)]
    path = planted.plant("laion2B-en-joined", joined_table(samples, {
        "hash": [str(laion_hash(*samples[0])), " 12345 ", "abc", ""]}))
    assert_engine_reads(path)

    build_ok(planted, run_cli)

    kept = {url: (r["source_hash"], r["hash"]) for url, r in planted.planted_rows("joined").items()}
    assert kept == {samples[0][0]: (laion_hash(*samples[0]), laion_hash(*samples[0])),
                    samples[1][0]: (12345, laion_hash(*samples[1])), samples[3][0]: (None, laion_hash(*samples[3]))}
    assert planted.reasons("joined") == {(PLANTED_NAME, "source_hash (column hash) is not a valid bigint"): 1}
    assert json.loads(planted.quarantined("joined")[0]["original_values"])["hash"] == "abc"
    planted.assert_rows_add_up("joined")
    results = [r for r in read_delta(planted.warehouse / "meta/dq_results").to_pylist()
               if (r["table_name"], r["rule_id"]) == ("ods_laion_joined", "source_hash_matches")]
    assert [r["unexpected_count"] for r in results] == [2]  # planted A's wrong hash and the 12345
    planted.assert_wide(*(wide_row(samples[i], i) for i in (0, 1, 3)))


# --- Arrow types the engine does not take as they are: dictionaries, large strings, unsigned ints --

def test_dictionary_encoded_and_large_string_columns_are_read(planted, run_cli):
    samples = [sample(1), sample(2)]
    path = planted.plant("laion2B-en-joined", joined_table(samples, {
        "URL": pa.array([s[0] for s in samples]).dictionary_encode(),
        "TEXT": pa.array([s[1] for s in samples], pa.large_string()),
        "LANGUAGE": pa.array(["de", "de"], pa.large_string()).dictionary_encode()}))
    assert_engine_reads(path)

    build_ok(planted, run_cli)

    assert planted.quarantined("joined") == []
    planted.assert_rows_add_up("joined")
    planted.assert_wide(wide_row(samples[0], 0, language="de"), wide_row(samples[1], 1, language="de"))


def test_every_file_with_a_dictionary_encoded_url_is_read(planted, run_cli):
    for folder in FAMILY_FOLDERS["joined"]:
        path = planted.sources / folder / "part-00000.parquet"
        table = pq.read_table(path)
        pq.write_table(table.set_column(table.schema.get_field_index("URL"), "URL",
                                        table.column("URL").dictionary_encode()), path)

    build_ok(planted, run_cli)

    assert planted.quarantined("joined") == []
    planted.assert_rows_add_up("joined")
    planted.assert_wide()


@pytest.mark.parametrize("reader", ["engine", "pyarrow"])
def test_unsigned_integers_convert_when_they_fit_and_the_rest_is_quarantined(planted, run_cli, reader):
    samples = [sample(n) for n in range(1, 5)]
    columns = {"hash": pa.array([7, 2**64 - 1, 8, 9], pa.uint64()),
               "WIDTH": pa.array([100, 101, 2**32 - 1, 103], pa.uint32()),
               "HEIGHT": pa.array([200, 201, 202, 203], pa.uint16())}
    if reader == "pyarrow":
        columns["similarity"] = [0.5] * 4
    path = planted.plant("laion2B-en-joined", joined_table(samples, columns))
    assert bool(read_footer(str(path)).constant_float_columns) == (reader == "pyarrow")

    code, _, err = planted.build(run_cli)

    assert code == 0, err
    kept = {url: (r["source_hash"], r["width"], r["height"]) for url, r in planted.planted_rows("joined").items()}
    assert kept == {samples[0][0]: (7, 100, 200), samples[3][0]: (9, 103, 203)}
    assert planted.reasons("joined") == {(PLANTED_NAME, "source_hash (column hash) is not a valid bigint"): 1,
                                         (PLANTED_NAME, "width is not a valid int"): 1}
    originals = sorted((json.loads(r["original_values"])["hash"], json.loads(r["original_values"])["WIDTH"])
                       for r in planted.quarantined("joined"))
    assert originals == [(8, 2**32 - 1), (2**64 - 1, 101)]  # the values as the file holds them
    planted.assert_rows_add_up("joined")
    similarity = {"similarity": 0.5} if reader == "pyarrow" else {}
    planted.assert_wide(wide_row(samples[0], 0, width=100, height=200, **similarity),
                        wide_row(samples[3], 3, width=103, height=203, **similarity))


def test_integers_out_of_range_or_fractional_decimals_are_quarantined_naming_the_column(planted, run_cli):
    samples = [sample(n) for n in range(1, 6)]
    path = planted.plant("laion2B-en-joined", joined_table(samples, {
        "WIDTH": [100, 2**40, 102, 103, 104],
        "HEIGHT": pa.array([Decimal(200), Decimal(201), Decimal(10**20), Decimal(203), Decimal("204.5")],
                           pa.decimal128(25, 1)),
        "hash": ["7", "8", "9", "99999999999999999999", "11"]}))
    assert_engine_reads(path)

    build_ok(planted, run_cli)

    kept = {url: (r["width"], r["height"], r["source_hash"]) for url, r in planted.planted_rows("joined").items()}
    assert kept == {samples[0][0]: (100, 200, 7)}
    assert planted.reasons("joined") == {(PLANTED_NAME, "width is not a valid int"): 1,
                                         (PLANTED_NAME, "height is not a valid int"): 2,
                                         (PLANTED_NAME, "source_hash (column hash) is not a valid bigint"): 1}
    planted.assert_rows_add_up("joined")
    planted.assert_wide(wide_row(samples[0], 0, width=100, height=200))


# --- text that is not UTF-8, long text ------------------------------------------------------------

def test_text_as_bytes_is_decoded_and_bytes_that_are_not_utf8_are_quarantined(planted, run_cli):
    good = ("http://bad-inputs.example/good.jpg", "ünïcödé caption ✓ 🐕")
    broken_bytes = b"caf\xe9 cr\xe8me (latin-1)"
    path = planted.plant("laion2B-en-joined", joined_table([good, sample(2)], {
        "TEXT": pa.array([good[1].encode("utf-8"), broken_bytes], pa.binary())}))
    assert_engine_reads(path)

    build_ok(planted, run_cli)

    kept = {url: (r["text"], r["hash"]) for url, r in planted.planted_rows("joined").items()}
    assert kept == {good[0]: (good[1], laion_hash(*good))}
    assert planted.reasons("joined") == {(PLANTED_NAME, "text is not valid UTF-8"): 1}
    original = json.loads(planted.quarantined("joined")[0]["original_values"])
    assert (original["URL"], base64.b64decode(original["TEXT"])) == (sample(2)[0], broken_bytes)
    planted.assert_rows_add_up("joined")
    planted.assert_wide(wide_row(good, 0))


@pytest.mark.parametrize("reader", ["engine", "pyarrow"])
def test_a_string_column_holding_bytes_that_are_not_utf8_fails_naming_the_file(planted, run_cli, reader):
    texts = pa.array([b"fine", b"caf\xe9"], pa.binary()).cast(pa.string(), safe=False)  # unchecked, as some writers do
    columns = {"TEXT": texts} if reader == "engine" else {"TEXT": texts, "similarity": [0.5, 0.5]}
    path = planted.plant("laion2B-en-joined", joined_table([sample(1), sample(2)], columns))
    assert bool(read_footer(str(path)).constant_float_columns) == (reader == "pyarrow")

    code, _, err = planted.build(run_cli)

    message = (f"{path}: string column TEXT holds bytes that are not valid UTF-8, which the engine cannot read "
               f"(store the column as binary to quarantine those rows, or fix the file)")
    assert_one_line_failure(code, err, f"laion-etl: failed: {message}")
    run = runs(planted.warehouse)[-1]
    assert (run["status"], run["message"]) == ("failed", message)


def test_a_100_kB_caption_is_kept_byte_exact_with_the_reference_hash(planted, run_cli):
    caption = ("légende très longue, 長いキャプション 🐕 " * 3000)[:100_000]
    long_sample = ("http://bad-inputs.example/long.jpg", caption)
    assert len(caption.encode("utf-8")) > 100_000
    joined = planted.plant("laion2B-en-joined", joined_table([long_sample, sample(1)]))
    base = planted.plant("laion2B-en", pa.table({
        "SAMPLE_ID": [46, 47], "URL": [long_sample[0], sample(1)[0]], "TEXT": [caption, sample(1)[1]],
        "HEIGHT": [7, 8], "WIDTH": [9, 10], "LICENSE": ["?", "?"], "NSFW": ["UNLIKELY", "NSFW"],
        "similarity": [0.25, 0.5]}))
    assert_engine_reads(joined)
    assert_engine_reads(base)

    build_ok(planted, run_cli)

    row = planted.planted_rows("joined")[long_sample[0]]
    assert row["text"].encode("utf-8") == caption.encode("utf-8")
    assert row["hash"] == row["source_hash"] == laion_hash(*long_sample)
    assert planted.planted_rows("base")[long_sample[0]]["hash"] == laion_hash(*long_sample)
    planted.assert_rows_add_up("joined")
    planted.assert_wide(wide_row(long_sample, 0, sample_id=46, license="?", nsfw="UNLIKELY"),
                        wide_row(sample(1), 1, sample_id=47, license="?", nsfw="NSFW"))


# --- empty and corrupt files --------------------------------------------------------------------

def test_an_empty_file_with_a_schema_contributes_nothing(planted, run_cli):
    planted.plant("laion2B-en-joined", JOINED_SCHEMA.empty_table())

    err = build_ok(planted, run_cli)

    assert "laion-etl:" not in err and "Traceback" not in err
    assert planted.quarantined("joined") == []
    assert planted.planted_rows("joined") == {}
    planted.assert_rows_add_up("joined")
    planted.assert_wide()


def test_a_corrupt_data_page_fails_the_build_naming_the_file(planted, run_cli):
    rows = 2000
    path = planted.sources / "laion2B-en" / PLANTED_NAME
    pq.write_table(pa.table({
        "SAMPLE_ID": list(range(rows)), "URL": [f"http://bad-inputs.example/c{i}.jpg" for i in range(rows)],
        "TEXT": [f"caption {i}" for i in range(rows)], "HEIGHT": [1] * rows, "WIDTH": [2] * rows,
        "LICENSE": ["?"] * rows, "NSFW": ["UNLIKELY"] * rows, "similarity": [i / rows for i in range(rows)]}),
        path, data_page_size=4096)
    text_chunk = pq.ParquetFile(path).metadata.row_group(0).column(2)
    damaged = bytearray(path.read_bytes())
    middle = (text_chunk.dictionary_page_offset or text_chunk.data_page_offset) + text_chunk.total_compressed_size // 2
    damaged[middle:middle + 32] = bytes(b ^ 0xFF for b in damaged[middle:middle + 32])
    path.write_bytes(bytes(damaged))  # the footer still reads: only a page in the middle is broken
    assert read_footer(str(path)).num_rows == rows

    code, _, err = planted.build(run_cli)

    message = f"{path}: column TEXT cannot be decoded (Corrupt snappy compressed data.)"
    assert_one_line_failure(code, err, f"laion-etl: failed: {message}")
    run = runs(planted.warehouse)[-1]
    assert (run["status"], run["message"]) == ("failed", message)


# --- the quarantine reads the sources again only where rows were rejected -------------------------

def watched_build(config: Path, *options: str) -> dict:
    """`laion-etl build` in a process of its own under tests/source_reads.py's watch."""
    done = subprocess.run([sys.executable, str(REPO / "tests/source_reads.py"), "--config", str(config), *options],
                          cwd=REPO, env=dict(jvm_env(), PYTHONPATH=str(REPO)), capture_output=True, text=True,
                          timeout=900)
    assert done.stdout.strip(), done.stderr[-3000:]
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr[-3000:]}


def test_the_access_time_sensor_sees_a_read(tmp_path):
    path = tmp_path / "probe.parquet"
    pq.write_table(pa.table({"a": [1]}), path)
    status = path.stat()
    os.utime(path, ns=(status.st_mtime_ns - 10 ** 12, status.st_mtime_ns))
    before = path.stat().st_atime_ns
    path.stat()
    assert path.stat().st_atime_ns == before
    pq.read_table(path)
    assert path.stat().st_atime_ns != before, "this file system records no reads (noatime): the sensor is blind"


@pytest.mark.parametrize(("sql", "never_more"), [
    ("select url, laion_hash(url, text) as hash from src_laion_base", True),
    ("with source as (select * from src_laion_base) select * from source where width > 0", True),
    ("select distinct url from src_laion_base", True),
    ("select url, count(*) as n from src_laion_base group by url", True),
    ("select url, count(*) over (partition by url) as n from src_laion_base", True),
    ("select count(*) as n from src_laion_base", False),  # one row even when every row was rejected
    ("select b.url from src_laion_base b join cfg_subsets s on b.subset = s.subset", False),
    ("select url from src_laion_base, cfg_subsets", False),
    ("select url from src_laion_base union all select url from src_laion_base", False),
    ("select explode(array(url, text)) as value from src_laion_base", False),
    ("select inline_outer(array(struct(url))) from src_laion_base", False),
    ("select url from src_laion_base lateral view explode(array(1, 2)) t as n", False),
    ("select url, count(*) from src_laion_base group by cube(url)", False),
    ("select from where", False),
])
def test_only_sql_that_cannot_make_more_rows_than_it_reads_spares_the_second_scan(sql, never_more):
    from etl.build.materialise import never_adds_rows

    assert never_adds_rows(sql) is never_more


def test_every_ods_query_over_source_files_cannot_make_more_rows():
    from etl.build.materialise import never_adds_rows
    from etl.project.project import load_project

    sql = {t.name: t.sql for t in load_project().tables if any(v.startswith("src_laion_") for v in t.input_views)}
    assert sorted(sql) == ["ods_laion_aesthetic", "ods_laion_base", "ods_laion_joined"]
    assert all(never_adds_rows(text) for text in sql.values())


@pytest.mark.parametrize("engine", ["sail", pytest.param("spark", marks=[pytest.mark.jvm, pytest.mark.timeout(1200)])])
def test_a_clean_rebuild_reads_each_source_file_once(planted, engine):
    if engine == "spark":
        need_java()
    # The first build only has to exist (Sail makes it in seconds); the watched rebuild is the engine's.
    first = watched_build(write_planted_config(planted.sources.parent), "--layers", "ods")
    assert first["exit_code"] == 0, first["stderr"]
    config = write_planted_config(planted.sources.parent, name=f"planted-{engine}", engine=engine)

    rebuild = watched_build(config, "--layers", "ods", "--force")

    assert rebuild["exit_code"] == 0, rebuild["stderr"]
    assert rebuild["watched"] == sum(len(list((planted.sources / folder).glob("*.parquet")))
                                     for folders in FAMILY_FOLDERS.values() for folder in folders) > 6
    assert rebuild["read_again"] == []
    assert rebuild["rejected_asked"] == []
    assert read_delta(planted.warehouse / "meta/quarantine").num_rows == 0
    for family in FAMILY_FOLDERS:
        planted.assert_rows_add_up(family)


def test_rejected_rows_are_read_again_only_in_their_subset_and_replaced_on_each_rebuild(planted, run_cli, monkeypatch):
    build_ok(planted, run_cli)
    reads = SourceReads(monkeypatch.setattr)
    bad_text, bad_width = sample(2), sample(3)
    planted.plant("laion2B-en-joined", joined_table([sample(1), bad_text, bad_width], {
        "TEXT": pa.array([sample(1)[1].encode(), b"caf\xe9 cr\xe8me", bad_width[1].encode()], pa.binary()),
        "WIDTH": ["101", "102", "abc"]}))
    expected = {(PLANTED_NAME, "text is not valid UTF-8"): 1, (PLANTED_NAME, "width is not a valid int"): 1}
    english_joined = sorted(f"laion2B-en-joined/{p.name}" for p in (planted.sources / "laion2B-en-joined").glob("*"))

    build_ok(planted, run_cli)  # only laion2B-en of the joined table and downstream are rebuilt

    assert planted.reasons("joined") == expected
    assert {json.loads(r["original_values"])["URL"] for r in planted.quarantined("joined")} == {bad_text[0],
                                                                                               bad_width[0]}
    planted.assert_rows_add_up("joined")
    assert reads.rejected_asked == [("joined", ("laion2B-en",))]
    assert reads.read_again() == english_joined  # the sensor sees a second read where there is one
    first_run = {r["run_id"] for r in planted.quarantined("joined")}
    assert len(reads.watched) == len(english_joined)

    reads.forget()
    build_ok(planted, run_cli, "--force")  # every subset built: the clean one is not scanned again

    assert planted.reasons("joined") == expected
    assert {r["run_id"] for r in planted.quarantined("joined")}.isdisjoint(first_run)
    assert reads.rejected_asked == [("joined", ("laion2B-en",))]

    assert reads.read_again() == english_joined
    reads.forget()
    (planted.sources / "laion2B-en-joined" / PLANTED_NAME).unlink()

    build_ok(planted, run_cli)  # the bad file gone: its quarantined rows go, and nothing is read twice

    assert planted.quarantined("joined") == []
    assert reads.rejected_asked == []
    assert len(reads.watched) == len(english_joined) - 1
    assert reads.read_again() == []
    planted.assert_rows_add_up("joined")
