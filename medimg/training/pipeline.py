"""tf.data input pipelines over the packed uint8 arrays."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from medimg.config import Config
from medimg.training.augment import build_augmenter


def _targets(labels: np.ndarray, n_classes: int) -> np.ndarray:
    if n_classes == 2:
        return labels.astype(np.float32)[:, None]
    return np.eye(n_classes, dtype=np.float32)[labels]


def make_dataset(
    images: np.ndarray, labels: np.ndarray, config: Config, training: bool
) -> tf.data.Dataset:
    """Shuffle (training only), batch, augment whole batches (training only), prefetch.

    The evaluation path neither shuffles nor augments, so predictions stay aligned with labels.
    """
    n_classes = len(config.base.class_names)
    dataset = tf.data.Dataset.from_tensor_slices((images, _targets(labels, n_classes)))
    if training:
        dataset = dataset.shuffle(
            min(config.train.shuffle_buffer, len(images)),
            seed=config.base.seed,
            reshuffle_each_iteration=True,
        )
    dataset = dataset.batch(config.train.batch_size)
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y),
                          num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        augmenter = build_augmenter(config.augment, config.base.seed)
        dataset = dataset.map(lambda x, y: (augmenter(x, training=True), y),
                              num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
