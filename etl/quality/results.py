"""What a data-quality run found: rule results per table, and the run's verdict.

These plain records are what the validator produces, what `meta.dq_results` stores and what the
HTML report renders; nothing here talks to an engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

FAIL, WARN = "fail", "warn"
PASS_VERDICT, WARN_VERDICT, FAIL_VERDICT = "pass", "warn", "fail"


@dataclass(frozen=True)
class RuleResult:
    """One expectation evaluated on one table version."""

    table: str
    rule_id: str
    expectation: str  # the Great Expectations class that ran, e.g. ExpectColumnValuesToNotBeNull
    description: str  # one human sentence: what the rule asks
    severity: str  # FAIL blocks publishing, WARN is reported
    success: bool
    observed_value: Any = None
    unexpected_count: Optional[int] = None
    unexpected_percent: Optional[float] = None
    sample: tuple = ()  # a few offending keys or rows, for people to look at
    details: dict = field(default_factory=dict)  # e.g. {"duplicated_values": 12, "rows_involved": 25}

    @property
    def status(self) -> str:
        """pass, warn or fail: what the report shows."""
        if self.success:
            return PASS_VERDICT
        return FAIL_VERDICT if self.severity == FAIL else WARN_VERDICT


@dataclass(frozen=True)
class Histogram:
    """Counts of a numeric column in equal-width bins; `bins` has one more edge than `counts`."""

    column: str
    bins: tuple[float, ...]
    counts: tuple[int, ...]
    nulls: int = 0


@dataclass
class TableQuality:
    table: str
    layer: str
    version: Optional[int]
    rows: int
    published: bool  # False: a fail rule broke and the previous version stayed current
    rules: list[RuleResult] = field(default_factory=list)
    histograms: list[Histogram] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return verdict_of(self.rules)


@dataclass(frozen=True)
class CoveragePoint:
    """Share of wide-table rows with an aesthetic score and with an image, for one run."""

    run_id: str
    finished_at: str
    aesthetic_share: float
    image_share: float


@dataclass
class RunQuality:
    run_id: str
    started_at: str
    finished_at: str
    engine: str
    warehouse: str
    tables: list[TableQuality] = field(default_factory=list)
    coverage_history: list[CoveragePoint] = field(default_factory=list)
    quarantine: dict[str, int] = field(default_factory=dict)  # reason -> rows
    failure: Optional[str] = None  # why the build stopped, when it did
    command: str = "build"  # or "dq": validates the current versions and publishes nothing

    @property
    def rules(self) -> list[RuleResult]:
        return [rule for table in self.tables for rule in table.rules]

    @property
    def verdict(self) -> str:
        if self.failure:
            return FAIL_VERDICT
        return verdict_of(self.rules)


def allowance(limit: int) -> str:
    """A duplicates rule's limit in words, for its description and the report: zero allows none."""
    limit = int(limit)
    if limit == 0:
        return "none allowed"
    return f"at most {limit:,} value{'' if limit == 1 else 's'} allowed"


def verdict_of(rules: list[RuleResult]) -> str:
    statuses = {rule.status for rule in rules}
    if FAIL_VERDICT in statuses:
        return FAIL_VERDICT
    return WARN_VERDICT if WARN_VERDICT in statuses else PASS_VERDICT
