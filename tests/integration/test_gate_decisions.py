"""The gate decides what the test split can support, on real pipeline runs.

Real stages, a real SQLite MLflow registry; the gates at their defaults unless a test says why.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import write_params
from mlflow import MlflowClient
from support import ingesting

from medimg.data.phantoms import generate_phantoms, render_phantom
from medimg.evaluation.stage import run_evaluate
from medimg.preprocessing.stage import run_preprocess
from medimg.registry.stage import run_register
from medimg.training.stage import run_train
from medimg.workspace import Workspace, open_workspace

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_mlflow_env")]

NAME = "medimg-classifier"


def _pipeline(ws: Workspace, sources: list[Path] | None = None, **ingest):
    ingesting.ingest(ws, sources or [ws.raw_dir], **ingest)
    run_preprocess(ws, ws.config)
    run_train(ws, ws.config)
    run_evaluate(ws, ws.config)
    return run_register(ws, ws.config)


def _artifact(ws: Workspace, run_id: str, path: str) -> str:
    mlflow.set_tracking_uri(f"sqlite:///{ws.mlflow_db}")
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)
                ).read_text()


def test_a_challenger_worse_than_the_champion_beyond_the_margin_is_refused(make_workspace):
    # absolute bounds at 0 so that only the comparison decides; the margin is the default 0.02
    # the champion: the tiny seed CNN at the rate and schedule that make it clearly better
    # than chance on 80 phantoms in 6 epochs (at 1e-3 cosine it sometimes ends near chance)
    ws = make_workspace({"gates": {"min_f1": 0.0, "min_recall": 0.0},
                         "train": {"epochs": 6, "early_stopping_patience": 6,
                                   "learning_rate": 0.0003, "lr_schedule": "plateau"},
                         "evaluate": {"bootstrap_resamples": 300, "gradcam_cases": 0}})
    assert ws.config.gates.noninferiority_margin == 0.02
    first = _pipeline(ws)
    assert "champion" in first.aliases, first.gates.to_dict()

    # the same data, a model that has learnt nothing: the rate too small to move the weights
    write_params(ws.root, {"train": {"learning_rate": 1e-9, "epochs": 1,
                                     "lr_schedule": "constant"}})
    ws = open_workspace(ws.root)
    second = _pipeline(ws)
    assert second.version == "2" and second.aliases == ["challenger"]
    client = MlflowClient(tracking_uri=f"sqlite:///{ws.mlflow_db}")
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"

    comparison = json.loads(_artifact(ws, second.run_id, "reports/champion_comparison.json"))
    assert comparison["champion_version"] == "1" and not comparison["passed"]
    f1 = comparison["differences"]["f1"]
    # both models scored on the same images: the champion's F1 is its own evaluate-stage F1
    assert f1["champion"] == pytest.approx(first.metrics["f1"], abs=1e-9)
    assert f1["challenger"] == pytest.approx(second.metrics["f1"], abs=1e-9)
    assert f1["difference"] == pytest.approx(f1["challenger"] - f1["champion"])
    assert f1["low"] <= f1["difference"] <= f1["high"] < -0.02
    failed = [c["name"] for c in comparison["checks"] if not c["passed"]]
    assert "noninferior_f1" in failed
    # the run and the card show the difference and its interval
    run = client.get_run(second.run_id)
    assert run.data.metrics["vs_champion_f1_ci_high"] == pytest.approx(f1["high"])
    assert run.data.metrics["champion_f1"] == pytest.approx(f1["champion"])
    assert run.data.tags["gate.noninferior_f1"].startswith("failed: f1 challenger - champion")
    card = _artifact(ws, second.run_id, "model_card.md")
    assert "## Against the champion" in card and "| f1 |" in card
    assert f"{f1['difference']:+.3f}" in card and f"{f1['high']:+.3f}" in card
    assert "champion_comparison" in client.get_model_version(NAME, "2").tags


def test_the_default_gates_refuse_a_tiny_data_set_and_say_how_many_images_it_had(
        make_workspace, tmp_path):
    # 20 images, 10 per class, no patient ids: a test split of a few images, all perhaps right
    ws = make_workspace({"gates": {"min_test_positives": 20, "min_test_negatives": 20},
                         "evaluate": {"gradcam_cases": 0}}, with_data=False)
    generate_phantoms(ws.raw_dir, n_images=20, image_size=64, seed=5)
    (ws.raw_dir / "patients.csv").unlink()  # no patient ids at all
    result = _pipeline(ws)
    assert result.version is None
    failed = {c.name: c.reason for c in result.gates.failed}
    assert set(failed) >= {"min_test_positives", "min_test_negatives"}
    n_pos = result.metrics["per_class"]["pneumonia"]["support"]
    assert f"has {n_pos} images of pneumonia, fewer than gates.min_test_positives 20" in (
        failed["min_test_positives"])
    card = _artifact(ws, result.run_id, "model_card.md")
    assert "Patient separation could not be checked: none of the 20 images" in card
    assert "never split across train" not in card


THREE = ["normal", "bacterial", "viral"]


def _three_class_npz(path: Path, per_class: dict[str, int], seed: int) -> None:
    """A MedMNIST-style archive whose splits are fixed, three classes of phantoms (the two
    disease classes differ in brightness, so a model can tell them apart)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in per_class.items():
        images, labels = [], []
        for i in range(3 * n):
            label = i % 3
            image = render_phantom(rng, 64, label > 0).astype(np.float32)
            if label == 2:
                image = 255.0 - image
            images.append(image.clip(0, 255).astype(np.uint8))
            labels.append(label)
        arrays[f"{split}_images"] = np.stack(images)
        arrays[f"{split}_labels"] = np.array(labels)
    np.savez(path, **arrays)


