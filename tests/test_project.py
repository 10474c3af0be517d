"""The Project: bundled tables and conf, a user project folder over them, read through Traversables only."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from etl.project import project as project_module
from etl.project.config import ConfigError
from etl.project.project import load_project
from planted import planted_config, write_planted_sources

REPO = Path(__file__).resolve().parents[1]

EXTRA_TABLE_SQL = "-- a user's table\nselect subset, count(*) as rows from laion.dms_laion_wide group by subset\n"
EXTRA_TABLE_CONTRACT = """table: wide_rows_per_subset
layer: dms
grain: one row per subset
keys: [subset]
partition_by: []
columns:
  - {name: subset, type: string}
  - {name: rows, type: bigint}
"""


def user_project(folder: Path) -> Path:
    """A project folder adding a table, replacing a bundled table's contract, a preset and a layer default."""
    (folder / "sql/dms").mkdir(parents=True)
    (folder / "expectations/dms").mkdir(parents=True)
    (folder / "conf").mkdir()
    (folder / "sql/dms/wide_rows_per_subset.sql").write_text(EXTRA_TABLE_SQL)
    (folder / "expectations/dms/wide_rows_per_subset.yaml").write_text(EXTRA_TABLE_CONTRACT)
    contract = (REPO / "expectations/dms/dms_laion_wide.yaml").read_text()
    (folder / "expectations/dms/dms_laion_wide.yaml").write_text(contract.replace("grain:", "grain: mine,", 1))
    (folder / "conf/presets.yaml").write_text("presets:\n  sd2:\n    where: width >= 768\n"
                                              "  mine:\n    where: language = 'de'\n")
    (folder / "conf/layers.yaml").write_text("dmd:\n  partition_by: []\n")
    return folder


def test_the_bundled_project_holds_the_tables_in_build_order():
    project = load_project()
    assert [t.name for t in project.tables] == [
        "ods_image_index", "ods_laion_aesthetic", "ods_laion_base", "ods_laion_joined",
        "dmd_image_path_suffix_aesthetics", "dms_laion_wide"]
    assert project.wide_table.sql == (REPO / "sql/dms/dms_laion_wide.sql").read_text()
    assert set(project.meta_contracts) == {"runs", "dq_results", "quarantine", "source_files", "table_inputs"}
    assert [Path(str(f)) for f in project.preset_files] == [REPO / "conf/presets.yaml"]


def test_a_user_project_adds_and_replaces_by_name(tmp_path):
    project = load_project(str(user_project(tmp_path / "mine")))
    names = [t.name for t in project.tables]
    assert names[-1] == "wide_rows_per_subset"  # it reads the wide table, so it comes after it
    assert project.tables_by_name["wide_rows_per_subset"].sql == EXTRA_TABLE_SQL
    assert project.wide_table.contract.grain.startswith("mine,")
    assert project.wide_table.sql == (REPO / "sql/dms/dms_laion_wide.sql").read_text()  # its SQL stays bundled
    assert project.layers["dmd"].partition_by == () and project.layers["dms"].partition_by == ("subset",)
    assert project.preset_files[-1] == tmp_path / "mine/conf/presets.yaml"


def test_a_project_dir_that_is_not_a_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^project_dir: .*nowhere is not a folder"):
        load_project(str(tmp_path / "nowhere"))


def test_the_bundled_project_loads_from_a_zip(tmp_path, monkeypatch):
    """`--py-files etl.zip` ships the project inside the zip: nothing may need a real folder."""
    archive = tmp_path / "etl.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for kind in ("sql", "expectations", "conf"):
            for file in sorted((REPO / kind).rglob("*")):
                if file.is_file():
                    zipped.write(file, f"etl/_project/{file.relative_to(REPO)}")
    monkeypatch.setattr(project_module, "bundled_root", lambda: zipfile.Path(archive, "etl/_project/"))
    zipped_project = load_project()
    monkeypatch.undo()
    on_disk = load_project()
    assert [(t.name, t.sql, t.contract.columns) for t in zipped_project.tables] == \
        [(t.name, t.sql, t.contract.columns) for t in on_disk.tables]
    assert zipped_project.layers == on_disk.layers
    assert zipped_project.meta_contracts.keys() == on_disk.meta_contracts.keys()


def test_project_dir_from_the_command_line_reaches_the_plan(tmp_path, run_cli):
    write_planted_sources(tmp_path / "sources")
    config = tmp_path / "planted.yaml"
    config.write_text(planted_config(tmp_path / "sources", tmp_path / "wh"))
    mine = user_project(tmp_path / "mine")
    code, out, _ = run_cli("build", "--config", str(config), "--dry-run", "--project-dir", str(mine))
    assert code == 0 and "laion.wide_rows_per_subset" in out
    code, out, _ = run_cli("build", "--config", str(config), "--dry-run")
    assert code == 0 and "laion.wide_rows_per_subset" not in out
    config.write_text(config.read_text() + f"project_dir: {mine.name}\n")  # relative to the config's folder
    code, out, _ = run_cli("build", "--config", str(config), "--dry-run")
    assert code == 0 and "laion.wide_rows_per_subset" in out
    shutil.rmtree(mine)
    code, _, err = run_cli("build", "--config", str(config), "--dry-run")
    assert code == 2 and "project_dir:" in err
