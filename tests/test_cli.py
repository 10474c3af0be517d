"""`laion-etl` in-process on Sail: exit codes, one-line errors, the dry-run plan, tables, sql, synth."""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from etl.build.materialise import StepResult
from etl.build.summary import format_results, format_rule_failures
from etl.cli import build_parser, main
from etl.project.config import load_config
from etl.project.project import load_project
from helpers import one_line, read_delta
from planted import planted_config, write_planted_sources

TABLE_ROWS = {
    "ods_image_index": ("ods", 3),
    "ods_laion_aesthetic": ("ods", 6),
    "ods_laion_base": ("ods", 6),
    "ods_laion_joined": ("ods", 6),
    "dmd_image_path_suffix_aesthetics": ("dmd", 7),  # 6 base rows + F, held by joined rows only
    "dms_laion_wide": ("dms", 6),
}
WIDE_PATH = ("dms", "dms_laion_wide")


@pytest.fixture(autouse=True)
def no_env_overrides(monkeypatch):
    """A developer's own LAION_ETL__* variables must not change what these tests see."""
    for name in list(os.environ):
        if name.startswith("LAION_ETL__"):
            monkeypatch.delenv(name)


@pytest.fixture
def cli(capsys):
    """Like conftest's run_cli, but argparse's own usage errors (SystemExit) give their code too."""

    def run(*args: str):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def assert_one_error_line(err: str, prefix: str = "laion-etl: error: ") -> str:
    lines = error_lines(err)
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line on stderr, got: {lines}"
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


def assert_one_failure_line(err: str) -> str:
    """Exit-1 failures: exactly one `laion-etl: failed:` line (log lines may precede it), no traceback."""
    assert "Traceback" not in err
    failure = one_line(err)
    assert failure.startswith("laion-etl: failed: ")
    return failure


@pytest.fixture(scope="module")
def planted_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_sources")
    write_planted_sources(root)
    return root


