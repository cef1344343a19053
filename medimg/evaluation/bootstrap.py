"""Bootstrap confidence intervals for the test metrics, resampled by patient.

Images of one patient are not independent: resampling images would count a patient's four films
as four pieces of evidence and give intervals that are too narrow. Each resample therefore draws
patients with replacement and takes every image of each drawn patient (a cluster bootstrap).
The interval is the percentile interval of the resampled values.
"""

from __future__ import annotations

import logging

import numpy as np

from medimg.evaluation.metrics import HEADLINE_METRICS, compute_metrics

logger = logging.getLogger(__name__)


def bootstrap_intervals(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    threshold: float,
    patients: np.ndarray,
    n_resamples: int,
    confidence: float = 0.95,
    seed: int = 0,
    positive_classes: list[str] | None = None,
) -> dict[str, dict[str, float]]:
    """``{metric: {"low", "high"}}`` percentile intervals from patient-level resamples.

    A resample whose metric is undefined (ROC-AUC when it drew one class only, NPV when it
    made no negative call) is left out of that metric's interval; ``n`` says how many
    resamples each interval rests on.

    Args:
        patients: the patient id of each image, aligned with ``y_true``.
        n_resamples: how many resamples; 0 gives no intervals.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    patients = np.asarray(patients)
    if n_resamples <= 0 or len(y_true) == 0:
        return {}
    ids, members = np.unique(patients, return_inverse=True)
    by_patient = [np.flatnonzero(members == k) for k in range(len(ids))]
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {m: [] for m in HEADLINE_METRICS}
    for _ in range(n_resamples):
        drawn = rng.integers(0, len(ids), len(ids))
        index = np.concatenate([by_patient[k] for k in drawn])
        metrics = compute_metrics(y_true[index], probs[index], class_names, threshold,
                                  undefined=float("nan"), positive_classes=positive_classes)
        for name in HEADLINE_METRICS:
            value = metrics[name]
            if isinstance(value, float) and np.isfinite(value):
                values[name].append(value)
    alpha = (1.0 - confidence) / 2.0
    out = {}
    for name, sample in values.items():
        if sample:
            low, high = np.quantile(sample, [alpha, 1.0 - alpha])
            out[name] = {"low": float(low), "high": float(high), "n": len(sample)}
    return out
