"""Raw LAION parquet families read into one DataFrame each, with names and types normalised.

Copies of LAION disagree on types (WIDTH int32 or float64, SAMPLE_ID int or float, null-typed
columns) and on names (`aesthetic` vs `AESTHETIC_SCORE`, case). Sail cannot read files that
disagree on a type in one scan and has no `input_file_name()`, so every file is read on its own,
cast to the family's canonical types, given its lineage literals, and the files are unioned.
What a family's canonical columns are is its declaration (conf/families.yaml,
etl.project.families), not code here. The footers are read first (cheap), so the plan and the
row counts need no scan.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.types as pat
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_type
from pyspark.sql.types import StructType

from etl.engine.paths import engine_path
from etl.ingest.storage import ParquetFooter, expand_glob, file_stat, filesystem, read_footer, read_table
from etl.project.families import Family, SourceColumn

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """An input file or glob that cannot be used; the message names it."""


class MissingInputError(SourceError):
    """A configured input that does not exist (a usage problem: exit code 2)."""


class UndecodableFileError(SourceError):
    """A source file whose footer reads but whose data the engine cannot decode: found only by reading it."""

    def __init__(self, source: SourceFile, reason: str) -> None:
        super().__init__(f"{source.path}: {reason}")
        self.source, self.reason = source, reason


_INTEGRAL = {"int", "bigint"}


@dataclass(frozen=True)
class SourceFile:
    """One input part file and the lineage it carries into ODS."""

    family: str
    subset: str
    footer: ParquetFooter
    source_rank: int = 0  # ranked families only: position of its source in the subset's priority list
    source_name: str = ""

    @property
    def path(self) -> str:
        return self.footer.path


@dataclass(frozen=True)
class RefusedFile:
    """A source file the build will not read, and why (the message names the file)."""

    family: str
    subset: str
    path: str
    reason: str
    size: Optional[int] = None
    modified_ns: Optional[int] = None

    @property
    def message(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class ResolvedFiles:
    files: list[SourceFile]
    refused: list[RefusedFile]


def resolve_files(family: str, subset: str, globs: tuple[str, ...], ranked: bool = False,
                  seen: Optional[dict[str, SourceFile]] = None) -> ResolvedFiles:
    """Expand globs into files with their footers; a glob matching nothing is an error.

    Files that cannot be used (unreadable, zero bytes, a byte-for-byte copy of a file already
    seen, per `seen`: fingerprint -> the file first listed) are returned as refused, for the
    caller's policy.
    """
    seen = {} if seen is None else seen
    resolved = ResolvedFiles([], [])
    for rank, pattern in enumerate(globs):
        paths = expand_glob(pattern)
        if not paths:
            raise MissingInputError(f"sources.{subset}.{family}: no file matches {pattern}")
        for path in paths:
            footer, problem = _footer(path)
            if problem is None and footer.fingerprint in seen:
                problem = _listed_before(seen[footer.fingerprint], path, subset)
            if problem is not None:
                size, modified_ns = file_stat(path)
                resolved.refused.append(RefusedFile(family, subset, path, problem, size, modified_ns))
                continue
            source = SourceFile(
                family=family,
                subset=subset,
                footer=footer,
                source_rank=rank if ranked else 0,
                source_name=_source_name(pattern) if ranked else "",
            )
            seen[footer.fingerprint] = source
            resolved.files.append(source)
    return resolved


def _listed_before(first: SourceFile, path: str, subset: str) -> str:
    """Why `path` is refused when a file with its fingerprint, `first`, is already read."""
    if first.path != path:
        return f"duplicate of {first.path} (same size and footer): its rows would be read twice"
    if first.subset != subset:
        return f"listed in two subsets, {first.subset} and {subset}: its rows would be read into both"
    return f"matched by two globs of sources.{subset}.{first.family}: its rows would be read twice"


def _footer(path: str) -> tuple[Optional[ParquetFooter], Optional[str]]:
    """The file's footer, or why the file itself is unusable. A store that cannot be reached
    (an S3 error after the retries, a dropped connection) is not a bad file: that fails the run."""
    try:
        return read_footer(path), None
    except (OSError, pa.ArrowException) as exc:
        message = " ".join(str(exc).split())
        if not _is_format_error(exc, message):
            raise SourceError(f"{path}: cannot be read ({message})") from None
        size, _ = file_stat(path)
        if size == 0:
            return None, "empty file (0 bytes), not parquet"
        return None, f"not a readable parquet file ({message})"


FORMAT_ERROR_MARKS = ("couldn't deserialize thrift", "parquet magic bytes", "parquet file size")


def _is_format_error(exc: Exception, message: str) -> bool:
    # pyarrow reports a malformed footer as ArrowInvalid, or as OSError from the thrift decoder;
    # object-store errors are OSErrors too, and their messages name the key (`….parquet`).
    lowered = message.lower()
    return isinstance(exc, pa.ArrowInvalid) or any(mark in lowered for mark in FORMAT_ERROR_MARKS)


def _source_name(pattern: str) -> str:
    """The folder a glob points into, e.g. `improved_aesthetics_4.5plus`."""
    parts = [p for p in pattern.rstrip("/").split("/") if p and not any(c in p for c in "*?[")]
    return parts[-1] if parts else pattern


REJECT_REASON = "_reject_reason"
ORIGINAL_VALUES = "_original_values"
SOURCE_PATH = "_source_path"
_HELPER_COLUMNS = (REJECT_REASON, ORIGINAL_VALUES, SOURCE_PATH)


def family_ddl(family: Family) -> str:
    """The schema `read_family` returns for `family`, as Spark DDL."""
    lineage = ["source_rank int", "source_name string"] if family.ranked else []
    columns = [f"{c.name} {c.type}" for c in family.columns]
    helpers = [f"{name} string" for name in _HELPER_COLUMNS]
    return ", ".join(columns + lineage + ["file_name string", "subset string"] + helpers)


def read_family(spark, family: Family, files: list[SourceFile]) -> DataFrame:
    """All files of one family as one DataFrame: canonical columns, lineage, and the helper
    columns `_reject_reason` (null for acceptable rows), `_original_values` (the row as read, as
    JSON) and `_source_path`, which `accepted_rows` / `rejected_rows` split on."""
    if not files:
        return spark.createDataFrame([], family_ddl(family))
    reader = FamilyReader(spark, family)
    return _union_all([reader.read(f) for f in files])


def _union_all(frames: list[DataFrame]) -> DataFrame:
    """The frames' rows in order, unioned pairwise, level by level.

    JVM Spark checks the whole plan of each union it makes: unioned one after another, the 150
    files of the bench's 10M rows took 3.3-5.8 s to union, pairwise 1.0-1.2 s. Both engines
    flatten nested unions when they plan the query, so the plan run is the same.
    """
    while len(frames) > 1:
        frames = [frames[i].unionByName(frames[i + 1]) if i + 1 < len(frames) else frames[i]
                  for i in range(0, len(frames), 2)]
    return frames[0]


def accepted_rows(family_rows: DataFrame) -> DataFrame:
    return family_rows.filter(F.col(REJECT_REASON).isNull()).drop(*_HELPER_COLUMNS)


def rejected_rows(family_rows: DataFrame) -> DataFrame:
    """Rows the ODS cannot accept: file, reason and original values, for the quarantine table."""
    return family_rows.filter(F.col(REJECT_REASON).isNotNull()).select(
        "file_name", F.col(SOURCE_PATH).alias("source_path"), F.col(REJECT_REASON).alias("reason"),
        F.col(ORIGINAL_VALUES).alias("original_values"), "subset")


class FamilyReader:
    """Reads one family's files, each on its own, as the family declares.

    What depends only on a file's schema is worked out once per schema: the Spark schema (see
    `_load`) and the expressions that normalise its columns. On JVM Spark each expression is a
    few calls into the JVM: building them for every file took ~2.4 s of the 8.6 s it took to
    bind the 45 base files of the bench's 10M rows (cProfile, 13,261 JVM calls), files that
    come in 7 schemas.
    """

    def __init__(self, spark, family: Family) -> None:
        self.spark, self.family = spark, family
        self._spark_schemas: dict[str, StructType] = {}
        self._projections: dict[str, tuple[list[Column], Column]] = {}

    def read(self, source: SourceFile) -> DataFrame:
        columns = self.family.columns
        schema = _engine_schema(source.footer.schema)
        by_lower = {field.name.lower(): field for field in schema}
        raw = _load(self.spark, source, columns, by_lower, self._spark_schemas)
        file_problem = _file_problem(schema, by_lower, columns)
        if file_problem:
            log.warning("%s: %s; its %d rows go to quarantine", source.path, file_problem, source.footer.num_rows)
        key = schema.to_string(show_schema_metadata=False)
        projection = self._projections.get(key)
        if projection is None:
            projection = self._projections[key] = self._normalising(by_lower, file_problem)
        values, reason = projection
        lineage = []
        if self.family.ranked:
            lineage += [F.lit(source.source_rank).cast("int").alias("source_rank"),
                        F.lit(source.source_name).alias("source_name")]
        lineage += [
            F.lit(source.footer.file_name).alias("file_name"),
            F.lit(source.subset).alias("subset"),
            reason.alias(REJECT_REASON),
            # `*`, not the names: two columns that differ only in case cannot be named apart (binary
            # values come out base64-encoded).
            F.to_json(F.struct("*")).alias(ORIGINAL_VALUES),
            F.lit(source.path).alias(SOURCE_PATH),
        ]
        return raw.select(*values, *lineage)

    def _normalising(self, by_lower: dict[str, pa.Field], file_problem: Optional[str]) -> tuple[list[Column], Column]:
        """The family's columns from a file of this schema, and the reason a row is rejected (null: accepted)."""
        columns = self.family.columns
        if file_problem:
            return [F.lit(None).cast(c.type).alias(c.name) for c in columns], F.lit(file_problem)
        pairs = [_normalised(by_lower, column) for column in columns]
        values = {column.name: value for column, (value, _) in zip(columns, pairs)}
        if self.family.swap:
            # Each value moves to the column it belongs in; a problem keeps naming the file's column.
            first, second = self.family.swap
            values[first], values[second] = values[second], values[first]
        problems = [problem for _, problem in pairs if problem is not None]
        return [values[column.name].alias(column.name) for column in columns], _first_problem(problems)


