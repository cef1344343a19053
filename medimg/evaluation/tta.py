"""Test-time augmentation: the mean prediction over a few views of each image.

View 0 is the image itself; the others are warped with the affine augmentation the model was
trained with (the ranges the bundle records), never wider, and flipped only when training
flipped. Views are drawn from fixed seeds, so the same images always give the same
probabilities, and images keep their order: row i of the result is image i.
"""

from __future__ import annotations

import numpy as np

from medimg.bundle import ModelBundle
from medimg.config import AugmentConfig


def tta_probs(bundle: ModelBundle, images: np.ndarray, views: int, seed: int,
              augment: AugmentConfig | None = None, batch_size: int = 64,
              plain: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities ``(N, K)`` averaged over ``views`` views (0 or 1: the image alone).

    ``augment`` defaults to the ranges stored in the bundle; a bundle without them (made before
    they were stored), or trained without augmentation, gets the image alone: ``plain`` (the
    single-view prediction, when the caller has it) is returned as it is.
    """
    import tensorflow as tf

    from medimg.training.augment import augment_batch, is_identity

    if plain is None:
        plain = bundle.predict_packed(images, batch_size)
    if augment is None:
        augment = AugmentConfig(**bundle.meta.augment) if bundle.meta.augment else None
    if views <= 1 or augment is None or is_identity(augment) or len(images) == 0:
        return plain
    total = plain.copy()
    for view in range(1, views):
        warped = np.empty(images.shape, np.uint8)
        for start in range(0, len(images), batch_size):
            batch = np.asarray(images[start:start + batch_size])
            pair = tf.constant([seed, view * 1_000_003 + start], tf.int64)
            out = augment_batch(tf.convert_to_tensor(batch), augment, pair).numpy()
            warped[start:start + len(batch)] = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        total += bundle.predict_packed(warped, batch_size)
    return total / views
