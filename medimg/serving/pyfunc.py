"""The registered model: an MLflow pyfunc that wraps the bundle, preprocessing and threshold.

``mlflow.pyfunc.load_model("models:/medimg-classifier@champion")`` predicts from a DataFrame
whose rows carry either ``image`` (base64-encoded file bytes) or ``path`` (an image file).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, Schema

from medimg.bundle import ModelBundle
from medimg.data.images import UndecodableImage, decode_image, read_image

BUNDLE_ARTIFACT = "bundle"


def _decode_row(row: pd.Series) -> np.ndarray:
    image = row.get("image")
    if isinstance(image, str) and image:
        try:
            return decode_image(base64.b64decode(image, validate=True))
        except binascii.Error:
            raise UndecodableImage("the image column is not valid base64") from None
    path = row.get("path")
    if isinstance(path, str) and path:
        return read_image(Path(path))
    raise UndecodableImage("each row needs an 'image' (base64 bytes) or a 'path'")


class ClassifierModel(mlflow.pyfunc.PythonModel):
    """Label, per-class probabilities and the threshold used, for each input image."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.bundle = ModelBundle.load(Path(context.artifacts[BUNDLE_ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        frame = pd.DataFrame(model_input)
        decoded = [_decode_row(row) for _, row in frame.iterrows()]
        probs = self.bundle.predict_pixels(decoded)
        names = self.bundle.meta.class_names
        chosen = self.bundle.decide(probs)
        out = pd.DataFrame({f"p_{name}": probs[:, k] for k, name in enumerate(names)})
        out.insert(0, "label", [names[k] for k in chosen])
        out["threshold"] = self.bundle.meta.threshold
        return out


def signature_for(class_names: list[str]) -> ModelSignature:
    inputs = Schema([ColSpec("string", "image", required=False),
                     ColSpec("string", "path", required=False)])
    outputs = Schema([ColSpec("string", "label"),
                      *(ColSpec("double", f"p_{name}") for name in class_names),
                      ColSpec("double", "threshold")])
    return ModelSignature(inputs=inputs, outputs=outputs)