def config_file(folder: Path, sources: Path, warehouse: Path, text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "planted.yaml"
    path.write_text(text if text is not None else planted_config(sources, warehouse), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, planted_root):
    """One real build on the planted sources, shared by the read-only tests below."""
    folder = tmp_path_factory.mktemp("cli_built")
    warehouse = folder / "warehouse"
    config = config_file(folder, planted_root, warehouse)
    assert main(["-q", "build", "--config", str(config)]) == 0
    return config, warehouse


@pytest.fixture
def built_copy(built, planted_root, tmp_path):
    """A private copy of the built warehouse, for tests that rebuild (versions must not leak)."""
    _, warehouse = built
    copy = tmp_path / "warehouse"
    shutil.copytree(warehouse, copy)
    return config_file(tmp_path, planted_root, copy), copy


# --- bad configuration: exit 2, one line naming the key --------------------------------------


@pytest.mark.parametrize("mutate, key", [
    (lambda t: t + "warehous: typo\n", "warehous"),
    (lambda t: t.replace("engine: sail", "engine: duckdb"), "engine"),
    (lambda t: t.replace("format: delta", "format: orc"), "format"),
    (lambda t: re.sub(r"(?m)^warehouse: .*\n", "", t), "warehouse"),
    (lambda t: t.replace("shuffle_partitions: 2", "shuffle_partitions: 0"), "spark.shuffle_partitions"),
    (lambda t: t.replace("  laion1B-nolang:\n", "  laion1B-nolang:\n    langauge: xx\n"),
     "sources.laion1B-nolang.langauge"),
    (lambda t: re.sub(r"(?m)^    joined: .*laion1B-nolang-joined.*\n", "", t), "sources.laion1B-nolang.joined"),
    (lambda t: t.replace("engine: sail", "engine: connect"), "connect_url"),
    (lambda t: t + "layers:\n  gold: {partition_by: [subset]}\n", "layers.gold"),
    (lambda t: t + "sources: [\n", "not valid YAML"),
])
def test_build_with_bad_config_exits_2_with_one_line(cli, tmp_path, planted_root, mutate, key):
    good = planted_config(planted_root, tmp_path / "warehouse")
    bad = mutate(good)
    assert bad != good
    config = config_file(tmp_path, planted_root, tmp_path / "warehouse", bad)
    code, out, err = cli("build", "--config", config)
    assert code == 2
    line = assert_one_error_line(err)
    assert key in line
    assert out == ""
    assert not (tmp_path / "warehouse").exists()


def test_missing_config_file_exits_2(cli, tmp_path):
    code, _, err = cli("build", "--config", tmp_path / "absent.yaml")
    assert code == 2
    line = assert_one_error_line(err)
    assert "config file not found" in line and "absent.yaml" in line


@pytest.mark.parametrize("command", ["sql", "tables"])
def test_sql_and_tables_take_config_and_report_bad_config(cli, tmp_path, command):
    config = tmp_path / "bad.yaml"
    config.write_text("warehouse: wh\nsources: {}\n")
    code, _, err = cli(command, "--config", config)
    assert code == 2
    assert "sources" in assert_one_error_line(err)


# --- missing inputs: exit 2 before any engine starts ------------------------------------------


def test_glob_matching_nothing_exits_2_naming_subset_family_and_glob(cli, tmp_path, planted_root, no_engine):
    text = planted_config(planted_root, tmp_path / "warehouse").replace(
        f"{planted_root}/laion1B-nolang-joined/*.parquet", f"{planted_root}/laion1B-nolang-joined/*.parq")
    config = config_file(tmp_path, planted_root, tmp_path / "warehouse", text)
    code, _, err = cli("build", "--config", config)
    assert code == 2
    line = assert_one_error_line(err)
    assert "sources.laion1B-nolang.joined" in line
    assert f"{planted_root}/laion1B-nolang-joined/*.parq" in line
    assert not (tmp_path / "warehouse").exists()


def test_missing_images_folder_exits_2_naming_it(cli, tmp_path, planted_root, no_engine):
    text = planted_config(planted_root, tmp_path / "warehouse").replace(
        f"{planted_root}/images", f"{planted_root}/no-such-images")
    config = config_file(tmp_path, planted_root, tmp_path / "warehouse", text)
    code, _, err = cli("build", "--config", config, "--dry-run")
    assert code == 2
    line = assert_one_error_line(err)
    assert line.startswith("laion-etl: error: images:")
    assert f"{planted_root}/no-such-images" in line


def test_unknown_layer_exits_2(cli, tmp_path, planted_root, no_engine):
    config = config_file(tmp_path, planted_root, tmp_path / "warehouse")
    code, _, err = cli("build", "--config", config, "--layers", "ods,nope")
    assert code == 2
    line = assert_one_error_line(err)
    assert "--layers" in line and "'nope'" in line


def test_unknown_subset_exits_2(cli, tmp_path, planted_root, no_engine):
    config = config_file(tmp_path, planted_root, tmp_path / "warehouse")
    code, _, err = cli("build", "--config", config, "--subsets", "laion2B-en,unknown")
    assert code == 2
    line = assert_one_error_line(err)
    assert "--subsets" in line and "'unknown'" in line


# --- dry run -----------------------------------------------------------------------------------


def test_dry_run_prints_the_plan_in_build_order_and_touches_nothing(cli, tmp_path, planted_root, no_engine):
    warehouse = tmp_path / "warehouse"
    config = config_file(tmp_path, planted_root, warehouse)
    code, out, err = cli("build", "--config", config, "--dry-run")
    assert code == 0, err
    assert not warehouse.exists()

    assert f"engine sail, format delta, warehouse {warehouse}" in out
    assert "subsets: laion2B-en, laion1B-nolang (rebuild the partitions whose inputs changed)" in out
    names = [f"laion.{t.name}" for t in load_project().tables]
    assert set(names) == {f"laion.{n}" for n in TABLE_ROWS}
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if len(cells) >= 3 and cells[0].isdigit():
            rows[int(cells[0])] = (cells[1], cells[2], line)
    assert [rows[step][1] for step in sorted(rows)] == names
    layers = [rows[step][0] for step in sorted(rows)]
    assert layers == sorted(layers, key=("ods", "dmd", "dms").index)
    assert layers.count("ods") == 4 and layers[-2:] == ["dmd", "dms"]

    by_table = {table: line for _, table, line in rows.values()}
    assert "3 base files (6 rows)" in by_table["laion.ods_laion_base"]
    assert "2 joined files (6 rows)" in by_table["laion.ods_laion_joined"]
    assert "2 aesthetic files (6 rows)" in by_table["laion.ods_laion_aesthetic"]
    assert "1 img2dataset shard in 1 folder" in by_table["laion.ods_image_index"]
    assert "laion.ods_laion_base" in by_table["laion.dmd_image_path_suffix_aesthetics"]
    assert "laion.dmd_image_path_suffix_aesthetics" in by_table["laion.dms_laion_wide"]
    assert "laion.ods_laion_joined" in by_table["laion.dms_laion_wide"]


def test_dry_run_with_subsets_counts_only_those_inputs(cli, tmp_path, planted_root, no_engine):
    config = config_file(tmp_path, planted_root, tmp_path / "warehouse")
    code, out, _ = cli("build", "--config", config, "--dry-run", "--subsets", "laion1B-nolang", "--layers", "ods")
    assert code == 0
    assert "subsets: laion1B-nolang (replace these subset partitions)" in out
    assert "1 base file (1 row)" in out and "1 joined file (1 row)" in out
    assert "0 aesthetic files (0 rows)" in out
    assert "dmd_" not in out and "dms_" not in out
    assert not (tmp_path / "warehouse").exists()


def test_auto_shuffle_partitions_follow_the_input_bytes(tmp_path, planted_root, monkeypatch):
    from etl.build import plan as plan_module
    from etl.project.config import load_config
    from etl.build.plan import make_plan

    text = Path(config_file(tmp_path, planted_root, tmp_path / "warehouse")).read_text()
    config = load_config(config_file(tmp_path, planted_root, tmp_path / "warehouse",
                                     text.replace("shuffle_partitions: 2", "shuffle_partitions: auto")))
    plan = make_plan(load_project(), config)
    assert plan.input_bytes == sum(p.stat().st_size for p in planted_root.rglob("*.parquet")
                                   if "images" not in p.parts)
    monkeypatch.setattr(plan_module, "local_cores", lambda: 2)
    assert plan.shuffle_partitions == 2  # kilobytes of input: one partition per core
    monkeypatch.setattr(plan_module, "INPUT_BYTES_PER_SHUFFLE_PARTITION", plan.input_bytes // 10)
    assert plan.shuffle_partitions == 11
    fixed = load_config(config_file(tmp_path, planted_root, tmp_path / "warehouse"))
    assert make_plan(load_project(), fixed).shuffle_partitions == 2 == fixed.spark.shuffle_partitions


# --- builds -------------------------------------------------------------------------------------


def test_building_dmd_on_an_empty_warehouse_names_the_missing_upstream(cli, tmp_path, planted_root):
    warehouse = tmp_path / "warehouse"
    config = config_file(tmp_path, planted_root, warehouse)
    code, _, err = cli("-q", "build", "--config", config, "--layers", "dmd")
    assert code == 1
    line = assert_one_failure_line(err)
    match = re.search(r"needs laion\.(ods_\w+), which is not built yet", line)
    assert match, line
    assert match.group(1) in TABLE_ROWS
    assert "build layer ods first" in line
    assert not (warehouse / "dmd").exists()


def parse_tables(out: str) -> dict[str, tuple[str, str, str, str]]:
    """`tables` output as {name: (layer, version, rows, path)}."""
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0].startswith("laion."):
            rows[cells[0].removeprefix("laion.")] = tuple(cells[1:5])
    return rows


def test_tables_lists_every_table_with_layer_version_and_rows(cli, built):
    config, warehouse = built
    code, out, err = cli("tables", "--config", config)
    assert code == 0, err
    listed = parse_tables(out)
    assert set(listed) == set(TABLE_ROWS)
    for name, (layer, rows) in TABLE_ROWS.items():
        assert listed[name] == (layer, "0", str(rows), str(warehouse / layer / name)), name


def test_tables_on_an_empty_warehouse_says_so(cli, tmp_path, planted_root):
    config = config_file(tmp_path, planted_root, tmp_path / "warehouse")
    code, out, _ = cli("tables", "--config", config)
    assert code == 0
    assert "no tables yet" in out
    assert parse_tables(out) == {}


def test_sql_prints_the_query_result(cli, built):
    config, _ = built
    code, out, err = cli("sql", "--config", config, "select count(*) as n from laion.dms_laion_wide")
    assert code == 0, err
    lines = [line.strip() for line in out.splitlines()]
    assert lines[0] == "n"
    assert lines[2] == "6"
    assert "1 row" in lines


def test_sql_limit_says_when_more_rows_exist(cli, built):
    config, _ = built
    code, out, _ = cli("sql", "--config", config, "--limit", "2", "select hash from laion.dms_laion_wide;")
    assert code == 0
    assert "2 rows" in out and "first 2 rows shown" in out


def test_sql_with_a_bad_query_exits_1_with_one_line(cli, built):
    config, _ = built
    code, out, err = cli("sql", "--config", config, "select nope from laion.no_such_table")
    assert code == 1
    assert_one_failure_line(err)
    assert out == ""


def test_sql_without_a_query_reads_statements_from_stdin(cli, built, monkeypatch):
    config, _ = built
    monkeypatch.setattr(sys, "stdin", io.StringIO(
        "select subset, count(*) as n from laion.dms_laion_wide\n"
        "group by subset order by subset;\n"
        "select broken from nowhere;\n"
        "quit\n"
        "select 'after quit' as never;\n"))
    code, out, err = cli("sql", "--config", config)
    assert code == 0, err
    counts = {}
    for line in out.splitlines():
        cells = line.replace(">", " ").split()
        if len(cells) >= 2 and cells[-2].startswith("laion") and cells[-1].isdigit():
            counts[cells[-2]] = int(cells[-1])
    assert counts == {"laion1B-nolang": 1, "laion2B-en": 5}
    assert "laion.dms_laion_wide" in out  # the greeting lists the registered tables
    assert "after quit" not in out and "never" not in out
    assert "error:" in err  # the broken statement is reported, the prompt goes on


WRITES = [
    "delete from laion.dms_laion_wide where true",
    "insert into laion.dms_laion_wide select * from laion.dms_laion_wide",
    "update laion.dms_laion_wide set text = 'x'",
    "insert overwrite laion.dms_laion_wide select * from laion.dms_laion_wide",
    "merge into laion.runs as t using laion.runs as s on t.run_id = s.run_id when matched then delete",
    "drop table laion.dms_laion_wide",
    "create table laion.copy as select * from laion.dms_laion_wide",
    "with w as (select * from laion.dms_laion_wide) insert into laion.dms_laion_wide select * from w",
    "explain extended delete from laion.dms_laion_wide",
    "set spark.sql.shuffle.partitions=1",
    "cache table laion.dms_laion_wide",
    "select reflect('java.lang.System', 'exit', 0)",
]


@pytest.mark.parametrize("statement", WRITES)
def test_sql_refuses_anything_but_reads_before_it_runs(cli, built, statement):
    config, warehouse = built
    before = DeltaTable(str(warehouse / "dms" / "dms_laion_wide")).version()
    code, out, err = cli("sql", "--config", config, f"select 1; {statement}")
    assert code == 2, err
    assert [line for line in err.splitlines() if line.strip()] == [err.strip()], err
    assert err.startswith("laion-etl: error: ") and " refused: " in err and out == ""
    assert DeltaTable(str(warehouse / "dms" / "dms_laion_wide")).version() == before


def test_sql_reads_paths_only_under_the_warehouse_and_the_sources(cli, built, tmp_path):
    config, warehouse = built
    stray = tmp_path / "stray.parquet"
    pq.write_table(pa.table({"secret": [1]}), stray)
    code, _, err = cli("sql", "--config", config, f"select * from parquet.`{stray}`")
    assert code == 2 and "reads paths only under the warehouse" in err, err
    code, _, err = cli("sql", "--config", config, f"select * from delta.`{warehouse}/dms/../../{stray.parent.name}`")
    assert code == 2 and "reads paths only under the warehouse" in err, err
    code, out, err = cli("sql", "--config", config, f"select count(*) as n from delta.`{warehouse}/dms/dms_laion_wide`")
    assert code == 0, err
    assert out.splitlines()[2].strip() == "6"


def test_sql_sees_the_bookkeeping_tables(cli, built):
    config, _ = built
    for table in ("runs", "dq_results", "quarantine", "source_files", "table_inputs"):
        code, out, err = cli("sql", "--config", config, f"select count(*) as n from laion.{table}")
        assert code == 0, f"{table}: {err}"
        assert int(out.splitlines()[2]) >= (1 if table != "quarantine" else 0), table


def test_the_prompt_refuses_writes_and_runs_several_statements_on_a_line(cli, built, monkeypatch):
    config, warehouse = built
    monkeypatch.setattr(sys, "stdin", io.StringIO(
        "delete from laion.dms_laion_wide where true;\n"
        "select 'first' as a; select 'second' as b;\n"))
    code, out, err = cli("sql", "--config", config)
    assert code == 0, err
    assert "error: DELETE statements are refused: laion-etl sql only reads" in err
    assert "first" in out and "second" in out and out.index("first") < out.index("second")
    assert read_delta(warehouse / "dms" / "dms_laion_wide").num_rows == 6


def test_forced_rebuild_increments_every_version_and_says_how_long_the_run_took(cli, built_copy):
    config, warehouse = built_copy
    started = time.monotonic()
    code, out, err = cli("-q", "build", "--config", config, "--force")
    elapsed = time.monotonic() - started
    assert code == 0, err
    reported = float(re.search(r"^6 tables built in ([\d.]+) s under ", out, re.MULTILINE).group(1))
    step_seconds = [float(line.split()[-1]) for line in out.splitlines()
                    if line.split()[:1] in (["ods"], ["dmd"], ["dms"])]
    assert len(step_seconds) == 6
    # The run's wall time (the engine's start, the checks, the report): more than its steps' sum,
    # all but the config's loading of what the command took. It is printed to a tenth of a second,
    # so it may be up to 0.05 s above the time measured here.
    assert sum(step_seconds) - 0.1 < reported <= elapsed + 0.05
    assert reported > 0.9 * elapsed, (reported, elapsed)
    code, out, _ = cli("tables", "--config", config)
    listed = parse_tables(out)
    assert {name: (v[0], v[1], v[2]) for name, v in listed.items()} == {
        name: (layer, "1", str(rows)) for name, (layer, rows) in TABLE_ROWS.items()}


def test_build_with_subsets_only_rewrites_that_subset(cli, built_copy):
    config, warehouse = built_copy
    wide_path = str(warehouse.joinpath(*WIDE_PATH))

    def files_by_subset():
        actions = pa.table(DeltaTable(wide_path).get_add_actions(flatten=True)).to_pylist()
        files = {}
        for action in actions:
            files.setdefault(action["partition.subset"], set()).add(action["path"])
        return files

    before = files_by_subset()
    assert set(before) == {"laion2B-en", "laion1B-nolang"}
    code, _, err = cli("-q", "build", "--config", config, "--subsets", "laion1B-nolang")
    assert code == 0, err

    table = DeltaTable(wide_path)
    assert table.version() == 1
    rows = table.to_pyarrow_table().to_pylist()
    by_subset = {}
    for row in rows:
        by_subset.setdefault(row["subset"], []).append(row)
    assert {s: len(r) for s, r in by_subset.items()} == {"laion2B-en": 5, "laion1B-nolang": 1}
    assert by_subset["laion1B-nolang"][0]["language"] == "nolang"
    after = files_by_subset()
    assert after["laion2B-en"] == before["laion2B-en"]  # untouched files, not a rewrite
    assert after["laion1B-nolang"].isdisjoint(before["laion1B-nolang"])
    for layer, name, rows in (("ods", "ods_laion_base", 6), ("ods", "ods_laion_joined", 6),
                              ("dmd", "dmd_image_path_suffix_aesthetics", 7)):
        subsets = DeltaTable(str(warehouse / layer / name)).to_pyarrow_table().column("subset").to_pylist()
        assert sorted(set(subsets)) == ["laion1B-nolang", "laion2B-en"], name
        assert len(subsets) == rows, name


# --- synth --------------------------------------------------------------------------------------


def test_synth_refuses_zero_rows(cli, tmp_path):
    code, _, err = cli("synth", "--out", tmp_path / "out", "--rows", "0")
    assert code == 2
    assert "--rows" in err
    assert not (tmp_path / "out").exists()


def test_synth_refuses_a_non_empty_foreign_folder(cli, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, stdout, err = cli("synth", "--out", out, "--rows", "40", "--parts", "1")
    assert code == 2
    line = assert_one_error_line(err)
    assert str(out) in line
    assert stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_synth_overwrite_replaces_its_own_tree_but_not_foreign_files(cli, tmp_path):
    out = tmp_path / "out"
    code, _, err = cli("synth", "--out", out, "--rows", "40", "--parts", "2", "--seed", "1")
    assert code == 0, err
    first = sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet"))
    assert "laion2B-en/part-00001.parquet" in first

    code, _, err = cli("synth", "--out", out, "--rows", "40", "--parts", "2", "--seed", "1")
    assert code == 2, "without --overwrite an earlier tree is refused"
    assert_one_error_line(err)

    code, _, err = cli("synth", "--out", out, "--rows", "40", "--parts", "1", "--seed", "2", "--overwrite")
    assert code == 0, err
    second = sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet"))
    assert "laion2B-en/part-00000.parquet" in second
    assert "laion2B-en/part-00001.parquet" not in second, "stale part files of the first tree survived"

    foreign = out / "my-notes.txt"
    foreign.write_text("keep me")
    code, _, err = cli("synth", "--out", out, "--rows", "40", "--parts", "1", "--overwrite")
    assert code == 2
    line = assert_one_error_line(err)
    assert "my-notes.txt" in line
    assert foreign.read_text() == "keep me"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet")) == second


def test_plan_reading_only_tables_sizes_its_shuffle_by_the_upstream_tables(built):
    from etl.project.config import load_config
    from etl.build.plan import make_plan

    config, warehouse = built
    plan = make_plan(load_project(), load_config(config), layers=["dms"])
    upstream = [warehouse / "ods/ods_laion_joined", warehouse / "dmd/dmd_image_path_suffix_aesthetics"]
    assert plan.input_bytes == sum(f.stat().st_size for table in upstream for f in table.rglob("*") if f.is_file())
    assert plan.input_bytes > 0


def test_a_build_with_nothing_to_rebuild_leaves_latest_html_alone_and_says_so(cli, built_copy):
    config, warehouse = built_copy
    latest = Path(load_config(config).reports) / "latest.html"
    before = latest.read_bytes()
    code, out, err = cli("build", "--config", config)
    assert code == 0, err
    assert "0 tables built (6 unchanged, skipped)" in out
    assert "verdict: none, no table was checked" in out and "verdict: PASS" not in out
    own_report = Path(re.search(r"^report: (\S+) \(latest.html left as it was", out, re.MULTILINE).group(1))
    assert own_report.is_file() and own_report != latest
    assert latest.read_bytes() == before


def test_the_summaries_count_in_the_singular_for_one(tmp_path):
    step = StepResult(table="dms_laion_wide", layer="dms", rows_in=1, rows_out=1, quarantined=None, version=3,
                      seconds=1.2, verdict="pass", path=str(tmp_path))
    config = SimpleNamespace(warehouse=str(tmp_path))
    total = format_results([step], config, wall_seconds=7.25).splitlines()[-1]
    assert total == f"1 table built in 7.2 s under {tmp_path}"
    rule = SimpleNamespace(success=True)
    one = SimpleNamespace(tables=[SimpleNamespace(table="dms_laion_wide", version=3, rules=[rule])], rules=[rule])
    assert format_rule_failures(one) == "1 rule on 1 table: all pass"
    two = SimpleNamespace(tables=one.tables * 2, rules=[rule] * 2)
    assert format_rule_failures(two) == "2 rules on 2 tables: all pass"


def subcommands() -> dict:
    (commands,) = [a for a in build_parser()._actions if a.choices and a.dest == "command"]
    return commands.choices


def test_help_lists_every_command_with_one_line_each(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = cli("--help")
    assert code == 0
    lines = out.splitlines()
    listed = lines[lines.index("  COMMAND") + 1:lines.index("", lines.index("  COMMAND"))]
    names = list(subcommands())
    assert len(names) >= 11 and {"synth", "build", "sql", "dq", "export", "submit"} <= set(names)
    assert [line.split()[0] for line in listed] == names  # each command once, in order, nothing wrapped
    assert all(len(line.split(None, 1)) == 2 and len(line) <= 80 for line in listed), listed


def test_every_option_help_says_its_default(cli, monkeypatch):
    """Flags are off unless given, and an option one must give (or choose) has no default to say."""
    monkeypatch.setenv("COLUMNS", "2000")  # no wrapped help text
    checked = 0
    for name, command in subcommands().items():
        required_groups = [g for g in command._mutually_exclusive_groups if g.required]
        code, out, _ = cli(name, "--help")
        assert code == 0
        entries = re.split(r"\n(?=  -)", out.split("\noptions:\n")[1])  # an option, then its help
        for action in command._actions:
            if (not action.option_strings or action.required or action.nargs == 0
                    or any(action in g._group_actions for g in required_groups)):
                continue
            (entry,) = [e for e in entries if e.startswith(f"  {action.option_strings[-1]} ")]
            assert "default: " in entry, f"laion-etl {name} {action.option_strings[-1]}: {entry.strip()}"
            checked += 1
    assert checked > 20
    code, out, _ = cli("export", "--help")
    assert "rows per shard or part (default: 10000)" in out and "(default: img2dataset)" in out
