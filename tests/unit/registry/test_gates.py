from __future__ import annotations

import math

import pytest

from medimg.config import GatesConfig
from medimg.registry.gates import (
    evaluate_gates,
    evidence_gates,
    noninferiority_gates,
    superiority_gates,
)

GATES = GatesConfig(min_f1=0.80, min_recall=0.85, noninferiority_margin=0.02)
# enough test images of both sides: the evidence checks pass, the metric checks decide
EVIDENCE = {"positive_classes": ["pneumonia"],
            "per_class": {"normal": {"support": 60}, "pneumonia": {"support": 40}}}


def measured(**metrics):
    return {**EVIDENCE, **metrics}


def diff(point, low=None, high=None):
    return {"difference": point, "low": low, "high": high}


def test_passing_metrics_pass_every_gate():
    report = evaluate_gates(measured(**{"f1": 0.9, "recall": 0.92}), GATES)
    assert report.passed and not report.failed
    assert [c.name for c in report.checks] == ["min_test_positives", "min_test_negatives",
                                               "min_f1", "min_recall"]


def test_low_f1_fails_only_the_f1_gate():
    report = evaluate_gates(measured(**{"f1": 0.79, "recall": 0.92}), GATES)
    assert not report.passed
    assert [c.name for c in report.failed] == ["min_f1"]
    assert report.failed[0].value == 0.79 and report.failed[0].bound == 0.80


def test_low_recall_fails_only_the_recall_gate():
    report = evaluate_gates(measured(**{"f1": 0.9, "recall": 0.80}), GATES)
    assert [c.name for c in report.failed] == ["min_recall"]


def test_bound_is_inclusive():
    assert evaluate_gates(measured(**{"f1": 0.80, "recall": 0.85}), GATES).passed


def test_missing_or_nan_metric_fails_closed():
    for metrics in ({"recall": 0.99}, {"f1": math.nan, "recall": 0.99}, {"f1": "0.9",
                                                                           "recall": 0.99}):
        report = evaluate_gates(measured(**metrics), GATES)
        assert not report.passed
        assert report.failed[0].metric == "f1" and "missing" in report.failed[0].reason


def test_noninferiority_decides_on_the_lower_end_of_the_paired_interval():
    # a point difference inside the margin is not enough when the interval reaches past it
    good = {"f1": diff(-0.01, -0.015, 0.02), "recall": diff(0.0, -0.01, 0.01)}
    assert all(c.passed for c in noninferiority_gates(good, GATES))
    noisy = {"f1": diff(-0.01, -0.08, 0.05), "recall": diff(0.0, -0.01, 0.01)}
    checks = noninferiority_gates(noisy, GATES)
    assert [c.name for c in checks if not c.passed] == ["noninferior_f1"]
    f1 = checks[0]
    assert f1.value == -0.01 and f1.bound == -0.02 and f1.interval == [-0.08, 0.05]
    assert "-0.0800 to +0.0500" in f1.reason
    # "above" the margin: a lower end exactly at -margin does not pass
    at = {"f1": diff(0.0, -0.02, 0.02), "recall": diff(0.0, -0.01, 0.01)}
    assert not noninferiority_gates(at, GATES)[0].passed


def test_without_an_interval_the_comparison_fails_closed_and_says_how_to_fix_it():
    checks = noninferiority_gates({"f1": diff(0.05), "recall": diff(0.04)}, GATES)
    assert [c.passed for c in checks] == [False, False]
    assert "no interval" in checks[0].reason and "bootstrap_resamples" in checks[0].reason
    assert checks[0].value == 0.05 and checks[0].interval is None


def test_unscorable_champion_fails_closed():
    checks = noninferiority_gates(None, GATES)
    assert checks and not any(c.passed for c in checks)
    missing = noninferiority_gates({"f1": diff(None), "recall": diff(0.1, 0.05, 0.2)}, GATES)
    assert [c.passed for c in missing] == [False, True]


def test_further_minimums_gate_any_metric_and_unknown_names_fail_at_load():

    from medimg.config import parse_config
    from medimg.errors import ConfigError

    gates = GatesConfig(minimums={"specificity": 0.7, "roc_auc": 0.9})
    report = evaluate_gates(measured(f1=0.9, recall=0.9, specificity=0.65, roc_auc=0.95), gates)
    assert [c.name for c in report.checks][2:] == ["min_f1", "min_recall", "min_specificity",
                                                   "min_roc_auc"]
    assert [c.name for c in report.failed] == ["min_specificity"]
    # a bound on a metric the evaluation did not produce fails closed
    assert not evaluate_gates(measured(f1=0.9, recall=0.9, roc_auc=0.95), gates).passed
    with pytest.raises(ConfigError, match="minimums"):
        parse_config({"gates": {"minimums": {"sensitivity": 0.9}}})
    with pytest.raises(ConfigError, match="minimums"):
        parse_config({"gates": {"minimums": {"brier": 0.1}}})  # lower is better: no minimum


