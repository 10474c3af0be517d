"""The README works verbatim: its command blocks run, in order, in a fresh copy of the repo after the demo.

A block meant to run is a ```bash block right after the line `<!-- readme: run -->` (invisible on
GitHub). The blocks become one bash script in which every command keeps its README line number,
run with `set -euo pipefail` and an ERR trap, so a failure names the README line and command. The
copy is the repo's files as they are (tracked and untracked, not ignored), with the test setup's
virtualenvs linked in; setup is the one step not run, because it would reinstall the shared
venv (CI runs it for real). img2dataset downloads go to a local stand-in for the web
(tests/web_standin.py). Background processes a block starts (the cluster's master and workers)
are stopped with the script's process group.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etl.project.project import load_project
from helpers import REPO, assert_same_rows, read_delta, run_in_own_group, runs
from web_standin import img2dataset_env, served_format, web_standin

pytestmark = pytest.mark.timeout(1500)
RUN_MARK = "<!-- readme: run -->"
CONFIG_NAME = re.compile(r"\bconf/[\w.-]+\.yaml\b")
IMAGE_COLUMNS = ["image_path", "image_suffix"]
SUFFIXES = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}


def runnable_script(readme: str) -> str:
    """The README's marked blocks as one bash script, each command on its README line number."""
    lines = readme.splitlines()
    script = [""] * len(lines)
    index = 0
    while index < len(lines):
        if lines[index].strip() == RUN_MARK:
            if index + 1 >= len(lines) or lines[index + 1].strip() != "```bash":
                raise AssertionError(f"README.md:{index + 1}: {RUN_MARK} must be followed by a ```bash block")
            index += 2
            while index < len(lines) and lines[index].strip() != "```":
                script[index] = lines[index]
                index += 1
        index += 1
    header = ("set -euo pipefail; "
              "trap 'echo \"README.md:$LINENO: failed (exit $?): $BASH_COMMAND\" >&2' ERR")
    # Line 1 of README.md is its title, never a command: the header takes its place.
    return "\n".join([header] + script[1:]) + "\n"


