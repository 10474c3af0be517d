"""Source files the build cannot use (zero bytes, truncated, corrupt, a copy of another part file,
one file listed in two subsets, data the engine cannot decode): refused with a message naming the
file and the reason, recorded in `meta.source_files` and in the run's results, and the build stops
(`on_bad_file: fail`, the default) or goes on without them (`on_bad_file: skip`) to exactly the
tables a tree without those files gives.
"""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl.cli import main
from etl.ingest.storage import read_footer
from etl.project.project import load_project
from helpers import (INVALID_UTF8_TEXT, assert_same_rows, committed, one_line, read_delta, runs, table_dir,
                     write_invalid_utf8_base_file, write_planted_config)
from planted import write_planted_sources

TABLES = {t.name: t for t in load_project().tables}
BASE_PART = "laion2B-en/part-00000.parquet"


def zero_bytes(sources):
    path = sources / "laion2B-en/part-00009.parquet"
    path.write_bytes(b"")
    return path, "empty file (0 bytes), not parquet"


def truncated(sources):
    path = sources / "laion2B-en/part-00009.parquet"
    data = (sources / BASE_PART).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "not a readable parquet file"


def corrupt_footer(sources):
    path = sources / "laion2B-en/part-00009.parquet"
    data = bytearray((sources / BASE_PART).read_bytes())
    data[-40:-8] = b"\xff" * 32  # the footer's bytes, with the magic numbers intact
    path.write_bytes(bytes(data))
    return path, "not a readable parquet file"


def duplicate_part(sources):
    path = sources / "laion2B-en/part-00009.parquet"
    shutil.copyfile(sources / BASE_PART, path)
    return path, f"duplicate of {sources / BASE_PART}"


BAD_FILES = {"zero_bytes": zero_bytes, "truncated": truncated, "corrupt_footer": corrupt_footer,
             "duplicate_part": duplicate_part}


# Files whose footer reads but whose data the engine cannot decode: found only when the engine reads them.

def corrupt_page(sources):
    """A base part whose TEXT pages are damaged in the middle (the footer is intact)."""
    path = sources / "laion2B-en/part-00009.parquet"
    rows = 2000
    pq.write_table(pa.table({
        "SAMPLE_ID": list(range(rows)), "URL": [f"http://bad-files.example/{i}.jpg" for i in range(rows)],
        "TEXT": [f"caption {i}" for i in range(rows)], "HEIGHT": [1] * rows, "WIDTH": [2] * rows,
        "LICENSE": ["?"] * rows, "NSFW": ["UNLIKELY"] * rows, "similarity": [i / rows for i in range(rows)]}),
        path, data_page_size=4096)
    text = pq.ParquetFile(path).metadata.row_group(0).column(2)
    damaged = bytearray(path.read_bytes())
    middle = text.dictionary_page_offset + text.total_compressed_size // 2
    damaged[middle:middle + 32] = bytes(b ^ 0xFF for b in damaged[middle:middle + 32])
    path.write_bytes(bytes(damaged))
    return path, "column TEXT cannot be decoded (Corrupt snappy compressed data.)"


def invalid_utf8_string(sources, similarity=(0.25, 0.5)):
    """A base part whose string column TEXT holds bytes that are not UTF-8 (written unchecked, as some writers do)."""
    return write_invalid_utf8_base_file(sources / "laion2B-en/part-00009.parquet", similarity), INVALID_UTF8_TEXT


def invalid_utf8_string_read_by_pyarrow(sources):
    """The same, with a constant float column: the file takes the pyarrow detour (Sail's NaN defect)."""
    path, reason = invalid_utf8_string(sources, similarity=(0.5, 0.5))
    assert read_footer(str(path)).constant_float_columns == ("similarity",)
    return path, reason


UNDECODABLE_FILES = {"corrupt_page": corrupt_page, "invalid_utf8_string": invalid_utf8_string,
                     "invalid_utf8_string_read_by_pyarrow": invalid_utf8_string_read_by_pyarrow}


