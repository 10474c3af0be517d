"""What each table partition is built from, as one signature; which partitions a build must redo.

A partition is a (table, subset) pair, or the whole table (subset `*`) where the table is not
partitioned by subset. Its signature covers the table's SQL and schema, the subset's
configuration, its source files (path, size, modification time, footer fingerprint; refused
files too) and the signatures of the partitions it reads. After a partition is published the
build records the signature in `meta.table_inputs`; the next build redoes a partition only when
its signature differs from the recorded one (or none is recorded, or the table is missing, or
it was changed outside the pipeline since: etl/build/outside_edits.py).
So an unchanged input set rebuilds nothing, a changed, added or removed part file redoes its
subset and everything downstream of it, and a run killed between publishing and recording
simply redoes that partition.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Optional, Sequence

from etl.project.tables import Table

if TYPE_CHECKING:
    from etl.build.plan import BuildPlan

WHOLE_TABLE = "*"
SUBSET_COLUMN = "subset"


def partition_keys(table: Table, plan: BuildPlan) -> tuple[str, ...]:
    """The partitions of `table` this plan covers."""
    if SUBSET_COLUMN in table.partition_by(plan.config):
        return tuple(plan.subset_names)
    return (WHOLE_TABLE,)


def planned_signatures(plan: BuildPlan, recorded: dict[tuple[str, str], str]) -> dict[tuple[str, str], Optional[str]]:
    """Signature of every planned partition, in build order (upstream before downstream).

    Upstream tables outside the plan contribute their recorded signature; an unrecorded one makes
    the partition's signature None (unknown: always rebuilt).
    """
    signatures: dict[tuple[str, str], Optional[str]] = {}
    planned = {t.name: t for t in plan.tables}
    known = plan.project.tables_by_name
    for table in plan.tables:
        for key in partition_keys(table, plan):
            upstream = []
            for name in table.upstream_tables:
                for upstream_key in _upstream_keys(known[name], key, plan):
                    ref = (name, upstream_key)
                    upstream.append([name, upstream_key, signatures[ref] if name in planned else recorded.get(ref)])
            if any(sig is None for _, _, sig in upstream):
                signatures[(table.name, key)] = None
                continue
            signatures[(table.name, key)] = _digest({
                "sql": table.sql,
                "schema": [[c.name, c.type] for c in table.contract.columns],
                "partition_by": list(table.partition_by(plan.config)),
                "inputs": _view_inputs(table, key, plan),
                "upstream": upstream,
            })
    return signatures


def partitions_to_build(plan: BuildPlan, table: Table, signatures: dict, recorded: dict,
                        whole: bool) -> tuple[str, ...]:
    """Partitions of `table` this build redoes: forced, out of date, or all of them when `whole`
    (the table is missing, or what it holds is not what its signatures say)."""
    keys = partition_keys(table, plan)
    if plan.force or whole or (plan.subsets and keys != (WHOLE_TABLE,)):
        return keys
    return tuple(k for k in keys if signatures[(table.name, k)] is None
                 or signatures[(table.name, k)] != recorded.get((table.name, k)))


def _upstream_keys(upstream: Table, key: str, plan: BuildPlan) -> Sequence[str]:
    """Which partitions of `upstream` feed partition `key`."""
    upstream_keys = partition_keys(upstream, plan)
    if upstream_keys == (WHOLE_TABLE,):
        return upstream_keys
    return upstream_keys if key == WHOLE_TABLE else (key,)


def _view_inputs(table: Table, key: str, plan: BuildPlan) -> list:
    subsets = None if key == WHOLE_TABLE else (key,)
    return [entry for view in plan.views_of(table) for entry in view.sign(subsets)]


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()
