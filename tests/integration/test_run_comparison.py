"""`medimg runs` and `medimg compare` read what the real register stage records: two
registrations of one trained model list as two runs, and compare paired with no difference."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from medimg.registry.runs import compare_runs, recent_runs
from medimg.registry.stage import run_register
from medimg.tracking import use_workspace_tracking

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_mlflow_env")]


def test_one_model_registered_twice_lists_twice_and_differs_from_itself_by_nothing(
        prepared_workspace):
    ws = prepared_workspace({"gates": {"min_f1": 0.0, "min_recall": 0.0,
                                       "noninferiority_margin": 1.0},
                             "train": {"epochs": 1}, "evaluate": {"bootstrap_resamples": 100,
                                                                  "gradcam_cases": 0}})
    first = run_register(ws, ws.config, run_name="first")
    second = run_register(ws, ws.config, run_name="second")
    experiment = use_workspace_tracking(ws, ws.config.registry.experiment_name)
    client = MlflowClient()

    recent = recent_runs(client, experiment, ws.config.registry.model_name)
    assert [r.name for r in recent.runs] == ["second", "first"]
    assert recent.varying == ()
    newest, oldest = recent.runs
    assert newest.versions[0].startswith(f"v{second.version} (")
    assert "champion" in newest.versions[0]
    assert oldest.versions == (f"v{first.version} (previous-champion)",)
    assert oldest.gate_passed and oldest.status == "FINISHED" and oldest.data != "—"
    assert oldest.metrics["f1"].value == pytest.approx(first.metrics["f1"])
    assert oldest.metrics["f1"].low == pytest.approx(first.metrics["ci"]["f1"]["low"])

    compared = compare_runs(client, experiment, ws, ws.config, "first", second.run_id[:10])
    assert compared.differing == () and compared.equal_params > 50
    assert compared.unpaired == ""
    f1 = compared.differences["f1"]
    assert (f1.value, f1.low, f1.high) == (0.0, 0.0, 0.0)
    assert "patients, 100 resamples by patient" in compared.paired_on
