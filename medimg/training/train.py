"""The train stage: fit the configured model on the packed arrays and save it as a bundle."""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from medimg.bundle import BundleMeta, ModelBundle
from medimg.config import Config
from medimg.errors import DataError
from medimg.preprocessing.stage import check_matches_config, load_index, load_split
from medimg.training.models import build_model
from medimg.training.pipeline import make_dataset
from medimg.workspace import Workspace

logger = logging.getLogger(__name__)

HISTORY_FILE = "train_history.csv"


@dataclass(frozen=True)
class TrainResult:
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    seconds: float
    model_dir: Path


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self, n_images: int) -> None:
        super().__init__()
        self.n_images = n_images

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["images_per_second"] = self.n_images / (time.perf_counter() - self._start)


def train_workspace(ws: Workspace, config: Config | None = None) -> TrainResult:
    """Train on the train split, stop early on the validation split, save the bundle.

    Also writes ``reports/train_history.csv`` (one row per epoch) for DVC plots and MLflow.
    """
    config = config or ws.config
    check_matches_config(load_index(ws), config)
    keras.utils.set_random_seed(config.base.seed)
    train, val = load_split(ws, "train", mmap=False), load_split(ws, "val", mmap=False)
    for name, split in (("train", train), ("val", val)):
        if len(split.labels) == 0:
            raise DataError(f"the {name} split is empty; add images or change data.split_fractions")
    n_classes = len(config.base.class_names)
    model = build_model(config.base.image_size, config.base.channels, n_classes, config.model)
    binary = n_classes == 2
    model.compile(
        optimizer=keras.optimizers.Adam(config.train.learning_rate),
        loss="binary_crossentropy" if binary else "categorical_crossentropy",
        metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy") if binary else
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc", multi_label=not binary),
        ],
    )
    callbacks = [
        _EpochTimer(len(train.labels)),
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=config.train.early_stopping_patience,
            restore_best_weights=True,
        ),
    ]
    start = time.perf_counter()
    fit = model.fit(
        make_dataset(train.images, train.labels, config, training=True),
        validation_data=make_dataset(val.images, val.labels, config, training=False),
        epochs=config.train.epochs,
        shuffle=False,  # the dataset shuffles itself, with the seed
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    best_epoch = int(np.argmin(history["val_loss"])) + 1
    logger.info("trained %d epochs in %.1fs (best epoch %d)", len(history["loss"]), seconds,
                best_epoch)

    meta = BundleMeta(
        class_names=list(config.base.class_names),
        image_size=config.base.image_size,
        channels=config.base.channels,
        preprocess=config.preprocess.model_dump(mode="json"),
        threshold=config.evaluate.threshold,
        params_digest=config.digest(),
    )
    ModelBundle(model, meta).save(ws.model_dir)
    _write_history(ws.reports_dir / HISTORY_FILE, history)
    return TrainResult(history, len(history["loss"]), best_epoch, seconds, ws.model_dir)


def _write_history(path: Path, history: dict[str, list[float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(history)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *keys])
        for epoch in range(len(history[keys[0]])):
            writer.writerow([epoch + 1, *(f"{history[k][epoch]:.6g}" for k in keys)])
