"""Predictions for review: one forward pass per batch, the decision rule and uncertainty of
:mod:`medimg.feedback.predictions`, and the Grad-CAM overlay a reviewer may switch on.

The images are preprocessed exactly as in training (:meth:`ModelBundle.predict_pixels`), and the
decision is the bundle's: its threshold on the positive class for two classes, arg-max for more.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from medimg.feedback.predictions import Prediction, new_prediction
from medimg.review.live_model import Served

HEATMAP_ALPHA = 0.45
"""The heat map's opacity where the model looked hardest; the film stays readable beneath."""
_BAR = 14  # width in pixels of the colour bar drawn at the heat map's right edge


def predict(served: Served, images: Sequence[tuple[str, np.ndarray]]) -> list[Prediction]:
    """A prediction record (not yet recorded) for each ``(image id, decoded pixels)``."""
    return predict_inputs(
        served, [(image_id, model_input(served, pixels)) for image_id, pixels in images]
    )


def predict_inputs(served: Served, inputs: Sequence[tuple[str, np.ndarray]]) -> list[Prediction]:
    """:func:`predict` for images already preprocessed (:func:`model_input`), all in one
    forward pass."""
    if not inputs:
        return []
    packed = np.stack([image for _, image in inputs])
    probs = served.bundle.predict_packed(packed, batch_size=len(inputs))
    return [
        new_prediction(
            image_id,
            _distribution(row),
            served.class_names,
            served.name,
            served.version,
            served.threshold,
        )
        for (image_id, _), row in zip(inputs, probs, strict=True)
    ]


def _distribution(row: np.ndarray) -> list[float]:
    """float32 outputs renormalised in float64, so they sum to 1 as a record requires."""
    row = np.clip(np.asarray(row, np.float64), 0.0, 1.0)
    total = float(row.sum())
    return (row / total).tolist() if total > 0 else [1.0 / len(row)] * len(row)


def heatmap(served: Served, pixels: np.ndarray, prediction: Prediction) -> np.ndarray:
    """The Grad-CAM map (S, S) in [0, 1] of the predicted class (two classes: the positive)
    on the image the model saw."""
    from medimg.serving.gradcam import gradcam_maps

    packed = model_input(served, pixels)
    names = served.class_names
    positive = [1] if len(names) == 2 else [names.index(prediction.predicted_label)]
    return gradcam_maps(served.bundle.model, packed[None], positive)[0]


def heatmap_png(served: Served, pixels: np.ndarray, prediction: Prediction) -> bytes:
    """The film as the model saw it, with the heat map blended over it (more opaque where the
    model looked harder, never more than :data:`HEATMAP_ALPHA`) and a colour bar from 0
    (bottom) to 1 (top) at the right."""
    import cv2
    from PIL import Image

    cam = heatmap(served, pixels, prediction)
    film = model_input(served, pixels)
    grey = film[..., 0] if film.shape[-1] == 1 else cv2.cvtColor(film[..., :3], cv2.COLOR_RGB2GRAY)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    colours = cv2.applyColorMap((cam * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    alpha = (HEATMAP_ALPHA * cam)[..., None]
    blended = (rgb * (1 - alpha) + colours.astype(np.float32) * alpha).astype(np.uint8)
    size = blended.shape[0]
    ramp = np.linspace(255, 0, size).astype(np.uint8)[:, None].repeat(_BAR, axis=1)
    bar = cv2.applyColorMap(ramp, cv2.COLORMAP_JET)[..., ::-1]
    canvas = np.concatenate([blended, np.full((size, 2, 3), 255, np.uint8), bar], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    return buffer.getvalue()


def model_input(served: Served, pixels: np.ndarray) -> np.ndarray:
    """Decoded pixels as the model takes them: the training preprocessing, at its size."""
    from medimg.config import PreprocessConfig
    from medimg.preprocessing.transforms import preprocess_image

    meta = served.bundle.meta
    return preprocess_image(
        pixels, PreprocessConfig(**meta.preprocess), meta.image_size, meta.channels
    )
