"""The one configuration schema: load a YAML file, apply `LAION_ETL__*` overrides, validate.

Every error names the offending key (`sources.laion2B-en.base: ...`) so a user can fix the file
without reading code. Relative paths are resolved against the config file's folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from etl.project.contracts import LIMITS, SEVERITIES, limit_problem

ENV_PREFIX = "LAION_ETL__"
ENGINES = ("sail", "spark", "connect")
FORMATS = ("delta", "parquet")
BAD_FILE_POLICIES = ("fail", "skip")
DEFAULT_LANGUAGES = {"laion2B-en": "en", "laion1B-nolang": "nolang"}
# LAION's published size of each subset: rows (its announced totals, 5,860,068,373 in all) and joined
# part files. The defaults of `sources.<subset>.expected_rows` / `expected_parts`, which the
# completeness rule compares a build with.
PUBLISHED_TOTALS = {
    "laion2B-en": {"expected_rows": 2_322_161_808, "expected_parts": 128},
    "laion2B-multi": {"expected_rows": 2_266_202_935, "expected_parts": 128},
    "laion1B-nolang": {"expected_rows": 1_271_703_630, "expected_parts": 128},
}
# Keys of `sources.<subset>` that are not source families.
SUBSET_SETTINGS = ("language", "expected_rows", "expected_parts")
DEFAULT_LOCK_STALE_SECONDS = 600
# Object storage: attempts per request (the first try included) and seconds a request may go
# unanswered before it is abandoned and retried. Both reach every S3 client (etl/session.py).
DEFAULT_S3_MAX_ATTEMPTS = 5
DEFAULT_S3_TIMEOUT_SECONDS = 30.0
# A step on which neither the embedded engine nor the build does any work this long has stalled:
# longer than object_store's longest retry backoff (3 minutes), during which nothing moves either.
DEFAULT_ENGINE_STALL_SECONDS = 300.0


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


# Names that become one path segment (partition folders `subset=<name>`, table folders): letters,
# digits, `.`, `_`, `-`, no `..`, so nothing built from them lands outside the warehouse.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


def check_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _SAFE_NAME.match(value) or ".." in value:
        raise ConfigError(f"{where}: {value!r} is not a valid name (letters, digits, '.', '_', '-', "
                          "starting with a letter or digit, no '..')")
    return value


@dataclass(frozen=True)
class SubsetSources:
    name: str
    families: Mapping[str, tuple[str, ...]]  # source family -> path globs (a ranked family's in priority order)
    language: Optional[str]
    expected_rows: Optional[int] = None  # rows a build of every part should hold; None: no expectation
    expected_parts: Optional[int] = None  # joined part files of the whole subset; None: any build is whole

    def globs(self, family: str) -> tuple[str, ...]:
        return self.families.get(family, ())


@dataclass(frozen=True)
class SparkSettings:
    master: str = "local[2]"
    shuffle_partitions: Optional[int] = None  # None ("auto"): derived from the input bytes of each build
    conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerSettings:
    """How a layer's tables are stored (conf/layers.yaml; the config's `layers:` overrides it)."""

    partition_by: tuple[str, ...]


@dataclass(frozen=True)
class Config:
    engine: str
    format: str
    warehouse: str
    sources: tuple[SubsetSources, ...]
    images: tuple[str, ...]
    layers: Mapping[str, LayerSettings]  # the config's own `layers:` entries, over the project's defaults
    spark: SparkSettings
    connect_url: Optional[str]
    s3_endpoint: Optional[str]
    s3_max_attempts: int = DEFAULT_S3_MAX_ATTEMPTS
    s3_timeout_seconds: float = DEFAULT_S3_TIMEOUT_SECONDS
    reports: str = ""  # local folder for the HTML data-quality reports
    dq_rules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # "table.rule_id" -> overrides
    on_bad_file: str = "fail"  # a source file that cannot be used: fail the build, or skip it and go on
    lock_stale_seconds: int = DEFAULT_LOCK_STALE_SECONDS  # a warehouse lock silent this long is taken over
    engine_stall_seconds: float = DEFAULT_ENGINE_STALL_SECONDS  # sail: a step idle this long is stopped
    project_dir: Optional[str] = None  # a user project folder adding to or overriding the bundled one
    env_origins: Mapping[str, str] = field(default_factory=dict)  # key -> the LAION_ETL__ variable that set it

    @property
    def subset_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sources)

    def table_path(self, layer: str, table: str) -> str:
        return join_uri(self.warehouse, layer, table)

    @property
    def uses_s3(self) -> bool:
        """The warehouse, a source or an image folder is on object storage."""
        paths = [self.warehouse, *self.images, *(g for s in self.sources for gs in s.families.values() for g in gs)]
        return any(path.startswith("s3://") for path in paths)


def join_uri(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def is_remote(path: str) -> bool:
    return "://" in path


def load_config(path: str | os.PathLike, overrides: Optional[Mapping[str, Any]] = None,
                environ: Optional[Mapping[str, str]] = None) -> Config:
    """Read, override (environment, then explicit `overrides`), validate."""
    config_path = Path(path)
    if not config_path.is_file():
        raise ConfigError(f"config file not found: {config_path}")
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        # PyYAML's message spans several lines; errors must stay on one.
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise ConfigError(f"{config_path}: not valid YAML{at}: {reason}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{config_path}: the top level must be a mapping")
    origins = apply_env_overrides(raw, os.environ if environ is None else environ)
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = value
    try:
        config = parse_config(raw, base_dir=config_path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(with_origin(str(exc), origins)) from None
    return replace(config, env_origins=origins)


def with_origin(message: str, origins: Mapping[str, str]) -> str:
    """A config error about a key an environment variable set says so: the file is not at fault."""
    key = message.split(":", 1)[0]
    for path, variable in origins.items():
        if key == path or key.startswith(path + "."):
            return f"{message} (set by the environment variable {variable})"
    return message


def apply_env_overrides(raw: dict, environ: Mapping[str, str]) -> dict[str, str]:
    """`LAION_ETL__SPARK__SHUFFLE_PARTITIONS=8` sets raw['spark']['shuffle_partitions'].

    Keys match case-insensitively so subset names like `laion2B-en` can be reached; values are
    YAML scalars (`8`, `true`, `[a, b]`) and a plain `a,b` becomes a list where a list is expected.
    Returns which variable set each key (`spark.shuffle_partitions` -> its variable's name).
    """
    origins = {}
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k for k in name[len(ENV_PREFIX):].split("__") if k]
        if not keys:
            continue
        node, path = raw, []
        for key in keys[:-1]:
            existing = _find_key(node, key)
            if not isinstance(node.get(existing), dict):
                node[existing] = {}
            node = node[existing]
            path.append(str(existing))
        leaf = _find_key(node, keys[-1])
        origins[".".join([*path, str(leaf)])] = name
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value  # not a YAML scalar (e.g. the glob `*.parquet`): the plain string
        if isinstance(node.get(leaf), list) and isinstance(parsed, str):
            parsed = [item.strip() for item in parsed.split(",") if item.strip()]
        node[leaf] = parsed
    return origins


def _find_key(node: dict, key: str) -> str:
    for existing in node:
        if str(existing).lower() == key.lower():
            return existing
    return key.lower()


def parse_config(raw: Mapping[str, Any], base_dir: Path) -> Config:
    known = {"engine", "format", "warehouse", "sources", "images", "layers", "spark", "connect_url", "s3",
             "reports", "dq", "on_bad_file", "lock_stale_seconds", "engine_stall_seconds", "project_dir"}
    refuse_unknown(raw, known, "")
    engine = _choice(raw, "engine", ENGINES, default="sail")
    fmt = _choice(raw, "format", FORMATS, default="delta")
    warehouse = _path(_required(raw, "warehouse", str), base_dir)
    sources_raw = _required(raw, "sources", dict)
    if not sources_raw:
        raise ConfigError("sources: at least one subset is required")
    sources = tuple(_parse_subset(str(name), spec, base_dir) for name, spec in sources_raw.items())
    images = tuple(_path(p, base_dir) for p in _string_list(raw.get("images"), "images"))
    connect_url = raw.get("connect_url")
    if engine == "connect" and not (isinstance(connect_url, str) and connect_url.startswith("sc://")):
        raise ConfigError("connect_url: engine 'connect' needs a Spark Connect URL like sc://host:15002")
    reports = raw.get("reports")
    if reports is not None and not isinstance(reports, str):
        raise ConfigError("reports: must be a folder path")
    if reports is None:
        reports = "reports" if is_remote(warehouse) else join_uri(warehouse, "reports")
    if is_remote(reports):
        raise ConfigError(f"reports: {reports!r} must be a local folder (the report is one HTML page)")
    project_dir = raw.get("project_dir")
    if project_dir is not None and not (isinstance(project_dir, str) and not is_remote(project_dir)):
        raise ConfigError(f"project_dir: must be a local folder, got {project_dir!r}")
    return Config(
        engine=engine,
        format=fmt,
        warehouse=warehouse,
        sources=sources,
        images=images,
        layers=_parse_layers(raw.get("layers")),
        spark=_parse_spark(raw.get("spark")),
        connect_url=connect_url,
        **_parse_s3(raw.get("s3")),
        reports=_path(reports, base_dir),
        dq_rules=_parse_dq(raw.get("dq")),
        on_bad_file=_choice(raw, "on_bad_file", BAD_FILE_POLICIES, default="fail"),
        lock_stale_seconds=_positive_int(raw, "lock_stale_seconds", DEFAULT_LOCK_STALE_SECONDS),
        engine_stall_seconds=_positive_seconds(raw, "engine_stall_seconds", DEFAULT_ENGINE_STALL_SECONDS),
        project_dir=None if project_dir is None else _path(project_dir, base_dir),
    )


def _parse_subset(name: str, spec: Any, base_dir: Path) -> SubsetSources:
    """One subset: path globs per source family, and its default language. Which families exist
    and which are required is the project's to say (Project.check)."""
    where = f"sources.{name}"
    check_name(name, where)
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mapping of source family -> path globs, language, "
                          "expected_rows and expected_parts")
    families = {str(family): tuple(_path(g, base_dir) for g in _string_list(globs, f"{where}.{family}"))
                for family, globs in spec.items() if family not in SUBSET_SETTINGS}
    language = spec.get("language", DEFAULT_LANGUAGES.get(name))
    if language is not None and not isinstance(language, str):
        raise ConfigError(f"{where}.language: must be a string")
    published = PUBLISHED_TOTALS.get(name, {})
    totals = {key: _count(spec.get(key, published.get(key)), f"{where}.{key}")
              for key in ("expected_rows", "expected_parts")}
    return SubsetSources(name=name, families=families, language=language, **totals)


