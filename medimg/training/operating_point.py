"""The operating point: the decision threshold chosen on the validation split.

A threshold ``t`` calls an image positive when the positive class's probability is ``>= t``.
The candidates are the validation scores themselves, so every achievable confusion matrix is
considered once, and the threshold returned is always one of the scores.

Methods (``train.threshold_method``):

- ``target_recall`` (the default): of the thresholds that reach ``train.target_recall``, the
  one with the best precision; of equal precisions, the one with the higher recall;
- ``youden``: the largest Youden's J (sensitivity + specificity - 1);
- ``max_f1``: the largest F1;
- ``fixed``: ``train.threshold`` as given.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from medimg.config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatingPoint:
    """The chosen threshold and what it gave on the validation split."""

    threshold: float
    method: str
    recall: float
    precision: float
    specificity: float
    f1: float
    reason: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _curves(positive: np.ndarray, scores: np.ndarray):
    """Per distinct score (descending): the threshold and TP, FP counts at ``score >= t``."""
    order = np.argsort(-scores, kind="mergesort")
    scores, positive = scores[order], positive[order]
    tp = np.cumsum(positive)
    fp = np.cumsum(~positive)
    # the last index of each run of equal scores: thresholds between distinct values
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]
    return scores[last], tp[last].astype(float), fp[last].astype(float)


def _ratio(num: np.ndarray, den: np.ndarray | float) -> np.ndarray:
    den = np.broadcast_to(np.asarray(den, dtype=float), np.shape(num))
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def select_threshold(
    positive: np.ndarray, scores: np.ndarray, config: TrainConfig
) -> OperatingPoint:
    """The operating point for ``config`` from validation labels and positive-class scores.

    Args:
        positive: True where the image is of the positive class (N,).
        scores: the positive class's probability per image (N,).

    A validation split without a positive or without a negative image cannot place a
    threshold; ``train.threshold`` is used then, and the reason says so.
    """
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    method = config.threshold_method
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    fallback = ""
    if method != "fixed" and (n_pos == 0 or n_neg == 0):
        fallback = (f"train.threshold, because the validation split has {n_pos} positive and "
                    f"{n_neg} negative images, too few for {method}")
        logger.warning("threshold: %s", fallback)
        method = "fixed"
    if method == "fixed":
        t = config.threshold
        called = scores >= t
        tp, fp = np.array([float((called & positive).sum())]), np.array(
            [float((called & ~positive).sum())])
        thresholds = np.array([t])
    else:
        thresholds, tp, fp = _curves(positive, scores)
    recall = _ratio(tp, n_pos)
    precision = _ratio(tp, tp + fp)
    specificity = _ratio(n_neg - fp, n_neg)
    f1 = _ratio(2 * precision * recall, precision + recall)

    if method == "fixed":
        best, reason = 0, fallback or "train.threshold as set in params.yaml"
    elif method == "target_recall":
        target = config.target_recall
        reaching = np.flatnonzero(recall >= target - 1e-12)  # the lowest score always reaches it
        # equal precision: the lower threshold finds more of the disease at the same PPV
        top = reaching[precision[reaching] == precision[reaching].max()]
        best = int(top[-1])  # thresholds descend
        reason = (f"the highest-precision threshold with validation recall >= {target:g} "
                  f"(train.target_recall)")
    elif method == "youden":
        best = int(np.argmax(recall + specificity - 1.0))
        reason = "the largest Youden's J (sensitivity + specificity - 1) on validation"
    else:  # max_f1
        best = int(np.argmax(f1))
        reason = "the largest F1 on validation"
    return OperatingPoint(
        threshold=float(thresholds[best]),
        method=method,
        recall=float(recall[best]),
        precision=float(precision[best]),
        specificity=float(specificity[best]),
        f1=float(f1[best]),
        reason=reason,
    )
