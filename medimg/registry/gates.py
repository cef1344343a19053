"""Quality gates. They fail closed: a metric that is missing or not a number fails its gate.

Three kinds of check, in the order they are reported:

- minimum evidence: enough test images of each disease class and of the rest that a metric on
  them means something (``gates.min_test_positives``, ``gates.min_test_negatives``);
- absolute bounds on the test metrics (``gates.min_f1``, ``gates.min_recall``,
  ``gates.minimums``), on point estimates or on the lower ends of their intervals;
- against the champion, as a clinical non-inferiority trial decides: the paired bootstrap
  interval of challenger minus champion must lie above ``-gates.noninferiority_margin`` (and
  above 0 for ``gates.superiority_metric``).
"""

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
    value: float | None  # against the champion: the difference, challenger minus champion
    bound: float | None
    passed: bool
    reason: str
    # against the champion: the difference's paired bootstrap interval [low, high]
    interval: list[float] | None = None


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


def evidence_gates(metrics: Mapping[str, object], gates: GatesConfig) -> list[GateCheck]:
    """At least ``gates.min_test_positives`` test images of each disease class and
    ``gates.min_test_negatives`` of the rest: below them recall or specificity can take only a
    few values, and the gate would decide on noise.

    The rest are the images of no disease class; when every class is a disease class (several
    classes, ``evaluate.positive_classes`` empty) each class's rest is every other class.
    """
    per_class = metrics.get("per_class")
    diseases = metrics.get("positive_classes")
    if not isinstance(per_class, Mapping) or not isinstance(diseases, list) or not diseases:
        return [GateCheck("min_test_evidence", "test images", None, None, False,
                          "the test split's class counts are missing: fails closed")]
    support = {name: int(c.get("support", 0)) for name, c in per_class.items()
               if isinstance(c, Mapping)}
    total = sum(support.values())
    one = len(diseases) == 1
    checks = []
    for disease in diseases:
        name = "min_test_positives" if one else f"min_test_positives_{disease}"
        checks.append(_count_check(name, f"test images of {disease}", support.get(disease, 0),
                                   gates.min_test_positives, "gates.min_test_positives",
                                   f"images of {disease}"))
    rest = [c for c in support if c not in diseases]
    if rest:
        count = sum(support[c] for c in rest)
        checks.append(_count_check("min_test_negatives", f"test images of {', '.join(rest)}",
                                   count, gates.min_test_negatives, "gates.min_test_negatives",
                                   f"images of {' or '.join(rest)}"))
    else:
        for disease in diseases:
            checks.append(_count_check(f"min_test_negatives_{disease}",
                                       f"test images other than {disease}",
                                       total - support.get(disease, 0), gates.min_test_negatives,
                                       "gates.min_test_negatives",
                                       f"images other than {disease}"))
    return checks


def _count_check(name: str, metric: str, count: int, bound: int, key: str, what: str
                 ) -> GateCheck:
    if count >= bound:
        return GateCheck(name, metric, float(count), float(bound), True,
                         f"{count} {metric} >= {bound}")
    return GateCheck(name, metric, float(count), float(bound), False,
                     f"the test split has {count} {what}, fewer than {key} {bound}: too few to "
                     "gate on; add images, or hold back a larger test share "
                     "(data.split_fractions.test)")


def absolute_gates(metrics: Mapping[str, object], gates: GatesConfig) -> list[GateCheck]:
    """F1 >= ``gates.min_f1``, recall >= ``gates.min_recall`` and each of ``gates.minimums``,
    on point estimates or, with ``gates.on_ci_lower_bound``, on the intervals' lower ends."""
    bounds = {"f1": gates.min_f1, "recall": gates.min_recall, **gates.minimums}
    return [check_minimum(f"min_{metric}", metrics, metric, bound, gates.on_ci_lower_bound)
            for metric, bound in bounds.items()]


def compared_metrics(gates: GatesConfig) -> tuple[str, ...]:
    """The metrics the champion comparison needs a paired difference for."""
    extra = (gates.superiority_metric,) if gates.superiority_metric not in (None,
                                                                            *GATED_METRICS) else ()
    return (*GATED_METRICS, *extra)  # type: ignore[return-value]


def _difference_check(name: str, metric: str, difference: Mapping[str, object] | None,
                      bound: float, confidence: float) -> GateCheck:
    """The lower end of the paired interval of challenger - champion must lie above ``bound``;
    without an interval (no resamples) the check fails closed."""
    point = _number(difference, "difference") if difference is not None else None
    if point is None:
        return GateCheck(name, metric, None, bound, False,
                         f"{metric} of the challenger or the champion is unavailable: fails "
                         "closed")
    low, high = _number(difference, "low"), _number(difference, "high")
    if low is None or high is None:  # a point difference on a test split decides on noise
        return GateCheck(name, metric, point, bound, False,
                         f"{metric} challenger - champion {point:+.4f} has no interval "
                         "(evaluate.bootstrap_resamples is 0, or no resample defined it): "
                         "fails closed; set evaluate.bootstrap_resamples to 1000")
    passed = low > bound
    return GateCheck(name, metric, point, bound, passed,
                     f"{metric} challenger - champion {point:+.4f}, {confidence:.0%} CI "
                     f"{low:+.4f} to {high:+.4f}: lower end {'>' if passed else '<='} "
                     f"{bound:+.4f}", interval=[low, high])


def noninferiority_gates(
    differences: Mapping[str, Mapping[str, object]] | None, gates: GatesConfig,
    confidence: float = 0.95,
) -> list[GateCheck]:
    """For F1 and recall, the lower end of the paired interval of challenger - champion lies
    above ``-gates.noninferiority_margin``.

    Args:
        differences: ``evaluation.bootstrap.paired_differences`` of the two models on the same
            test images; None when the champion could not be scored: every check fails.
    """
    bound = -gates.noninferiority_margin
    return [_difference_check(f"noninferior_{metric}", metric,
                              (differences or {}).get(metric), bound, confidence)
            for metric in GATED_METRICS]


def superiority_gates(
    differences: Mapping[str, Mapping[str, object]] | None, gates: GatesConfig,
    confidence: float = 0.95,
) -> list[GateCheck]:
    """With ``gates.superiority_metric`` set, the lower end of its paired interval of
    challenger - champion lies above 0. None set: no check."""
    metric = gates.superiority_metric
    if metric is None:
        return []
    return [_difference_check(f"superior_{metric}", metric, (differences or {}).get(metric),
                              0.0, confidence)]


def evaluate_gates(metrics: Mapping[str, object], gates: GatesConfig) -> GateReport:
    """The registration gate: minimum evidence, then the absolute bounds."""
    return GateReport(evidence_gates(metrics, gates) + absolute_gates(metrics, gates))
