"""The project's tables: `sql/<layer>/<table>.sql` + its contract, in build order.

Dependencies come from the SQL itself (`laion.<table>` references), so adding a table is adding
two files; the build order is layer order, then dependency order within a layer. Each SQL file is
read once, when the project loads: the query that runs and the signature that decides whether it
runs come from the same text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from etl.project.config import ConfigError
from etl.project.contracts import Contract, load_contract

if TYPE_CHECKING:
    from etl.project.config import Config

LAYERS = ("ods", "dmd", "dms")
DATABASE = "laion"
WIDE_TABLE = "dms_laion_wide"  # the product: what exports read and the coverage history follows
_TABLE_REF = re.compile(r"\b" + DATABASE + r"\.([a-z0-9_]+)", re.IGNORECASE)
_VIEW_REF = re.compile(r"\b((?:src|cfg)_[a-z0-9_]+)\b", re.IGNORECASE)
# A table name is its folder under the warehouse and an unquoted SQL name (`laion.<table>`).
_TABLE_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


@dataclass(frozen=True)
class Table:
    name: str
    layer: str
    sql: str
    sql_file: Traversable  # where `sql` was read from, for messages
    contract: Contract
    layer_partition_by: tuple[str, ...]  # the layer's default partitioning (conf/layers.yaml)

    @property
    def upstream_tables(self) -> tuple[str, ...]:
        return tuple(sorted(set(_TABLE_REF.findall(_without_comments(self.sql)))))

    @property
    def driving_table(self) -> Optional[str]:
        """The table that sets the grain: by convention the first one the SQL reads."""
        match = _TABLE_REF.search(_without_comments(self.sql))
        return match.group(1) if match else None

    @property
    def input_views(self) -> tuple[str, ...]:
        return tuple(sorted(set(_VIEW_REF.findall(_without_comments(self.sql)))))

    def partition_by(self, config: Config) -> tuple[str, ...]:
        return self._partitioning(config)[0]

    def partition_by_key(self, config: Config) -> str:
        """Where `partition_by(config)` is set, as a user would look for it."""
        return self._partitioning(config)[1]

    def _partitioning(self, config: Config) -> tuple[tuple[str, ...], str]:
        """The contract's partitioning, else the config's for the layer, else the layer default."""
        if self.contract.partition_by is not None:
            return self.contract.partition_by, f"{self.contract.path}: partition_by"
        configured = config.layers.get(self.layer)
        if configured is None:
            return self.layer_partition_by, f"conf/layers.yaml: {self.layer}.partition_by"
        return configured.partition_by, f"layers.{self.layer}.partition_by"

    def path(self, config: Config) -> str:
        return config.table_path(self.layer, self.name)


def _without_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def load_tables(roots: Sequence[Traversable], layer_partition_by: Mapping[str, tuple[str, ...]]) -> tuple[Table, ...]:
    """Every table of the project roots, in build order; a later root's file replaces an earlier
    root's file of the same name (SQL and contract each on its own)."""
    ordered: list[Table] = []
    for layer in LAYERS:
        layer_tables = {}
        contracts = _files(roots, "expectations", layer, ".yaml")
        for name, sql_file in sorted(_files(roots, "sql", layer, ".sql").items()):
            if not _TABLE_NAME.match(name):
                raise ConfigError(f"{sql_file}: table name {name!r} must be lower-case letters, digits "
                                  "and '_', starting with a letter (it names the table's folder and laion.<table>)")
            # A table without a contract fails to load, naming the file it should have.
            contract_file = contracts.get(name) or _folder(roots[-1], "expectations", layer).joinpath(f"{name}.yaml")
            layer_tables[name] = Table(name, layer, sql_file.read_text(encoding="utf-8"), sql_file,
                                       load_contract(contract_file), layer_partition_by.get(layer, ()))
        ordered.extend(_dependency_order(layer_tables))
    return tuple(ordered)


def _files(roots: Sequence[Traversable], kind: str, layer: str, suffix: str) -> dict[str, Traversable]:
    """name -> file of `<root>/<kind>/<layer>/<name><suffix>`, the last root holding a name winning."""
    found: dict[str, Traversable] = {}
    for root in roots:
        folder = _folder(root, kind, layer)
        if folder.is_dir():
            found.update((f.name[:-len(suffix)], f) for f in folder.iterdir()
                         if f.name.endswith(suffix) and f.is_file())
    return found


def _folder(root: Traversable, kind: str, layer: str) -> Traversable:
    return root.joinpath(kind).joinpath(layer)


def _dependency_order(tables: dict[str, Table]) -> list[Table]:
    done: list[Table] = []
    pending = dict(tables)
    while pending:
        ready = [t for t in pending.values() if not set(t.upstream_tables) & set(pending)]
        if not ready:
            raise RuntimeError(f"cyclic table references among {sorted(pending)}")
        for table in sorted(ready, key=lambda t: t.name):
            done.append(pending.pop(table.name))
    return done
