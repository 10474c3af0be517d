"""Analysts on the JVM: `laion-etl sql --engine spark`, and Spark's own `spark-sql` shell reading
the init file `laion-etl spark-sql-init` writes, both see every table as `laion.<table>`.

The warehouse is the planted tree built on Sail; each JVM runs in a subprocess in a scratch
folder (the shell leaves `spark-warehouse/` where it runs), and what it prints is checked against
the tables as delta-rs reads them.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from etl.cli import main
from etl.project.config import load_config
from etl.project.project import load_project
from etl.warehouse.meta import META_TABLES, meta_path
from helpers import REPO, need_java, read_delta, write_planted_project
from test_jvm import jvm_env

QUERY = "select subset, count(*) from laion.dms_laion_wide group by subset order by subset"
CREATED = re.compile(r"^create table if not exists laion\.(\w+) using delta location '([^']*)';$")


def cli_stdout(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(args)) == 0
    return out.getvalue()


def registered(init_text: str) -> dict[str, str]:
    """table -> location of each `create table` line of an init file."""
    return {m.group(1): m.group(2) for m in map(CREATED.match, init_text.splitlines()) if m}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    """The planted tree built on Sail: the init file after the ODS layer alone, then after all layers."""
    root = tmp_path_factory.mktemp("analysts")
    config = write_planted_project(root)
    assert main(["build", "--config", str(config), "--layers", "ods"]) == 0
    ods_only = cli_stdout("spark-sql-init", "--config", str(config))
    assert main(["build", "--config", str(config)]) == 0
    return root, config, ods_only


def wide_counts(root: Path) -> Counter:
    return Counter(read_delta(root / "warehouse" / "dms" / "dms_laion_wide").column("subset").to_pylist())


def scratch(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    return folder


def test_init_file_registers_exactly_the_tables_that_exist(warehouse):
    root, config_path, ods_only = warehouse
    config, project = load_config(str(config_path)), load_project()
    full = cli_stdout("spark-sql-init", "--config", str(config_path))
    assert full.splitlines()[0] == "create database if not exists laion;"
    expected = {t.name: t.path(config) for t in project.tables}
    expected.update({name: meta_path(config, name) for name in META_TABLES})
    assert registered(full) == expected
    assert all(Path(location, "_delta_log").is_dir() for location in expected.values())
    ods_tables = {t.name for t in project.tables if t.layer == "ods"}
    # After an ODS-only build the later layers do not exist yet; the bookkeeping tables do.
    assert registered(ods_only) == {name: expected[name] for name in sorted(ods_tables | set(META_TABLES))}


def test_readme_spark_sql_command_is_the_one_the_cli_prints():
    printed = cli_stdout("spark-sql-init", "--config", str(REPO / "conf" / "demo.yaml"), "--out", "/dev/null").splitlines()[-1]
    readme = (REPO / "README.md").read_text()
    assert printed.replace("/dev/null", "data/laion-init.sql") in readme


@pytest.mark.jvm
def test_spark_sql_shell_sees_the_laion_tables(warehouse):
    need_java()
    root, config, _ = warehouse
    shell = scratch(root, "shell")
    printed = cli_stdout("spark-sql-init", "--config", str(config), "--out", str(shell / "init.sql")).splitlines()
    command = shlex.split(printed[-1])
    assert command[0] == "spark-sql" and command[-2:] == ["-i", str(shell / "init.sql")]
    command[0] = str(Path(sys.executable).with_name("spark-sql"))
    statements = f"{QUERY}; select count(*) from laion.runs"
    result = subprocess.run([*command, "--conf", "spark.ui.enabled=false", "-e", statements], env=jvm_env(),
                            cwd=shell, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
    counts = wide_counts(root)
    assert lines == [[subset, str(counts[subset])] for subset in sorted(counts)] + [["2"]]
    # The catalog is in memory: no Hive metastore left behind, here or in the checkout.
    for folder in (shell, REPO):
        assert not (folder / "metastore_db").exists() and not (folder / "derby.log").exists()


@pytest.mark.jvm
def test_sql_with_engine_spark_reads_the_sail_built_tables(warehouse):
    need_java()
    root, config, _ = warehouse
    assert "engine: sail" in config.read_text()
    result = subprocess.run([sys.executable, "-m", "etl.cli", "sql", "--config", str(config), "--engine", "spark",
                             f"{QUERY}; show tables in laion"], env={**jvm_env(), "PYTHONPATH": str(REPO)},
                            cwd=scratch(root, "sql"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    printed = [line.split() for line in result.stdout.splitlines()]
    counts = wide_counts(root)
    for subset, rows in counts.items():
        assert [subset, str(rows)] in printed, result.stdout
    # JVM Spark names SHOW TABLES' first column `namespace` (Sail: `database`).
    assert ["namespace", "tableName", "isTemporary"] in printed, result.stdout
    listed = {line[1] for line in printed if len(line) == 3 and line[0] == "laion"}
    assert listed == {t.name for t in load_project().tables} | set(META_TABLES)
