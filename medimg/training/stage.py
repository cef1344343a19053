"""The train stage: fit the configured model on the packed arrays and save it as a bundle.

Reads ``data/processed``; writes ``models/classifier`` (the bundle, with its operating point
chosen on the validation split), ``reports/train_history.csv`` and ``reports/train_run.json``.
"""

from __future__ import annotations

from medimg.config import Config
from medimg.settings import Settings
from medimg.training.train import EpochProgress, TrainResult, train_classifier
from medimg.workspace import Workspace


def run_train(ws: Workspace, config: Config, settings: Settings | None = None,
              devices: list[str] | None = None,
              progress: EpochProgress | None = None) -> TrainResult:
    """Train, choose the operating point on validation, save the bundle and the history.

    ``settings`` carries ``TF_CONFIG`` for multi-worker training (None: a single machine);
    ``devices`` forces a Mirrored strategy over those devices (tests use logical CPUs);
    ``progress(epoch, total_epochs, logs)`` hears of each finished epoch.
    """
    return train_classifier(ws, config, devices=devices,
                            tf_config=settings.tf_config if settings else None,
                            progress=progress)