def config_for(root, warehouse, policy):
    return write_planted_config(root, warehouse, name=warehouse.name, extra=f"on_bad_file: {policy}\n")


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_bad_file_stops_the_build_by_default_naming_file_and_reason(tmp_path, run_cli, bad):
    write_planted_sources(tmp_path / "sources")
    path, reason = BAD_FILES[bad](tmp_path / "sources")
    warehouse = tmp_path / "warehouse"
    code, _, err = run_cli("build", "--config", str(config_for(tmp_path, warehouse, "fail")))

    assert code == 1
    line = one_line(err)
    assert str(path) in line and reason in line and "on_bad_file" in line
    assert not any(committed(warehouse, name) for name in TABLES), "nothing may be built under on_bad_file: fail"
    refused = read_delta(warehouse / "meta/source_files").to_pylist()
    assert [(r["path"], r["status"], r["table_name"]) for r in refused] == [(str(path), "refused", "ods_laion_base")]
    assert reason in refused[0]["reason"]
    run = runs(warehouse)[-1]
    assert run["status"] == "failed" and str(path) in run["message"]
    results = [r for r in read_delta(warehouse / "meta/dq_results").to_pylist() if r["rule_id"] == "source_files_readable"]
    assert [(r["table_name"], r["status"]) for r in results] == [("ods_laion_base", "fail")]
    assert str(path) in json.loads(results[0]["sample"])[0]
    assert str(path) in (tmp_path / "warehouse/reports/latest.html").read_text()


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_bad_file_is_skipped_under_skip_and_the_rest_is_built(tmp_path, run_cli, caplog, bad):
    write_planted_sources(tmp_path / "sources")
    clean_build = tmp_path / "clean"
    assert main(["-q", "build", "--config", str(config_for(tmp_path, clean_build, "fail"))]) == 0
    path, reason = BAD_FILES[bad](tmp_path / "sources")
    warehouse = tmp_path / "warehouse"
    code, _, err = run_cli("build", "--config", str(config_for(tmp_path, warehouse, "skip")))

    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(path) in w and reason in w for w in warnings), warnings
    for name in TABLES:
        assert_same_rows(read_delta(table_dir(warehouse, name)), read_delta(table_dir(clean_build, name)))
    files = read_delta(warehouse / "meta/source_files").to_pylist()
    refused = [r for r in files if r["status"] == "refused"]
    assert [(r["path"], r["table_name"]) for r in refused] == [(str(path), "ods_laion_base")]
    results = [r for r in read_delta(warehouse / "meta/dq_results").to_pylist() if r["rule_id"] == "source_files_readable"]
    assert [(r["table_name"], r["status"]) for r in results] == [("ods_laion_base", "warn")]


def test_subset_whose_every_base_file_is_refused_fails_even_under_skip(tmp_path, run_cli):
    write_planted_sources(tmp_path / "sources")
    (tmp_path / "sources/laion1B-nolang/part-00000.parquet").write_bytes(b"")
    code, _, err = run_cli("build", "--config", str(config_for(tmp_path, tmp_path / "warehouse", "skip")))
    assert code == 1
    line = one_line(err)
    assert "sources.laion1B-nolang.base" in line and "every file was refused" in line


def test_dry_run_lists_refused_files(tmp_path, run_cli):
    write_planted_sources(tmp_path / "sources")
    path, reason = zero_bytes(tmp_path / "sources")
    code, out, _ = run_cli("build", "--config", str(config_for(tmp_path, tmp_path / "warehouse", "skip")), "--dry-run")
    assert code == 0
    assert f"refused (skip): {path}: {reason}" in out


def test_on_bad_file_must_be_fail_or_skip(tmp_path, run_cli):
    write_planted_sources(tmp_path / "sources")
    code, _, err = run_cli("build", "--config", str(config_for(tmp_path, tmp_path / "warehouse", "ignore")))
    assert code == 2
    assert "on_bad_file" in one_line(err)


