from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from medimg.evaluation.metrics import compute_metrics


def _binary_case():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.35 + rng.random(200) * 0.65, 0, 1)
    return y, np.stack([1 - p, p], axis=1)


def test_binary_metrics_match_scikit_learn():
    y, probs = _binary_case()
    m = compute_metrics(y, probs, ["normal", "pneumonia"], threshold=0.5)
    pred = (probs[:, 1] >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["recall"] == pytest.approx(recall_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, probs[:, 1]))
    tn, fp, _, _ = confusion_matrix(y, pred).ravel()
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["confusion_matrix"] == confusion_matrix(y, pred).tolist()


def test_known_small_case_by_hand():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p1 = np.array([0.9, 0.8, 0.6, 0.2, 0.7, 0.1, 0.1, 0.2, 0.3, 0.4])
    m = compute_metrics(y, np.stack([1 - p1, p1], 1), ["neg", "pos"], threshold=0.5)
    # tp=3 fn=1 fp=1 tn=5
    assert m["recall"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["f1"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.8)


def test_threshold_moves_the_operating_point():
    y, probs = _binary_case()
    low = compute_metrics(y, probs, ["a", "b"], threshold=0.2)
    high = compute_metrics(y, probs, ["a", "b"], threshold=0.8)
    assert low["recall"] >= high["recall"] and low["specificity"] <= high["specificity"]


def test_multiclass_macro_metrics_match_scikit_learn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + np.eye(3)[y] * 1.2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = compute_metrics(y, probs, ["a", "b", "c"])
    pred = probs.argmax(1)
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["recall"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))


def test_misaligned_shapes_are_rejected():
    with pytest.raises(ValueError, match="does not match"):
        compute_metrics(np.array([0, 1]), np.zeros((3, 2)), ["a", "b"])


def test_pr_and_reliability_points_match_scikit_learn():
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve

    from medimg.evaluation.metrics import pr_points, reliability_points

    y, probs = _binary_case()
    pr = pr_points(y, probs)
    precision, recall, thresholds = precision_recall_curve(y, probs[:, 1])
    assert pr["threshold"] == pytest.approx(thresholds.tolist())
    assert pr["precision"] == pytest.approx(precision.tolist())
    assert pr["recall"] == pytest.approx(recall.tolist())
    assert len(pr["threshold"]) == len(pr["recall"]) - 1
    points = reliability_points(y, probs, bins=10)
    frequency, confidence = calibration_curve(y, probs[:, 1], n_bins=10)
    assert points["frequency"] == pytest.approx(frequency.tolist())
    assert points["confidence"] == pytest.approx(confidence.tolist())
    assert sum(points["count"]) == len(y)


def test_multiclass_headline_averages_the_named_disease_classes_and_weighted_f1_uses_support():
    from sklearn.metrics import f1_score as f1

    rng = np.random.default_rng(3)
    names = ["normal", "pneumonia", "covid"]
    y = rng.choice(3, 300, p=[0.6, 0.3, 0.1])
    logits = rng.normal(size=(300, 3)) + 1.5 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred = probs.argmax(axis=1)
    every = compute_metrics(y, probs, names)
    disease = compute_metrics(y, probs, names, positive_classes=["pneumonia", "covid"])
    assert every["f1"] == pytest.approx(f1(y, pred, average="macro"))
    assert disease["f1"] == pytest.approx(f1(y, pred, labels=[1, 2], average="macro"))
    assert disease["recall"] == pytest.approx(recall_score(y, pred, labels=[1, 2],
                                                           average="macro"))
    assert disease["macro_f1"] == pytest.approx(f1(y, pred, average="macro"))
    assert disease["weighted_f1"] == pytest.approx(f1(y, pred, average="weighted"))
    assert [disease["per_class"][n]["support"] for n in names] == np.bincount(y).tolist()
    for k, name in enumerate(names):  # one-vs-rest per class
        assert disease["per_class"][name]["f1"] == pytest.approx(f1(y == k, pred == k))


def test_positive_classes_must_be_classes_and_the_last_one_for_two():
    from medimg.config import parse_config
    from medimg.errors import ConfigError

    with pytest.raises(ConfigError, match=r"not in base\.class_names"):
        parse_config({"evaluate": {"positive_classes": ["covid"]}})
    with pytest.raises(ConfigError, match=r"reorder base\.class_names"):
        parse_config({"evaluate": {"positive_classes": ["normal"]}})
    three = {"base": {"class_names": ["normal", "pneumonia", "covid"]}}
    assert parse_config({**three, "evaluate": {"positive_classes": ["covid"]}})


def test_several_classes_read_reliability_as_their_ece_does_by_the_top_class():
    from medimg.evaluation.metrics import compute_metrics, reliability_points

    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(3), size=300)
    y = np.array([rng.choice(3, p=p) for p in probs])
    points = reliability_points(y, probs, bins=10)
    # the plotted gaps, weighted by count, are the reported ECE: one reading of calibration
    gaps = np.abs(np.subtract(points["confidence"], points["frequency"])) * points["count"]
    ece = compute_metrics(y, probs, ["a", "b", "c"])["ece"]
    assert gaps.sum() / len(y) == pytest.approx(ece)
    assert sum(points["count"]) == 300 and min(points["confidence"]) >= 1 / 3 - 1e-9
