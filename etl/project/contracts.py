"""Table contracts (`expectations/<layer>/<table>.yaml`): grain, keys, schema, partitioning.

The contract is the single source of a table's schema: the framework refuses to write a
SELECT whose columns differ from it in name, order or type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from typing import Any, Mapping, Optional

import yaml


class ContractError(RuntimeError):
    """A table's data or contract file does not match; the message names the table."""


@dataclass(frozen=True)
class ContractColumn:
    name: str
    type: str


SEVERITIES = ("fail", "warn")
RULE_KINDS = ("expect", "duplicates", "sql", "coverage", "completeness")
# The thresholds each rule kind reads; a contract or a `dq.rules` override may set them.
RULE_LIMITS = {"expect": (), "duplicates": ("max_unexpected",), "sql": ("max_unexpected",), "coverage": ("max_drop",),
               "completeness": ()}
LIMITS = ("max_unexpected", "max_drop")


@dataclass(frozen=True)
class RuleSpec:
    """One data-quality rule of a table, as its contract states it.

    kind `expect`: a Great Expectations class named in `expect`, its arguments in `params`;
    `duplicates`: values of `columns` held by more than one row (`max_unexpected` allowed);
    `sql`: a query over `{batch}` returning the bad rows; `coverage`: the share of non-null
    `column` must not drop by more than `max_drop` (relative) from the previous run;
    `completeness`: each subset's rows equal its configured `expected_rows` when the table holds
    all its `expected_parts` (a share of them otherwise).
    """

    id: str
    kind: str
    severity: str
    params: Mapping[str, Any]
    description: str = ""


@dataclass(frozen=True)
class Contract:
    table: str
    layer: str
    grain: str
    keys: tuple[str, ...]
    columns: tuple[ContractColumn, ...]
    partition_by: Optional[tuple[str, ...]]  # None: the layer default
    path: Traversable
    rules: tuple[RuleSpec, ...] = ()
    histograms: Mapping[str, tuple[float, float, int]] = field(default_factory=dict)  # column -> (min, max, bins)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def column_types(self) -> dict[str, str]:
        """Column name -> Spark type, in contract order."""
        return {c.name: c.type for c in self.columns}

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


def load_contract(path: Traversable) -> Contract:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        columns = tuple(ContractColumn(str(c["name"]), str(c["type"])) for c in doc["columns"])
        partition_by = doc.get("partition_by")
        rules = tuple(_parse_rule(raw, path) for raw in doc.get("rules") or ())
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise ContractError(f"{path}: unreadable contract ({exc!r})") from None
    ids = [rule.id for rule in rules]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ContractError(f"{path}: rule id {duplicated[0]!r} is used twice")
    return Contract(
        table=str(doc["table"]),
        layer=str(doc["layer"]),
        grain=str(doc["grain"]),
        keys=tuple(doc.get("keys") or ()),
        columns=columns,
        partition_by=None if partition_by is None else tuple(partition_by),
        path=path,
        rules=rules,
        histograms={str(c): (float(lo), float(hi), int(n)) for c, (lo, hi, n) in (doc.get("histograms") or {}).items()},
    )


def _parse_rule(raw: Mapping[str, Any], path: Traversable) -> RuleSpec:
    params = dict(raw)
    rule_id = str(params.pop("id"))
    severity = params.pop("severity", "fail")
    description = str(params.pop("description", ""))
    if "expect" in params:
        kind = "expect"
    else:
        kind = params.pop("check", None)
    if kind not in RULE_KINDS:
        raise ContractError(f"{path}: rule {rule_id}: give `expect: <GX expectation>` or `check:` one of "
                            f"{', '.join(RULE_KINDS[1:])}")
    if severity not in SEVERITIES:
        raise ContractError(f"{path}: rule {rule_id}: severity must be one of {', '.join(SEVERITIES)}")
    for limit in LIMITS:
        if limit in params:
            problem = limit_problem(kind, limit, params[limit])
            if problem:
                raise ContractError(f"{path}: rule {rule_id}: {limit} {problem}")
    return RuleSpec(id=rule_id, kind=kind, severity=severity, params=params, description=description)


def limit_problem(kind: Optional[str], limit: str, value: Any) -> Optional[str]:
    """Why `value` cannot be threshold `limit` of a rule of `kind` (any kind when None), or None."""
    if kind is not None and limit not in RULE_LIMITS[kind]:
        takes = " or ".join(RULE_LIMITS[kind]) or "no threshold"
        return f"does not apply to rules of kind {kind!r} (they take {takes})"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)  # YAML's true is an int to Python
    if limit == "max_unexpected" and not (number and isinstance(value, int) and value >= 0):
        return f"must be a whole number, 0 or more, got {value!r}"
    if limit == "max_drop" and not (number and 0 <= value <= 1):
        return f"must be a share from 0 to 1 (0.2: a drop of at most 20% from the previous run), got {value!r}"
    return None
