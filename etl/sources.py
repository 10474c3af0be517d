"""Raw LAION parquet families read into one DataFrame each, with names and types normalised.

Copies of LAION disagree on types (WIDTH int32 or float64, SAMPLE_ID int or float, null-typed
columns) and on names (`aesthetic` vs `AESTHETIC_SCORE`, case). Sail cannot read files that
disagree on a type in one scan and has no `input_file_name()`, so every file is read on its own,
cast to the family's canonical types, given its lineage literals, and the files are unioned.
The footers are read first (cheap), so the plan and the row counts need no scan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import reduce
from typing import Optional

import pyarrow as pa
import pyarrow.types as pat
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from etl.storage import ParquetFooter, expand_glob, read_footer, read_table

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """An input file or glob that cannot be used; the message names it."""


class MissingInputError(SourceError):
    """A configured input that does not exist (a usage problem: exit code 2)."""


@dataclass(frozen=True)
class SourceColumn:
    name: str
    type: str  # Spark SQL type of the normalised column
    aliases: tuple[str, ...] = ()
    required: bool = False


_URL = SourceColumn("url", "string", required=True)
_TEXT = SourceColumn("text", "string", required=True)
_WIDTH = SourceColumn("width", "int")
_HEIGHT = SourceColumn("height", "int")
_SIMILARITY = SourceColumn("similarity", "double")
_LANGUAGE = SourceColumn("language", "string")
_SOURCE_HASH = SourceColumn("source_hash", "bigint", aliases=("hash",))
_PUNSAFE = SourceColumn("punsafe", "float")
_PWATERMARK = SourceColumn("pwatermark", "float")

FAMILY_COLUMNS: dict[str, tuple[SourceColumn, ...]] = {
    "base": (
        SourceColumn("sample_id", "bigint"), _URL, _TEXT, _WIDTH, _HEIGHT,
        SourceColumn("license", "string"), SourceColumn("nsfw", "string"), _SIMILARITY, _LANGUAGE,
    ),
    "joined": (_URL, _TEXT, _WIDTH, _HEIGHT, _SIMILARITY, _SOURCE_HASH, _PUNSAFE, _PWATERMARK, _LANGUAGE),
    "aesthetic": (
        _URL, _TEXT, _WIDTH, _HEIGHT, _SIMILARITY, _SOURCE_HASH, _PUNSAFE, _PWATERMARK,
        SourceColumn("aesthetic_score", "float", aliases=("aesthetic",), required=True),
    ),
}
FAMILIES = tuple(FAMILY_COLUMNS)
_INTEGRAL = {"int", "bigint"}


@dataclass(frozen=True)
class SourceFile:
    """One input part file and the lineage it carries into ODS."""

    family: str
    subset: str
    footer: ParquetFooter
    source_rank: int = 0  # aesthetic only: position of its source in the subset's priority list
    source_name: str = ""

    @property
    def path(self) -> str:
        return self.footer.path


def resolve_files(family: str, subset: str, globs: tuple[str, ...], ranked: bool = False) -> list[SourceFile]:
    """Expand globs into files with their footers; a glob matching nothing is an error."""
    files = []
    for rank, pattern in enumerate(globs):
        paths = expand_glob(pattern)
        if not paths:
            raise MissingInputError(f"sources.{subset}.{family}: no file matches {pattern}")
        for path in paths:
            files.append(SourceFile(
                family=family,
                subset=subset,
                footer=_footer(path),
                source_rank=rank if ranked else 0,
                source_name=_source_name(pattern) if ranked else "",
            ))
    return files


def _footer(path: str) -> ParquetFooter:
    try:
        return read_footer(path)
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"{path}: not a readable parquet file ({exc})") from None


def _source_name(pattern: str) -> str:
    """The folder a glob points into, e.g. `improved_aesthetics_4.5plus`."""
    parts = [p for p in pattern.rstrip("/").split("/") if p and not any(c in p for c in "*?[")]
    return parts[-1] if parts else pattern


def family_ddl(family: str) -> str:
    """The schema `read_family` returns for `family`, as Spark DDL."""
    lineage = ["source_rank int", "source_name string"] if family == "aesthetic" else []
    columns = [f"{c.name} {c.type}" for c in FAMILY_COLUMNS[family]]
    return ", ".join(columns + lineage + ["file_name string", "subset string"])


def read_family(spark, family: str, files: list[SourceFile]) -> DataFrame:
    """All files of one family as one DataFrame with canonical columns plus lineage."""
    if not files:
        return spark.createDataFrame([], family_ddl(family))
    frames = [read_source_file(spark, f) for f in files]
    return reduce(lambda left, right: left.unionByName(right), frames)


def read_source_file(spark, source: SourceFile) -> DataFrame:
    columns = FAMILY_COLUMNS[source.family]
    by_lower = {field.name.lower(): field for field in source.footer.schema}
    selected = [_normalised(by_lower, column, source) for column in columns]
    if source.family == "aesthetic":
        selected += [F.lit(source.source_rank).cast("int").alias("source_rank"),
                     F.lit(source.source_name).alias("source_name")]
    selected += [F.lit(source.footer.file_name).alias("file_name"), F.lit(source.subset).alias("subset")]
    return _load(spark, source, columns, by_lower).select(*selected)


def _load(spark, source: SourceFile, columns: tuple[SourceColumn, ...], by_lower: dict[str, pa.Field]) -> DataFrame:
    """The file as a DataFrame; through pyarrow where the engine's reader could corrupt NaNs.

    Sail 0.7.2 reads a float column whose parquet statistics say min == max as that constant,
    so a NaN beside one repeated value silently becomes the value. Such files (rare outside
    tests: it takes a column with a single distinct non-NaN value) are decoded by pyarrow and
    handed to the engine as data.
    """
    used = {f.name for f in filter(None, (_find_field(by_lower, c) for c in columns))}
    if not used & set(source.footer.constant_float_columns):
        return spark.read.parquet(source.path)
    log.info("%s: float statistics with min == max; reading it through pyarrow", source.path)
    table = read_table(source.path, columns=sorted(used))
    return spark.createDataFrame(table)


def _normalised(by_lower: dict[str, pa.Field], column: SourceColumn, source: SourceFile) -> Column:
    field = _find_field(by_lower, column)
    if field is None:
        if column.required:
            names = ", ".join(sorted(by_lower))
            raise SourceError(
                f"{source.path}: required column {column.name!r} is missing "
                f"(family {source.family}; the file has: {names})"
            )
        return F.lit(None).cast(column.type).alias(column.name)
    value = F.col(f"`{field.name}`")
    if column.type in _INTEGRAL and pat.is_floating(field.type):
        # NaN has no integer value; Spark's ANSI cast would fail the whole file.
        value = F.nanvl(value, F.lit(None))
    return value.cast(column.type).alias(column.name)


def _find_field(by_lower: dict[str, pa.Field], column: SourceColumn) -> Optional[pa.Field]:
    for name in (column.name, *column.aliases):
        if name in by_lower:
            return by_lower[name]
    return None
