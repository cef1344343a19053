"""Grad-CAM (Selvaraju et al., 2017): where in the image the model found its evidence.

The model is split at its last convolutional feature map: for the seed CNN the output of its
last ``Conv2D``, for a ``keras.applications`` backbone the feature map its average pooling
reads. The gradient of the disease score with respect to that map, averaged over space, weighs
each channel; the weighted sum, rectified and scaled to [0, 1], is the heat map. The score is the
output layer's logit, before its sigmoid or softmax (for several disease classes, the log-sum-exp
of theirs), as in the paper: a saturated probability has no gradient, and the most confident
cases, the ones a reviewer looks at first, would show nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import keras
import numpy as np

from medimg.layers import backbone_of

_CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


def split_at_feature_map(model: keras.Model) -> tuple[Callable, Callable, keras.layers.Dense]:
    """``(features, body, output)``: the model up to its last feature map, the layers from
    there to the output layer's input, and the output layer (a Dense with sigmoid or softmax).

    ``output(body(features(x)))`` is ``model(x)``.

    Raises:
        ValueError: when the model has no 2-D convolution to explain, or does not end in a
            Dense output layer.
    """
    backbone = backbone_of(model)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    output = layers[-1]
    if not isinstance(output, keras.layers.Dense):
        raise ValueError(f"model {model.name!r} ends in {type(output).__name__}, not the Dense "
                         "output layer medimg builds")
    if backbone is not None:
        pooling = backbone.layers[-1]
        if not isinstance(pooling, keras.layers.GlobalAveragePooling2D):
            raise ValueError(f"backbone ends in {type(pooling).__name__}, not the average "
                             "pooling medimg builds; Grad-CAM cannot find its feature map")
        inner = keras.Model(backbone.inputs, backbone.layers[-2].output)
        at = layers.index(backbone)
        features = _chain([*layers[:at], inner])
        rest = [pooling, *layers[at + 1:-1]]
    else:
        convs = [i for i, layer in enumerate(layers) if isinstance(layer, _CONV_TYPES)]
        if not convs:
            raise ValueError(f"model {model.name!r} has no 2-D convolution to explain")
        features = _chain(layers[:convs[-1] + 1])
        rest = layers[convs[-1] + 1:-1]
    return features, _chain(rest), output


def _chain(layers: Sequence[keras.layers.Layer]) -> Callable:
    """Medimg's models are a chain of layers (the backbone nested as one); call them in order."""

    def run(x):
        for layer in layers:
            x = layer(x, training=False)
        return x

    return run