def _load(spark, source: SourceFile, columns: tuple[SourceColumn, ...], by_lower: dict[str, pa.Field],
          schemas: dict[str, StructType]) -> DataFrame:
    """The file as a DataFrame with the columns of `_engine_schema`; through pyarrow where the
    engine's reader could corrupt NaNs.

    JVM Spark infers a file's schema with a job of its own (0.16 s a file on 2 cores, 150 files
    in the bench's 10M-row build; 0.04 s given the schema): there, a file whose Parquet schema
    equals one read before is given the schema Spark inferred for it. A Spark Connect client
    (Sail) infers nothing until the query runs, and Sail refuses a given schema for a
    dictionary-encoded column, which the Parquet schema does not tell from a plain one.

    Sail 0.7.2 reads a float column whose parquet statistics say min == max as that constant,
    so a NaN beside one repeated value silently becomes the value. Such files (rare outside
    tests: it takes a column with a single distinct non-NaN value) are decoded by pyarrow and
    handed to the engine as data.
    """
    used = {f.name for f in filter(None, (_find_field(by_lower, c) for c in columns))}
    if not used & set(source.footer.constant_float_columns):
        path = engine_path(source.path)
        if type(spark).__module__.startswith("pyspark.sql.connect"):
            return _decode_dictionaries(spark.read.parquet(path), source.footer.schema)
        known = schemas.get(source.footer.spark_schema_source)
        frame = (spark.read if known is None else spark.read.schema(known)).parquet(path)
        if known is None:
            schemas[source.footer.spark_schema_source] = frame.schema
        return _decode_dictionaries(frame, source.footer.schema)
    log.info("%s: float statistics with min == max; reading it through pyarrow", source.path)
    table = read_table(source.path)
    # pyarrow does not check UTF-8 when decoding and the engine refuses such data with an error
    # that names no file; the engine's own reader fails on it too, so this path fails the same way.
    problem = _invalid_utf8_column(table)
    if problem:
        raise UndecodableFileError(source, problem)
    return spark.createDataFrame(table.cast(_engine_schema(table.schema)))


