"""Source families as data: what `conf/families.yaml` declares about each raw parquet family.

A family's columns (canonical names, Spark types, the other names files use for them), which of
them a file must have or a row must fill, whether its sources are ranked, which columns its files
swap, and whether every subset must list it. etl.ingest.sources reads files by these
declarations, so a new family needs no Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from etl.project.config import ConfigError, refuse_unknown

# The types the per-file normaliser knows how to reach (etl.ingest.sources._normalised).
COLUMN_TYPES = ("string", "int", "bigint", "float", "double")
# Columns etl.ingest.sources adds to every row (lineage; a ranked family's source order).
FRAMEWORK_COLUMNS = ("file_name", "subset", "source_rank", "source_name")
# A family name is a config key beside `language` and part of a SQL view name.
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_FAMILY_KEYS = {"columns", "required", "ranked", "swap"}
_COLUMN_KEYS = {"type", "aliases", "required", "non_empty"}


@dataclass(frozen=True)
class SourceColumn:
    name: str
    type: str  # Spark SQL type of the normalised column
    aliases: tuple[str, ...] = ()  # lower case, like `name`: files' column names match case-insensitively
    required: bool = False  # a file without it has all its rows quarantined
    non_empty: bool = False  # a row whose value is null or blank is quarantined


@dataclass(frozen=True)
class Family:
    name: str
    columns: tuple[SourceColumn, ...]
    required: bool = False  # every subset lists files of it
    ranked: bool = False  # a subset's sources are in priority order; rows carry source_rank and source_name
    swap: Optional[tuple[str, str]] = None  # two columns the files hold in each other's place


def parse_families(doc: Mapping[str, Any], origin: str) -> dict[str, Family]:
    """The families of one families.yaml (`origin` names it in errors)."""
    return {str(name): _family(str(name), spec, f"{origin}: family {name}") for name, spec in doc.items()}


def _family(name: str, spec: Any, where: str) -> Family:
    if not _NAME.match(name) or name == "language":
        raise ConfigError(f"{where}: a family name is lower-case letters, digits and '_', starting with a letter, "
                          "and not 'language'")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: give a mapping with {', '.join(sorted(_FAMILY_KEYS))}")
    refuse_unknown(spec, _FAMILY_KEYS, f"{where}: ")
    columns_spec = spec.get("columns")
    if not isinstance(columns_spec, dict) or not columns_spec:
        raise ConfigError(f"{where}: columns: give a mapping of column name -> type")
    columns = tuple(_column(str(column), column_spec, f"{where}: column {column}")
                    for column, column_spec in columns_spec.items())
    family = Family(name=name, columns=columns, required=_flag(spec, "required", where),
                    ranked=_flag(spec, "ranked", where), swap=_swap(spec.get("swap"), columns, where))
    reserved = sorted(set(c.name for c in columns) & set(FRAMEWORK_COLUMNS))
    if reserved:
        raise ConfigError(f"{where}: column {reserved[0]} is added by the framework, do not declare it")
    return family


def _column(name: str, spec: Any, where: str) -> SourceColumn:
    if not _NAME.match(name):
        raise ConfigError(f"{where}: a column name is lower-case letters, digits and '_', starting with a letter")
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: give a type or a mapping with {', '.join(sorted(_COLUMN_KEYS))}")
    refuse_unknown(spec, _COLUMN_KEYS, f"{where}: ")
    if spec.get("type") not in COLUMN_TYPES:
        raise ConfigError(f"{where}: type must be one of {', '.join(COLUMN_TYPES)}, got {spec.get('type')!r}")
    aliases = spec.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ConfigError(f"{where}: aliases must be a list of column names")
    column = SourceColumn(name=name, type=spec["type"], aliases=tuple(a.lower() for a in aliases),
                          required=_flag(spec, "required", where), non_empty=_flag(spec, "non_empty", where))
    if column.non_empty and column.type != "string":
        raise ConfigError(f"{where}: non_empty applies to string columns")
    return column


def _swap(value: Any, columns: tuple[SourceColumn, ...], where: str) -> Optional[tuple[str, str]]:
    if value is None:
        return None
    types = {c.name: c.type for c in columns}
    if not (isinstance(value, list) and len(value) == 2 and all(v in types for v in value) and value[0] != value[1]
            and types[value[0]] == types[value[1]]):
        raise ConfigError(f"{where}: swap: give two different declared columns of the same type")
    return value[0], value[1]


def _flag(spec: Mapping[str, Any], key: str, where: str) -> bool:
    value = spec.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false")
    return value