def copy_of_repo(destination: Path) -> Path:
    """The repo's files as a fresh clone would hold them, plus the working tree's uncommitted state."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for venv in (".venv", ".venv-img2dataset"):
        (destination / venv).symlink_to(REPO / venv)
    # The shared venv is already set up; setup.sh would reinstall it from this copy.
    (destination / "scripts/setup.sh").write_text('#!/usr/bin/env bash\necho "setup: skipped (test copy)"\n')
    return destination


def run_script(script: str, cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return run_in_own_group(["bash", "-c", script], cwd=cwd, env=env, timeout=timeout, what="the README's commands")


def readme_env(copy: Path, proxy: str) -> dict:
    # A user's shell has none of these: the test's own settings, and the mark an in-process Sail
    # session leaves (pyspark would take spark-submit's jobs for Spark Connect clients). The JIT
    # setting of the suite's JVMs (conftest.py) stays: it changes how fast they run, not what.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LAION_ETL__", "VIRTUAL_ENV", "PYTEST", "SPARK_CONNECT_MODE_ENABLED"))}
    env = img2dataset_env(proxy, copy.parent / "web-standin", env)
    env["PYTHONPATH"] = os.pathsep.join([str(copy), env["PYTHONPATH"]])
    return env


def test_the_runner_names_the_readme_line_of_a_broken_command(tmp_path):
    readme = "\n".join(["# title", "text", RUN_MARK, "```bash", "echo fine", "laion-etl-no-such-command --x", "echo never",
                        "```", "", "```bash", "false  # not marked: never runs", "```"])
    result = run_script(runnable_script(readme), tmp_path, dict(os.environ), 60)
    assert result.returncode != 0 and result.stdout == "fine\n"
    assert "README.md:6: failed (exit 127): laion-etl-no-such-command --x" in result.stderr


def test_a_mark_without_a_bash_block_is_refused():
    with pytest.raises(AssertionError, match=r"README.md:2: .* must be followed by a ```bash block"):
        runnable_script("# title\n" + RUN_MARK + "\n\nnot a block\n")


def test_every_config_file_the_docs_name_exists():
    texts = {"README.md": (REPO / "README.md").read_text()}
    texts.update({f"jobs/{p.name}": p.read_text() for p in sorted((REPO / "jobs").glob("*.py"))})
    named = {(where, name) for where, text in texts.items() for name in CONFIG_NAME.findall(text)}
    assert {name for _, name in named} >= {"conf/demo.yaml", "conf/cluster.yaml"}
    missing = sorted(f"{where} names {name}" for where, name in named if not (REPO / name).is_file())
    assert not missing, missing


def test_the_readme_commands_run_verbatim_after_the_demo(tmp_path):
    copy = copy_of_repo(tmp_path / "laion-wide")
    readme = (copy / "README.md").read_text()
    script = runnable_script(readme)
    assert script.count("\n") == readme.count("\n") + (0 if readme.endswith("\n") else 1)
    with web_standin() as proxy:
        env = readme_env(copy, proxy)
        demo = run_script("bash scripts/demo.sh", copy, env, 600)
        assert demo.returncode == 0, demo.stderr[-3000:]
        result = run_script(script, copy, env, 1200)
    assert result.returncode == 0, f"{result.stderr[-4000:]}\n--- stdout:\n{result.stdout[-2000:]}"

    # What the blocks promise is there. The download loop: every exported row was fetched from the
    # stand-in, and the rebuild folded each result back in with the image's real type.
    assert "data/images/sd2/00000.tar\n" in result.stdout  # clip-input's line, as the README says
    exported = pa.concat_tables(pq.read_table(p) for p in sorted((copy / "data/exports/sd2/shards").glob("*.parquet")))
    expected = {h: served_format(url) for url, h in zip(exported["URL"].to_pylist(), exported["hash"].to_pylist())}
    index = [r for r in read_delta(copy / "data/demo/warehouse/ods/ods_image_index").to_pylist()
             if r["folder"].endswith("/data/images/sd2")]
    assert sorted(r["hash"] for r in index) == sorted(exported["hash"].to_pylist())
    assert all(r["source_hash"] == r["hash"] for r in index)
    wrong = [(r["url"], r["status"], r["image_suffix"], r["error_message"]) for r in index
             if (r["status"], r["image_suffix"]) != (("success", SUFFIXES[expected[r["hash"]]]) if expected[r["hash"]]
                                                     else ("failed_to_download", None))]
    assert not wrong, f"{len(wrong)} downloads differ from what the stand-in served, e.g. {wrong[:3]}"
    assert {SUFFIXES[f] for f in expected.values() if f} == set(SUFFIXES.values())  # every type came back
    wide = read_delta(copy / "data/demo/warehouse/dms/dms_laion_wide")
    assert any(path and path.startswith(f"{copy}/data/images/sd2/0") for path in wide.column("image_path").to_pylist())

    # The cluster recipe: the demo's sources built on the standalone cluster give the demo's wide
    # table (image columns aside: the demo's was rebuilt with the sd2 downloads since) and the same
    # sd2 rows in the same order (shard sizes differ).
    cluster_wide = read_delta(copy / "data/cluster/warehouse/dms/dms_laion_wide")
    assert [(f.name, f.type) for f in cluster_wide.schema] == [(f.name, f.type) for f in wide.schema]
    assert_same_rows(cluster_wide.drop_columns(IMAGE_COLUMNS), wide.drop_columns(IMAGE_COLUMNS))
    exports = [pa.concat_tables(pq.read_table(p) for p in sorted((copy / folder / "shards").glob("*.parquet")))
               for folder in ("data/exports/cluster-sd2", "data/exports/sd2")]
    assert exports[0].column_names == exports[1].column_names
    assert exports[0].num_rows > 0 and exports[0].to_pylist() == exports[1].to_pylist()
    # dq submitted to the cluster checked every table the cluster built, and wrote its report.
    recorded = runs(copy / "data/cluster/warehouse")
    assert [(r["command"], r["engine"], r["status"]) for r in recorded] == [
        ("build", "spark", "succeeded"), ("dq", "spark", "succeeded")]
    assert all(Path(r["report_path"]).is_file() for r in recorded)
    checked = {r["table_name"] for r in read_delta(copy / "data/cluster/warehouse/meta/dq_results").to_pylist()
               if r["run_id"] == recorded[1]["run_id"]}
    assert checked == {table.name for table in load_project().tables}