# Unsigned integers have no Spark type: each becomes the narrowest signed type holding all its values.
_SIGNED_HOLDING_UNSIGNED = {8: pa.int16(), 16: pa.int32(), 32: pa.int64(), 64: pa.decimal128(20, 0)}


def _engine_type(kind: pa.DataType) -> pa.DataType:
    """The Arrow type a Spark engine takes a column of `kind` as, every value kept.

    Sail cannot hand a dictionary-encoded column to anything that needs its Spark type (`to_json`,
    the client's schema), and pyspark refuses unsigned Arrow integers; both are decoded here
    to plain types, and the family's casts then decide value by value what fits.
    """
    if pat.is_dictionary(kind):
        return _engine_type(kind.value_type)
    if pat.is_unsigned_integer(kind):
        return _SIGNED_HOLDING_UNSIGNED[kind.bit_width]
    return kind


def _engine_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([field.with_type(_engine_type(field.type)) for field in schema], metadata=schema.metadata)


def _decode_dictionaries(frame: DataFrame, schema: pa.Schema) -> DataFrame:
    """The engine's own read with its dictionary-encoded columns cast to their values' type
    (unsigned integers need nothing: the engine casts them value by value)."""
    decoded = {field.name: F.col(f"`{field.name}`").cast(from_arrow_type(_engine_type(field.type)).simpleString())
               for field in schema if pat.is_dictionary(field.type)}
    return frame.withColumns(decoded) if decoded else frame


