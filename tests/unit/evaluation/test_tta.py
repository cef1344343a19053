"""Test-time augmentation: views within the trained ranges, rows kept in order."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from medimg.bundle import BundleMeta, ModelBundle
from medimg.config import AugmentConfig
from medimg.evaluation.tta import tta_probs

SIZE = 32


def _side_model() -> keras.Model:
    """P(disease) from how much brighter the left half is than the right: a flip would invert
    every answer, a small warp changes none."""
    inputs = keras.Input((SIZE, SIZE, 1))
    flat = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")
    out = dense(flat)
    side = np.zeros((SIZE, SIZE), np.float32)
    side[:, : SIZE // 2], side[:, SIZE // 2:] = 1.0, -1.0
    dense.set_weights([side.reshape(-1, 1) * 4.0 / (SIZE * SIZE * 255 / 2), np.zeros(1)])
    return keras.Model(inputs, out)


def _films(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Half-bright films: the bright half is the left one for the disease class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = np.zeros((n, SIZE, SIZE, 1), np.uint8)
    for i, label in enumerate(labels):
        level = rng.integers(150, 250)
        if label:
            images[i, :, : SIZE // 2] = level
        else:
            images[i, :, SIZE // 2:] = level
    return images, labels


def _bundle(augment: AugmentConfig) -> ModelBundle:
    return ModelBundle(_side_model(), BundleMeta(["normal", "disease"], SIZE, 1, {},
                                                 augment=augment.model_dump(mode="json")))


def test_tta_predictions_stay_aligned_with_their_labels():
    images, labels = _films(37)
    bundle = _bundle(AugmentConfig())
    probs = tta_probs(bundle, images, views=6, seed=42, batch_size=8)
    assert probs.shape == (37, 2) and np.allclose(probs.sum(axis=1), 1.0)
    assert ((probs[:, 1] >= 0.5) == labels.astype(bool)).all()
    # the same images in another order give the same rows in that order
    order = np.random.default_rng(1).permutation(37)
    again = tta_probs(bundle, images[order], views=6, seed=42, batch_size=8)
    assert ((again[:, 1] >= 0.5) == labels[order].astype(bool)).all()
    # the views really are warps, drawn the same way every time
    plain = bundle.predict_packed(images)
    assert not np.allclose(probs, plain)
    assert np.array_equal(probs, tta_probs(bundle, images, views=6, seed=42, batch_size=8))


def test_no_flip_unless_training_flipped():
    images, labels = _films(24, seed=2)
    # horizontal flips in half of the views pull the side model's answers towards 1/2
    flipped = tta_probs(_bundle(AugmentConfig(horizontal_flip=True, rotation_degrees=0,
                                              width_shift=0, height_shift=0, shear=0, zoom=0)),
                        images, views=8, seed=42)
    kept = tta_probs(_bundle(AugmentConfig(rotation_degrees=0, width_shift=0, height_shift=0,
                                           shear=0, zoom=0.05)), images, views=8, seed=42)
    margin = lambda p: np.abs(p[:, 1] - 0.5).mean()  # noqa: E731
    assert margin(flipped) < margin(kept) / 2
    assert ((kept[:, 1] >= 0.5) == labels.astype(bool)).all()


@pytest.mark.parametrize("views", [0, 1])
def test_one_view_or_none_is_the_plain_prediction(views: int):
    images, _ = _films(10)
    bundle = _bundle(AugmentConfig())
    assert np.array_equal(tta_probs(bundle, images, views=views, seed=1),
                          bundle.predict_packed(images))


def test_a_bundle_that_trained_without_augmentation_gets_the_image_alone():
    images, _ = _films(10)
    bundle = ModelBundle(_side_model(), BundleMeta(["normal", "disease"], SIZE, 1, {}))
    assert np.array_equal(tta_probs(bundle, images, views=5, seed=1),
                          bundle.predict_packed(images))