def _count(value: Any, where: str) -> Optional[int]:
    """A positive whole number, or None (absent or null: no expectation)."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}: must be a positive whole number, got {value!r}")
    return value


def _parse_s3(raw: Any) -> dict[str, Any]:
    """The `s3` section as Config fields: endpoint, attempts per request, request timeout."""
    spec = _mapping(raw, "s3")
    refuse_unknown(spec, {"endpoint", "max_attempts", "timeout_seconds"}, "s3.")
    endpoint = spec.get("endpoint")
    if endpoint is not None and not (isinstance(endpoint, str) and endpoint.startswith(("http://", "https://"))):
        raise ConfigError(f"s3.endpoint: must be an http:// or https:// URL, got {endpoint!r}")
    attempts = spec.get("max_attempts", DEFAULT_S3_MAX_ATTEMPTS)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
        raise ConfigError(f"s3.max_attempts: must be a positive integer (1: no retry), got {attempts!r}")
    timeout = spec.get("timeout_seconds", DEFAULT_S3_TIMEOUT_SECONDS)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
        raise ConfigError(f"s3.timeout_seconds: must be a positive number of seconds, got {timeout!r}")
    return {"s3_endpoint": endpoint, "s3_max_attempts": attempts, "s3_timeout_seconds": float(timeout)}


def _parse_dq(raw: Any) -> dict[str, dict[str, Any]]:
    """`dq.rules` overrides a contract rule's severity or threshold: {"table.rule_id": {...}}. Which
    tables and rules exist, and which threshold a rule takes, is the project's to say (Project.check)."""
    spec = _mapping(raw, "dq")
    refuse_unknown(spec, {"rules"}, "dq.")
    rules = {}
    for key, override in _mapping(spec.get("rules"), "dq.rules").items():
        where = f"dq.rules.{key}"
        if "." not in str(key):
            raise ConfigError(f"{where}: name a rule as <table>.<rule_id>")
        override = _mapping(override, where)
        refuse_unknown(override, {"severity", *LIMITS}, where + ".")
        if override.get("severity", "fail") not in SEVERITIES:
            raise ConfigError(f"{where}.severity: must be one of {', '.join(SEVERITIES)}, got {override['severity']!r}")
        for limit in LIMITS:
            problem = limit_problem(None, limit, override[limit]) if limit in override else None
            if problem:
                raise ConfigError(f"{where}.{limit}: {problem}")
        rules[str(key)] = dict(override)
    return rules


