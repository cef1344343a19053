"""The Grad-CAM grid of test cases for several classes, with and without named diseases."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from medimg.bundle import BundleMeta, ModelBundle
from medimg.config import parse_config
from medimg.evaluation.stage import OUTCOMES, gradcam_grid
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


def test_named_diseases_sort_cases_into_the_four_outcomes(tmp_path):
    ws, bundle, test, probs, predicted = _case(tmp_path)
    path = gradcam_grid(ws, bundle, test, probs, predicted, ["pneumonia", "covid"], 2)
    assert path.stat().st_size > 1000
    cases = pd.read_csv(ws.plots_dir / "gradcam_cases.csv", dtype={"image_id": str})
    assert set(cases["outcome"]) <= set(OUTCOMES)
    disease = {"pneumonia", "covid"}
    for row in cases.itertuples():
        sick, said = row.actual in disease, row.predicted in disease
        expected = OUTCOMES[[sick and said, not sick and said, sick and not said,
                             not sick and not said].index(True)]
        assert row.outcome == expected
        i = int(row.image_id[:2])
        assert row.probability == np.round(probs[i, 1] + probs[i, 2], 6)


def test_without_named_diseases_the_rows_are_right_and_wrong(tmp_path):
    ws, bundle, test, probs, predicted = _case(tmp_path)
    gradcam_grid(ws, bundle, test, probs, predicted, NAMES, 3)
    cases = pd.read_csv(ws.plots_dir / "gradcam_cases.csv", dtype={"image_id": str})
    assert set(cases["outcome"]) <= {"correct", "wrong"}
    for outcome, shown in cases.groupby("outcome"):
        assert (shown["actual"] == shown["predicted"]).all() == (outcome == "correct")
        assert len(shown) <= 3
        assert list(shown["probability"]) == sorted(shown["probability"], reverse=True)
