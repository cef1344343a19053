"""The training loop: fit the configured model on the packed arrays and save it as a bundle.

Every completed epoch leaves a checkpoint (weights with optimizer state, the best weights so far,
the history and the early-stopping and learning-rate state). Rerunning the same command after a
crash continues from the last completed epoch; the checkpoint is removed once the bundle is
saved. A checkpoint made with other params or other data is ignored, never mixed in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np

from medimg.bundle import BundleMeta, ModelBundle
from medimg.calibration import apply_temperature, calibrate
from medimg.config import Config, digest_of
from medimg.data.packed import check_matches_config, load_index, load_split
from medimg.errors import DataError
from medimg.training.accelerate import (
    AUTO,
    MULTI_WORKER,
    Placement,
    cpu_flags,
    faster_precision,
    is_chief,
    mixed_policy,
    place,
)
from medimg.training.history import HISTORY_FILE, write_history
from medimg.training.models import build_model, resolve_weights, set_backbone_trainable
from medimg.training.operating_point import select_threshold
from medimg.training.pipeline import make_dataset, steps_per_epoch
from medimg.training.warm_start import apply_warm_start
from medimg.workspace import Workspace

logger = logging.getLogger(__name__)

RUN_FILE = "train_run.json"
STATE_FILE = "state.json"
BEST_FILE = "best-0000.npz"
MONITOR = "val_loss"
EpochProgress = Callable[[int, int, Mapping[str, float]], None]
# the params a trained model depends on: its checkpoint and its bundle are tied to these alone
MODEL_PARAMS = ("base", "data.max_pixels", "data.dicom_frame", "preprocess", "augment", "model",
                "train")


@dataclass(frozen=True)
class TrainResult:
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    seconds: float
    model_dir: Path
    placement: Placement
    resumed_from: int = 0
    kept_epoch: int = 0  # the epoch whose weights the bundle holds: the best, or the last

    @property
    def kept_val_loss(self) -> float:
        return self.history["val_loss"][self.kept_epoch - 1]


@dataclass(frozen=True)
class Phase:
    """A span of epochs ``[start, end)`` with the backbone frozen or not.

    ``freeze_batchnorm``: the backbone's batch normalisation is frozen, as it always is with a
    frozen backbone and, with ``model.fine_tune.freeze_batchnorm``, after unfreezing too.
    """

    start: int
    end: int
    frozen: bool
    learning_rate: float
    freeze_batchnorm: bool = False


def plan_phases(config: Config, has_weights: bool) -> list[Phase]:
    """One phase, or with pretrained weights: frozen backbone first, then all layers at a lower
    learning rate (``model.fine_tune``). ``frozen_epochs >= epochs`` trains the head alone.

    Pretrained batch normalisation stays frozen after unfreezing with
    ``model.fine_tune.freeze_batchnorm``; a backbone trained from scratch learns its own.
    """
    epochs, lr = config.train.epochs, config.train.learning_rate
    frozen = min(config.model.fine_tune.frozen_epochs, epochs) if has_weights else 0
    freeze_bn = has_weights and config.model.fine_tune.freeze_batchnorm
    if frozen == 0:
        return [Phase(0, epochs, False, lr, freeze_bn)]
    phases = [Phase(0, frozen, True, lr, freeze_batchnorm=True)]
    if frozen < epochs:
        factor = config.model.fine_tune.learning_rate_factor
        phases.append(Phase(frozen, epochs, False, lr * factor, freeze_bn))
    return phases


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """``n / (k * count_c)``: each class contributes equally to the loss."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    weights = len(labels) / (n_classes * np.maximum(counts, 1.0))
    return {c: float(w) for c, w in enumerate(weights)}


def make_loss(config: Config, n_classes: int) -> keras.losses.Loss:
    binary = n_classes == 2
    if config.train.loss == "focal":
        gamma = config.train.focal_gamma
        return (keras.losses.BinaryFocalCrossentropy(gamma=gamma) if binary
                else keras.losses.CategoricalFocalCrossentropy(gamma=gamma))
    return (keras.losses.BinaryCrossentropy() if binary
            else keras.losses.CategoricalCrossentropy())


class _EpochTimer(keras.callbacks.Callback):
    def __init__(self, n_images: int) -> None:
        super().__init__()
        self.n_images = n_images

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["images_per_second"] = self.n_images / (time.perf_counter() - self._start)
            rate = self.model.optimizer.learning_rate  # a schedule's value at this step
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))


