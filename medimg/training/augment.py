"""The seed's augmentation as Keras preprocessing layers over whole batches."""

from __future__ import annotations

import keras

from medimg.config import AugmentConfig


def build_augmenter(config: AugmentConfig, seed: int) -> keras.Sequential:
    """Rotation, shift, shear and zoom (and an optional horizontal flip), for training only.

    Each layer draws an independent transform per image of the batch.
    """
    fill = config.fill_mode
    layers: list[keras.layers.Layer] = []
    if config.rotation_degrees:
        layers.append(keras.layers.RandomRotation(
            config.rotation_degrees / 360.0, fill_mode=fill, seed=seed))
    if config.width_shift or config.height_shift:
        layers.append(keras.layers.RandomTranslation(
            config.height_shift, config.width_shift, fill_mode=fill, seed=seed + 1))
    if config.shear:
        layers.append(keras.layers.RandomShear(
            x_factor=config.shear, y_factor=config.shear, fill_mode=fill, seed=seed + 2))
    if config.zoom:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode=fill, seed=seed + 3))
    if config.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 4))
    return keras.Sequential(layers, name="augment")
