"""The MLflow UI on a pipeline run, in headless Chromium against a real ``mlflow server``: the page
draws each per-epoch metric as a curve over its steps, lists the splits as the run's datasets
with their profiles, and shows the logged model's test AUC scored on the test split, all as the
REST API reports them, and no request leaves the machine.

Chromium comes from the system (``apt-get install chromium``); see ``support.browser``.
``tests/e2e/mlflow_ui_check.py`` runs the same checks on a workspace made by ``make demo``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.browser import headless_chromium, missing_browser
from support.mlflow_ui import (
    EPOCH_METRICS,
    MODEL_METRIC,
    failures,
    look_at_run,
    read_run,
    served_mlflow_ui,
)

from flows.training import training_pipeline

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("prefect_harness", "clean_mlflow_env"),
]

REACHABLE = {"gates": {"min_f1": 0.0, "min_recall": 0.0}, "train": {"epochs": 3}}


def test_the_mlflow_ui_draws_the_run_s_curves_datasets_and_model(
    make_workspace, tmp_path: Path
) -> None:
    reason = missing_browser()
    if reason is not None:
        pytest.skip(reason)
    ws = make_workspace(REACHABLE)
    outcome = training_pipeline(str(ws.root))
    shots = tmp_path / "screenshots"

    with served_mlflow_ui(ws.mlflow_db, ws.mlflow_artifacts, tmp_path / "server.log") as url:
        run = read_run(url, outcome.mlflow_run_id)
        with headless_chromium() as browser:
            view = look_at_run(browser, url, run, shots)

    # the REST API: a curve per epoch metric, the three splits, the model scored on test
    epochs = list(range(1, outcome.train.epochs_run + 1))
    assert len(epochs) > 1  # early stopping waits one epoch past the best
    assert run.name == outcome.name and run.status == "FINISHED"
    assert run.steps == {key: epochs for key in EPOCH_METRICS}
    assert {d.name: d.source_type for d in run.datasets} == {
        "train": "dvc",
        "val": "dvc",
        "test": "dvc",
    }
    test_split = next(d for d in run.datasets if d.name == "test")
    auc = run.model_metrics[MODEL_METRIC]
    assert auc.value == pytest.approx(outcome.evaluation.metrics["roc_auc"])
    assert (auc.dataset_name, auc.dataset_digest) == ("test", test_split.digest)

    # the page draws the same: its name, a line over Step for each, the splits and the model
    assert view.name_shown
    assert view.metric_names == set(EPOCH_METRICS)
    for key in EPOCH_METRICS:
        curve = view.curves[key]
        # a marker a step; plotly joins collinear points (a flat learning rate) into one segment
        assert curve.markers == len(epochs) and 2 <= curve.vertices <= len(epochs), key
        assert curve.legend and curve.step_axis, key
    assert sorted(view.datasets_listed) == sorted(f"{d.name} ({d.digest})" for d in run.datasets)
    assert view.images_shown == {d.name: d.images for d in run.datasets}
    assert f"test (#{test_split.digest})" in view.model_row
    assert outcome.name in view.model_row

    assert [p.name for p in view.screenshots] == [
        "overview.png",
        "datasets.png",
        "model-metrics.png",
        "val_loss.png",
        "logged-model.png",
    ]
    for shot in view.screenshots:
        assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000, shot
    assert view.left_loopback == []
    assert view.page_errors == []
    assert failures(run, view) == []  # what tests/e2e/mlflow_ui_check.py reports on a demo