def test_three_classes_rescore_the_champion_by_the_evaluate_definition(make_workspace, tmp_path):
    ws = make_workspace({"base": {"class_names": THREE},
                         "evaluate": {"positive_classes": ["bacterial", "viral"],
                                      "bootstrap_resamples": 200, "gradcam_cases": 0},
                         "gates": {"min_f1": 0.0, "min_recall": 0.0},
                         "train": {"epochs": 1}}, with_data=False)
    archive = tmp_path / "three.npz"
    _three_class_npz(archive, {"train": 30, "val": 8, "test": 10}, seed=2)
    first = _pipeline(ws, [archive], npz_class_names=THREE)
    assert "champion" in first.aliases, first.gates.to_dict()
    metrics = first.metrics
    assert metrics["decision_rule"] == "argmax" and metrics["threshold"] is None
    assert metrics["positive_classes"] == ["bacterial", "viral"]
    # the headline F1 averages the disease classes only, and it is not the all-class average
    per_class = metrics["per_class"]
    assert metrics["f1"] == pytest.approx((per_class["bacterial"]["f1"]
                                           + per_class["viral"]["f1"]) / 2)

    # the same model again: re-scored through the registry, the champion gets its own F1
    second = run_register(ws, ws.config)
    comparison = json.loads(_artifact(ws, second.run_id, "reports/champion_comparison.json"))
    for key in ("f1", "recall"):
        assert comparison["champion_metrics"][key] == pytest.approx(metrics[key], abs=1e-9)
        d = comparison["differences"][key]
        assert d["difference"] == 0.0 and d["low"] == d["high"] == 0.0
    assert comparison["passed"] and "champion" in second.aliases

    # the decision rule is named: arg-max, no threshold, in tags, card and plots' data
    client = MlflowClient(tracking_uri=f"sqlite:///{ws.mlflow_db}")
    tags = client.get_model_version(NAME, "1").tags
    assert tags["decision_rule"] == "argmax" and "threshold" not in tags
    card = _artifact(ws, first.run_id, "model_card.md")
    assert "**Arg-max**" in card and "Decision threshold" not in card
    # one curve per disease class for people; for DVC one line, their average on a grid
    for name, x, y in (("roc", "fpr", "tpr"), ("pr", "recall", "precision"),
                       ("threshold", "threshold", "recall")):
        by_class = pd.read_csv(ws.plots_dir / f"{name}_by_class.csv")
        assert sorted(set(by_class["class"])) == ["bacterial", "viral"], name
        line = pd.read_csv(ws.plots_dir / f"{name}.csv")
        assert "class" not in line.columns and len(line) == 101, name
        assert line[y].between(0, 1).all() and by_class[y].between(0, 1).all(), name
        assert line[x].is_monotonic_increasing, name
    roc = pd.read_csv(ws.plots_dir / "roc.csv")
    # the average curve's area is the headline (macro over disease classes) ROC-AUC
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(metrics["roc_auc"], abs=0.03)
