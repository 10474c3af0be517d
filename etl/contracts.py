"""Table contracts (`expectations/<layer>/<table>.yaml`): grain, keys, schema, partitioning.

The contract is the single source of a table's schema: the framework refuses to write a
SELECT whose columns differ from it in name, order or type.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml


class ContractError(RuntimeError):
    """A table's data or contract file does not match; the message names the table."""


@dataclass(frozen=True)
class ContractColumn:
    name: str
    type: str


@dataclass(frozen=True)
class Contract:
    table: str
    layer: str
    grain: str
    keys: tuple[str, ...]
    columns: tuple[ContractColumn, ...]
    partition_by: Optional[tuple[str, ...]]  # None: the layer default
    path: Path

    @property
    def ddl(self) -> str:
        return ", ".join(f"{c.name} {c.type}" for c in self.columns)

    def schema_differences(self, actual: list[tuple[str, str]]) -> list[str]:
        """Human-readable differences between the contract and (name, simpleString type) pairs."""
        expected = [(c.name, c.type) for c in self.columns]
        if actual == expected:
            return []
        problems = []
        actual_names = [name for name, _ in actual]
        expected_names = [name for name, _ in expected]
        missing = [n for n in expected_names if n not in actual_names]
        extra = [n for n in actual_names if n not in expected_names]
        if missing:
            problems.append(f"missing columns {missing}")
        if extra:
            problems.append(f"unexpected columns {extra}")
        actual_types = dict(actual)
        for name, expected_type in expected:
            if name in actual_types and actual_types[name] != expected_type:
                problems.append(f"column {name} is {actual_types[name]}, contract says {expected_type}")
        if not missing and not extra and actual_names != expected_names:
            problems.append(f"column order {actual_names} differs from {expected_names}")
        return problems


def load_contract(path: Path) -> Contract:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        columns = tuple(ContractColumn(str(c["name"]), str(c["type"])) for c in doc["columns"])
        partition_by = doc.get("partition_by")
        return Contract(
            table=str(doc["table"]),
            layer=str(doc["layer"]),
            grain=str(doc["grain"]),
            keys=tuple(doc.get("keys") or ()),
            columns=columns,
            partition_by=None if partition_by is None else tuple(partition_by),
            path=path,
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ContractError(f"{path}: unreadable contract ({exc!r})") from None
