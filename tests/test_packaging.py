"""The package works anywhere: a wheel installed (not editable) into a fresh virtualenv, and the
zip that `spark-submit --py-files` ships, each running synth + build + export from a folder
that has nothing of this repository in it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from helpers import REPO, read_delta

USER_CONFIG = """\
warehouse: warehouse
sources:
  laion2B-en:
    base: sources/laion2B-en/*.parquet
    joined: sources/laion2B-en-joined/*.parquet
    aesthetic: [sources/laion2B-en-aesthetic/*.parquet, sources/improved_aesthetics_4.5plus/*.parquet]
  laion1B-nolang:
    base: sources/laion1B-nolang/*.parquet
    joined: sources/laion1B-nolang-joined/*.parquet
images: [sources/images]
"""


def _build_leftovers(folder: str, names: list[str]) -> set[str]:
    """What a copy of the checkout leaves out: caches everywhere, and at the top level the
    virtualenvs, generated data and earlier build output (not etl/build, the package)."""
    skipped = {name for name in names if name in ("__pycache__", ".pytest_cache") or name.endswith(".egg-info")}
    if Path(folder) == REPO:
        skipped |= {name for name in names if name in (".git", "data", "build", "dist") or name.startswith(".venv")}
    return skipped


def fresh_venv(path: Path) -> Path:
    """A new virtualenv without this package. Its dependencies come from the running environment
    (a .pth line: an installed package's own .pth files, like an editable install's, are not
    processed from there), so only the package itself is what the test installs."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def run(command: list[str], cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


REPORT_TEMPLATES = {"etl/quality/templates/report.html.j2", "etl/quality/templates/report.css"}


def user_run(laion_etl: list[str], folder: Path, env: dict | None = None) -> None:
    """What a user does in an empty folder: synthetic sources, a config of their own, build, export."""
    run([*laion_etl, "synth", "--out", "sources", "--rows", "3000", "--seed", "7", "--images", "files"], folder, env)
    (folder / "conf.yaml").write_text(USER_CONFIG)
    run([*laion_etl, "build", "--config", "conf.yaml"], folder, env)
    # the build's report, rendered from the template the package carries, with its stylesheet inlined
    report = (folder / "warehouse" / "reports" / "latest.html").read_text(encoding="utf-8")
    assert report.startswith("<!DOCTYPE html>") and 'id="verdict"' in report and ".rule-name" in report
    run([*laion_etl, "export", "--config", "conf.yaml", "--where", "punsafe < 0.5", "--out", "export"], folder, env)
    wide = read_delta(folder / "warehouse" / "dms" / "dms_laion_wide")
    assert wide.num_rows > 0 and set(wide.column("subset").to_pylist()) == {"laion2B-en", "laion1B-nolang"}
    manifest = json.loads((folder / "export" / "manifest.json").read_text())
    assert manifest["totals"]["rows"] > 0
    assert (folder / "export" / "_SUCCESS").exists()


def assert_imports_from(python: Path, where: str, folder: Path, env: dict | None = None) -> None:
    location = run([str(python), "-c", "import etl; print(etl.__file__)"], folder, env).strip()
    assert location.startswith(where), f"etl imported from {location}, expected under {where}"


@pytest.mark.timeout(900)
def test_a_wheel_installed_into_a_fresh_virtualenv_works_from_any_folder(tmp_path: Path):
    # From a copy: setuptools builds in the source tree and keeps stale modules in its build/ folder.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=_build_leftovers)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path / "dist"),
         str(source)], tmp_path)
    wheel = next((tmp_path / "dist").glob("laion_etl-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "etl/_project/sql/dms/dms_laion_wide.sql" in names and "etl/_project/conf/layers.yaml" in names
    assert "etl/_project/jobs/build.py" in names
    assert REPORT_TEMPLATES <= set(names), "the report's template and stylesheet ship in the wheel"
    python = fresh_venv(tmp_path / "venv")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        tmp_path)
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    assert_imports_from(python, str(tmp_path / "venv"), folder)
    user_run([str(tmp_path / "venv" / "bin" / "laion-etl")], folder)
    # `laion-etl submit` from the wheel runs the wheel's own copy of the job.
    line = run([str(tmp_path / "venv" / "bin" / "laion-etl"), "submit", "--print", "--", "build", "--config", "conf.yaml"],
               folder, {"XDG_CACHE_HOME": str(tmp_path / "cache")})
    job = line.split()[-3]
    assert job.startswith(str(tmp_path / "venv")) and job.endswith("etl/_project/jobs/build.py"), line


@pytest.mark.timeout(900)
def test_the_py_files_zip_works_from_any_folder(tmp_path: Path):
    archive = tmp_path / "dist" / "etl.zip"
    run([sys.executable, "-m", "etl.cli", "package-zip", "--out", str(archive)], REPO)
    first = archive.read_bytes()
    run([sys.executable, "-m", "etl.cli", "package-zip", "--out", str(archive)], REPO)
    assert archive.read_bytes() == first, "the zip must be byte-stable for the same code"
    assert REPORT_TEMPLATES <= set(zipfile.ZipFile(archive).namelist()), "the report's template and stylesheet ship"
    python = fresh_venv(tmp_path / "venv")
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    env = {"PYTHONPATH": str(archive)}
    assert_imports_from(python, str(archive), folder, env)
    user_run([str(python), "-m", "etl.cli"], folder, env)
