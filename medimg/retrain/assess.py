"""Whether to retrain: the champion, what changed since its data version, and drift.

A retrain starts when new or corrected labels reach ``retrain.min_new_labels``, when a feature
drifted (``retrain.on_drift``), when there is no champion yet, or when forced. Otherwise it does
nothing and :attr:`Assessment.why` says why.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medimg.config import Config
from medimg.drift.report import compare, split_reference
from medimg.drift.results import DriftReport
from medimg.registry.aliases import CHAMPION, alias_version
from medimg.retrain.changes import (
    ChampionState,
    LabelChanges,
    champion_manifest,
    label_changes,
)
from medimg.settings import Settings
from medimg.tracking import use_workspace_tracking
from medimg.workspace import Workspace

logger = logging.getLogger(__name__)

PREDICTIONS_LOG = Path("data") / "feedback" / "predictions.jsonl"
LAST_RETRAIN = Path("reports") / "retrain" / "last.json"
"""The data version the last retrain's pipeline ran on, and what it decided."""


@dataclass
class Assessment:
    """What the retrain found before it decided."""

    champion: ChampionState | None
    changes: LabelChanges
    drift: DriftReport | None
    triggers: list[str] = field(default_factory=list)  # why it retrains; empty: it does not
    why_not: str = ""

    @property
    def go(self) -> bool:
        return bool(self.triggers)

    @property
    def why(self) -> str:
        return "; ".join(self.triggers) if self.triggers else self.why_not


def champion_version(ws: Workspace, config: Config, settings: Settings | None) -> str | None:
    """The version the registry's champion alias points at; None when there is none."""
    from mlflow import MlflowClient

    use_workspace_tracking(ws, config.registry.experiment_name, settings)
    return alias_version(MlflowClient(), config.registry.model_name, CHAMPION)


def find_champion(ws: Workspace, config: Config, settings: Settings | None) -> ChampionState | None:
    """The registry's champion and the manifest it was trained on; None when there is none."""
    from mlflow import MlflowClient

    version = champion_version(ws, config, settings)
    if version is None:
        return None
    stored = MlflowClient().get_model_version(config.registry.model_name, version)
    data_version = stored.tags.get("data_version", "")
    manifest, why = champion_manifest(ws, data_version)
    return ChampionState(version, data_version, stored.run_id or "", manifest, why)


def champion_scores(ws: Workspace, config: Config, champion: ChampionState,
                    settings: Settings | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The champion's confidence (top class probability) on its own test split, from its run's
    ``reports/predictions.csv``, against its confidence on the images sent for prediction since
    (``data/feedback/predictions.jsonl``). None when either is missing."""
    import mlflow

    try:
        local = mlflow.artifacts.download_artifacts(run_id=champion.run_id,
                                                    artifact_path="reports/predictions.csv")
    except Exception as exc:  # an older run without predictions: no score comparison
        logger.info("no champion predictions to compare scores with: %s", type(exc).__name__)
        return None
    reference = pd.read_csv(local)
    columns = [c for c in reference.columns if c.startswith("p_")]
    incoming = incoming_scores(ws, champion.version)
    if not columns or incoming is None:
        return None
    return reference[columns].to_numpy(dtype=float).max(axis=1), incoming


def incoming_scores(ws: Workspace, version: str) -> np.ndarray | None:
    """The top class probability of each prediction the model ``version`` made for review."""
    path = ws.root / PREDICTIONS_LOG
    if not path.is_file():
        return None
    found = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if str(record.get("model_version")) != str(version):
            continue
        probabilities = record.get("probabilities")
        values = list(probabilities.values()) if isinstance(probabilities, dict) else probabilities
        if values:
            found.append(max(float(v) for v in values))
    return np.asarray(found) if found else None


def measure_drift(ws: Workspace, config: Config, champion: ChampionState | None,
                  settings: Settings | None) -> DriftReport | None:
    """Incoming images (new since the champion's data version) against its training split."""
    if champion is None or champion.manifest is None or not ws.manifest_path.is_file():
        return None
    from medimg.data.manifest import load_manifest

    reference, incoming = split_reference(load_manifest(ws.manifest_path),
                                          champion.manifest["image_id"])
    scores = champion_scores(ws, config, champion, settings)
    return compare(reference, incoming, config.drift, scores=scores)


def manifest_md5(ws: Workspace) -> str:
    """The manifest's md5 as it is now (DVC's hash of it once recorded); "" when absent."""
    import hashlib

    path = ws.manifest_path
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else ""


def remember_retrain(ws: Workspace, decision: str) -> None:
    """Record the manifest a retrain's pipeline ran on, and its decision."""
    path = ws.root / LAST_RETRAIN
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data_version": manifest_md5(ws), "decision": decision}) + "\n")


def last_retrain(ws: Workspace) -> dict[str, str]:
    path = ws.root / LAST_RETRAIN
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def assess(ws: Workspace, config: Config, settings: Settings | None,
           force: bool = False) -> Assessment:
    """The champion, the changes since its data, drift, and the triggers that fired.

    Data a retrain already ran on is not retrained on again (a challenger that was not
    promoted stays judged), unless forced or new files wait in data/raw.
    """
    champion = find_champion(ws, config, settings)
    changes = label_changes(ws, champion)
    drift = measure_drift(ws, config, champion, settings)
    found = Assessment(champion, changes, drift)
    needed = config.retrain.min_new_labels
    if force:
        found.triggers.append("forced")
    last = last_retrain(ws)
    if (not force and not changes.not_ingested and last.get("data_version")
            and last["data_version"] == manifest_md5(ws)):
        found.why_not = (f"the last retrain already ran on this data "
                         f"({last['data_version'][:12]}): {last.get('decision', '')}")
        return found
    if champion is None and changes.total:
        found.triggers.append("no champion yet")
    elif changes.total >= needed:
        found.triggers.append(f"{changes.total} new or corrected labels (at least {needed})")
    if config.retrain.on_drift and drift is not None and drift.drifted:
        found.triggers.append(f"drift in {', '.join(drift.drifted)}")
    if not found.triggers:
        found.why_not = (f"nothing to retrain on: {changes.line()}, below "
                         f"retrain.min_new_labels={needed}; "
                         + ("no drift" if drift is not None and drift.enough_data else
                            "drift not measurable" if drift is None else
                            f"drift needs {config.drift.min_samples} incoming images"))
    return found
