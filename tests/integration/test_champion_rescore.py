"""The champion is re-scored on the current test split: new patients in the test split make the
old scores incomparable, so the comparison uses the champion's predictions on the new split."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_PHANTOMS
from mlflow import MlflowClient
from support.workspaces import prepare

from medimg.data.phantoms import generate_phantoms
from medimg.evaluation.metrics import compute_metrics
from medimg.registry.champion import compare_with_champion, predict_test
from medimg.registry.stage import run_register
from medimg.registry.stage import test_split_hash as split_hash  # not a test to collect

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_mlflow_env")]

NAME = "medimg-classifier"


def test_a_changed_test_split_rescores_the_champion_on_the_new_split(prepared_workspace,
                                                                     tmp_path):
    ws = prepared_workspace({"gates": {"min_f1": 0.0, "min_recall": 0.0,
                                       "noninferiority_margin": 1.0},
                             "train": {"epochs": 1}, "evaluate": {"bootstrap_resamples": 100,
                                                                  "gradcam_cases": 0}})
    first = run_register(ws, ws.config)
    assert first.version == "1" and "champion" in first.aliases
    old_hash = split_hash(pd.read_parquet(ws.manifest_path))

    # new patients arrive; some of them join the (locked, growing) test split
    extra = tmp_path / "arrivals"
    generate_phantoms(extra, **{**TINY_PHANTOMS, "n_images": 80, "seed": 11})
    prepare(ws, sources=[ws.raw_dir, extra])
    second = run_register(ws, ws.config)
    assert second.version == "2"
    manifest = pd.read_parquet(ws.manifest_path)
    new_hash = split_hash(manifest)
    assert new_hash != old_hash

    client = MlflowClient(tracking_uri=f"sqlite:///{ws.mlflow_db}")
    mlflow.set_tracking_uri(f"sqlite:///{ws.mlflow_db}")
    comparison = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=second.run_id, artifact_path="reports/champion_comparison.json")).read_text())
    assert comparison["champion_version"] == "1"
    assert comparison["test_split_changed"] is True
    assert comparison["champion_test_split_hash"] == old_hash
    assert comparison["test_split_hash"] == new_hash
    assert client.get_run(second.run_id).data.tags["champion.test_split"] == "changed"

    # the champion's scores are v1's own predictions on the new test images
    test = manifest[manifest["split"] == "test"]
    v1 = mlflow.pyfunc.load_model(f"models:/{NAME}/1", model_config={"allow_paths": True})
    out = v1.predict(pd.DataFrame({"path": [str(ws.resolve(p)) for p in test["source_path"]]}))
    names = list(ws.config.base.class_names)
    expected = compute_metrics(np.array([names.index(x) for x in test["label"]]),
                               out[[f"p_{n}" for n in names]].to_numpy(dtype=np.float64),
                               names, float(out["threshold"].iloc[0]))
    rescored = comparison["champion_metrics"]
    assert rescored["n"] == len(test) == second.metrics["n"] > first.metrics["n"]
    for key in ("f1", "recall"):
        assert rescored[key] == pytest.approx(expected[key])
        assert comparison["differences"][key]["champion"] == pytest.approx(expected[key])
        check = next(c for c in comparison["checks"] if c["name"] == f"noninferior_{key}")
        assert check["bound"] == -1.0  # -margin: the difference's lower end must stay above it
        assert check["value"] == pytest.approx(second.metrics[key] - expected[key], abs=1e-6)
    # within a margin of 1.0 the challenger is non-inferior: it moves, and the trail says why
    assert comparison["passed"] and "champion" in second.aliases
    trail = [json.loads(v) for k, v in sorted(client.get_registered_model(NAME).tags.items())
             if k.startswith("audit.")]
    assert trail[-1]["why"] == "non-inferior to v1 re-scored on the new test split"

    # a champion that cannot be read, or that names other classes, is not scored: fails closed
    assert predict_test(ws, ws.config, f"models:/{NAME}/99", test) is None
    other = ws.config.model_copy(update={"base": ws.config.base.model_copy(
        update={"class_names": ["normal", "covid"]})})
    assert predict_test(ws, other, f"models:/{NAME}/1", test) is None
    unscored = compare_with_champion(ws, ws.config, f"models:/{NAME}/2", f"models:/{NAME}/99",
                                     "99", test)
    assert not unscored.gates.passed and "v99 could not be scored" in unscored.reason
