"""The one table of test metrics: what each is called, which way is better, where it is used.

The bootstrap, the gates, the model card, the CLI and MLflow all read their metric lists from
here, so a metric is added or relabelled in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One scalar test metric.

    Attributes:
        name: the key in ``reports/metrics.json`` (MLflow logs it as ``test_<name>``).
        label: how people read it (model card, CLI).
        higher_is_better: False for the calibration errors.
        headline: reported by the evaluate stage with a bootstrap interval.
        sliceable: reported per value of each ``evaluate.slices`` column.
        boundable: a gate may put a lower bound on it (``gates.minimums``) or ask the challenger
            to beat the champion on it (``gates.superiority_metric``).
    """

    name: str
    label: str
    higher_is_better: bool = True
    headline: bool = True
    sliceable: bool = True
    boundable: bool = True


# in the order people read them
METRICS = (
    Metric("accuracy", "Accuracy"),
    Metric("precision", "Precision (PPV)"),
    Metric("recall", "Recall (sensitivity)"),
    Metric("specificity", "Specificity"),
    Metric("npv", "NPV"),
    Metric("f1", "F1"),
    Metric("roc_auc", "ROC-AUC"),
    Metric("pr_auc", "PR-AUC", sliceable=False),
    Metric("brier", "Brier score (lower is better)", higher_is_better=False, sliceable=False,
           boundable=False),
    Metric("ece", "Expected calibration error (lower is better)", higher_is_better=False,
           sliceable=False, boundable=False),
)
BY_NAME = {m.name: m for m in METRICS}
HEADLINE_METRICS = tuple(m.name for m in METRICS if m.headline)
SLICE_METRICS = tuple(m.name for m in METRICS if m.sliceable)
BOUNDABLE_METRICS = tuple(m.name for m in METRICS if m.boundable)
