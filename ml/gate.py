"""Gate decisions: pure functions from measured metrics and rules to a verdict, one row per rule."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ml.config import GateConfig


@dataclass
class RuleResult:
    rule: str  # e.g. "accuracy >= 0.9"
    threshold: float
    measured: float | None  # None: the metric could not be computed on this split
    passed: bool


@dataclass
class GateReport:
    rules: list[RuleResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """All rules passed (no rules: nothing blocks, the verdict says so)."""
        return all(r.passed for r in self.rules)

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.rules if not r.passed]

    @property
    def verdict(self) -> str:
        if not self.rules:
            return "passed (no rules)"
        return "passed" if self.passed else f"failed ({len(self.failed)}/{len(self.rules)} rules)"

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "verdict": self.verdict, "rules": [asdict(r) for r in self.rules]}


def evaluate_gate(metrics: dict[str, Any], cfg: GateConfig) -> GateReport:
    """Absolute thresholds: `min` rules need measured >= threshold, `max` rules measured <= threshold."""
    report = GateReport()
    for name, threshold in sorted(cfg.min.items()):
        measured = metrics.get(name)
        report.rules.append(
            RuleResult(f"{name} >= {threshold:g}", threshold, measured, measured is not None and measured >= threshold)
        )
    for name, threshold in sorted(cfg.max.items()):
        measured = metrics.get(name)
        report.rules.append(
            RuleResult(f"{name} <= {threshold:g}", threshold, measured, measured is not None and measured <= threshold)
        )
    return report


def should_promote(report: GateReport) -> bool:
    """A candidate reaches `production` only if every gate rule passed."""
    return report.passed