def test_an_unreachable_store_fails_the_run_instead_of_refusing_the_file(tmp_path, monkeypatch):
    from etl.ingest import sources
    from etl.ingest.sources import SourceError, resolve_files

    write_planted_sources(tmp_path / "sources")

    def unreachable(path):
        raise OSError(f"When getting information for key '{path}' in bucket 'lake': AWS Error UNKNOWN "
                      "(HTTP status 503) during HeadObject operation: No response body.")

    monkeypatch.setattr(sources, "read_footer", unreachable)
    with pytest.raises(SourceError, match=r"part-00000\.parquet: cannot be read \(.*HTTP status 503"):
        resolve_files("base", "laion2B-en", (str(tmp_path / "sources/laion2B-en/*.parquet"),))


def test_a_file_listed_in_two_subsets_is_refused_naming_both(tmp_path, run_cli):
    write_planted_sources(tmp_path / "sources")
    shared = tmp_path / "sources" / BASE_PART
    config = config_for(tmp_path, tmp_path / "warehouse", "skip")
    nolang_base = f"base: {tmp_path}/sources/laion1B-nolang/*.parquet"
    config.write_text(config.read_text().replace(nolang_base, f"base: [{tmp_path}/sources/laion1B-nolang/*.parquet, "
                                                              f"{shared}]"))

    code, out, _ = run_cli("build", "--config", str(config), "--dry-run")

    assert code == 0
    refused = [line.strip() for line in out.splitlines() if "refused (skip)" in line]
    assert refused == [f"refused (skip): {shared}: listed in two subsets, laion2B-en and laion1B-nolang: "
                       f"its rows would be read into both"]


@pytest.mark.parametrize("bad", sorted(UNDECODABLE_FILES))
def test_a_file_the_engine_cannot_decode_is_skipped_under_skip_and_the_rest_is_built(tmp_path, run_cli, caplog, bad):
    write_planted_sources(tmp_path / "sources")
    clean_build = tmp_path / "clean"
    assert main(["-q", "build", "--config", str(config_for(tmp_path, clean_build, "fail"))]) == 0
    path, reason = UNDECODABLE_FILES[bad](tmp_path / "sources")
    warehouse = tmp_path / "warehouse"

    code, _, err = run_cli("build", "--config", str(config_for(tmp_path, warehouse, "skip")))

    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(path) in w and reason in w for w in warnings), warnings
    for name in TABLES:
        assert_same_rows(read_delta(table_dir(warehouse, name)), read_delta(table_dir(clean_build, name)))
    refused = [r for r in read_delta(warehouse / "meta/source_files").to_pylist() if r["status"] == "refused"]
    assert [(r["path"], r["table_name"]) for r in refused] == [(str(path), "ods_laion_base")]
    assert reason in refused[0]["reason"]
    results = [r for r in read_delta(warehouse / "meta/dq_results").to_pylist() if r["rule_id"] == "source_files_readable"]
    assert [(r["table_name"], r["status"]) for r in results] == [("ods_laion_base", "warn")]
    assert runs(warehouse)[-1]["status"] == "succeeded"


@pytest.mark.parametrize("bad", sorted(UNDECODABLE_FILES))
def test_a_file_the_engine_cannot_decode_stops_the_build_under_fail_naming_file_and_column(tmp_path, run_cli, bad):
    write_planted_sources(tmp_path / "sources")
    path, reason = UNDECODABLE_FILES[bad](tmp_path / "sources")
    warehouse = tmp_path / "warehouse"

    code, _, err = run_cli("build", "--config", str(config_for(tmp_path, warehouse, "fail")))

    assert code == 1
    assert one_line(err).startswith(f"laion-etl: failed: {path}: {reason}")
    assert not committed(warehouse, "ods_laion_base")
    refused = [r for r in read_delta(warehouse / "meta/source_files").to_pylist() if r["status"] == "refused"]
    assert [(r["path"], r["table_name"]) for r in refused] == [(str(path), "ods_laion_base")]
    run = runs(warehouse)[-1]
    assert run["status"] == "failed" and str(path) in run["message"]
