"""The project: what a build is made of besides its inputs, loaded once and passed down.

Its tables (SQL + contract), layer defaults (`conf/layers.yaml`), source families
(`conf/families.yaml`), export preset files (`conf/presets.yaml`) and the run bookkeeping's
contracts (`expectations/meta/`) come from the project roots: the bundled one
(etl.project.resources) and, optionally, a user project folder (`project_dir` / `--project-dir`),
laid out the same way, whose files add tables, layers, families and presets or replace bundled
ones of the same name, in the spirit of dbt's project dir. The bookkeeping contracts are the
bundled ones only: the framework writes those rows itself.

Files are read only through Traversable calls, so the bundled root may be a zip member
(`spark-submit --py-files`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import cached_property
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Mapping, Optional

import yaml

from etl.project.config import SUBSET_SETTINGS, Config, ConfigError, LayerSettings, refuse_unknown, with_origin
from etl.project.contracts import LIMITS, Contract, limit_problem, load_contract
from etl.project.families import Family, parse_families
from etl.project.resources import bundled_root
from etl.project.tables import LAYERS, WIDE_TABLE, Table, load_tables

META_LAYER = "meta"


@dataclass(frozen=True)
class Project:
    roots: tuple[Traversable, ...]  # the bundled root first, then the user's project folder
    tables: tuple[Table, ...]  # in build order
    layers: Mapping[str, LayerSettings]  # defaults per layer
    families: Mapping[str, Family]
    preset_files: tuple[Traversable, ...]  # conf/presets.yaml of each root holding one; later ones win by name
    meta_contracts: Mapping[str, Contract]

    @cached_property
    def tables_by_name(self) -> Mapping[str, Table]:
        return {table.name: table for table in self.tables}

    @property
    def wide_table(self) -> Table:
        return self.tables_by_name[WIDE_TABLE]

    def check(self, config: Config) -> None:
        """Refuse a config this project cannot build, before any engine starts: a source family or
        layer it does not have, a subset lacking a required family, a `dq.rules` override of a
        table, rule or threshold that does not exist, a partition column a table does not have.
        The message names the key, and the environment variable when one set it."""
        try:
            self._check(config)
        except ConfigError as exc:
            raise ConfigError(with_origin(str(exc), config.env_origins)) from None

    def _check(self, config: Config) -> None:
        for sources in config.sources:
            where = f"sources.{sources.name}."
            refuse_unknown(sources.families, {*self.families, *SUBSET_SETTINGS}, where)
            for family in self.families.values():
                if family.required and not sources.globs(family.name):
                    raise ConfigError(f"{where}{family.name}: required (one or more path globs)")
        for layer in config.layers:
            if layer not in self.layers:
                raise ConfigError(f"layers.{layer}: unknown layer (known: {', '.join(self.layers)})")
        for key, override in config.dq_rules.items():
            self._check_rule_override(f"dq.rules.{key}", *key.split(".", 1), override)
        for table in self.tables:
            missing = [c for c in table.partition_by(config) if c not in table.contract.column_names]
            if missing:
                raise ConfigError(f"{table.partition_by_key(config)}: {missing[0]!r} is not a column of "
                                  f"{table.name} (its contract: {table.contract.path.name})")

    def _check_rule_override(self, where: str, table_name: str, rule_id: str, override: Mapping) -> None:
        table = self.tables_by_name.get(table_name)
        if table is None:
            raise ConfigError(f"{where}: unknown table {table_name!r} (known: {', '.join(self.tables_by_name)})")
        rules = {rule.id: rule for rule in table.contract.rules}
        rule = rules.get(rule_id)
        if rule is None:
            near = difflib.get_close_matches(rule_id, rules, n=1)
            hint = f"did you mean {near[0]}?" if near else f"its rules: {', '.join(rules)}"
            raise ConfigError(f"{where}: {table.contract.path.name} has no rule {rule_id!r} ({hint})")
        for limit in override:
            problem = limit_problem(rule.kind, limit, override[limit]) if limit in LIMITS else None
            if problem:
                raise ConfigError(f"{where}.{limit}: {problem}")


def load_project(project_dir: Optional[str] = None) -> Project:
    """The bundled project, with the user's project folder over it when one is given."""
    roots = [bundled_root()]
    if project_dir is not None:
        folder = Path(project_dir)
        if not folder.is_dir():
            raise ConfigError(f"project_dir: {project_dir} is not a folder")
        roots.append(folder)
    layers = _layer_defaults(roots)
    return Project(
        roots=tuple(roots),
        tables=load_tables(roots, {layer: settings.partition_by for layer, settings in layers.items()}),
        layers=layers,
        families=_families(roots),
        preset_files=tuple(file for file in (_conf_file(root, "presets.yaml") for root in roots) if file.is_file()),
        meta_contracts=_meta_contracts(roots[0]),
    )


def _conf_file(root: Traversable, name: str) -> Traversable:
    return root.joinpath("conf").joinpath(name)


def _layer_defaults(roots: list[Traversable]) -> dict[str, LayerSettings]:
    merged: dict[str, dict] = {}
    for root in roots:
        file = _conf_file(root, "layers.yaml")
        for layer, spec in _read_yaml(file).items():
            if layer not in LAYERS:
                raise ConfigError(f"{file}: unknown layer {layer!r} (known: {', '.join(LAYERS)})")
            if not isinstance(spec, dict) or set(spec) - {"partition_by"}:
                raise ConfigError(f"{file}: layer {layer}: give a mapping with partition_by")
            merged.setdefault(layer, {}).update(spec)
    return {layer: LayerSettings(tuple(merged.get(layer, {}).get("partition_by") or ())) for layer in LAYERS}


def _families(roots: list[Traversable]) -> dict[str, Family]:
    families: dict[str, Family] = {}
    for root in roots:
        file = _conf_file(root, "families.yaml")
        families.update(parse_families(_read_yaml(file), str(file)))
    return families


def _read_yaml(file: Traversable) -> dict:
    """A project YAML file's mapping; {} when the root has no such file."""
    if not file.is_file():
        return {}
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {' '.join(str(exc).split())}") from None
    if doc is not None and not isinstance(doc, dict):
        raise ConfigError(f"{file}: the top level must be a mapping")
    return doc or {}


def _meta_contracts(root: Traversable) -> dict[str, Contract]:
    folder = root.joinpath("expectations").joinpath(META_LAYER)
    return {file.name[:-len(".yaml")]: load_contract(file) for file in folder.iterdir() if file.name.endswith(".yaml")}
