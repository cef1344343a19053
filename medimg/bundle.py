"""A trained classifier as one unit: Keras model, class names, preprocessing and threshold.

The bundle is a folder (``model.keras`` + ``bundle.json``). Training writes it, evaluation and
every prediction path read it, and the registry stores it inside the MLflow model.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from medimg.calibration import apply_temperature
from medimg.config import PreprocessConfig
from medimg.decision import ARGMAX, decision_rule
from medimg.errors import WorkspaceError

MODEL_FILE = "model.keras"
META_FILE = "bundle.json"


@dataclass(frozen=True)
class BundleMeta:
    class_names: list[str]
    image_size: int
    channels: int
    preprocess: dict[str, Any]
    # the threshold on the positive class's probability; None for several classes (arg-max)
    threshold: float | None = 0.5
    params_digest: str = ""
    # how the threshold was chosen and what it gave on validation (training.operating_point)
    operating_point: dict[str, Any] = field(default_factory=dict)
    # "threshold" or "argmax", from the class count (medimg.decision)
    decision_rule: str = ""
    # how a file is decoded, as ingest decoded the training images: the pixel bound
    # (data.max_pixels; None: the default) and the frame of a multi-frame DICOM
    max_pixels: int | None = None
    dicom_frame: str = "middle"
    # calibration fitted on validation (medimg.calibration): every prediction divides the
    # model's logits by the temperature (and adds the bias, two classes); 1.0 and 0.0 leave them
    # as they are, as older bundles get
    temperature: float = 1.0
    bias: float = 0.0  # Platt scaling's intercept on the positive class's logit (two classes)
    # what calibration did on validation: ECE, Brier and NLL before and after
    calibration: dict[str, Any] = field(default_factory=dict)
    # the augment params the model trained with: the ranges test-time augmentation stays within
    augment: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rule = decision_rule(list(self.class_names))
        object.__setattr__(self, "decision_rule", rule)
        if rule == ARGMAX:  # no threshold is used, so none is kept to be shown
            object.__setattr__(self, "threshold", None)


class ModelBundle:
    """Load once, predict many times."""

    def __init__(self, model: Any, meta: BundleMeta) -> None:
        self.model = model
        self.meta = meta

    def save(self, directory: Path) -> None:
        """Write atomically: a failure leaves the previous bundle intact."""
        directory = Path(directory)
        staging = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        self.model.save(staging / MODEL_FILE)
        (staging / META_FILE).write_text(json.dumps(asdict(self.meta), indent=2))
        if directory.exists():
            backup = directory.with_name(directory.name + ".old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(directory, backup)
            os.replace(staging, directory)
            shutil.rmtree(backup)
        else:
            os.replace(staging, directory)

    @classmethod
    def load(cls, directory: Path) -> ModelBundle:
        import keras

        import medimg.layers  # noqa: F401  (registers the layers a saved model uses)

        directory = Path(directory)
        if not (directory / MODEL_FILE).is_file() or not (directory / META_FILE).is_file():
            raise WorkspaceError(f"no trained model in {directory}; run `medimg train` first")
        stored = json.loads((directory / META_FILE).read_text())
        # a bundle written by a newer medimg may carry fields this one does not know: they are
        # left out, so an app not yet upgraded still serves a new champion
        known = {f.name for f in fields(BundleMeta)}
        meta = BundleMeta(**{k: v for k, v in stored.items() if k in known})
        model = keras.saving.load_model(directory / MODEL_FILE, compile=False)
        return cls(model, meta)

    def predict_packed(self, images: np.ndarray, batch_size: int = 64,
                       calibrated: bool = True) -> np.ndarray:
        """Class probabilities (N, n_classes) for preprocessed uint8 images (N, S, S, C),
        temperature-scaled as the bundle was calibrated unless ``calibrated`` is False."""
        probs = np.zeros((len(images), len(self.meta.class_names)), dtype=np.float64)
        for start in range(0, len(images), batch_size):
            batch = np.asarray(images[start:start + batch_size], dtype=np.float32)
            # the compiled predict function: a third of an eager call's time for one image
            out = np.asarray(self.model.predict_on_batch(batch), dtype=np.float64)
            if out.shape[1] == 1:
                out = np.concatenate([1.0 - out, out], axis=1)
            probs[start:start + len(batch)] = out
        if calibrated:
            return apply_temperature(probs, self.meta.temperature, self.meta.bias)
        return probs

    def predict_pixels(self, decoded: list[np.ndarray]) -> np.ndarray:
        """Class probabilities for decoded images of any size, preprocessed as in training."""
        from medimg.preprocessing.transforms import preprocess_image

        config = PreprocessConfig(**self.meta.preprocess)
        size, channels = self.meta.image_size, self.meta.channels
        packed = np.stack([preprocess_image(p, config, size, channels) for p in decoded]) if (
            decoded) else np.zeros((0, size, size, channels), dtype=np.uint8)
        return self.predict_packed(packed)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Predicted class indices: the threshold on the positive class for two classes,
        the arg-max otherwise."""
        if probs.shape[1] == 2:
            return (probs[:, 1] >= self.meta.threshold).astype(np.int64)
        return probs.argmax(axis=1)