def _file_problem(schema: pa.Schema, by_lower: dict[str, pa.Field],
                  columns: tuple[SourceColumn, ...]) -> Optional[str]:
    """Why no row of this file can be accepted (a schema that cannot be reconciled), or None."""
    for column in columns:
        names = (column.name, *column.aliases)
        candidates = [f.name for f in schema if f.name.lower() in names]
        if len(candidates) > 1:
            return f"{column.name} is ambiguous: the file has columns {', '.join(candidates)}"
        field = _find_field(by_lower, column)
        if field is None:
            if column.required:
                return f"file lacks required column {column.name}"
        elif not _castable(field.type, column.type):
            return f"column {field.name} is {field.type}, which cannot become {column.type}"
    return None


def _castable(source: pa.DataType, target: str) -> bool:
    if pat.is_nested(source):
        return False
    if target == "string":
        return True
    return pat.is_integer(source) or pat.is_floating(source) or pat.is_decimal(source) or pat.is_boolean(source) \
        or _is_text(source) or pat.is_null(source)


def _is_text(kind: pa.DataType) -> bool:
    return pat.is_string(kind) or pat.is_large_string(kind) or pat.is_string_view(kind)


def _is_bytes(kind: pa.DataType) -> bool:
    return pat.is_binary(kind) or pat.is_large_binary(kind) or pat.is_binary_view(kind)


def _normalised(by_lower: dict[str, pa.Field], column: SourceColumn) -> tuple[Column, Optional[Column]]:
    """The column cast to its canonical type, and an expression naming the problem when a value
    is present but cannot be converted (null when it is fine).

    Missing values: null, NaN in a float column and a blank string in a text column that holds
    numbers. Integral columns take whole numbers only: 640.0 and "640.0" are 640, while 640.5,
    "640.5" and "abc" are problems, never truncated. A string column arriving as bytes is decoded
    as UTF-8; bytes that are not UTF-8 are a problem, never replaced.
    """
    field = _find_field(by_lower, column)
    if field is None:
        return F.lit(None).cast(column.type), None
    raw = F.col(f"`{field.name}`")
    convertible = raw  # what is cast: null where a present value must not convert
    if pat.is_floating(field.type) and column.type != "string":
        # NaN is a missing number in LAION's float columns, not a broken row.
        raw = convertible = F.nanvl(raw, F.lit(None))
        if column.type in _INTEGRAL:
            convertible = F.when(raw % 1 == 0, raw)
    elif pat.is_decimal(field.type) and column.type in _INTEGRAL:
        convertible = F.when(raw % 1 == 0, raw)  # a cast would truncate 640.5 to 640
    elif _is_text(field.type) and column.type != "string":
        trimmed = F.trim(raw)
        raw = F.when(trimmed != "", raw)
        # "640.0" is how a float column written out as text spells a whole number.
        convertible = F.regexp_replace(trimmed, r"\.0*$", "") if column.type in _INTEGRAL else trimmed
    elif _is_bytes(field.type) and column.type == "string":
        # Sail's cast of such bytes gives null, JVM Spark's passes them through unchecked: test first.
        convertible = F.when(F.is_valid_utf8(raw), raw)
    elif _is_text(field.type):
        # A string column holding bytes that are not UTF-8: Sail's reader refuses the file, JVM
        # Spark's reads the bytes unchecked (and would hash them as replacement characters), so the
        # query fails here too and `explain_read_failure` names the file, on either engine.
        raw = convertible = F.when(F.is_valid_utf8(raw) | raw.isNull(), raw).otherwise(
            F.raise_error(F.lit(f"string column {field.name} holds bytes that are not valid UTF-8")))
    value = convertible.try_cast(column.type)
    problem = F.when(raw.isNotNull() & value.isNull(), F.lit(_conversion_problem(field, column)))
    if column.non_empty:
        problem = (F.when(raw.isNull(), F.lit(f"{column.name} is null"))
                   .when(F.trim(value) == "", F.lit(f"{column.name} is empty"))
                   .otherwise(problem))
    return value, problem


