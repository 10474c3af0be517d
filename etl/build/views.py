"""The input views: what a table's SQL reads besides `laion.*` tables, one class per kind.

- `src_laion_<family>` (SourceFamilyView): a source family's part files of the planned subsets,
  each read on its own and normalised as the family declares (conf/families.yaml,
  etl.ingest.sources); the rows the ODS cannot accept are a query of their own, for the
  quarantine table, which the build runs only where some rows were rejected.
- `src_image_index` (ImageIndexView): every img2dataset shard of the configured folders,
  indexed in parallel by the engine (etl.ingest.images).
- `cfg_subsets` (SubsetsView): the configured subsets and their default language.

Every view resolves its inputs when the build is planned, before any engine starts (a missing or
unusable input fails in seconds, naming it); then it signs them for the incremental rebuild
(etl.build.inputs), describes itself for `--dry-run`, counts its input rows and binds itself to
the session as a temp view. `subsets` arguments name the subset partitions concerned; None means
every one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Iterable, Optional, Sequence

from pyspark.sql import DataFrame

from etl.build.summary import plural
from etl.ingest.images import INDEX_DDL, index_batches, list_shards
from etl.ingest.sources import (MissingInputError, RefusedFile, SourceError, SourceFile, accepted_rows, read_family,
                                rejected_rows, resolve_files)
from etl.ingest.storage import file_stat
from etl.project.config import Config
from etl.project.families import Family

SOURCE_VIEW_PREFIX = "src_laion_"
IMAGE_INDEX_VIEW = "src_image_index"
SUBSETS_VIEW = "cfg_subsets"
# One shard per task: indexing opens image files, which parallelises well.
MAX_INDEX_TASKS = 64


class InputView(ABC):
    """One view the SQL can read. By default it reads no source files and rejects no row."""

    name: str
    rejects_rows = False

    def resolve(self) -> None:
        """Find the inputs, before any engine starts."""

    @abstractmethod
    def sign(self, subsets: Optional[Sequence[str]]) -> list:
        """What the view reads for these subsets, as signature entries (JSON values)."""

    def describe(self, subsets: Optional[Sequence[str]]) -> Optional[str]:
        """The inputs in a few words for the plan, or None when there is nothing worth saying."""
        return None

    def input_rows(self, subsets: Optional[Sequence[str]]) -> Optional[int]:
        """Rows read from source files, or None when the view reads none."""
        return None

    def read_files(self, subsets: Optional[Sequence[str]]) -> list[SourceFile]:
        """Source part files the view reads (recorded in meta.source_files)."""
        return []

    def refused_files(self, subsets: Optional[Sequence[str]]) -> list[RefusedFile]:
        """Source part files refused when the view resolved (the on_bad_file policy decides)."""
        return []

    @abstractmethod
    def bind(self, spark, subsets: Sequence[str]) -> None:
        """Create the temp view over the inputs of `subsets`."""

    def rejected_rows(self, spark, subsets: Sequence[str]) -> Optional[DataFrame]:
        """The rows of `subsets` the view leaves out, for the quarantine (a query of its own: it
        reads the source files again), or None when it can reject none (`rejects_rows`)."""
        return None


def _covers(subsets: Optional[Sequence[str]], subset: str) -> bool:
    return subsets is None or subset in subsets


class SourceFamilyView(InputView):
    rejects_rows = True

    def __init__(self, family: Family, config: Config, planned_subsets: Sequence[str]) -> None:
        self.family = family
        self.name = SOURCE_VIEW_PREFIX + family.name
        self.config = config
        self.planned_subsets = planned_subsets
        self.files: list[SourceFile] = []
        self.refused: list[RefusedFile] = []

    def resolve(self) -> None:
        seen: dict[str, SourceFile] = {}  # by fingerprint, across subsets: a copied part file is refused anywhere
        for sources in self.config.sources:
            if sources.name not in self.planned_subsets:
                continue
            resolved = resolve_files(self.family.name, sources.name, sources.globs(self.family.name),
                                     ranked=self.family.ranked, seen=seen)
            self.files.extend(resolved.files)
            self.refused.extend(resolved.refused)
            self._require_a_file(sources.name)

    def refuse(self, source: SourceFile, reason: str) -> None:
        """Stop reading a file found unusable only when the engine read it (see `resolve`)."""
        self.files.remove(source)
        self.refused.append(RefusedFile(source.family, source.subset, source.path, reason, source.footer.size,
                                        source.footer.modified_ns))
        self._require_a_file(source.subset)

    def _require_a_file(self, subset: str) -> None:
        """A required family must keep a file in every subset, whatever `on_bad_file` says."""
        if self.family.required and not self.read_files((subset,)):
            refused = self.refused_files((subset,))
            raise SourceError(f"sources.{subset}.{self.family.name}: every file was refused, nothing to "
                              "build from: " + "; ".join(f.message for f in refused[:3]))

    def read_files(self, subsets: Optional[Sequence[str]]) -> list[SourceFile]:
        return [f for f in self.files if _covers(subsets, f.subset)]

    def refused_files(self, subsets: Optional[Sequence[str]]) -> list[RefusedFile]:
        return [f for f in self.refused if _covers(subsets, f.subset)]

    def sign(self, subsets: Optional[Sequence[str]]) -> list:
        # The family's declaration is part of what the rows are: a changed type, alias or swap rebuilds.
        return [
            [self.name + ":declaration", asdict(self.family)],
            [self.name, sorted([f.path, f.footer.size, f.footer.modified_ns, f.footer.fingerprint, f.source_rank]
                               for f in self.read_files(subsets))],
            [self.name + ":refused", sorted([f.path, f.size, f.modified_ns] for f in self.refused_files(subsets))],
        ]

    def describe(self, subsets: Optional[Sequence[str]]) -> str:
        files = plural(len(self.read_files(subsets)), f"{self.family.name} file")
        return f"{files} ({plural(self.input_rows(subsets), 'row')})"

    def input_rows(self, subsets: Optional[Sequence[str]]) -> int:
        return sum(f.footer.num_rows for f in self.read_files(subsets))

    def bind(self, spark, subsets: Sequence[str]) -> None:
        accepted_rows(read_family(spark, self.family, self.read_files(subsets))).createOrReplaceTempView(self.name)

    def rejected_rows(self, spark, subsets: Sequence[str]) -> DataFrame:
        return rejected_rows(read_family(spark, self.family, self.read_files(subsets)))


@dataclass(frozen=True)
class ImageShard:
    folder: str
    file_name: str
    size: Optional[int] = None
    modified_ns: Optional[int] = None


class ImageIndexView(InputView):
    """Keyed by hash alone (one download can mix subsets), so every subset reads every shard."""

    name = IMAGE_INDEX_VIEW

    def __init__(self, config: Config) -> None:
        self.config = config
        self.shards: list[ImageShard] = []

    def resolve(self) -> None:
        for folder in self.config.images:
            try:
                names = list_shards(folder)
            except FileNotFoundError:
                raise MissingInputError(f"images: img2dataset output folder not found: {folder}") from None
            folder = folder.rstrip("/")
            self.shards.extend(ImageShard(folder, name, *file_stat(f"{folder}/{name}")) for name in names)

    def sign(self, subsets: Optional[Sequence[str]]) -> list:
        return [[self.name, sorted([s.folder, s.file_name, s.size, s.modified_ns] for s in self.shards)]]

    def describe(self, subsets: Optional[Sequence[str]]) -> str:
        return f"{plural(len(self.shards), 'img2dataset shard')} in {plural(len(self.config.images), 'folder')}"

    def bind(self, spark, subsets: Sequence[str]) -> None:
        if not self.shards:
            index = spark.createDataFrame([], INDEX_DDL)
        else:
            listing = spark.createDataFrame([(s.folder, s.file_name) for s in self.shards],
                                            "folder string, file_name string")
            index = listing.repartition(min(len(self.shards), MAX_INDEX_TASKS)).mapInArrow(index_batches, INDEX_DDL)
        index.createOrReplaceTempView(self.name)


class SubsetsView(InputView):
    name = SUBSETS_VIEW

    def __init__(self, config: Config) -> None:
        self.config = config

    def sign(self, subsets: Optional[Sequence[str]]) -> list:
        return [[self.name, sorted([s.name, s.language] for s in self.config.sources if _covers(subsets, s.name))]]

    def bind(self, spark, subsets: Sequence[str]) -> None:
        rows = [(s.name, s.language) for s in self.config.sources]
        spark.createDataFrame(rows, "subset string, default_language string").createOrReplaceTempView(self.name)


def input_views(families: Iterable[Family], config: Config, planned_subsets: Sequence[str]) -> dict[str, InputView]:
    """Every view the framework provides, by name, not yet resolved (in the order they resolve)."""
    views = [*(SourceFamilyView(family, config, planned_subsets) for family in families),
             ImageIndexView(config), SubsetsView(config)]
    return {view.name: view for view in views}
