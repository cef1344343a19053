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
