"""Tables changed behind the build's back, found before a build so it rebuilds them.

A partition's recorded signature (etl/build/inputs.py) says what the table was built from, not
what it holds now: an analyst's DELETE through another tool, or a restore by hand, leaves the
inputs as they were, and the build would call the table unchanged. So the build also records the
table version it published (`laion.table_inputs`), and any commit after that version that no run
of the pipeline made means the table was changed outside it.

The pipeline's own later commits are not outside edits: every commit it makes carries its run id
as `userMetadata` — writes, the gate's restores, the commits of a run killed before it recorded
anything — and every run has its `laion.runs` row from its start. Parquet tables keep no history,
so changes to them cannot be seen.
"""

from __future__ import annotations

from typing import Iterable

from etl.project.config import Config
from etl.project.tables import Table
from etl.warehouse.meta import recorded_versions, run_ids
from etl.warehouse.store import table_store


def changed_outside_pipeline(config: Config, tables: Iterable[Table]) -> dict[str, int]:
    """Name -> the version the last build published, for each of `tables` changed since by a commit
    no pipeline run made (or whose history was replaced: its version went back)."""
    published = recorded_versions(config)
    pipeline_runs = run_ids(config)
    store = table_store(config)
    changed = {}
    for table in tables:
        version = published.get(table.name)
        current = None if version is None else store.version(table.path(config))
        if current is None or current == version:  # never recorded, no history, or gone: nothing to compare
            continue
        later = store.history(table.path(config), limit=current - version) if current > version else []
        if current < version or any(commit.get("userMetadata") not in pipeline_runs for commit in later):
            changed[table.name] = version
    return changed
