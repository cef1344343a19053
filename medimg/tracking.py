"""Where MLflow records go: SQLite in the workspace by default, MLFLOW_TRACKING_URI otherwise."""

from __future__ import annotations

import hashlib
import logging
import subprocess

import yaml

from medimg.settings import Settings, note_exported
from medimg.workspace import Workspace

logger = logging.getLogger(__name__)


def tracking_uri(ws: Workspace, settings: Settings | None = None) -> str:
    """The user's MLflow server when one is set, else SQLite in the workspace."""
    return (settings and settings.mlflow_tracking_uri) or f"sqlite:///{ws.mlflow_db}"


def use_workspace_tracking(ws: Workspace, experiment_name: str,
                           settings: Settings | None = None) -> str:
    """Point MLflow at the workspace's store and experiment; returns the experiment id.

    The default store keeps artifacts in ``mlartifacts/`` beside ``mlflow.db``. With
    MLFLOW_TRACKING_URI set, the server decides where artifacts go.
    """
    import mlflow

    user_uri = settings.mlflow_tracking_uri if settings else None
    uri = tracking_uri(ws, settings)
    user_registry = settings.mlflow_registry_uri if settings else None
    registry = user_registry or uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry)
    # MLflow exports both for child processes; what the user did not choose is remembered, so
    # the next read of the environment does not take it for the user's choice
    note_exported("MLFLOW_TRACKING_URI", None if user_uri else uri)
    note_exported("MLFLOW_REGISTRY_URI", None if user_registry else registry)
    experiment = mlflow.get_experiment_by_name(experiment_name)
    if experiment is None:
        location = None if user_uri else ws.mlflow_artifacts.as_uri()
        experiment_id = mlflow.create_experiment(experiment_name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def ui_command(ws: Workspace, settings: Settings | None = None) -> str:
    """How the user opens these results."""
    uri = tracking_uri(ws, settings)
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri} --port 5000"


def git_commit(ws: Workspace) -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws.root, capture_output=True,
                            text=True)
    if result.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ws.root,
                           capture_output=True, text=True).stdout.strip()
    return result.stdout.strip() + ("-dirty" if dirty else "")


def data_version(ws: Workspace) -> str:
    """The manifest's md5 as recorded in dvc.lock; the file's own hash when DVC has no record."""
    lock = ws.root / "dvc.lock"
    manifest = ws.relative(ws.manifest_path)
    if lock.is_file():
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for stage in stages.values():
            for out in stage.get("outs", []):
                if out.get("path") == manifest and "md5" in out:
                    return out["md5"]
    if ws.manifest_path.is_file():
        return "file-md5:" + hashlib.md5(ws.manifest_path.read_bytes()).hexdigest()
    return "unknown"


def run_link(ws: Workspace, settings: Settings | None, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI: on the user's server, or where ``mlflow ui`` serves the
    workspace's store (with the command that starts it)."""
    uri = tracking_uri(ws, settings)
    path = f"#/experiments/{experiment_id}/runs/{run_id}"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{path}"
    return f"http://127.0.0.1:5000/{path} (after `{ui_command(ws, settings)}`)"


def pipeline_run_name(workspace_name: str, version: str, when: float) -> str:
    """``<workspace>-<data version, 8 hex>-<UTC time>``: a pipeline run's name in Prefect, MLflow
    and DVC alike, safe as a git ref and a Prefect name."""
    import re
    import time

    short = re.sub(r"[^0-9a-f]", "", version.split(":")[-1].lower())[:8] or "nodata"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(when))
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", workspace_name).strip("-") or "workspace"
    return f"{base}-{short}-{stamp}"
