"""The Grad-CAM grid of test cases for several classes, with and without named diseases."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from medimg.bundle import BundleMeta, ModelBundle
from medimg.config import parse_config
from medimg.evaluation.stage import OUTCOMES, WRONG_DISEASE, gradcam_grid
from medimg.training.models import build_model

NAMES = ["normal", "pneumonia", "covid"]


def _case(tmp_path):
    model = build_model(32, 1, 3, parse_config({}).model)
    bundle = ModelBundle(model, BundleMeta(NAMES, 32, 1, {}))
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 32, 32, 1), dtype=np.uint8)
    labels = np.array([0, 1, 2] * 4)
    test = SimpleNamespace(images=images, labels=labels,
                           image_ids=[f"{i:02d}" + "f" * 30 for i in range(12)])
    probs = rng.dirichlet(np.ones(3), size=12)
    ws = SimpleNamespace(plots_dir=tmp_path / "plots")
    return ws, bundle, test, probs, probs.argmax(axis=1)


def test_named_diseases_sort_cases_into_the_outcomes(tmp_path):
    ws, bundle, test, probs, predicted = _case(tmp_path)
    path = gradcam_grid(ws, bundle, test, probs, predicted, ["pneumonia", "covid"], 2)
    assert path.stat().st_size > 1000
    cases = pd.read_csv(ws.plots_dir / "gradcam_cases.csv", dtype={"image_id": str})
    disease = np.isin(test.labels, [1, 2])
    said = np.isin(predicted, [1, 2])
    right = predicted == test.labels
    expected = {OUTCOMES[0]: (disease & right, True), OUTCOMES[1]: (~disease & said, True),
                OUTCOMES[2]: (disease & ~said, False), OUTCOMES[3]: (~disease & ~said, False),
                WRONG_DISEASE: (disease & said & ~right, True)}
    score = probs[:, 1] + probs[:, 2]
    for outcome, (mask, highest_first) in expected.items():
        shown = cases[cases["outcome"] == outcome]
        # the most confident cases of that outcome, in order, and no others
        order = np.flatnonzero(mask)[np.argsort(score[mask] * (-1 if highest_first else 1),
                                                kind="stable")][:2]
        assert [int(i[:2]) for i in shown["image_id"]] == list(order), outcome
        assert shown["probability"].to_numpy() == pytest.approx(score[order], abs=1e-6)
    assert (cases["outcome"] == WRONG_DISEASE).any()  # the case has a covid/pneumonia mix-up
    assert set(cases["outcome"]) <= set(expected)


def test_without_named_diseases_the_rows_are_right_and_wrong(tmp_path):
    ws, bundle, test, probs, predicted = _case(tmp_path)
    gradcam_grid(ws, bundle, test, probs, predicted, NAMES, 3)
    cases = pd.read_csv(ws.plots_dir / "gradcam_cases.csv", dtype={"image_id": str})
    assert set(cases["outcome"]) <= {"correct", "wrong"}
    for outcome, shown in cases.groupby("outcome"):
        assert (shown["actual"] == shown["predicted"]).all() == (outcome == "correct")
        assert len(shown) <= 3
        assert list(shown["probability"]) == sorted(shown["probability"], reverse=True)
