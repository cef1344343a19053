"""Model architectures, selected by ``model.architecture``.

Every model takes uint8-range floats ``(S, S, C)`` and does its own scaling, so all callers feed
the same thing, and ends in a float32 probability head, so mixed precision never reaches the
loss or the saved outputs. Only ``keras.*`` is used here, so the models run under any Keras 3
backend.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from medimg.config import ModelConfig
from medimg.errors import ConfigError
from medimg.layers import BACKBONE, InputAdapter, backbone_of

# ImageNet input conventions of each family, as (mean, std) on a 0-255 scale per RGB channel.
# ResNet50's "caffe" weights also expect BGR order; see InputAdapter.
_CAFFE = ([123.68, 116.779, 103.939], [1.0, 1.0, 1.0])
_TORCH = ([0.485 * 255, 0.456 * 255, 0.406 * 255], [0.229 * 255, 0.224 * 255, 0.225 * 255])
_BACKBONES = {
    "resnet50": (keras.applications.ResNet50, _CAFFE, True),
    "densenet121": (keras.applications.DenseNet121, _TORCH, False),
    # EfficientNet rescales and normalises inside the network: it takes 0-255 as it is
    "efficientnetb0": (keras.applications.EfficientNetB0, None, False),
}


def _head(x, n_classes: int):
    """The probability layer, always float32."""
    if n_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    return keras.layers.Dense(n_classes, activation="softmax", dtype="float32",
                              name="probability")(x)


def build_seed_cnn(
    image_size: int, channels: int, n_classes: int, config: ModelConfig
) -> keras.Model:
    """The seed design's small CNN (the baseline).

    Two classes get one sigmoid unit (the positive class's probability), more get softmax.
    """
    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    for filters in config.filters:
        x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(config.dense_units, activation="relu")(x)
    x = keras.layers.Dropout(config.dropout)(x)
    return keras.Model(inputs, _head(x, n_classes), name=config.architecture)


def stem_downsamples(image_size: int, target: int = 32) -> int:
    """How many stride-2 steps the residual CNN's stem takes: enough to bring a large image near
    ``target`` pixels before the residual stages, none for a small one (28 px stays 28)."""
    steps = 0
    while image_size / 2 ** (steps + 1) >= target:
        steps += 1
    return steps


# moving statistics that settle within a few dozen steps: small medical sets give few steps per
# epoch, and with Keras's 0.99 a model evaluated after a few epochs normalises with statistics
# still near their initial values (validation then collapses to one class)
BN_MOMENTUM = 0.9


def _conv_bn(x, filters: int, strides: int = 1, relu: bool = True, name: str = ""):
    x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def _residual_block(x, filters: int, strides: int, name: str):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                                       kernel_initializer="he_normal", name=f"{name}_proj")(x)
        shortcut = keras.layers.BatchNormalization(momentum=BN_MOMENTUM,
                                                   name=f"{name}_proj_bn")(shortcut)
    y = _conv_bn(x, filters, strides, name=f"{name}_a")
    y = _conv_bn(y, filters, relu=False, name=f"{name}_b")
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)


def build_residual_trunk(image_size: int, channels: int, stages: list[int]) -> keras.Model:
    """The residual CNN's convolutional trunk, named ``backbone``, ending in average pooling.

    A stem (a 3x3 convolution, and for large images stride-2 steps, the first convolution
    itself striding, see :func:`stem_downsamples`), then one basic residual block (two 3x3
    convolutions with batch normalisation, He et al. 2016) per entry of ``stages``, each after
    the first halving the map. Scaling to [0, 1] happens inside, so it takes the same 0-255
    input as every model.
    """
    inputs = keras.Input((image_size, image_size, channels), name="pixels")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    steps = stem_downsamples(image_size)
    # a large film's first convolution already strides: none runs at full resolution
    x = _conv_bn(x, stages[0], strides=2 if steps else 1, name="stem")
    for step in range(1, steps):
        x = _conv_bn(x, stages[0], strides=2, name=f"stem_down{step}")
    for i, filters in enumerate(stages):
        x = _residual_block(x, filters, 1 if i == 0 else 2, name=f"stage{i}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name=BACKBONE)


def build_residual_cnn(
    image_size: int, channels: int, n_classes: int, config: ModelConfig
) -> keras.Model:
    """A compact residual CNN for small medical data sets: batch normalisation, global average
    pooling instead of a large dense layer, and a dropout before the float32 head.

    The trunk is nested as the ``backbone`` layer, so Grad-CAM reads the map its pooling reads.
    """
    trunk = build_residual_trunk(image_size, channels, list(config.stages))
    return wrap_backbone(trunk, channels, n_classes, config.dropout, name=config.architecture)


def resolve_weights(weights: str | None, root: Path | None = None) -> Path | None:
    """The local weights file, or None. Relative paths are taken from the workspace root.

    Raises:
        ConfigError: when the file does not exist.
    """
    if weights is None:
        return None
    path = Path(weights).expanduser()
    if not path.is_absolute() and root is not None:
        path = root / path
    if not path.is_file():
        raise ConfigError(
            f"model.weights = {weights!r}: no such file; medimg downloads nothing, so put the "
            "backbone's include_top=False weights there or set model.weights: null"
        )
    return path


def _efficientnet_imagenet_scaling(backbone: keras.Model) -> tuple[list[float], list[float]]:
    """The input scaling Keras adds to EfficientNet only for ``weights="imagenet"``.

    Keras divides the normalised input once more by sqrt(ImageNet std), a layer without weights
    that a weights file cannot carry. Folded in front as ``(x - a) / s`` on the 0-255 input,
    using the normalisation mean loaded from the file.
    """
    norm = next(layer for layer in backbone.layers
                if isinstance(layer, keras.layers.Normalization))
    mean = np.asarray(keras.ops.convert_to_numpy(norm.adapt_mean), dtype=float).reshape(-1)
    k = 1.0 / np.sqrt(np.asarray(_TORCH[1]) / 255.0)
    shift = -255.0 * mean * (1.0 - k) / k
    return [float(v) for v in shift], [float(v) for v in 1.0 / k]


def build_backbone_model(
    image_size: int, channels: int, n_classes: int, config: ModelConfig,
    weights: Path | None = None,
) -> keras.Model:
    """A keras.applications backbone, global-average pooled, with a dropout and float32 head.

    Without weights the backbone takes the images' own channel count. With weights (made for
    RGB), greyscale images are repeated to three channels so the first convolution is reused as
    trained.
    """
    factory, norm, caffe = _BACKBONES[config.architecture]
    in_channels = 3 if weights is not None else channels
    repeat = 3 if (weights is not None and channels == 1) else 1
    mean, std = norm if norm else (None, None)
    backbone = factory(
        include_top=False,
        weights=str(weights) if weights is not None else None,
        input_shape=(image_size, image_size, in_channels),
        pooling="avg",
        name=BACKBONE,
    )
    if config.architecture == "efficientnetb0" and weights is not None:
        mean, std = _efficientnet_imagenet_scaling(backbone)
    adapter = InputAdapter(repeat=repeat, mean=mean, std=std,
                           reverse_channels=caffe and in_channels == 3, name="input_adapter")
    return wrap_backbone(backbone, channels, n_classes, config.dropout, adapter,
                         name=config.architecture)


def wrap_backbone(backbone: keras.Model, channels: int, n_classes: int, dropout: float,
                  adapter: InputAdapter | None = None, name: str | None = None) -> keras.Model:
    """The classifier around a pooled backbone: input adapter, backbone, dropout, float32 head.

    The backbone stays one nested layer, which must be named ``backbone`` so fine-tuning and
    Grad-CAM find it. Keras 3 passes ``fit``'s ``training=True`` down to nested layers whatever
    they were called with, so calling the backbone with ``training=False`` would not keep its
    batch normalisation fixed during fine-tuning; ``set_backbone_trainable`` does.
    """
    if backbone.name != BACKBONE:
        raise ValueError(f"the backbone is named {backbone.name!r}; name it {BACKBONE!r} so "
                         "fine-tuning and Grad-CAM can find it")
    image_size = backbone.input_shape[1]
    inputs = keras.Input((image_size, image_size, channels), name="image")
    adapter = adapter or InputAdapter(name="input_adapter")
    x = backbone(adapter(inputs))
    x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, _head(x, n_classes), name=name)


def build_model(
    image_size: int, channels: int, n_classes: int, config: ModelConfig,
    weights: Path | None = None,
) -> keras.Model:
    if config.architecture == "seed_cnn":
        return build_seed_cnn(image_size, channels, n_classes, config)
    if config.architecture == "residual_cnn":
        return build_residual_cnn(image_size, channels, n_classes, config)
    return build_backbone_model(image_size, channels, n_classes, config, weights)


def batchnorm_layers(layer: keras.layers.Layer) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer in ``layer``, nested models included."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [layer]
    return [bn for inner in getattr(layer, "layers", []) for bn in batchnorm_layers(inner)]


def set_backbone_trainable(model: keras.Model, trainable: bool,
                           freeze_batchnorm: bool = False) -> None:
    """Freeze or unfreeze the nested backbone; the seed CNN has none and is left as it is.

    With ``freeze_batchnorm`` the backbone's BatchNormalization layers stay frozen while the rest
    trains. A frozen BatchNormalization layer runs in inference mode in Keras 3: it normalises
    with the moving mean and variance it came with and never updates them, and its scale and
    offset stay fixed, as in Keras's transfer-learning guide. Compile after calling this.
    """
    backbone = backbone_of(model)
    if backbone is None:
        return
    backbone.trainable = trainable
    # each one explicitly: under TensorFlow, assigning the backbone the trainable value it
    # already has is skipped and does not reach a layer that was frozen on its own
    for layer in batchnorm_layers(backbone):
        layer.trainable = trainable and not freeze_batchnorm
