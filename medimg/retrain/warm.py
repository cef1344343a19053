"""The champion's weights for a warm start, fetched from the registry (``retrain.warm_start``)."""

from __future__ import annotations

from pathlib import Path

from medimg.config import Config
from medimg.retrain.changes import ChampionState
from medimg.settings import Settings
from medimg.tracking import use_workspace_tracking
from medimg.training.warm_start import export_warm_start, warm_start_dir
from medimg.workspace import Workspace


def fetch_champion_weights(ws: Workspace, config: Config, settings: Settings | None,
                           champion: ChampionState | None) -> Path | None:
    """Export the champion's model for the next training to start from; None (and nothing
    left from an earlier export) when warm start is off or there is no champion."""
    import shutil
    import tempfile

    import mlflow

    shutil.rmtree(warm_start_dir(ws), ignore_errors=True)
    if not config.retrain.warm_start or champion is None:
        return None
    use_workspace_tracking(ws, config.registry.experiment_name, settings)
    source = f"models:/{config.registry.model_name}/{champion.version}"
    with tempfile.TemporaryDirectory(prefix="medimg-warm-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp))
        return export_warm_start(ws, local / bundle_path(local / "MLmodel"), source)


def bundle_path(mlmodel: Path) -> str:
    """Where a logged medimg model keeps its bundle, relative to the model's folder: MLflow
    copies an artifact under its source folder's name (``artifacts/classifier``), recorded in
    the MLmodel file's ``python_function`` flavour."""
    import yaml

    from medimg.serving.pyfunc import BUNDLE_ARTIFACT

    flavour = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get(
        "python_function", {})
    entry = (flavour.get("artifacts") or {}).get(BUNDLE_ARTIFACT, {})
    return entry.get("path", f"artifacts/{BUNDLE_ARTIFACT}")
