"""Classification metrics from aligned labels and probabilities."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from medimg.calibration import (  # noqa: F401  (metrics of calibration live there)
    _calibration_bins,
    brier_score,
    ece_of,
    expected_calibration_error,
)
from medimg.decision import ARGMAX, THRESHOLD, decision_rule

__all__ = ["ARGMAX", "THRESHOLD", "compute_metrics", "decision_rule",
           "disease_classes"]



def disease_classes(class_names: list[str], positive_classes: list[str] | None = None
                    ) -> list[str]:
    """The classes the headline metrics and the gates are about: the last of two classes;
    with more, ``positive_classes`` (``evaluate.positive_classes``) or, when none are named,
    every class."""
    if len(class_names) == 2:
        return [class_names[-1]]
    return list(positive_classes) if positive_classes else list(class_names)


def _safe_div(num: float, den: float) -> float:
    """A ratio with nothing to count (precision with no positive call) is 0, as scikit-learn's
    ``zero_division=0``: the point estimate and every bootstrap resample count it the same."""
    return float(num / den) if den else 0.0


def compute_metrics(
    y_true: np.ndarray, probs: np.ndarray, class_names: list[str],
    threshold: float | None = 0.5, positive_classes: list[str] | None = None,
) -> dict[str, object]:
    """Accuracy, precision (PPV), recall (sensitivity), specificity, NPV, F1, ROC-AUC, PR-AUC,
    Brier score, expected calibration error and the confusion matrix.

    The one definition of every metric: the evaluate stage, the slices, the bootstrap and the
    champion's re-scoring all call this function.

    Two classes: the last class is positive and ``threshold`` applies to its probability.
    More classes: arg-max decisions (``threshold`` is ignored and reported as None); the
    headline precision, recall, specificity, NPV, F1, ROC-AUC and PR-AUC are macro averages of
    the one-vs-rest values over ``positive_classes`` (the disease classes; all classes when
    None).
    ``per_class`` has every class with its support, and ``macro_f1`` and ``weighted_f1`` (by
    support) cover all classes. A ratio with nothing to count is 0; ROC-AUC and PR-AUC are NaN
    when a class is absent, since no value can stand for them.

    Args:
        y_true: true class indices (N,).
        probs: class probabilities (N, n_classes), rows aligned with ``y_true``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = len(class_names)
    if probs.shape != (len(y_true), n_classes):
        raise ValueError(f"probs shape {probs.shape} does not match {len(y_true)} labels "
                         f"x {n_classes} classes")
    binary = n_classes == 2
    if binary and threshold is None:
        raise ValueError("two classes need a decision threshold")
    y_pred = (probs[:, 1] >= threshold).astype(np.int64) if binary else probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))
    per_class = []
    for k in range(n_classes):
        tp = cm[k, k]
        fp = cm[:, k].sum() - tp
        fn = cm[k, :].sum() - tp
        tn = cm.sum() - tp - fp - fn
        per_class.append({
            "support": int(cm[k, :].sum()),
            "precision": _safe_div(tp, tp + fp),
            "recall": _safe_div(tp, tp + fn),
            "specificity": _safe_div(tn, tn + fp),
            "npv": _safe_div(tn, tn + fn),
            "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        })
    onehot = np.eye(n_classes)[y_true]
    if n_classes == 2:
        headline = per_class[1]
        present = len(np.unique(y_true)) == 2
        roc_auc = float(roc_auc_score(y_true, probs[:, 1])) if present else float("nan")
        pr_auc = float(average_precision_score(y_true, probs[:, 1])) if present else float("nan")
    else:
        chosen = [class_names.index(c) for c in disease_classes(class_names, positive_classes)]
        headline = {k: float(np.mean([per_class[i][k] for i in chosen])) for k in per_class[0]}
        # one-vs-rest areas averaged over the disease classes, as the other headline metrics;
        # with every class a disease class this is scikit-learn's macro one-vs-rest AUC
        present = all(0 < onehot[:, k].sum() < len(y_true) for k in chosen)
        roc_auc = float(np.mean([roc_auc_score(onehot[:, k], probs[:, k]) for k in chosen])
                        ) if present else float("nan")
        pr_auc = float(np.mean([average_precision_score(onehot[:, k], probs[:, k])
                                for k in chosen])) if present else float("nan")
    brier, ece = brier_score(y_true, probs), ece_of(y_true, probs)
    return {
        "accuracy": _safe_div(np.trace(cm), cm.sum()),
        "precision": headline["precision"],
        "recall": headline["recall"],
        "specificity": headline["specificity"],
        "npv": headline["npv"],
        "f1": headline["f1"],
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
        "brier": brier,
        "ece": ece,
        "macro_f1": float(np.mean([c["f1"] for c in per_class])),
        "weighted_f1": _safe_div(sum(c["f1"] * c["support"] for c in per_class), len(y_true)),
        "decision_rule": decision_rule(list(class_names)),
        "threshold": float(threshold) if binary else None,
        "n": len(y_true),
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
        "per_class": {name: per_class[k] for k, name in enumerate(class_names)},
    }


def _one_vs_rest(y_true: np.ndarray, probs: np.ndarray, k: int | None):
    k = probs.shape[1] - 1 if k is None else k
    return np.asarray(y_true) == k, probs[:, k]


def roc_points(y_true: np.ndarray, probs: np.ndarray, k: int | None = None
               ) -> dict[str, list[float]]:
    """ROC curve of class ``k`` one-vs-rest (default: the last, positive class)."""
    fpr, tpr, thresholds = roc_curve(*_one_vs_rest(y_true, probs, k))
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "threshold": thresholds.tolist()}


def pr_points(y_true: np.ndarray, probs: np.ndarray, k: int | None = None
              ) -> dict[str, list[float]]:
    """Precision-recall curve of class ``k`` one-vs-rest (default: the last, positive class);
    ``threshold`` has one entry per point but the last (recall 0)."""
    precision, recall, thresholds = precision_recall_curve(*_one_vs_rest(y_true, probs, k))
    return {"precision": precision.tolist(), "recall": recall.tolist(),
            "threshold": thresholds.tolist()}


def reliability_points(y_true: np.ndarray, probs: np.ndarray, bins: int = 10
                       ) -> dict[str, list[float]]:
    """Mean predicted probability and observed frequency per equal-width bin, for the bins
    that hold images, as the ECE reads them: the positive (last) class for two classes, the
    top class (its probability against how often it is right) for more."""
    y_true = np.asarray(y_true)
    if probs.shape[1] == 2:
        return _calibration_bins(y_true == 1, probs[:, 1], bins)
    return _calibration_bins(probs.argmax(axis=1) == y_true, probs.max(axis=1), bins)
