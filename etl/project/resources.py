"""Where the project's own files are (SQL, contracts, default configuration, the spark-submit jobs):
the one place that knows.

A wheel or a `--py-files` zip carries them as package data under `etl/_project/`; a source
checkout has them at its top level (`sql/`, `expectations/`, `conf/`, `jobs/`). Everything else reads
them through the Project, never relative to its own module.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

BUNDLE = "_project"


def bundled_root() -> Traversable:
    """The folder (or zip member) holding `sql/`, `expectations/`, `conf/` and `jobs/` for this install."""
    package = resources.files("etl")
    bundle = package.joinpath(BUNDLE)
    if bundle.is_dir():
        return bundle
    return Path(str(package)).parent  # a source checkout: the repository's top level
