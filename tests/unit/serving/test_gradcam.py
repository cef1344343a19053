"""Grad-CAM heat maps: they point at the evidence, on every architecture medimg builds."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from medimg.config import parse_config
from medimg.serving.gradcam import gradcam_maps, split_at_feature_map
from medimg.training.models import build_model


def _bright_square_detector(size: int = 16, bias: float = 0.0) -> keras.Model:
    """Channel 0 of its convolution fires on bright pixels, channel 1 on dark ones; the head
    counts bright as disease and dark as its absence."""
    inputs = keras.Input((size, size, 1))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    conv = keras.layers.Conv2D(2, 1, activation="relu")
    x = conv(x)
    x = keras.layers.Flatten()(x)
    head = keras.layers.Dense(1, activation="sigmoid")
    out = head(x)
    model = keras.Model(inputs, out)
    conv.set_weights([np.array([[[[1.0, -1.0]]]]), np.array([0.0, 1.0])])
    per_pixel = np.tile(np.array([[0.05, -0.05]]), (size * size, 1)).reshape(-1, 1)
    head.set_weights([per_pixel, np.full(1, bias)])
    return model


def test_the_heat_map_lies_on_the_evidence_and_nowhere_else():
    image = np.zeros((1, 16, 16, 1), dtype=np.float32)
    image[0, 2:7, 9:14] = 255.0  # a bright lesion, top right
    cam = gradcam_maps(_bright_square_detector(), image, [1])[0]
    assert cam.shape == (16, 16)
    assert cam[2:7, 9:14].min() == pytest.approx(1.0)
    lesion = np.zeros((16, 16), bool)
    lesion[2:7, 9:14] = True
    assert cam[~lesion].max() == 0.0


def test_a_certain_model_still_shows_where_its_certainty_comes_from():
    image = np.zeros((1, 16, 16, 1), dtype=np.float32)
    image[0, 2:7, 9:14] = 255.0
    certain = _bright_square_detector(bias=60.0)
    assert float(certain(image)[0, 0]) == 1.0  # the probability saturates in float32
    cam = gradcam_maps(certain, image, [1])[0]
    assert cam[2:7, 9:14].min() == pytest.approx(1.0) and cam.sum() == pytest.approx(25.0)


def test_an_image_without_evidence_has_an_empty_map_not_scaled_noise():
    dark = np.zeros((1, 16, 16, 1), dtype=np.float32)
    assert not gradcam_maps(_bright_square_detector(), dark, [1]).any()


@pytest.mark.parametrize("architecture", ["seed_cnn", "resnet50", "densenet121",
                                          "efficientnetb0"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_every_architecture_is_explained_after_a_save_and_load(tmp_path, architecture,
                                                               n_classes):
    config = parse_config({"model": {"architecture": architecture}}).model
    model = build_model(64, 1, n_classes, config)
    model.save(tmp_path / "model.keras")
    model = keras.saving.load_model(tmp_path / "model.keras")
    images = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 1)).astype(np.float32)

    features, body, output = split_at_feature_map(model)
    fmap = features(images)
    assert len(fmap.shape) == 4 and fmap.shape[1] >= 2  # a spatial map, before any pooling
    # split and put back together, the model says what it says whole
    whole = np.asarray(model(images, training=False))
    assert np.asarray(output(body(fmap))) == pytest.approx(whole, abs=1e-5)
    cams = gradcam_maps(model, images, [n_classes - 1])
    assert cams.shape == (3, 64, 64)
    assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0


def test_a_model_without_convolutions_is_refused_by_name():
    inputs = keras.Input((8, 8, 1))
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs))
    with pytest.raises(ValueError, match="no 2-D convolution"):
        split_at_feature_map(keras.Model(inputs, out, name="flat"))
