"""Metrics per slice of the test split, by manifest column."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medimg.errors import ConfigError
from medimg.evaluation.metrics import compute_metrics
from medimg.evaluation.stage import slice_metrics

NAMES = ["normal", "pneumonia"]


def _case():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 90)
    p = np.clip(0.4 * y + 0.6 * rng.random(90), 0, 1)
    sites = np.array(["north"] * 40 + ["south"] * 30 + [None] * 20, dtype=object)
    rows = pd.DataFrame({"meta_site": pd.array(sites, dtype="string"),
                         "format": ["png"] * 90}, index=[f"id{i}" for i in range(90)])
    return rows, y, np.stack([1 - p, p], axis=1)


def test_each_slice_has_the_metrics_of_its_own_images():
    rows, y, probs = _case()
    out = slice_metrics(rows, ["site"], y, probs, NAMES, 0.5)  # meta_ may be left off
    assert set(out["site"]) == {"north", "south", "(missing)"}
    assert [out["site"][k]["n"] for k in ("north", "south", "(missing)")] == [40, 30, 20]
    south = compute_metrics(y[40:70], probs[40:70], NAMES, 0.5)
    for key in ("recall", "precision", "specificity", "f1", "roc_auc"):
        assert out["site"]["south"][key] == pytest.approx(south[key])


def test_a_one_class_slice_reports_null_where_a_metric_is_undefined():
    rows, y, probs = _case()
    y = y.copy()
    y[70:] = 0  # the (missing) slice holds negatives only
    out = slice_metrics(rows, ["meta_site"], y, probs, NAMES, 0.5)
    assert out["meta_site"]["(missing)"]["roc_auc"] is None
    json.dumps(out, allow_nan=False)  # strict JSON: no NaN reaches metrics.json


def test_a_column_the_manifest_lacks_is_named_with_what_it_has():
    rows, y, probs = _case()
    with pytest.raises(ConfigError, match=r"'scanner'.*meta_site"):
        slice_metrics(rows, ["scanner"], y, probs, NAMES, 0.5)


@pytest.mark.integration
def test_the_evaluate_stage_writes_slices_into_metrics_json(prepared_workspace):
    from medimg.evaluation.stage import run_evaluate

    ws = prepared_workspace({"train": {"epochs": 1}, "evaluate": {"slices": ["format"],
                                                                  "bootstrap_resamples": 50}},
                            through="train")
    ws.plots_dir.mkdir(parents=True)
    stale = ws.plots_dir / "gradcam_v0.png"  # an earlier model's plot, not made any more
    stale.write_bytes(b"old")
    run_evaluate(ws, ws.config)
    assert not stale.exists(), "an earlier model's plot would be logged with this one"
    metrics = json.loads(ws.metrics_path.read_text())
    assert metrics["slices"]["format"]["png"]["n"] == metrics["n"]
    assert metrics["slices"]["format"]["png"]["recall"] == pytest.approx(metrics["recall"])
    assert metrics["bootstrap"] == {"resamples": 50, "confidence": 0.95, "unit": "patient",
                                    "patients": metrics["bootstrap"]["patients"],
                                    "left_out": metrics["bootstrap"]["left_out"]}
    assert 0 < metrics["bootstrap"]["patients"] <= metrics["n"]
    assert metrics["ci"]["f1"]["low"] <= metrics["f1"] <= metrics["ci"]["f1"]["high"]
    # every plot, as a picture and (for DVC) as data
    for name in ("confusion_matrix", "roc", "pr", "reliability", "threshold",
                 "training_curves", "gradcam"):
        assert (ws.plots_dir / f"{name}.png").stat().st_size > 1000, name
    for name in ("roc", "pr", "reliability", "threshold"):
        frame = pd.read_csv(ws.plots_dir / f"{name}.csv")
        assert len(frame) > 0 and frame.notna().all().all(), name

    # the Grad-CAM grid shows the most confident cases of each outcome, as predicted
    cases = pd.read_csv(ws.plots_dir / "gradcam_cases.csv")
    predictions = pd.read_csv(ws.reports_dir / "predictions.csv").set_index("image_id")
    sick, said = predictions["actual"] == "pneumonia", predictions["predicted"] == "pneumonia"
    outcomes = {"true positives": sick & said, "false positives": ~sick & said,
                "false negatives": sick & ~said, "true negatives": ~sick & ~said}
    for outcome, mask in outcomes.items():
        shown = cases[cases["outcome"] == outcome]
        assert len(shown) == min(4, int(mask.sum())), outcome
        p = predictions.loc[mask, "p_pneumonia"]
        most = p.nlargest(len(shown)) if "positives" in outcome else p.nsmallest(len(shown))
        assert shown["probability"].to_numpy() == pytest.approx(most.to_numpy(), abs=1e-5)
        assert (predictions.loc[shown["image_id"], "actual"].to_numpy()
                == shown["actual"].to_numpy()).all()