def gradcam_maps(model: keras.Model, images: np.ndarray, positive: Sequence[int],
                 batch_size: int = 16) -> np.ndarray:
    """Heat maps ``(N, S, S)`` in [0, 1] for the classes in ``positive``.

    ``images`` are what the bundle's model takes: preprocessed pixels on a 0-255 scale.
    ``positive`` indexes the model's classes; a single-unit (sigmoid) model has one, index 1.
    A map with no positive evidence at all is zero everywhere, not noise scaled up.
    """
    import tensorflow as tf

    features, body, output = split_at_feature_map(model)
    kernel, bias = (tf.convert_to_tensor(w) for w in output.get_weights())
    size = images.shape[1:3]
    out = np.zeros((len(images), *size), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(np.asarray(images[start:start + batch_size], np.float32))
        fmap = features(batch)
        with tf.GradientTape() as tape:
            tape.watch(fmap)
            logits = tf.matmul(tf.cast(body(fmap), kernel.dtype), kernel) + bias
            if logits.shape[-1] == 1:  # sigmoid: the unit's logit is the positive class's
                score = logits[:, 0]
            else:
                score = tf.reduce_logsumexp(tf.gather(logits, list(positive), axis=1), axis=1)
        grads = tape.gradient(score, fmap)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        raw = tf.reduce_sum(weights * fmap, axis=-1).numpy()
        for i, cam in enumerate(raw):
            peak = float(cam.max())
            if peak <= 1e-6 * float(np.abs(cam).max()) or peak <= 0.0:
                continue  # nothing speaks for the class: an empty map
            scaled = np.maximum(cam, 0.0) / peak
            out[start + i] = cv2.resize(scaled.astype(np.float32), (size[1], size[0]),
                                        interpolation=cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0)


HEATMAP_ALPHA = 0.45
"""The heat map's opacity where the model looked hardest; the film stays readable beneath."""
LEAST_PANEL = 112
"""The smallest side in pixels of a film panel in the grid; smaller films are enlarged."""
_GAP = 2  # white pixels between the panels, and between the colour bar and its labels
_BAR = 14  # width in pixels of the colour bar
_LINE = 12  # height in pixels of a line of text in the default font
_TICKS = (1.0, 0.5, 0.0)  # labels on the colour bar, top to bottom


@dataclass(frozen=True)
class Box:
    """A rectangle of a picture, in pixels."""

    left: int
    top: int
    width: int
    height: int

    def of(self, pixels: np.ndarray) -> np.ndarray:
        """The part of ``pixels`` (H, W, ...) this box covers."""
        return pixels[self.top:self.top + self.height, self.left:self.left + self.width]


@dataclass(frozen=True)
class CaseLayout:
    """Where :func:`render_case` puts each panel; ``film`` is None when the film is left out."""

    width: int
    height: int
    film: Box | None
    overlay: Box
    bar: Box


def panel_scale(size: int) -> int:
    """The whole-number enlargement that makes a ``size``-pixel film at least
    :data:`LEAST_PANEL` pixels across (1 for films that already are)."""
    if size < 1:
        raise ValueError(f"film size {size} must be at least 1 pixel")
    return max(1, -(-LEAST_PANEL // size))


def case_layout(size: int, scale: int = 1, film_panel: bool = True,
                caption: str = "") -> CaseLayout:
    """The layout of :func:`render_case` for a ``size``-pixel film: caption lines on top, then
    film | heat map over the film | colour bar with its labels 1 (top) to 0 (bottom)."""
    if scale < 1:
        raise ValueError(f"scale {scale} must be a whole number of at least 1")
    font = _font()
    lines = caption.splitlines()
    top = len(lines) * _LINE + (_GAP if lines else 0)
    side = size * scale
    film = Box(0, top, side, side) if film_panel else None
    left = side + _GAP if film_panel else 0
    overlay = Box(left, top, side, side)
    bar = Box(left + side + _GAP, top, _BAR, side)
    labels = max(font.getlength(f"{tick:g}") for tick in _TICKS)
    width = bar.left + _BAR + _GAP + int(np.ceil(labels))
    width = max([width, *(int(np.ceil(font.getlength(line))) for line in lines)])
    return CaseLayout(width, top + side, film, overlay, bar)


def render_case(film: np.ndarray, cam: np.ndarray, scale: int = 1, film_panel: bool = True,
                caption: str = "") -> np.ndarray:
    """RGB pixels (H, W, 3) uint8 of one case, laid out as :func:`case_layout` says.

    Args:
        film: the image as the model saw it, (S, S, 1) or (S, S, 3) on a 0-255 scale.
        cam: its Grad-CAM map, (S, S) in [0, 1].
        scale: whole-number enlargement; each film pixel becomes ``scale`` x ``scale`` pixels,
            its value unchanged.
        film_panel: show the film by itself left of the overlay.
        caption: lines of text above the panels.
    """
    from PIL import Image, ImageDraw

    rgb = _film_rgb(film)
    cam = np.asarray(cam, np.float32)
    if cam.shape != rgb.shape[:2]:
        raise ValueError(f"heat map of shape {cam.shape} does not match the film's "
                         f"{rgb.shape[:2]}")
    cam = np.clip(cam, 0.0, 1.0)
    alpha = (HEATMAP_ALPHA * cam)[..., None]
    blended = np.rint(rgb * (1.0 - alpha) + _jet(cam).astype(np.float32) * alpha)
    layout = case_layout(rgb.shape[0], scale, film_panel, caption)
    canvas = np.full((layout.height, layout.width, 3), 255, np.uint8)
    panels = [(layout.overlay, blended.astype(np.uint8))]
    if layout.film is not None:
        panels.append((layout.film, rgb.astype(np.uint8)))
    for box, pixels in panels:
        box.of(canvas)[...] = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    ramp = np.linspace(1.0, 0.0, layout.bar.height, dtype=np.float32)
    layout.bar.of(canvas)[...] = _jet(np.repeat(ramp[:, None], _BAR, axis=1))
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    font = _font()
    for i, line in enumerate(caption.splitlines()):
        draw.text((0, i * _LINE), line, fill=(0, 0, 0), font=font)
    bar, x = layout.bar, layout.bar.left + _BAR + _GAP
    ticks = _TICKS if bar.height >= 3 * _LINE else (_TICKS[0], _TICKS[-1])
    for tick in ticks:
        y = bar.top + round((1.0 - tick) * (bar.height - 1))
        anchor = "lt" if tick == 1.0 else "lb" if tick == 0.0 else "lm"
        draw.text((x, y), f"{tick:g}", fill=(0, 0, 0), font=font, anchor=anchor)
    return np.asarray(picture)


def _film_rgb(film: np.ndarray) -> np.ndarray:
    """The film as float RGB (S, S, 3) of whole values 0-255: grey repeated into three channels."""
    pixels = np.asarray(film)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3) or pixels.shape[0] != pixels.shape[1]:
        raise ValueError(f"film of shape {pixels.shape} is not a square (S, S, 1) or "
                         "(S, S, 3) image as the model takes it")
    pixels = np.clip(np.rint(pixels.astype(np.float32)), 0, 255)
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


def _jet(values: np.ndarray) -> np.ndarray:
    """RGB uint8 colours of ``values`` in [0, 1] (2-D) on the jet colour map: blue low, red high."""
    levels = np.rint(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
    return cv2.applyColorMap(levels, cv2.COLORMAP_JET)[..., ::-1]


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()
