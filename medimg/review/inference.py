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


def heatmap(served: Served, packed: np.ndarray, prediction: Prediction) -> np.ndarray:
    """The Grad-CAM map (S, S) in [0, 1] of the predicted class (two classes: the positive)
    on ``packed``, the image as the model takes it (:func:`model_input`)."""
    from medimg.serving.gradcam import gradcam_maps

    names = served.class_names
    positive = [1] if len(names) == 2 else [names.index(prediction.predicted_label)]
    return gradcam_maps(served.bundle.model, packed[None], positive)[0]


def heatmap_png(served: Served, pixels: np.ndarray, prediction: Prediction,
                packed: np.ndarray | None = None) -> bytes:
    """The heat map over the film as the model saw it, with its colour bar, as
    :func:`medimg.serving.gradcam.render_case` draws every Grad-CAM medimg shows.

    ``packed`` is the image already preprocessed (:func:`model_input`), when the caller has it.
    """
    from PIL import Image

    from medimg.serving.gradcam import render_case

    if packed is None:
        packed = model_input(served, pixels)
    cam = heatmap(served, packed, prediction)
    # No film panel: the page shows the film itself in the same place, one key away, and its
    # square frame would shrink two panels side by side to half their size.
    canvas = render_case(packed, cam, film_panel=False)
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
