"""Where MLflow records go: SQLite in the workspace by default, MLFLOW_TRACKING_URI otherwise."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess

import yaml

from medimg.workspace import Workspace

logger = logging.getLogger(__name__)


# mlflow.set_tracking_uri() and set_registry_uri() export MLFLOW_TRACKING_URI and
# MLFLOW_REGISTRY_URI for child processes, so remember what we set to tell it apart from a URI
# the user chose (otherwise a second workspace in one process would inherit the first one's store).
_exported: dict[str, str] = {}


def _from_user(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value and value != _exported.get(name) else None


def user_tracking_uri() -> str | None:
    """MLFLOW_TRACKING_URI as the user set it, or None."""
    return _from_user("MLFLOW_TRACKING_URI")


def tracking_uri(ws: Workspace) -> str:
    return user_tracking_uri() or f"sqlite:///{ws.mlflow_db}"


def use_workspace_tracking(ws: Workspace, experiment_name: str) -> str:
    """Point MLflow at the workspace's store and experiment; returns the experiment id.

    The default store keeps artifacts in ``mlartifacts/`` beside ``mlflow.db``. With
    MLFLOW_TRACKING_URI set, the server decides where artifacts go.
    """
    import mlflow

    user_uri = user_tracking_uri()
    uri = tracking_uri(ws)
    user_registry = _from_user("MLFLOW_REGISTRY_URI")
    registry = user_registry or uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry)
    for name, value, chosen_by_user in (("MLFLOW_TRACKING_URI", uri, user_uri),
                                        ("MLFLOW_REGISTRY_URI", registry, user_registry)):
        if chosen_by_user:
            _exported.pop(name, None)
        else:
            _exported[name] = value
    experiment = mlflow.get_experiment_by_name(experiment_name)
    if experiment is None:
        location = None if user_uri else ws.mlflow_artifacts.as_uri()
        experiment_id = mlflow.create_experiment(experiment_name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def ui_command(ws: Workspace) -> str:
    """How the user opens these results."""
    uri = tracking_uri(ws)
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
