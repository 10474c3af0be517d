"""The build plan: which tables, from which inputs, in which order — resolved before any engine starts.

Planning expands every glob and reads every parquet footer, so a missing or unreadable input
fails in seconds with its name, not an hour into the build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

from etl.project.config import Config, ConfigError
from etl.engine.session import local_cores
from etl.ingest.storage import file_stat, tree_bytes
from etl.warehouse.store import table_exists
from etl.ingest.images import list_shards
from etl.build.inputs import partitions_to_build, planned_signatures
from etl.warehouse.meta import recorded_signatures
from etl.project.project import Project
from etl.project.tables import LAYERS, Table
from etl.ingest.sources import FAMILIES, MissingInputError, RefusedFile, SourceError, SourceFile, resolve_files

# Bytes of (compressed parquet) input per shuffle partition when the config says `auto`: big
# enough that a cluster run gets thousands of partitions, not hundreds of thousands.
INPUT_BYTES_PER_SHUFFLE_PARTITION = 256 * 1024 * 1024

REQUIRED_FAMILIES = ("base", "joined")
SOURCE_VIEWS = {f"src_laion_{family}": family for family in FAMILIES}
IMAGE_VIEW = "src_image_index"
SUBSET_DEFAULTS_VIEW = "cfg_subsets"


@dataclass(frozen=True)
class ImageShard:
    folder: str
    file_name: str
    size: Optional[int] = None
    modified_ns: Optional[int] = None


@dataclass
class BuildPlan:
    project: Project
    config: Config
    layers: tuple[str, ...]
    subsets: Optional[tuple[str, ...]]  # None: every configured subset, whole tables rewritten
    tables: list[Table]
    source_files: dict[str, list[SourceFile]] = field(default_factory=dict)
    refused_files: dict[str, list[RefusedFile]] = field(default_factory=dict)  # by family
    image_shards: list[ImageShard] = field(default_factory=list)
    force: bool = False  # rebuild every planned table, changed inputs or not
    # (table, subset or '*') -> signature of what it is built from now / when last published (etl/inputs.py)
    signatures: dict[tuple[str, str], Optional[str]] = field(default_factory=dict)
    recorded: dict[tuple[str, str], str] = field(default_factory=dict)
    rebuild: dict[str, tuple[str, ...]] = field(default_factory=dict)  # table -> partitions this build redoes

    @property
    def all_refused(self) -> list[RefusedFile]:
        return [f for files in self.refused_files.values() for f in files]

    def refusal_message(self) -> str:
        refused = self.all_refused
        listed = "; ".join(f.message for f in refused[:3]) + (f"; and {len(refused) - 3} more" if len(refused) > 3 else "")
        return f"{len(refused)} source file(s) refused: {listed}"

    @property
    def subset_names(self) -> tuple[str, ...]:
        return self.subsets or self.config.subset_names

    def files_of(self, family: str, subsets: Optional[Sequence[str]] = None) -> list[SourceFile]:
        return [f for f in self.source_files[family] if subsets is None or f.subset in subsets]

    def input_rows(self, table: Table, subsets: Optional[Sequence[str]] = None) -> Optional[int]:
        """Rows read from source files by an ODS table (of `subsets` only); None where it reads tables."""
        families = [SOURCE_VIEWS[v] for v in table.input_views if v in SOURCE_VIEWS]
        if families:
            return sum(f.footer.num_rows for family in families for f in self.files_of(family, subsets))
        return None

    @property
    def input_bytes(self) -> int:
        """Bytes the plan reads: its source files, or the upstream tables when it reads no source."""
        source_bytes = sum(f.footer.size for files in self.source_files.values() for f in files)
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

    def describe_inputs(self, table: Table, subsets: Optional[Sequence[str]] = None) -> str:
        parts = []
        for view in table.input_views:
            if view in SOURCE_VIEWS:
                files = self.files_of(SOURCE_VIEWS[view], subsets)
                parts.append(f"{len(files)} {SOURCE_VIEWS[view]} files ({sum(f.footer.num_rows for f in files):,} rows)")
            elif view == IMAGE_VIEW:
                parts.append(f"{len(self.image_shards)} img2dataset shards in {len(self.config.images)} folders")
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
    plan = BuildPlan(project=project, config=config, layers=chosen_layers, subsets=tuple(subsets) if subsets else None, tables=tables,
                     force=force)
    needed_views = {view for table in tables for view in table.input_views}
    for view, family in SOURCE_VIEWS.items():
        if view in needed_views:
            plan.source_files[family], plan.refused_files[family] = _family_files(config, family, plan.subset_names)
    if IMAGE_VIEW in needed_views:
        plan.image_shards = _image_shards(config)
    plan.recorded = recorded_signatures(config)
    plan.signatures = planned_signatures(plan, plan.recorded)
    for table in tables:
        present = table_exists(table.path(config), config.format)
        plan.rebuild[table.name] = partitions_to_build(plan, table, plan.signatures, plan.recorded, present)
    return plan


def _family_files(config: Config, family: str, subsets: Sequence[str]) -> tuple[list[SourceFile], list[RefusedFile]]:
    files, refused = [], []
    seen: dict[str, str] = {}  # fingerprint -> path, across subsets: a copied part file is refused anywhere
    for sources in config.sources:
        if sources.name not in subsets:
            continue
        resolved = resolve_files(family, sources.name, getattr(sources, family), ranked=family == "aesthetic",
                                 seen=seen)
        if resolved.refused and not resolved.files and family in REQUIRED_FAMILIES:
            raise SourceError(f"sources.{sources.name}.{family}: every file was refused, nothing to build from: "
                              + "; ".join(f.message for f in resolved.refused[:3]))
        files.extend(resolved.files)
        refused.extend(resolved.refused)
    return files, refused


def _image_shards(config: Config) -> list[ImageShard]:
    shards = []
    for folder in config.images:
        try:
            names = list_shards(folder)
        except FileNotFoundError:
            raise MissingInputError(f"images: img2dataset output folder not found: {folder}") from None
        folder = folder.rstrip("/")
        shards.extend(ImageShard(folder, name, *file_stat(f"{folder}/{name}")) for name in names)
    return shards
