"""The registered model: an MLflow pyfunc that wraps the bundle, preprocessing and threshold.

``mlflow.pyfunc.load_model("models:/medimg-classifier@champion")`` predicts from a DataFrame
whose rows carry ``image``: the bytes of a PNG, JPEG, BMP, TIFF or DICOM file, base64-encoded.
The model reads no files. A row with a ``path`` is refused, before the path is looked at, unless
the caller opted in when loading, ``load_model(uri, model_config={"allow_paths": True})``, as
medimg's own re-scoring of a workspace's files does. ``mlflow models serve`` answers a refused
row with HTTP 400.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, Schema

from medimg.bundle import BundleMeta, ModelBundle
from medimg.data.images import UndecodableImage, decode_image, read_image
from medimg.decision import THRESHOLD, decision_rule

BUNDLE_ARTIFACT = "bundle"
ALLOW_PATHS = "allow_paths"
# Logged with the model: MLflow lets `load_model(model_config=...)` set only the keys logged here.
MODEL_CONFIG: dict[str, bool] = {ALLOW_PATHS: False}
PATHS_REFUSED = (
    "this model reads no files, so the 'path' column is refused: send the image file's bytes "
    "base64-encoded in the 'image' column, or load the model with "
    'model_config={"allow_paths": true} to let it read local files'
)


def _decoding(meta: BundleMeta) -> dict[str, object]:
    """Decode as ingest decoded the training images: its pixel bound and DICOM frame."""
    return {"max_pixels": meta.max_pixels, "dicom_frame": meta.dicom_frame}


def _decode_row(row: pd.Series, allow_paths: bool, meta: BundleMeta) -> np.ndarray:
    path = row.get("path")
    has_path = isinstance(path, str) and bool(path)
    if has_path and not allow_paths:
        # INVALID_PARAMETER_VALUE: the scoring server answers 400 with this message
        raise MlflowException.invalid_parameter_value(PATHS_REFUSED)
    image = row.get("image")
    if isinstance(image, str) and image:
        try:
            return decode_image(base64.b64decode(image, validate=True), **_decoding(meta))
        except binascii.Error:
            raise UndecodableImage("the image column is not valid base64") from None
    if has_path:
        return read_image(Path(path), **_decoding(meta))
    raise UndecodableImage("each row needs an 'image': the file's bytes, base64-encoded"
                           + (", or a 'path'" if allow_paths else ""))


class ClassifierModel(mlflow.pyfunc.PythonModel):
    """Label, per-class probabilities and the decision rule, for each input image: ``threshold``
    with the threshold used (two classes), or ``argmax`` and no threshold (more classes)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.bundle = ModelBundle.load(Path(context.artifacts[BUNDLE_ARTIFACT]))
        # only a literal true opts in; a string such as "false" must not
        self.allow_paths = (context.model_config or {}).get(ALLOW_PATHS) is True

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        decoded = [_decode_row(row, self.allow_paths, self.bundle.meta)
                   for _, row in frame.iterrows()]
        probs = self.bundle.predict_pixels(decoded)
        names = self.bundle.meta.class_names
        chosen = self.bundle.decide(probs)
        out = pd.DataFrame({f"p_{name}": probs[:, k] for k, name in enumerate(names)})
        out.insert(0, "label", [names[k] for k in chosen])
        out["decision_rule"] = self.bundle.meta.decision_rule
        if self.bundle.meta.decision_rule == THRESHOLD:
            out["threshold"] = self.bundle.meta.threshold
        return out


def signature_for(class_names: list[str]) -> ModelSignature:
    inputs = Schema([ColSpec("string", "image", required=False),
                     ColSpec("string", "path", required=False)])
    rule = decision_rule(class_names)
    outputs = Schema([ColSpec("string", "label"),
                      *(ColSpec("double", f"p_{name}") for name in class_names),
                      ColSpec("string", "decision_rule"),
                      *([ColSpec("double", "threshold")] if rule == THRESHOLD else [])])
    return ModelSignature(inputs=inputs, outputs=outputs)
