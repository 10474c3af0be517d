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

from etl.project.project import load_project
from helpers import build_synthetic, read_delta, table_dir

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
    out_dir = tmp_path / "exports ü" / "en only"
    code, _, err = run_cli("export", "--config", str(config), "--where", "language = 'en'", "--out", str(out_dir))
    assert code == 0, err
    wide = read_delta(table_dir(warehouse, "dms_laion_wide"))
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["totals"]["rows"] == pc.sum(pc.equal(wide["language"], "en")).as_py() > 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["_SUCCESS", "manifest.json", "shards"]
    assert [p for p in tmp_path.rglob("*") if "%" in p.name] == [], "nothing may be written under encoded names"
