"""Model architectures, selected by ``model.architecture``."""

from __future__ import annotations

import keras

from medimg.config import ModelConfig


def build_seed_cnn(
    image_size: int, channels: int, n_classes: int, config: ModelConfig
) -> keras.Model:
    """The seed design's small CNN.

    Inputs are uint8-range floats; the model rescales them itself, so every caller feeds the same
    thing. Two classes get one sigmoid unit (the positive class's probability), more get softmax.
    """
    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    for filters in config.filters:
        x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(config.dense_units, activation="relu")(x)
    x = keras.layers.Dropout(config.dropout)(x)
    if n_classes == 2:
        outputs = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    else:
        outputs = keras.layers.Dense(n_classes, activation="softmax", name="probability")(x)
    return keras.Model(inputs, outputs, name=config.architecture)


def build_model(image_size: int, channels: int, n_classes: int, config: ModelConfig) -> keras.Model:
    builders = {"seed_cnn": build_seed_cnn}
    return builders[config.architecture](image_size, channels, n_classes, config)
