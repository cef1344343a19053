"""Bootstrap confidence intervals for the test metrics, resampled by patient.

Images of one patient are not independent: resampling images would count a patient's four films
as four pieces of evidence and give intervals that are too narrow. Each resample therefore draws
patients with replacement and takes every image of each drawn patient (a cluster bootstrap).
The interval is the percentile interval of the resampled values.

Every resample is scored by ``compute_metrics``, the function that gives the point estimate, so
a ratio with nothing to count (F1 of a resample with no true positive) counts as the point
estimate counts it. Only a metric that no value can stand for in a resample (ROC-AUC when it
drew one class) is left out of that resample, and ``left_out`` says how often.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from medimg.evaluation.metrics import compute_metrics
from medimg.metric_table import HEADLINE_METRICS


def patient_groups(rows: pd.DataFrame) -> list[str]:
    """The pseudonymous patient of each manifest row (the image itself when none is known),
    from its ``patient_id``; the index holds the image ids."""
    ids = rows["image_id"] if "image_id" in rows.columns else rows.index
    return [str(p) if isinstance(p, str) and p else f"image:{i}"
            for i, p in zip(ids, rows["patient_id"], strict=True)]


def patient_resamples(patients: Sequence[object], n_resamples: int, seed: int
                      ) -> Iterator[np.ndarray]:
    """Image indices of ``n_resamples`` resamples: each draws the patients with replacement
    and takes every image of a drawn patient."""
    ids, members = np.unique(np.asarray(patients), return_inverse=True)
    by_patient = [np.flatnonzero(members == k) for k in range(len(ids))]
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        drawn = rng.integers(0, len(ids), len(ids))
        yield np.concatenate([by_patient[k] for k in drawn])


def _interval(sample: list[float], confidence: float, n_resamples: int) -> dict[str, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(sample, [alpha, 1.0 - alpha])
    return {"low": float(low), "high": float(high), "n": len(sample),
            "left_out": n_resamples - len(sample)}


def _finite(value: object) -> bool:
    return isinstance(value, float) and bool(np.isfinite(value))


def bootstrap_intervals(
    y_true: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    threshold: float | None,
    patients: Sequence[object],
    n_resamples: int,
    confidence: float = 0.95,
    seed: int = 0,
    positive_classes: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """``{metric: {"low", "high", "n", "left_out"}}`` percentile intervals from patient-level
    resamples; ``n`` resamples defined the metric, ``left_out`` did not.

    Args:
        patients: the patient id of each image, aligned with ``y_true``.
        n_resamples: how many resamples; 0 gives no intervals.
        progress: called with ``(done, n_resamples)`` after each resample.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    if n_resamples <= 0 or len(y_true) == 0:
        return {}
    values: dict[str, list[float]] = {m: [] for m in HEADLINE_METRICS}
    for done, index in enumerate(patient_resamples(patients, n_resamples, seed), start=1):
        metrics = compute_metrics(y_true[index], probs[index], class_names, threshold,
                                  positive_classes=positive_classes)
        for name in HEADLINE_METRICS:
            if _finite(metrics[name]):
                values[name].append(float(metrics[name]))
        if progress:
            progress(done, n_resamples)
    return {name: _interval(sample, confidence, n_resamples)
            for name, sample in values.items() if sample}


def paired_differences(
    y_true: np.ndarray,
    challenger: tuple[np.ndarray, float | None],
    champion: tuple[np.ndarray, float | None],
    class_names: list[str],
    patients: Sequence[object],
    metrics: Sequence[str],
    n_resamples: int,
    confidence: float = 0.95,
    seed: int = 0,
    positive_classes: list[str] | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """Challenger minus champion on each of ``metrics``, both scored on the same images, with
    a paired patient bootstrap interval: each resample draws the patients once and scores both
    models on them, so what the two share (the case mix) cancels out of the difference.

    Args:
        challenger, champion: each model's probabilities (N, n_classes), aligned with
            ``y_true``, and its own decision threshold (None for arg-max).

    Returns:
        ``{metric: {"challenger", "champion", "difference", "low", "high", "n", "left_out"}}``;
        without resamples (``n_resamples`` 0) ``low`` and ``high`` are None.
    """
    y_true = np.asarray(y_true)

    def score(model: tuple[np.ndarray, float | None], index: np.ndarray | slice
              ) -> dict[str, object]:
        probs, threshold = model
        return compute_metrics(y_true[index], np.asarray(probs, dtype=np.float64)[index],
                               class_names, threshold, positive_classes=positive_classes)

    ours, theirs = score(challenger, slice(None)), score(champion, slice(None))
    samples: dict[str, list[float]] = {m: [] for m in metrics}
    for index in patient_resamples(patients, max(n_resamples, 0), seed):
        a, b = score(challenger, index), score(champion, index)
        for name in metrics:
            if _finite(a[name]) and _finite(b[name]):
                samples[name].append(float(a[name]) - float(b[name]))
    out: dict[str, dict[str, float | int | None]] = {}
    for name in metrics:
        a, b = ours[name], theirs[name]
        both = _finite(a) and _finite(b)
        entry: dict[str, float | int | None] = {
            "challenger": float(a) if _finite(a) else None,
            "champion": float(b) if _finite(b) else None,
            "difference": float(a) - float(b) if both else None,
            "low": None, "high": None, "n": 0, "left_out": max(n_resamples, 0)}
        if samples[name]:
            entry.update(_interval(samples[name], confidence, n_resamples))
        out[name] = entry
    return out
