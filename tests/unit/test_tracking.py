from __future__ import annotations

import mlflow
import pytest

from medimg.settings import read_settings
from medimg.tracking import tracking_uri, ui_command, use_workspace_tracking
from medimg.workspace import Workspace


@pytest.mark.usefixtures("clean_mlflow_env")
def test_each_workspace_records_to_its_own_store(tmp_path):
    first, second = Workspace(tmp_path / "a"), Workspace(tmp_path / "b")
    for ws in (first, second):
        ws.root.mkdir()
        # read as the CLI reads it: MLflow exports the URIs it was given, and the next
        # workspace must not inherit them
        use_workspace_tracking(ws, "medimg", read_settings())
        assert mlflow.get_tracking_uri() == f"sqlite:///{ws.mlflow_db}"
        assert mlflow.get_registry_uri() == f"sqlite:///{ws.mlflow_db}"
        experiment = mlflow.get_experiment_by_name("medimg")
        assert experiment.artifact_location == ws.mlflow_artifacts.as_uri()
    expected = f"mlflow ui --backend-store-uri sqlite:///{second.mlflow_db} --port 5000"
    assert ui_command(second) == expected


def test_a_uri_the_user_sets_wins(tmp_path, monkeypatch):
    ws = Workspace(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    settings = read_settings()
    assert tracking_uri(ws, settings) == "http://mlflow.example:5000"
    assert ui_command(ws, settings) == "open http://mlflow.example:5000 in a browser"
