"""The layers every saved model is made of, and finding a model's backbone."""

from __future__ import annotations

import keras
import numpy as np

from medimg.layers import BACKBONE, InputAdapter, backbone_of

SIZE = 32


def images(n: int, channels: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, SIZE, SIZE, channels)) * 255).astype(
        np.float32)


def test_input_adapter_config_round_trips():
    layer = InputAdapter(repeat=3, mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0],
                         reverse_channels=True, name="adapter")
    again = InputAdapter.from_config(layer.get_config())
    x = images(2, 1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(x)),
                               keras.ops.convert_to_numpy(layer(x)))
    assert again(x).shape == (2, SIZE, SIZE, 3)


def test_input_adapter_repeats_grey_and_normalises_each_channel():
    layer = InputAdapter(repeat=3, mean=[10.0, 20.0, 30.0], std=[2.0, 4.0, 5.0])
    out = keras.ops.convert_to_numpy(layer(np.full((1, 2, 2, 1), 50.0, dtype=np.float32)))
    np.testing.assert_allclose(out[0, 0, 0], [20.0, 7.5, 4.0])


def test_the_backbone_is_found_by_name_and_a_plain_model_has_none():
    inputs = keras.Input((SIZE, SIZE, 3))
    inner = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs), name=BACKBONE)
    outer_in = keras.Input((SIZE, SIZE, 3))
    outer = keras.Model(outer_in, keras.layers.GlobalAveragePooling2D()(inner(outer_in)))
    assert backbone_of(outer) is inner
    assert backbone_of(inner) is None
