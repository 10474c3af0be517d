"""The project's tables, discovered from the tree: `sql/<layer>/<table>.sql` + its contract.

Dependencies come from the SQL itself (`laion.<table>` references), so adding a table is adding
two files; the build order is layer order, then dependency order within a layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from etl.project.config import Config, ConfigError
from etl.project.contracts import Contract, load_contract
from etl.project.resources import bundled_root

ROOT = Path(str(bundled_root()))
SQL_DIR = ROOT / "sql"
CONTRACTS_DIR = ROOT / "expectations"
LAYERS = ("ods", "dmd", "dms")
DATABASE = "laion"
_TABLE_REF = re.compile(r"\b" + DATABASE + r"\.([a-z0-9_]+)", re.IGNORECASE)
_VIEW_REF = re.compile(r"\b((?:src|cfg)_[a-z0-9_]+)\b", re.IGNORECASE)
# A table name is its folder under the warehouse and an unquoted SQL name (`laion.<table>`).
_TABLE_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


@dataclass(frozen=True)
class Table:
    name: str
    layer: str
    sql_path: Path
    contract: Contract

    @property
    def sql(self) -> str:
        return self.sql_path.read_text(encoding="utf-8")

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
        if self.contract.partition_by is not None:
            return self.contract.partition_by
        return config.layers[self.layer].partition_by

    def path(self, config: Config) -> str:
        return config.table_path(self.layer, self.name)


def _without_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def discover_tables() -> list[Table]:
    """Every table, in build order."""
    ordered: list[Table] = []
    for layer in LAYERS:
        layer_tables = {}
        for sql_path in sorted((SQL_DIR / layer).glob("*.sql")):
            if not _TABLE_NAME.match(sql_path.stem):
                raise ConfigError(f"{sql_path}: table name {sql_path.stem!r} must be lower-case letters, digits "
                                  "and '_', starting with a letter (it names the table's folder and laion.<table>)")
            contract = load_contract(CONTRACTS_DIR / layer / f"{sql_path.stem}.yaml")
            layer_tables[sql_path.stem] = Table(sql_path.stem, layer, sql_path, contract)
        ordered.extend(_dependency_order(layer_tables))
    return ordered


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