def _numbers(logs: Mapping[str, object] | None) -> dict[str, float]:
    out = {}
    for key, value in (logs or {}).items():
        try:
            out[key] = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return out


class _Progress(keras.callbacks.Callback):
    """Each finished epoch: one log line, and ``progress(epoch, total_epochs, logs)``."""

    def __init__(self, total: int, progress: EpochProgress | None) -> None:
        super().__init__()
        self.total = total
        self.progress = progress

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        numbers = _numbers(logs)
        logger.info("epoch %d/%d: %s", epoch + 1, self.total,
                    ", ".join(f"{k} {v:.4g}" for k, v in numbers.items()))
        if self.progress:
            self.progress(epoch + 1, self.total, numbers)


class _Plateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters survive a resume."""

    def __init__(self, restored: dict | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.restored = restored

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self.restored:
            self.wait = self.restored["wait"]
            self.best = self.restored["best"]
            self.cooldown_counter = self.restored["cooldown_counter"]
            self.restored = None

    def state(self) -> dict:
        return {"wait": self.wait, "best": float(self.best),
                "cooldown_counter": self.cooldown_counter}


class _Checkpointer(keras.callbacks.Callback):
    """Early stopping on val_loss, the best weights, and a checkpoint after every epoch.

    The checkpoint is written file by file and committed by replacing ``state.json`` last, so a
    kill at any moment leaves the previous epoch's checkpoint whole.
    """

    def __init__(self, directory: Path | None, state: dict, phase_index: int,
                 patience: int, early_stop: bool, plateau: _Plateau | None) -> None:
        super().__init__()
        self.directory = directory
        self.state = state
        self.phase_index = phase_index
        self.patience = patience
        self.early_stop = early_stop
        self.plateau = plateau

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        state = self.state
        for key, value in logs.items():
            state["history"].setdefault(key, []).append(float(value))
        value = float(logs[MONITOR])
        if value < state["best"]:
            state["best"], state["best_epoch"], state["wait"] = value, epoch + 1, 0
            state["best_weights"] = [np.array(w) for w in self.model.get_weights()]
            state["best_dirty"] = True
        else:
            state["wait"] += 1
            if self.early_stop and state["wait"] >= self.patience and epoch > 0:
                self.model.stop_training = True
                state["stopped"] = True
        state["epoch"] = epoch + 1
        state["phase"] = self.phase_index
        if self.plateau is not None:
            state["plateau"] = self.plateau.state()
        if self.directory is not None:
            _write_checkpoint(self.directory, self.model, state)


def _write_checkpoint(directory: Path, model: keras.Model, state: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    weights_name = f"epoch-{state['epoch']:04d}.weights.h5"
    model.save_weights(directory / weights_name)
    if state.pop("best_dirty", False):
        state["best_file"] = f"best-{state['epoch']:04d}.npz"
        np.savez(directory / state["best_file"], *state["best_weights"])
    saved = {k: v for k, v in state.items() if k != "best_weights"}
    saved["weights"] = weights_name
    tmp = directory / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(saved))
    os.replace(tmp, directory / STATE_FILE)  # the commit: files it names are complete
    keep = {weights_name, state.get("best_file")}
    for old in [*directory.glob("epoch-*.weights.h5"), *directory.glob("best-*.npz")]:
        if old.name not in keep:
            old.unlink()


def fingerprint(config: Config, index: dict, placement: Placement, batch: int) -> str:
    """Params, packed data and run shape (replicas, precision, global batch) a checkpoint
    belongs to: resuming under another shape would silently reset the optimizer's state."""
    shape = f"{placement.replicas}/{placement.precision}/{batch}"
    text = digest_of(config, MODEL_PARAMS) + json.dumps(index, sort_keys=True) + shape
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fresh_state(fp: str) -> dict:
    return {"fingerprint": fp, "epoch": 0, "phase": 0, "history": {}, "best": float("inf"),
            "best_epoch": 0, "wait": 0, "stopped": False, "plateau": None, "best_weights": None}


