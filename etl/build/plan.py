"""The build plan: which tables, from which inputs, in which order — resolved before any engine starts.

Planning expands every glob and reads every parquet footer, so a missing or unreadable input
fails in seconds with its name, not an hour into the build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from etl.build.inputs import WHOLE_TABLE, partition_keys, partitions_to_build, planned_signatures
from etl.build.outside_edits import changed_outside_pipeline
from etl.build.views import InputView, input_views
from etl.engine.session import local_cores
from etl.ingest.sources import RefusedFile, SourceFile
from etl.ingest.storage import tree_bytes
from etl.project.config import Config, ConfigError
from etl.project.project import Project
from etl.project.tables import LAYERS, Table
from etl.warehouse.meta import recorded_signatures
from etl.warehouse.store import BrokenTableError, table_store

# Bytes of (compressed parquet) input per shuffle partition when the config says `auto`: big
# enough that a cluster run gets thousands of partitions, not hundreds of thousands.
INPUT_BYTES_PER_SHUFFLE_PARTITION = 256 * 1024 * 1024


@dataclass
class BuildPlan:
    project: Project
    config: Config
    layers: tuple[str, ...]
    subsets: Optional[tuple[str, ...]]  # None: every configured subset, whole tables rewritten
    tables: list[Table]
    views: dict[str, InputView] = field(default_factory=dict)  # the input views the tables read, resolved
    force: bool = False  # rebuild every planned table, changed inputs or not
    # (table, subset or '*') -> signature of what it is built from now / when last published (etl/build/inputs.py)
    signatures: dict[tuple[str, str], Optional[str]] = field(default_factory=dict)
    recorded: dict[tuple[str, str], str] = field(default_factory=dict)
    rebuild: dict[str, tuple[str, ...]] = field(default_factory=dict)  # table -> partitions this build redoes
    # table -> the version the last build published, for tables changed since outside the pipeline
    changed_outside: dict[str, int] = field(default_factory=dict)
    # table -> path of a table whose log cannot be read: moved aside and rebuilt from scratch (--force only)
    broken: dict[str, str] = field(default_factory=dict)

    def views_of(self, table: Table) -> list[InputView]:
        """The input views `table` reads that the framework provides (in name order)."""
        return [self.views[name] for name in table.input_views if name in self.views]

    @property
    def rebuilds_anything(self) -> bool:
        return any(self.rebuild.values())

    @property
    def read_files(self) -> list[SourceFile]:
        return [f for view in self.views.values() for f in view.read_files(None)]

    @property
    def all_refused(self) -> list[RefusedFile]:
        return [f for view in self.views.values() for f in view.refused_files(None)]

    def refusal_message(self) -> str:
        refused = self.all_refused
        listed = "; ".join(f.message for f in refused[:3]) + (f"; and {len(refused) - 3} more" if len(refused) > 3 else "")
        return f"{len(refused)} source file(s) refused: {listed}"

    @property
    def subset_names(self) -> tuple[str, ...]:
        return self.subsets or self.config.subset_names

    def input_rows(self, table: Table, subsets: Optional[Sequence[str]] = None) -> Optional[int]:
        """Rows read from source files by an ODS table (of `subsets` only); None where it reads tables."""
        counts = [rows for rows in (view.input_rows(subsets) for view in self.views_of(table)) if rows is not None]
        return sum(counts) if counts else None

    @property
    def input_bytes(self) -> int:
        """Bytes the plan reads: its source files, or the upstream tables when it reads no source."""
        source_bytes = sum(f.footer.size for f in self.read_files)
        if source_bytes:
            return source_bytes
        known = self.project.tables_by_name
        planned = {t.name for t in self.tables}
        upstream = {name for t in self.tables for name in t.upstream_tables if name not in planned}
        return sum(tree_bytes(known[name].path(self.config)) for name in upstream if name in known)

    @property
    def shuffle_partitions(self) -> int:
        """The config's figure, or (auto) one partition per 256 MB of input, at least one per core."""
        if self.config.spark.shuffle_partitions:
            return self.config.spark.shuffle_partitions
        return max(local_cores(), -(-self.input_bytes // INPUT_BYTES_PER_SHUFFLE_PARTITION))

    def outside_edit(self, table: Table) -> Optional[str]:
        """Why `table` is rebuilt whole: it, or a planned table it is built on, was changed outside
        the pipeline (etl/build/outside_edits.py); None when neither was."""
        changed = self._changed_table_feeding(table)
        if changed is None:
            return None
        since = f"changed outside the pipeline since version {self.changed_outside[changed]}"
        return since if changed == table.name else f"built on laion.{changed}, {since}"

    def _changed_table_feeding(self, table: Table) -> Optional[str]:
        if table.name in self.changed_outside:
            return table.name
        planned = {t.name: t for t in self.tables}
        for name in table.upstream_tables:
            changed = self._changed_table_feeding(planned[name]) if name in planned else None
            if changed:
                return changed
        return None

    def describe_inputs(self, table: Table, subsets: Optional[Sequence[str]] = None) -> str:
        parts = [text for text in (view.describe(subsets) for view in self.views_of(table)) if text]
        parts.extend(f"laion.{name}" for name in table.upstream_tables)
        return ", ".join(parts) or "-"


def make_plan(project: Project, config: Config, layers: Optional[Sequence[str]] = None,
              subsets: Optional[Sequence[str]] = None, force: bool = False) -> BuildPlan:
    chosen_layers = tuple(layers) if layers else LAYERS
    unknown = [layer for layer in chosen_layers if layer not in LAYERS]
    if unknown:
        raise ConfigError(f"--layers: unknown layer {unknown[0]!r} (known: {', '.join(LAYERS)})")
    if subsets:
        missing = [s for s in subsets if s not in config.subset_names]
        if missing:
            raise ConfigError(f"--subsets: {missing[0]!r} is not in the config's sources "
                              f"({', '.join(config.subset_names)})")
    tables = [t for t in project.tables if t.layer in chosen_layers]
    plan = BuildPlan(project=project, config=config, layers=chosen_layers, subsets=tuple(subsets) if subsets else None,
                     tables=tables, force=force)
    needed = {view for table in tables for view in table.input_views}
    for name, view in input_views(project.families.values(), config, plan.subset_names).items():
        if name in needed:
            view.resolve()
            plan.views[name] = view
    plan.recorded = recorded_signatures(config)
    plan.signatures = planned_signatures(plan, plan.recorded)
    planned = {t.name for t in tables}
    read = [project.tables_by_name[name] for name in sorted({n for t in tables for n in t.upstream_tables} - planned)
            if name in project.tables_by_name]
    present = {table.name: _present(plan, table) for table in tables}  # first: a broken table is named here
    plan.changed_outside = changed_outside_pipeline(config, [t for t in [*tables, *read] if t.name not in plan.broken])
    _refuse_partial_repair(plan)
    for table in tables:
        whole = not present[table.name] or plan.outside_edit(table) is not None
        plan.rebuild[table.name] = partitions_to_build(plan, table, plan.signatures, plan.recorded, whole)
    return plan


def _present(plan: BuildPlan, table: Table) -> bool:
    """Whether `table` exists; one that cannot be read is absent under --force (noted in
    `plan.broken`), else the build stops naming it."""
    path = table.path(plan.config)
    try:
        return table_store(plan.config).exists(path)
    except BrokenTableError as exc:
        if not plan.force:
            raise BrokenTableError(f"{table.name}: {exc}; `laion-etl build --force` rebuilds it from scratch, "
                                   "moving the broken folder aside") from exc
        plan.broken[table.name] = path
        return False


def _refuse_partial_repair(plan: BuildPlan) -> None:
    """A table changed outside the pipeline must be rebuilt whole before anything reads it: a plan
    that only reads it (`--layers`) or rebuilds some of its subsets (`--subsets`) cannot."""
    for name, version in plan.changed_outside.items():
        table = plan.project.tables_by_name[name]
        changed = f"laion.{name} was changed outside the pipeline since version {version}"
        if name not in {t.name for t in plan.tables}:
            raise ConfigError(f"--layers: {changed} and the plan reads it: build layer {table.layer} too")
        if plan.subsets and partition_keys(table, plan) != (WHOLE_TABLE,):
            raise ConfigError(f"--subsets: {changed}: rebuild every subset of it (leave out --subsets)")
