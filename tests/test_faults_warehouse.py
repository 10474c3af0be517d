"""The warehouse where users put it, and damaged: a path with spaces and accents, a Delta log cut short.

Sail encodes such paths into file names of their own (issue 11); the build, `tables` and `export`
must work there, and write nothing beside them. A table whose Delta log cannot be read fails every
command with one line naming the table and the log file, and `build --force` rebuilds it from
scratch after moving the broken folder aside, never deleting it.
"""

from __future__ import annotations

import json

import pyarrow.compute as pc
from deltalake import DeltaTable

from etl.cli import main
from etl.project.project import load_project
from helpers import assert_same_rows, build_synthetic, one_line, read_delta, table_dir, write_planted_project

TABLES = [t.name for t in load_project().tables]


def test_the_demo_builds_rebuilds_and_exports_in_folders_with_spaces_and_accents(tmp_path, run_cli):
    root = tmp_path / "wh space é"
    _, config = build_synthetic(root, rows=1_500, seed=5)
    warehouse = root / "warehouse"
    versions = {name: DeltaTable(str(table_dir(warehouse, name))).version() for name in TABLES}

    code, _, err = run_cli("build", "--config", str(config))

    assert code == 0, err
    assert {name: DeltaTable(str(table_dir(warehouse, name))).version() for name in TABLES} == versions, \
        "an unchanged rebuild rebuilds nothing"
    code, out, err = run_cli("tables", "--config", str(config))
    assert code == 0, err
    listed = [line.split(maxsplit=4) for line in out.splitlines() if line.startswith("laion.dms_laion_wide ")]
    assert [(row[2], row[4]) for row in listed] == [(str(versions["dms_laion_wide"]),
                                                     str(table_dir(warehouse, "dms_laion_wide")))]
    out_dir = tmp_path / "exports ü" / "en only?"  # a `?` in a path handed to Sail reads as a glob
    code, _, err = run_cli("export", "--config", str(config), "--where", "language = 'en'", "--out", str(out_dir))
    assert code == 0, err
    wide = read_delta(table_dir(warehouse, "dms_laion_wide"))
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["totals"]["rows"] == pc.sum(pc.equal(wide["language"], "en")).as_py() > 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["_SUCCESS", "manifest.json", "shards"]
    assert [p for p in tmp_path.rglob("*") if "%" in p.name] == [], "nothing may be written under encoded names"


def test_a_delta_log_cut_short_fails_every_command_naming_table_and_file_and_force_rebuilds(tmp_path, run_cli, caplog):
    config = write_planted_project(tmp_path)
    assert main(["-q", "build", "--config", str(config)]) == 0
    table = table_dir(tmp_path / "warehouse", "dms_laion_wide")
    before = read_delta(table)
    log_file = table / "_delta_log" / "00000000000000000000.json"
    damaged = log_file.read_bytes()[: log_file.stat().st_size // 2]
    log_file.write_bytes(damaged)

    lines = {}
    for command in (["build"], ["tables"], ["export", "--preset", "sd2", "--out", str(tmp_path / "sd2")]):
        code, _, err = run_cli(command[0], "--config", str(config), *command[1:])
        assert code == 1, (command, err)
        lines[command[0]] = line = one_line(err)
        assert f"the Delta log of {table} is broken: {log_file} cannot be read (line " in line, (command, line)
        assert "Kernel error" not in line and "Traceback" not in err
    assert lines["build"].startswith("laion-etl: failed: dms_laion_wide: ") and "build --force" in lines["build"]

    code, _, err = run_cli("build", "--config", str(config), "--force")

    assert code == 0, err
    assert_same_rows(read_delta(table), before)
    aside = [p for p in table.parent.iterdir() if p.name.startswith("dms_laion_wide.broken-")]
    assert len(aside) == 1 and (aside[0] / "_delta_log" / log_file.name).read_bytes() == damaged, "never deleted"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(table) in w and str(aside[0]) in w for w in warnings), warnings
    assert run_cli("tables", "--config", str(config))[0] == 0
