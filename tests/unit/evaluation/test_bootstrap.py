"""Patient-level bootstrap intervals for the test metrics."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.evaluation.bootstrap import bootstrap_intervals
from medimg.evaluation.metrics import compute_metrics
from medimg.metric_table import HEADLINE_METRICS

NAMES = ["normal", "pneumonia"]


def scored(n_patients: int, images_per_patient: int = 1, seed: int = 0):
    """Labels, probabilities and patient ids: informative but imperfect scores, and every image
    of a patient a near copy of the patient's first (same label, almost the same score)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n_patients)
    score = np.clip(0.3 * label + 0.7 * rng.random(n_patients), 0.0, 1.0)
    y = np.repeat(label, images_per_patient)
    p = np.clip(np.repeat(score, images_per_patient)
                + rng.normal(0, 0.01, n_patients * images_per_patient), 0.0, 1.0)
    patients = np.repeat([f"p{i}" for i in range(n_patients)], images_per_patient)
    return y, np.stack([1 - p, p], axis=1), patients


def test_each_interval_contains_its_point_estimate():
    y, probs, patients = scored(200)
    point = compute_metrics(y, probs, NAMES, 0.5)
    ci = bootstrap_intervals(y, probs, NAMES, 0.5, patients, n_resamples=400, seed=1)
    assert set(ci) == set(HEADLINE_METRICS)
    for name, bounds in ci.items():
        assert bounds["low"] <= point[name] <= bounds["high"], name
        assert bounds["low"] < bounds["high"], name
        assert bounds["n"] == 400


def test_intervals_narrow_as_the_test_set_grows():
    widths = []
    for n in (60, 240, 960):
        y, probs, patients = scored(n, seed=2)
        ci = bootstrap_intervals(y, probs, NAMES, 0.5, patients, n_resamples=300, seed=3)
        widths.append({k: v["high"] - v["low"] for k, v in ci.items()})
    for name in ("recall", "f1", "roc_auc", "accuracy"):
        assert widths[0][name] > widths[1][name] > widths[2][name], name
    # about 1/sqrt(n): sixteen times the patients, about a quarter of the width
    assert widths[2]["f1"] < 0.5 * widths[0]["f1"]


def test_resampling_patients_not_images_keeps_a_patients_films_together():
    # 50 patients with 8 near-identical films each: 400 images but only 50 pieces of evidence
    y, probs, patients = scored(50, images_per_patient=8, seed=4)
    by_patient = bootstrap_intervals(y, probs, NAMES, 0.5, patients, 400, seed=5)
    by_image = bootstrap_intervals(y, probs, NAMES, 0.5, np.arange(len(y)), 400, seed=5)
    for name in ("recall", "f1", "accuracy"):
        width = by_patient[name]["high"] - by_patient[name]["low"]
        naive = by_image[name]["high"] - by_image[name]["low"]
        assert width > 1.8 * naive, name  # sqrt(8) = 2.8 in theory


def test_the_same_seed_gives_the_same_intervals_and_none_are_asked_for_with_zero():
    y, probs, patients = scored(80)
    first = bootstrap_intervals(y, probs, NAMES, 0.5, patients, 100, seed=9)
    assert first == bootstrap_intervals(y, probs, NAMES, 0.5, patients, 100, seed=9)
    assert bootstrap_intervals(y, probs, NAMES, 0.5, patients, 0) == {}


def test_resamples_without_a_class_are_left_out_of_undefined_metrics():
    # 3 positive patients of 40: some resamples draw none, and ROC-AUC is undefined there
    y = np.array([1, 1, 1] + [0] * 37)
    p = np.linspace(0.05, 0.95, 40)[::-1]
    ci = bootstrap_intervals(y, np.stack([1 - p, p], 1), NAMES, 0.5, np.arange(40), 500, seed=0)
    assert ci["roc_auc"]["n"] < 500 and ci["accuracy"]["n"] == 500
    assert np.isfinite(ci["roc_auc"]["low"])


def test_calibration_metrics_by_hand():
    y = np.array([1, 0, 1, 0])
    p1 = np.array([0.9, 0.1, 0.6, 0.4])
    m = compute_metrics(y, np.stack([1 - p1, p1], 1), NAMES, 0.5)
    assert m["brier"] == pytest.approx((0.01 + 0.01 + 0.16 + 0.16) / 4)
    # bins (0.0-0.1], (0.3-0.4], (0.5-0.6], (0.8-0.9]: |0.1-0| + |0.4-0| + |0.6-1| + |0.9-1|
    assert m["ece"] == pytest.approx((0.1 + 0.4 + 0.4 + 0.1) / 4)
    assert m["npv"] == 1.0 and m["pr_auc"] == 1.0