def _parse_spark(raw: Any) -> SparkSettings:
    spec = _mapping(raw, "spark")
    refuse_unknown(spec, {"master", "shuffle_partitions", "conf"}, "spark.")
    partitions = spec.get("shuffle_partitions", "auto")
    if partitions == "auto":
        partitions = None
    elif not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
        raise ConfigError("spark.shuffle_partitions: must be a positive integer or auto")
    conf = _mapping(spec.get("conf"), "spark.conf")
    return SparkSettings(
        master=str(spec.get("master", SparkSettings.master)),
        shuffle_partitions=partitions,
        conf={str(k): str(v) for k, v in conf.items()},
    )


def _parse_layers(raw: Any) -> dict[str, LayerSettings]:
    """The config's `layers:` entries; which layers exist is the project's to say (Project.check)."""
    layers = {}
    for layer, spec in _mapping(raw, "layers").items():
        spec = _mapping(spec, f"layers.{layer}")
        refuse_unknown(spec, {"partition_by"}, f"layers.{layer}.")
        if "partition_by" in spec:
            partition_by = _string_list(spec["partition_by"], f"layers.{layer}.partition_by")
            layers[str(layer)] = LayerSettings(tuple(partition_by))
    return layers


def refuse_unknown(mapping: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(map(str, mapping)) - known)
    if unknown:
        raise ConfigError(f"{where}{unknown[0]}: unknown key (expected one of: {', '.join(sorted(known))})")


def _required(raw: Mapping[str, Any], key: str, kind: type) -> Any:
    if raw.get(key) is None:
        raise ConfigError(f"{key}: required")
    if not isinstance(raw[key], kind):
        raise ConfigError(f"{key}: must be a {kind.__name__}")
    return raw[key]


def _choice(raw: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    """One of `choices` by name; absent (or null) is the default, anything else (0, false, "") an error."""
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
    return value


def _positive_int(raw: Mapping[str, Any], key: str, default: int) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{key}: must be a positive whole number of seconds, got {value!r}")
    return value


def _positive_seconds(raw: Mapping[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{key}: must be a positive number of seconds, got {value!r}")
    return float(value)


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping")
    return value


def _string_list(value: Any, where: str) -> list[str]:
    """A list of strings; a single string (comma-separated allowed) counts as a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ConfigError(f"{where}: must be a string or a list of strings")


def _path(value: str, base_dir: Path) -> str:
    if is_remote(value) or os.path.isabs(value):
        return value
    return str((base_dir / value).resolve())
