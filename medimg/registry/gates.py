"""Quality gates. They fail closed: a metric that is missing or not a number fails its gate."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from medimg.config import GatesConfig

GATED_METRICS = ("f1", "recall")


@dataclass(frozen=True)
class GateCheck:
    name: str  # e.g. "min_f1", "noninferior_recall"
    metric: str
    value: float | None
    bound: float | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateReport:
    checks: list[GateCheck]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks]}


def _number(metrics: Mapping[str, object], key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def check_minimum(name: str, metrics: Mapping[str, object], metric: str, bound: float,
                  on_ci_lower_bound: bool = False) -> GateCheck:
    """``metric >= bound``; with ``on_ci_lower_bound``, the lower end of its bootstrap
    interval (``metrics["ci"][metric]["low"]``) must clear the bound instead."""
    if on_ci_lower_bound:
        interval = metrics.get("ci")
        bounds = interval.get(metric) if isinstance(interval, Mapping) else None
        value = _number(bounds, "low") if isinstance(bounds, Mapping) else None
        label = f"{metric} CI lower bound"
    else:
        value, label = _number(metrics, metric), metric
    if value is None:
        return GateCheck(name, metric, None, bound, False, f"{label} is missing: fails closed")
    passed = value >= bound
    relation = ">=" if passed else "<"
    return GateCheck(name, metric, value, bound, passed, f"{label} {value:.4f} {relation} {bound}")


def absolute_gates(metrics: Mapping[str, object], gates: GatesConfig) -> list[GateCheck]:
    """F1 >= ``gates.min_f1``, recall >= ``gates.min_recall`` and each of ``gates.minimums``,
    on point estimates or, with ``gates.on_ci_lower_bound``, on the intervals' lower ends."""
    bounds = {"f1": gates.min_f1, "recall": gates.min_recall, **gates.minimums}
    return [check_minimum(f"min_{metric}", metrics, metric, bound, gates.on_ci_lower_bound)
            for metric, bound in bounds.items()]


def noninferiority_gates(
    candidate: Mapping[str, object], champion: Mapping[str, object] | None, gates: GatesConfig
) -> list[GateCheck]:
    """Candidate >= champion - margin on each gated metric, both scored on the same test split.

    ``champion=None`` means the champion could not be scored: every check fails.
    """
    checks = []
    for metric in GATED_METRICS:
        name = f"noninferior_{metric}"
        reference = _number(champion, metric) if champion is not None else None
        if reference is None:
            checks.append(GateCheck(name, metric, _number(candidate, metric), None, False,
                                    f"champion {metric} unavailable: fails closed"))
            continue
        checks.append(check_minimum(name, candidate, metric,
                                    round(reference - gates.noninferiority_margin, 6)))
    return checks


def superiority_gates(
    candidate: Mapping[str, object], champion: Mapping[str, object] | None, gates: GatesConfig
) -> list[GateCheck]:
    """With ``gates.superiority_metric`` set: candidate > champion on that metric, both scored
    on the same test split. None set: no check. An unscorable champion fails closed."""
    metric = gates.superiority_metric
    if metric is None:
        return []
    name = f"superior_{metric}"
    reference = _number(champion, metric) if champion is not None else None
    value = _number(candidate, metric)
    if reference is None or value is None:
        missing = "champion" if reference is None else "candidate"
        return [GateCheck(name, metric, value, reference, False,
                          f"{missing} {metric} unavailable: fails closed")]
    passed = value > reference
    relation = ">" if passed else "<="
    return [GateCheck(name, metric, value, reference, passed,
                      f"{metric} {value:.4f} {relation} champion {reference:.4f}")]


def evaluate_gates(metrics: Mapping[str, object], gates: GatesConfig) -> GateReport:
    """The registration gate: absolute bounds only."""
    return GateReport(absolute_gates(metrics, gates))
