"""The operating point on constructed validation scores, with thresholds worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medimg.config import parse_config
from medimg.training.operating_point import select_threshold

# ten images: positives at 0.3, 0.5, 0.7, 0.8, 0.9, 0.95; negatives at 0.1, 0.2, 0.4, 0.6.
# At t (positive when score >= t), from the top:
#   t     0.95  0.9   0.8   0.7   0.6   0.5   0.4   0.3   0.2   0.1
#   TP    1     2     3     4     4     5     5     6     6     6
#   FP    0     0     0     0     1     1     2     2     3     4
SCORES = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
POSITIVE = np.array([0, 0, 1, 0, 1, 0, 1, 1, 1, 1], dtype=bool)


def train(**values):
    return parse_config({"train": values}).train


@pytest.mark.parametrize(
    ("target", "threshold", "recall", "precision"),
    [
        (0.90, 0.3, 1.0, 6 / 8),  # 0.3, 0.2, 0.1 reach recall 1; 0.3 has the best precision
        (0.80, 0.5, 5 / 6, 5 / 6),  # 0.5 and 0.4 reach 5/6; 0.5 makes one false positive
        (0.50, 0.7, 4 / 6, 1.0),  # 0.8 and 0.7 both have precision 1; 0.7 recalls more
        (1.00, 0.3, 1.0, 6 / 8),
    ],
)
def test_target_recall_takes_the_best_precision_among_thresholds_reaching_it(
    target: float, threshold: float, recall: float, precision: float
):
    point = select_threshold(POSITIVE, SCORES, train(target_recall=target))
    assert point.method == "target_recall"
    assert point.threshold == threshold
    assert point.recall == pytest.approx(recall)
    assert point.precision == pytest.approx(precision)
    assert point.recall >= target
    assert f"{target:g}" in point.reason


def test_equal_precision_goes_to_the_higher_recall():
    # positives at 0.9 and 0.6, a negative at 0.7 and one at 0.1: t = 0.9 has precision 1/1,
    # t = 0.6 has 2/3, and so has no other; with a negative at 0.1 only, 0.9 and 0.6 tie at 1
    tied = select_threshold(np.array([1, 1, 0], bool), np.array([0.9, 0.6, 0.1]),
                            train(target_recall=0.5))
    assert tied.threshold == 0.6 and tied.precision == 1.0 and tied.recall == 1.0
    untied = select_threshold(np.array([1, 1, 0, 0], bool), np.array([0.9, 0.6, 0.7, 0.1]),
                              train(target_recall=0.5))
    assert untied.threshold == 0.9 and untied.precision == 1.0 and untied.recall == 0.5


def test_youden_takes_the_largest_sensitivity_plus_specificity():
    # J at 0.7 is 4/6 + 4/4 - 1 = 0.667, the largest (0.5 gives 5/6 + 3/4 - 1 = 0.583)
    point = select_threshold(POSITIVE, SCORES, train(threshold_method="youden"))
    assert point.threshold == 0.7
    assert point.recall == pytest.approx(4 / 6) and point.specificity == 1.0


def test_max_f1_takes_the_largest_f1():
    # F1 = 2TP / (2TP + FP + FN): 0.3 gives 12/14 = 0.857, above 0.5 (10/12) and 0.7 (8/10)
    point = select_threshold(POSITIVE, SCORES, train(threshold_method="max_f1"))
    assert point.threshold == 0.3
    assert point.f1 == pytest.approx(12 / 14)


def test_fixed_uses_the_configured_threshold_and_reports_what_it_gives():
    point = select_threshold(POSITIVE, SCORES, train(threshold_method="fixed", threshold=0.45))
    assert point.threshold == 0.45
    assert point.recall == pytest.approx(5 / 6) and point.precision == pytest.approx(5 / 6)


def test_tied_scores_are_one_candidate():
    # two images at 0.6, one of each class: no threshold can separate them
    point = select_threshold(np.array([0, 1, 0, 1], bool), np.array([0.2, 0.6, 0.6, 0.9]),
                             train(target_recall=0.9))
    assert point.threshold == 0.6
    assert point.recall == 1.0 and point.precision == pytest.approx(2 / 3)


@pytest.mark.parametrize("positive", [np.zeros(4, bool), np.ones(4, bool)])
def test_a_one_class_validation_split_keeps_the_configured_threshold_and_says_why(positive):
    point = select_threshold(positive, np.array([0.1, 0.4, 0.6, 0.9]),
                             train(threshold=0.35))
    assert point.threshold == 0.35 and point.method == "fixed"
    assert "validation split" in point.reason and "target_recall" in point.reason


@pytest.mark.parametrize("bad", [{"threshold_method": "otsu"}, {"target_recall": 0.0},
                                 {"target_recall": 1.2}])
def test_bad_threshold_params_fail_at_load(bad: dict):
    from medimg.errors import ConfigError

    with pytest.raises(ConfigError, match="evaluate"):
        parse_config({"evaluate": bad})