def test_on_the_ci_lower_bound_a_good_point_estimate_is_not_enough():
    gates = GatesConfig(min_f1=0.80, min_recall=0.85, on_ci_lower_bound=True)
    metrics = {**EVIDENCE, "f1": 0.86, "recall": 0.90,
               "ci": {"f1": {"low": 0.78, "high": 0.92}, "recall": {"low": 0.86, "high": 0.95}}}
    assert evaluate_gates(metrics, GATES).passed  # the point estimates pass
    report = evaluate_gates(metrics, gates)
    assert [c.name for c in report.failed] == ["min_f1"]
    assert report.failed[0].value == 0.78 and "CI lower bound" in report.failed[0].reason
    # no intervals (bootstrap_resamples: 0) with the option on: fails closed
    report = evaluate_gates(measured(**{"f1": 0.99, "recall": 0.99}), gates)
    assert not report.passed and all("missing" in c.reason for c in report.failed)
    assert [c.name for c in report.failed] == ["min_f1", "min_recall"]


def test_ci_gating_without_intervals_is_refused_at_load():

    from medimg.config import parse_config
    from medimg.errors import ConfigError

    with pytest.raises(ConfigError, match="bootstrap_resamples"):
        parse_config({"gates": {"on_ci_lower_bound": True},
                      "evaluate": {"bootstrap_resamples": 0}})
    assert parse_config({"gates": {"on_ci_lower_bound": True}}).gates.on_ci_lower_bound


def test_superiority_needs_the_lower_end_above_zero_and_is_off_by_default():
    better = {"roc_auc": diff(0.03, 0.01, 0.05)}
    assert superiority_gates(better, GATES) == []
    gates = GatesConfig(superiority_metric="roc_auc")
    checks = superiority_gates(better, gates)
    assert [c.passed for c in checks] == [True] and checks[0].name == "superior_roc_auc"
    # better on the point estimate, but the interval reaches 0: not shown to be better
    unsure = superiority_gates({"roc_auc": diff(0.03, -0.01, 0.07)}, gates)
    assert [c.passed for c in unsure] == [False] and "<=" in unsure[0].reason
    assert not superiority_gates(None, gates)[0].passed  # fails closed
    assert not superiority_gates({}, gates)[0].passed


def test_too_few_test_images_fail_closed_and_the_report_names_the_counts_and_the_fix():
    # a 20-image data set: 2 test images, both right, F1 and recall 1.0
    tiny = {"f1": 1.0, "recall": 1.0, "positive_classes": ["pneumonia"],
            "per_class": {"normal": {"support": 1}, "pneumonia": {"support": 1}}}
    report = evaluate_gates(tiny, GatesConfig())
    assert not report.passed
    assert [c.name for c in report.failed] == ["min_test_positives", "min_test_negatives"]
    reason = report.failed[0].reason
    assert "1 images of pneumonia" in reason and "gates.min_test_positives 20" in reason
    assert "add images" in reason and "data.split_fractions.test" in reason
    assert "1 images of normal" in report.failed[1].reason
    # the bounds are inclusive, and 0 turns them off
    enough = {**tiny, "per_class": {"normal": {"support": 20}, "pneumonia": {"support": 20}}}
    assert evaluate_gates(enough, GatesConfig()).passed
    assert evaluate_gates(tiny, GatesConfig(min_test_positives=0, min_test_negatives=0)).passed
    # no class counts at all: fails closed
    assert not evaluate_gates({"f1": 1.0, "recall": 1.0}, GatesConfig()).passed


def test_several_disease_classes_each_need_their_own_evidence():
    metrics = {"f1": 0.9, "recall": 0.9, "positive_classes": ["covid", "pneumonia"],
               "per_class": {"normal": {"support": 50}, "covid": {"support": 30},
                             "pneumonia": {"support": 4}}}
    checks = evidence_gates(metrics, GatesConfig())
    assert [(c.name, c.passed) for c in checks] == [
        ("min_test_positives_covid", True), ("min_test_positives_pneumonia", False),
        ("min_test_negatives", True)]
    # every class a disease class: each class's rest is the other classes
    metrics["positive_classes"] = ["normal", "covid", "pneumonia"]
    checks = evidence_gates(metrics, GatesConfig(min_test_negatives=60))
    names = {c.name: c.passed for c in checks}
    assert names["min_test_negatives_normal"] is False  # 34 others
    assert names["min_test_negatives_pneumonia"] is True  # 80 others