def _load_state(directory: Path, fp: str, resume: bool) -> dict | None:
    path = directory / STATE_FILE
    if not path.is_file():
        return None
    if not resume:
        logger.info("train.resume is false: starting over, discarding %s", directory)
        return None
    state = json.loads(path.read_text())
    if state.get("fingerprint") != fp:
        logger.warning("the checkpoint in %s was made with other params or data; starting over",
                       directory)
        return None
    best = directory / state.get("best_file", BEST_FILE)
    if state.get("best_file") and best.is_file():
        with np.load(best) as saved:
            state["best_weights"] = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    else:
        state["best_weights"] = None
    return state


def _compile(model: keras.Model, phase: Phase, config: Config, steps: int, n_classes: int,
             jit: bool) -> None:
    set_backbone_trainable(model, not phase.frozen, phase.freeze_batchnorm)
    lr: float | keras.optimizers.schedules.LearningRateSchedule = phase.learning_rate
    if config.train.lr_schedule == "cosine":
        floor = min(config.train.min_learning_rate / phase.learning_rate, 1.0)
        lr = keras.optimizers.schedules.CosineDecay(
            phase.learning_rate, decay_steps=steps * (phase.end - phase.start), alpha=floor)
    binary = n_classes == 2
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=make_loss(config, n_classes),
        metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy") if binary else
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc", multi_label=not binary),
        ],
        jit_compile=jit,
    )


PRECISION_WARMUP_STEPS = 2
PRECISION_TIMED_STEPS = 5