def test_a_resample_with_no_true_positive_counts_f1_as_zero_as_the_point_estimate_does():
    # a weak model: 3 positives among 60 patients, one of them found, with 2 false alarms;
    # many resamples draw no found positive, and their F1 is 0, as the point estimate counts it
    y = np.r_[np.ones(3, int), np.zeros(57, int)]
    p = np.r_[0.9, 0.2, 0.3, 0.8, 0.7, np.full(55, 0.1)]
    probs = np.stack([1 - p, p], 1)
    point = compute_metrics(y, probs, NAMES, 0.5)
    assert point["f1"] == pytest.approx(2 / (2 + 2 + 2))  # TP 1, FP 2, FN 2
    ci = bootstrap_intervals(y, probs, NAMES, 0.5, np.arange(60), 1000, seed=1)
    # every resample gives an F1 (none is dropped) and the lower end is 0, not inflated
    assert ci["f1"]["n"] == 1000 and ci["f1"]["left_out"] == 0
    assert ci["f1"]["low"] == 0.0 < point["f1"] < ci["f1"]["high"]
    assert ci["precision"]["n"] == ci["recall"]["n"] == 1000
    # what dropping the zeros would have given: a lower end well above 0
    kept = []
    from medimg.evaluation.bootstrap import patient_resamples
    for index in patient_resamples(np.arange(60), 1000, seed=1):
        tp = int(((p[index] >= 0.5) & (y[index] == 1)).sum())
        if tp:
            kept.append(compute_metrics(y[index], probs[index], NAMES, 0.5)["f1"])
    assert len(kept) < 1000 and np.quantile(kept, 0.025) > 0.1


def test_only_a_metric_with_no_value_at_all_is_left_out_and_the_count_is_reported():
    # 2 positives among 40 patients: resamples that draw neither have no ROC-AUC at all
    p = np.r_[0.9, 0.4, np.linspace(0.05, 0.6, 38)]
    y = np.r_[1, 1, np.zeros(38, int)]
    ci = bootstrap_intervals(y, np.stack([1 - p, p], 1), NAMES, 0.5, np.arange(40), 500, seed=1)
    assert 0 < ci["roc_auc"]["left_out"] < 500
    assert ci["roc_auc"]["n"] + ci["roc_auc"]["left_out"] == 500
    assert ci["recall"]["left_out"] == 0 and ci["npv"]["left_out"] == 0


def test_the_paired_bootstrap_scores_both_models_on_the_same_resampled_patients():
    from medimg.evaluation.bootstrap import paired_differences

    y, probs, patients = scored(150, images_per_patient=2, seed=6)
    # a model against itself: every resample gives a difference of exactly 0
    same = paired_differences(y, (probs, 0.5), (probs, 0.5), NAMES, patients, ("f1", "recall"),
                              300, seed=1)
    assert all(d["low"] == d["high"] == d["difference"] == 0.0 for d in same.values())
    # a slightly better model: its F1 gain, unpaired, would be lost in two wide intervals;
    # paired, the case mix cancels and the interval is narrow
    p = probs[:, 1]
    sharper = np.clip(np.where(y == 1, p + 0.08, p - 0.08), 0, 1)
    better = np.stack([1 - sharper, sharper], 1)
    d = paired_differences(y, (better, 0.5), (probs, 0.5), NAMES, patients, ("f1",), 500,
                           seed=2)["f1"]
    ours = compute_metrics(y, better, NAMES, 0.5)["f1"]
    theirs = compute_metrics(y, probs, NAMES, 0.5)["f1"]
    assert d["challenger"] == ours and d["champion"] == theirs
    assert d["difference"] == pytest.approx(ours - theirs) and d["difference"] > 0
    assert 0 < d["low"] <= d["difference"] <= d["high"] and d["n"] == 500
    apart = [bootstrap_intervals(y, m, NAMES, 0.5, patients, 500, seed=s)["f1"]
             for m, s in ((better, 3), (probs, 4))]
    unpaired = sum(b["high"] - b["low"] for b in apart)
    assert d["high"] - d["low"] < 0.5 * unpaired
    # each model keeps its own threshold
    own = paired_differences(y, (probs, 0.9), (probs, 0.5), NAMES, patients, ("recall",), 100)
    assert own["recall"]["difference"] < 0 and own["recall"]["high"] < 0
    # no resamples: the point difference alone, and no interval
    point = paired_differences(y, (better, 0.5), (probs, 0.5), NAMES, patients, ("f1",), 0)
    assert point["f1"]["low"] is None and point["f1"]["difference"] == d["difference"]
