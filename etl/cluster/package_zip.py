"""The zip that `spark-submit --py-files` ships to a cluster: the `etl` package and its project files.

Executors import `etl` from it (the LAION hash runs there) and the driver reads the SQL,
contracts and default configuration from it, so it carries `etl/_project/` as a wheel does
(etl/project/resources.py), the spark-submit jobs included. It is written from whatever this process runs (a checkout, a wheel
install or another zip) and is byte-for-byte the same for the same code (etl/engine/artifacts.py:
sorted members, fixed timestamps), so a rebuilt zip never looks like a new release.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Iterator

from etl.engine.artifacts import write_stable_zip
from etl.project.resources import BUNDLE, bundled_root

PROJECT_FOLDERS = ("sql", "expectations", "conf", "jobs")
# Package data read through importlib.resources, as setup.cfg's package_data ships it in the wheel.
PACKAGE_DATA = ("etl/quality/templates/", "etl/engine/java/")


def _walk(folder: Traversable, prefix: str) -> Iterator[tuple[str, Traversable]]:
    for entry in folder.iterdir():
        if entry.name == "__pycache__" or entry.name.startswith("."):
            continue
        if entry.is_dir():
            yield from _walk(entry, f"{prefix}{entry.name}/")
        else:
            yield f"{prefix}{entry.name}", entry


def package_members() -> dict[str, Traversable]:
    """Member name in the zip -> the file it is read from."""
    members = {name: entry for name, entry in _walk(resources.files("etl"), "etl/")
               if (name.endswith(".py") or name.startswith(PACKAGE_DATA)) and not name.startswith(f"etl/{BUNDLE}/")}
    root = bundled_root()
    for folder in PROJECT_FOLDERS:
        members.update(_walk(root.joinpath(folder), f"etl/{BUNDLE}/{folder}/"))
    return members


def write_package_zip(out: Path) -> int:
    """Write the zip to `out` (atomically); return the number of files in it."""
    members = package_members()
    write_stable_zip(out, {name: entry.read_bytes() for name, entry in members.items()})
    return len(members)