def _conversion_problem(field: pa.Field, column: SourceColumn) -> str:
    """The reason a value of `field` cannot become `column`, naming the file's column where its
    name is not the canonical one (e.g. `source_hash (column hash)`)."""
    named = column.name if field.name.lower() == column.name else f"{column.name} (column {field.name})"
    if column.type == "string":  # only bytes can fail to become a string
        return f"{named} is not valid UTF-8"
    return f"{named} is not a valid {column.type}"


def _first_problem(problems: list[Column]) -> Column:
    if not problems:
        return F.lit(None).cast("string")
    return F.coalesce(*problems)


def _find_field(by_lower: dict[str, pa.Field], column: SourceColumn) -> Optional[pa.Field]:
    for name in (column.name, *column.aliases):
        if name in by_lower:
            return by_lower[name]
    return None


def explain_read_failure(error: BaseException, files: Sequence[SourceFile]) -> BaseException:
    """`error`, or, when the engine failed to decode parquet data, an UndecodableFileError naming
    the first source file pyarrow cannot decode either, and why.

    Sail's decoding errors name no file ("Parquet argument error: EOF: eof decoding byte array",
    "... encountered non UTF-8 data ..."), so the files are read again, one at a time, to find it.
    That read happens only after such a failure: a healthy build never pays for it.
    """
    text = str(error).lower()
    if isinstance(error, SourceError) or not any(word in text for word in ("parquet", "utf-8", "utf8")):
        return error
    for source in files:
        problem = _undecodable(source.path)
        if problem:
            named = UndecodableFileError(source, problem)
            named.__cause__ = error
            return named
    return error


def _undecodable(path: str) -> Optional[str]:
    """Why pyarrow cannot decode every page of `path` into valid Arrow data (naming the column), or None.

    Column by column, so the reason names the column; reading a row group's columns one at a
    time costs what reading them together does.
    """
    fs, inner = filesystem(path)
    try:
        with fs.open_input_file(inner) as handle:
            parquet = pq.ParquetFile(handle)
            for group in range(parquet.num_row_groups):
                for name in parquet.schema_arrow.names:
                    try:
                        problem = _invalid_utf8_column(parquet.read_row_group(group, columns=[name]))
                    except (OSError, pa.ArrowException) as exc:
                        return f"column {name} cannot be decoded ({' '.join(str(exc).split())})"
                    if problem:
                        return problem
    except (OSError, pa.ArrowException) as exc:
        return f"cannot be decoded ({' '.join(str(exc).split())})"
    return None


def _invalid_utf8_column(table: pa.Table) -> Optional[str]:
    """A string column holding bytes that are not UTF-8 (pyarrow reads them unchecked), or None."""
    for name, column in zip(table.column_names, table.columns):
        if _is_text(column.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid:
                return (f"string column {name} holds bytes that are not valid UTF-8, which the engine cannot "
                        f"read (store the column as binary to quarantine those rows, or fix the file)")
    return None
