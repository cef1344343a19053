"""Grad-CAM (Selvaraju et al., 2017): where in the image the model found its evidence.

The model is split at its last convolutional feature map: for the seed CNN the output of its
last ``Conv2D``, for a ``keras.applications`` backbone the feature map its average pooling
reads. The gradient of the disease probability with respect to that map, averaged over space,
weighs each channel; the weighted sum, rectified and scaled to [0, 1], is the heat map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import keras
import numpy as np

from medimg.training.models import backbone_of

_CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


def split_at_feature_map(model: keras.Model) -> tuple[keras.Model, Callable]:
    """``(features, head)``: the model up to its last feature map, and the rest as a function.

    Raises:
        ValueError: when the model has no 2-D convolution to explain.
    """
    backbone = backbone_of(model)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if backbone is not None:
        pooling = backbone.layers[-1]
        if not isinstance(pooling, keras.layers.GlobalAveragePooling2D):
            raise ValueError(f"backbone ends in {type(pooling).__name__}, not the average "
                             "pooling medimg builds; Grad-CAM cannot find its feature map")
        inner = keras.Model(backbone.inputs, backbone.layers[-2].output)
        at = layers.index(backbone)
        features = _chain([*layers[:at], inner])
        rest = [pooling, *layers[at + 1:]]
    else:
        convs = [i for i, layer in enumerate(layers) if isinstance(layer, _CONV_TYPES)]
        if not convs:
            raise ValueError(f"model {model.name!r} has no 2-D convolution to explain")
        features = _chain(layers[:convs[-1] + 1])
        rest = layers[convs[-1] + 1:]
    return features, _chain(rest)


def _chain(layers: Sequence[Callable]) -> Callable:
    """Medimg's models are a chain of layers (the backbone nested as one); call them in order."""

    def run(x):
        for layer in layers:
            x = layer(x, training=False) if isinstance(layer, keras.layers.Layer) else layer(x)
        return x

    return run


def gradcam_maps(model: keras.Model, images: np.ndarray, positive: Sequence[int],
                 batch_size: int = 16) -> np.ndarray:
    """Heat maps ``(N, S, S)`` in [0, 1] for the probability of the classes in ``positive``.

    ``images`` are what the bundle's model takes: preprocessed pixels on a 0-255 scale.
    ``positive`` indexes the model's classes; a single-unit (sigmoid) model has one, index 1.
    A map with no positive evidence at all is zero everywhere, not noise scaled up.
    """
    import tensorflow as tf

    features, head = split_at_feature_map(model)
    size = images.shape[1:3]
    out = np.zeros((len(images), *size), dtype=np.float32)
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(np.asarray(images[start:start + batch_size], np.float32))
        fmap = features(batch)
        with tf.GradientTape() as tape:
            tape.watch(fmap)
            probs = head(fmap)
            if probs.shape[-1] == 1:  # sigmoid: the unit is the positive class's probability
                score = probs[:, 0]
            else:
                score = tf.reduce_sum(tf.gather(probs, list(positive), axis=1), axis=1)
        grads = tape.gradient(score, fmap)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1)).numpy()
        for i, cam in enumerate(cams):
            peak = float(cam.max())
            scaled = cam / peak if peak > 1e-12 else np.zeros_like(cam)
            out[start + i] = cv2.resize(scaled.astype(np.float32), (size[1], size[0]),
                                        interpolation=cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0)
