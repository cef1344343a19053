"""Warm start: training begins from the champion's weights instead of a fresh initialisation.

With ``retrain.warm_start: true`` the retrain flow exports the champion's saved model to
``models/warm_start/`` (:func:`export_warm_start`, from the registry) before the pipeline runs;
the train stage then copies its weights into the new model when every layer's shape matches
(the same architecture, input size and classes) and says why not otherwise. Where the weights
came from is recorded in ``reports/train_run.json`` and so in the MLflow run
(``runtime.warm_start``).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from medimg.bundle import MODEL_FILE
from medimg.config import Config
from medimg.workspace import Workspace

logger = logging.getLogger(__name__)

WARM_START_DIR = Path("models") / "warm_start"
SOURCE_FILE = "source.json"


def warm_start_dir(ws: Workspace) -> Path:
    return ws.root / WARM_START_DIR


def export_warm_start(ws: Workspace, bundle_dir: Path, source: str) -> Path:
    """Keep the model of the bundle at ``bundle_dir`` (the champion's, ``source`` names it:
    ``models:/<name>/<version>``) for the next training to start from."""
    out = warm_start_dir(ws)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle_dir / MODEL_FILE, out / MODEL_FILE)
    (out / SOURCE_FILE).write_text(json.dumps({"source": source}) + "\n")
    return out


def apply_warm_start(ws: Workspace, config: Config, model: Any) -> str:
    """Copy the exported champion's weights into ``model`` when ``retrain.warm_start`` asks.

    Returns what the run records: ``""`` (off), the source (``models:/name/3``), or
    ``"none: <why>"`` when it trained from a fresh start after all.
    """
    if not config.retrain.warm_start:
        return ""
    folder = warm_start_dir(ws)
    if not (folder / MODEL_FILE).is_file():
        return "none: no champion exported to models/warm_start (the first model trains fresh)"
    import keras

    import medimg.layers  # noqa: F401  (registers the layers a saved model uses)

    source = json.loads((folder / SOURCE_FILE).read_text())["source"]
    saved = keras.saving.load_model(folder / MODEL_FILE, compile=False)
    theirs, ours = saved.get_weights(), model.get_weights()
    if len(theirs) != len(ours) or any(a.shape != b.shape for a, b in zip(theirs, ours,
                                                                            strict=False)):
        why = (f"none: {source} has another architecture or input size; trained from a fresh "
               "start")
        logger.warning(why.removeprefix("none: "))
        return why
    model.set_weights(theirs)
    logger.info("warm start from %s", source)
    return source
