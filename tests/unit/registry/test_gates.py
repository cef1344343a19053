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