def time_precisions(config: Config, strategy, phase: Phase, images: np.ndarray,
                    labels: np.ndarray, batch: int, policies: list[str], jit: bool,
                    weights: Path | None = None) -> dict[str, float]:
    """Milliseconds per training step under each dtype policy, on the first batches of the
    training data as training augments them: each policy builds and compiles the model, takes
    a few untimed steps (tracing, XLA), then the same timed steps. The global policy and the
    random state are left as they were found, so the real run draws what it would have."""
    n_classes = len(config.base.class_names)
    steps = PRECISION_WARMUP_STEPS + PRECISION_TIMED_STEPS
    whole = min(len(labels) // batch, steps) * batch  # whole batches only: one shape, one trace
    data = make_dataset(images[:whole], labels[:whole], config, training=True, batch_size=batch,
                        epochs=1)
    batches = list(data.repeat().take(steps).as_numpy_iterator())
    previous = keras.config.dtype_policy()
    timings: dict[str, float] = {}
    try:
        for policy in policies:
            keras.config.set_dtype_policy(policy)
            with strategy.scope():
                model = build_model(config.base.image_size, config.base.channels, n_classes,
                                    config.model, weights)
                _compile(model, phase, config, steps_per_epoch(len(labels), batch), n_classes,
                         jit)
            for x, y in batches[:PRECISION_WARMUP_STEPS]:
                model.train_on_batch(x, y)
            start = time.perf_counter()
            for x, y in batches[PRECISION_WARMUP_STEPS:]:
                model.train_on_batch(x, y)
            timings[policy] = round(1000 * (time.perf_counter() - start)
                                    / PRECISION_TIMED_STEPS, 3)
            del model
    finally:
        keras.config.set_dtype_policy(previous)
        keras.utils.set_random_seed(config.base.seed)
    return timings


def _resolve_precision(placement: Placement, state: dict, resumed: bool, measure,
                       can_time: bool = True) -> Placement:
    """``train.mixed_precision: auto``: a resumed run keeps what its checkpoint chose; a new one
    times float32 against the device's mixed policy and keeps the faster."""
    if placement.precision != AUTO:
        return placement
    if resumed and state.get("precision"):
        return replace(placement, precision=state["precision"],
                       precision_timings=state.get("precision_timings"))
    if placement.strategy == MULTI_WORKER or not can_time:
        # workers timing apart could choose apart, and their collectives would not match; a
        # split smaller than one batch has nothing to time
        why = ("several workers train together" if placement.strategy == MULTI_WORKER
               else "the train split is smaller than one batch")
        note = f"train.mixed_precision auto: {why}, so training stays float32 without timing"
        logger.warning(note)
        return replace(placement, precision="float32", note=note)
    timings = measure()
    choice = faster_precision(timings)
    note = ("train.mixed_precision auto: " + ", ".join(f"{k} {v:.1f} ms/step"
                                                       for k, v in timings.items())
            + f"; training in {choice}")
    logger.info(note)
    return replace(placement, precision=choice, precision_timings=timings, note=note)


def train_classifier(
    ws: Workspace, config: Config, devices: list[str] | None = None,
    tf_config: str | None = None, progress: EpochProgress | None = None,
) -> TrainResult:
    """Train on the train split, stop early on the validation split, save the bundle.

    Also writes ``reports/train_history.csv`` (one row per epoch, including images/s) and
    ``reports/train_run.json`` (device, replicas, precision, XLA) for DVC and MLflow.
    ``devices`` forces a Mirrored strategy over those devices (tests use logical CPUs);
    ``tf_config`` is TensorFlow's multi-worker cluster spec (``TF_CONFIG``), if any.
    ``progress(epoch, total_epochs, logs)`` is called once before the first epoch (with the
    epoch a checkpoint resumes after, or 0) and after each epoch with its loss and metrics.
    """
    import tensorflow as tf

    index = load_index(ws)
    check_matches_config(index, config)
    keras.utils.set_random_seed(config.base.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    train, val = load_split(ws, "train"), load_split(ws, "val")
    for name, split in (("train", train), ("val", val)):
        if len(split.labels) == 0:
            raise DataError(f"the {name} split is empty; add images or change data.split_fractions")
    weights = resolve_weights(config.model.weights, ws.root)
    n_classes = len(config.base.class_names)
    strategy, placement = place(config.train.mixed_precision, config.train.jit_compile, devices,
                                 tf_config)
    batch = config.train.batch_size * placement.replicas
    steps = steps_per_epoch(len(train.labels), batch)
    phases = plan_phases(config, weights is not None)
    chief = is_chief(tf_config)
    directory = ws.checkpoint_dir if config.train.checkpoint else None
    fp = fingerprint(config, index, placement, batch)
    state = (_load_state(directory, fp, config.train.resume) if directory else None)
    resumed_from = state["epoch"] if state else 0
    if state is None:
        if directory is not None and chief:
            shutil.rmtree(directory, ignore_errors=True)
        state = _fresh_state(fp)
    loaded_from = directory
    if directory is not None and not chief:
        # every worker resumes from the chief's checkpoint; only the chief writes one
        directory = Path(tempfile.mkdtemp(prefix="medimg-worker-ckpt-"))
    if resumed_from:
        logger.info("resuming from the checkpoint after epoch %d", resumed_from)
    on_gpu = placement.device.startswith("GPU")
    placement = _resolve_precision(placement, state, bool(resumed_from), lambda: time_precisions(
        config, strategy, phases[0], train.images, train.labels, batch,
        ["float32", mixed_policy(on_gpu, cpu_flags()) or "float32"], placement.jit_compile,
        weights), can_time=len(train.labels) >= batch)
    state["precision"], state["precision_timings"] = (placement.precision,
                                                      placement.precision_timings)
    if progress:  # where training starts: epoch 0, or the last one a checkpoint holds
        progress(resumed_from, config.train.epochs,
                 {k: v[-1] for k, v in state["history"].items() if v})
    logger.info("training on %s: %s strategy, %d replica(s), global batch %d, %s, XLA %s",
                placement.device, placement.strategy, placement.replicas, batch,
                placement.precision, "on" if placement.jit_compile else "off")

    weighting = (class_weights(train.labels, n_classes)
                 if config.train.class_weight == "balanced" else None)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(placement.precision)
    start = time.perf_counter()
    try:
        with strategy.scope():
            model = build_model(config.base.image_size, config.base.channels, n_classes,
                                config.model, weights)
            warm = apply_warm_start(ws, config, model) if not resumed_from else ""
            if resumed_from:
                saved_phase = phases[state["phase"]]
                _compile(model, saved_phase, config, steps, n_classes, placement.jit_compile)
                model.optimizer.build(model.trainable_variables)
                model.load_weights(loaded_from / state["weights"])
        val_data = make_dataset(val.images, val.labels, config, training=False, batch_size=batch)
        for number, phase in enumerate(phases):
            if state.get("stopped") or state["epoch"] >= phase.end:
                continue
            if not (resumed_from and number == state["phase"] and state["epoch"] > phase.start):
                with strategy.scope():
                    _compile(model, phase, config, steps, n_classes, placement.jit_compile)
                state["wait"] = 0  # patience counts within a phase, not across the switch
            plateau = None
            if config.train.lr_schedule == "plateau":
                restored = state["plateau"] if number == state["phase"] else None
                plateau = _Plateau(restored, monitor=MONITOR, factor=config.train.lr_plateau_factor,
                                   patience=config.train.lr_plateau_patience,
                                   min_lr=config.train.min_learning_rate, verbose=0)
            callbacks = [_EpochTimer(len(train.labels))]
            if plateau is not None:
                callbacks.append(plateau)
            callbacks.append(_Checkpointer(directory, state, number,
                                           config.train.early_stopping_patience,
                                           # frozen_epochs >= epochs is a linear probe
                                           early_stop=not phase.frozen
                                           or number == len(phases) - 1, plateau=plateau))
            callbacks.append(_Progress(config.train.epochs, progress))
            model.fit(
                make_dataset(train.images, train.labels, config, training=True, batch_size=batch,
                             initial_epoch=state["epoch"], epochs=phase.end),
                validation_data=val_data,
                initial_epoch=state["epoch"],
                epochs=phase.end,
                steps_per_epoch=steps,
                class_weight=weighting,
                callbacks=callbacks,
                shuffle=False,  # the dataset shuffles itself, reproducibly, per epoch
                verbose=0,
            )
        kept = state["epoch"]
        if config.train.restore_best_weights and state["best_weights"] is not None:
            model.set_weights(state["best_weights"])
            kept = state["best_epoch"]
    finally:
        keras.config.set_dtype_policy(previous_policy)
    if placement.precision != "float32":
        # the bundle serves on any machine: float32 layers, the same (float32) weights
        trained = model
        model = build_model(config.base.image_size, config.base.channels, n_classes,
                            config.model)
        model.set_weights(trained.get_weights())
    seconds = time.perf_counter() - start
    history = state["history"]
    logger.info("trained %d epochs in %.1fs (best epoch %d, kept epoch %d)", state["epoch"],
                seconds, state["best_epoch"], kept)

    result = TrainResult(history, state["epoch"], state["best_epoch"], seconds, ws.model_dir,
                         placement, resumed_from, kept)
    if chief:  # workers trained the same weights; only the chief chooses a threshold and saves
        calibration = _save_bundle(ws, config, model, val, n_classes)
        write_history(ws.reports_dir / HISTORY_FILE, history)
        run = {**placement.as_dict(), "global_batch": batch, "epochs": state["epoch"],
               "best_epoch": state["best_epoch"], "kept_epoch": kept,
               "resumed_from_epoch": resumed_from, "seconds": round(seconds, 2),
               "warm_start": warm, "calibration": calibration}
        (ws.reports_dir / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n")
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
    return result


def _save_bundle(ws: Workspace, config: Config, model: keras.Model, val,
                 n_classes: int) -> dict:
    """The bundle, calibrated on validation, with its operating point chosen on validation's
    calibrated probabilities (two classes). Returns what calibration did."""
    meta = BundleMeta(
        class_names=list(config.base.class_names),
        image_size=config.base.image_size,
        channels=config.base.channels,
        preprocess=config.preprocess.model_dump(mode="json"),
        threshold=config.train.threshold,
        params_digest=digest_of(config, MODEL_PARAMS),
        max_pixels=config.data.max_pixels,
        dicom_frame=config.data.dicom_frame,
        augment=config.augment.model_dump(mode="json"),
    )
    # calibration and the operating point come from validation, never from the locked test split
    labels = np.asarray(val.labels)
    raw = ModelBundle(model, meta).predict_packed(val.images, calibrated=False)
    fitted = calibrate(labels, raw, config.train.calibration)
    meta = replace(meta, temperature=fitted.temperature, bias=fitted.bias,
                   calibration=fitted.as_dict())
    logger.info("calibration (%s) on validation: T %.3f, bias %.3f, ECE %.3f -> %.3f, "
                "Brier %.3f -> %.3f", fitted.method, fitted.temperature, fitted.bias,
                fitted.ece_before, fitted.ece_after, fitted.brier_before, fitted.brier_after)
    if n_classes == 2:
        scores = apply_temperature(raw, fitted.temperature, fitted.bias)[:, 1]
        point = select_threshold(labels == 1, scores, config.train)
        meta = replace(meta, threshold=point.threshold, operating_point=point.as_dict())
        logger.info("threshold %.4f (%s): validation recall %.3f, precision %.3f",
                    point.threshold, point.method, point.recall, point.precision)
    ModelBundle(model, meta).save(ws.model_dir)
    return fitted.as_dict()
