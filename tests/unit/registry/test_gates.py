from __future__ import annotations

import math

from medimg.config import GatesConfig
from medimg.registry.gates import evaluate_gates, noninferiority_gates

GATES = GatesConfig(min_f1=0.80, min_recall=0.85, noninferiority_margin=0.02)


def test_passing_metrics_pass_every_gate():
    report = evaluate_gates({"f1": 0.9, "recall": 0.92}, GATES)
    assert report.passed and not report.failed
    assert [c.name for c in report.checks] == ["min_f1", "min_recall"]


def test_low_f1_fails_only_the_f1_gate():
    report = evaluate_gates({"f1": 0.79, "recall": 0.92}, GATES)
    assert not report.passed
    assert [c.name for c in report.failed] == ["min_f1"]
    assert report.failed[0].value == 0.79 and report.failed[0].bound == 0.80


def test_low_recall_fails_only_the_recall_gate():
    report = evaluate_gates({"f1": 0.9, "recall": 0.80}, GATES)
    assert [c.name for c in report.failed] == ["min_recall"]


def test_bound_is_inclusive():
    assert evaluate_gates({"f1": 0.80, "recall": 0.85}, GATES).passed


def test_missing_or_nan_metric_fails_closed():
    for metrics in ({"recall": 0.99}, {"f1": math.nan, "recall": 0.99}, {"f1": "0.9",
                                                                           "recall": 0.99}):
        report = evaluate_gates(metrics, GATES)
        assert not report.passed
        assert report.failed[0].metric == "f1" and "missing" in report.failed[0].reason


def test_noninferiority_allows_the_margin_and_no_more():
    champion = {"f1": 0.90, "recall": 0.90}
    assert all(c.passed for c in noninferiority_gates({"f1": 0.88, "recall": 0.95}, champion,
                                                      GATES))
    failed = [c for c in noninferiority_gates({"f1": 0.87, "recall": 0.95}, champion, GATES)
              if not c.passed]
    assert [c.name for c in failed] == ["noninferior_f1"]


def test_unscorable_champion_fails_closed():
    checks = noninferiority_gates({"f1": 0.99, "recall": 0.99}, None, GATES)
    assert checks and not any(c.passed for c in checks)


def test_further_minimums_gate_any_metric_and_unknown_names_fail_at_load():
    import pytest

    from medimg.config import parse_config
    from medimg.errors import ConfigError

    gates = GatesConfig(minimums={"specificity": 0.7, "roc_auc": 0.9})
    report = evaluate_gates({"f1": 0.9, "recall": 0.9, "specificity": 0.65, "roc_auc": 0.95},
                            gates)
    assert [c.name for c in report.checks] == ["min_f1", "min_recall", "min_specificity",
                                               "min_roc_auc"]
    assert [c.name for c in report.failed] == ["min_specificity"]
    # a bound on a metric the evaluation did not produce fails closed
    assert not evaluate_gates({"f1": 0.9, "recall": 0.9, "roc_auc": 0.95}, gates).passed
    with pytest.raises(ConfigError, match="minimums"):
        parse_config({"gates": {"minimums": {"sensitivity": 0.9}}})
    with pytest.raises(ConfigError, match="minimums"):
        parse_config({"gates": {"minimums": {"brier": 0.1}}})  # lower is better: no minimum


def test_on_the_ci_lower_bound_a_good_point_estimate_is_not_enough():
    gates = GatesConfig(min_f1=0.80, min_recall=0.85, on_ci_lower_bound=True)
    metrics = {"f1": 0.86, "recall": 0.90,
               "ci": {"f1": {"low": 0.78, "high": 0.92}, "recall": {"low": 0.86, "high": 0.95}}}
    assert evaluate_gates(metrics, GATES).passed  # the point estimates pass
    report = evaluate_gates(metrics, gates)
    assert [c.name for c in report.failed] == ["min_f1"]
    assert report.failed[0].value == 0.78 and "CI lower bound" in report.failed[0].reason
    # no intervals (bootstrap_resamples: 0) with the option on: fails closed
    report = evaluate_gates({"f1": 0.99, "recall": 0.99}, gates)
    assert not report.passed and all("missing" in c.reason for c in report.checks)


def test_ci_gating_without_intervals_is_refused_at_load():
    import pytest

    from medimg.config import parse_config
    from medimg.errors import ConfigError

    with pytest.raises(ConfigError, match="bootstrap_resamples"):
        parse_config({"gates": {"on_ci_lower_bound": True},
                      "evaluate": {"bootstrap_resamples": 0}})
    assert parse_config({"gates": {"on_ci_lower_bound": True}}).gates.on_ci_lower_bound


def test_superiority_on_a_named_metric_is_strict_and_off_by_default():
    from medimg.registry.gates import superiority_gates

    champion = {"f1": 0.88, "recall": 0.9, "roc_auc": 0.93}
    assert superiority_gates({"roc_auc": 0.99}, champion, GATES) == []
    gates = GatesConfig(superiority_metric="roc_auc")
    better = superiority_gates({"roc_auc": 0.94}, champion, gates)
    assert [c.passed for c in better] == [True] and better[0].name == "superior_roc_auc"
    equal = superiority_gates({"roc_auc": 0.93}, champion, gates)
    assert [c.passed for c in equal] == [False] and "<=" in equal[0].reason
    assert not superiority_gates({"roc_auc": 0.99}, None, gates)[0].passed  # fails closed
    assert not superiority_gates({}, champion, gates)[0].passed
