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


REJECT_REASON = "_reject_reason"
ORIGINAL_VALUES = "_original_values"
SOURCE_PATH = "_source_path"
_HELPER_COLUMNS = (REJECT_REASON, ORIGINAL_VALUES, SOURCE_PATH)


def family_ddl(family: str) -> str:
    """The schema `read_family` returns for `family`, as Spark DDL."""
    lineage = ["source_rank int", "source_name string"] if family == "aesthetic" else []
    columns = [f"{c.name} {c.type}" for c in FAMILY_COLUMNS[family]]
    helpers = [f"{name} string" for name in _HELPER_COLUMNS]
    return ", ".join(columns + lineage + ["file_name string", "subset string"] + helpers)


def read_family(spark, family: str, files: list[SourceFile]) -> DataFrame:
    """All files of one family as one DataFrame: canonical columns, lineage, and the helper
    columns `_reject_reason` (null for acceptable rows), `_original_values` (the row as read, as
    JSON) and `_source_path`, which `accepted_rows` / `rejected_rows` split on."""
    if not files:
        return spark.createDataFrame([], family_ddl(family))
    frames = [read_source_file(spark, f) for f in files]
    return reduce(lambda left, right: left.unionByName(right), frames)


def accepted_rows(family_rows: DataFrame) -> DataFrame:
    return family_rows.filter(F.col(REJECT_REASON).isNull()).drop(*_HELPER_COLUMNS)


def rejected_rows(family_rows: DataFrame) -> DataFrame:
    """Rows the ODS cannot accept: file, reason and original values, for the quarantine table."""
    return family_rows.filter(F.col(REJECT_REASON).isNotNull()).select(
        "file_name", F.col(SOURCE_PATH).alias("source_path"), F.col(REJECT_REASON).alias("reason"),
        F.col(ORIGINAL_VALUES).alias("original_values"), "subset")


def read_source_file(spark, source: SourceFile) -> DataFrame:
    columns = FAMILY_COLUMNS[source.family]
    by_lower = {field.name.lower(): field for field in source.footer.schema}
    raw = _load(spark, source, columns, by_lower)
    file_problem = _file_problem(by_lower, columns)
    if file_problem:
        log.warning("%s: %s; its %d rows go to quarantine", source.path, file_problem, source.footer.num_rows)
        selected = [F.lit(None).cast(c.type).alias(c.name) for c in columns]
        reason = F.lit(file_problem)
    else:
        pairs = [_normalised(by_lower, column) for column in columns]
        selected = [value.alias(column.name) for column, (value, _) in zip(columns, pairs)]
        problems = [problem for _, problem in pairs if problem is not None]
        reason = _first_problem(problems)
    if source.family == "aesthetic":
        selected += [F.lit(source.source_rank).cast("int").alias("source_rank"),
                     F.lit(source.source_name).alias("source_name")]
    selected += [
        F.lit(source.footer.file_name).alias("file_name"),
        F.lit(source.subset).alias("subset"),
        reason.alias(REJECT_REASON),
        F.to_json(F.struct(*[F.col(f"`{name}`") for name in raw.columns])).alias(ORIGINAL_VALUES),
        F.lit(source.path).alias(SOURCE_PATH),
    ]
    return raw.select(*selected)


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
    return spark.createDataFrame(read_table(source.path))


def _file_problem(by_lower: dict[str, pa.Field], columns: tuple[SourceColumn, ...]) -> Optional[str]:
    """Why no row of this file can be accepted (a schema that cannot be reconciled), or None."""
    for column in columns:
        field = _find_field(by_lower, column)
        if field is None:
            if column.required:
                return f"file lacks required column {column.name}"
        elif not _castable(field.type, column.type):
            return f"column {field.name} is {field.type}, which cannot become {column.type}"
    return None


def _castable(source: pa.DataType, target: str) -> bool:
    if pat.is_nested(source) or pat.is_dictionary(source):
        return False
    if target == "string":
        return True
    return pat.is_integer(source) or pat.is_floating(source) or pat.is_boolean(source) \
        or pat.is_string(source) or pat.is_large_string(source) or pat.is_null(source)


def _normalised(by_lower: dict[str, pa.Field], column: SourceColumn) -> tuple[Column, Optional[Column]]:
    """The column cast to its canonical type, and an expression naming the problem when a value
    is present but cannot be converted (null when it is fine)."""
    field = _find_field(by_lower, column)
    if field is None:
        return F.lit(None).cast(column.type), None
    raw = F.col(f"`{field.name}`")
    present = raw.isNotNull()
    if pat.is_floating(field.type) and column.type != "string":
        # NaN is a missing number in LAION's float columns, not a broken row.
        raw = F.nanvl(raw, F.lit(None))
        present = raw.isNotNull()
    value = raw.try_cast(column.type)
    problem = F.when(present & value.isNull(), F.lit(f"{column.name} is not a valid {column.type}"))
    if column.name == "url":
        problem = (F.when(raw.isNull(), F.lit("url is null"))
                   .when(F.trim(raw.cast("string")) == "", F.lit("url is empty"))
                   .otherwise(problem))
    return value, problem


def _first_problem(problems: list[Column]) -> Column:
    if not problems:
        return F.lit(None).cast("string")
    return F.coalesce(*problems)


def _find_field(by_lower: dict[str, pa.Field], column: SourceColumn) -> Optional[pa.Field]:
    for name in (column.name, *column.aliases):
        if name in by_lower:
            return by_lower[name]
    return None
