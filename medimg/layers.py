"""The layers and model structure every path that loads a saved model needs.

Training builds models from these, the bundle loads them (importing this module registers the
custom layers with Keras), and Grad-CAM finds the backbone through :func:`backbone_of`. Only
``keras.*`` is used, so a saved model loads under any Keras 3 backend.
"""

from __future__ import annotations

import keras

# the name of the nested keras.applications backbone inside a fine-tuned model
BACKBONE = "backbone"


@keras.saving.register_keras_serializable(package="medimg")
class InputAdapter(keras.layers.Layer):
    """Greyscale to RGB by repetition, then the backbone's own input normalisation.

    A layer (not a Lambda) so a saved model reloads in safe mode.
    """

    def __init__(self, repeat: int = 1, mean: list[float] | None = None,
                 std: list[float] | None = None, reverse_channels: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.repeat = repeat
        self.mean = mean
        self.std = std
        self.reverse_channels = reverse_channels

    def call(self, inputs):
        x = inputs
        if self.repeat > 1:
            x = keras.ops.repeat(x, self.repeat, axis=-1)
        if self.reverse_channels:
            x = keras.ops.flip(x, axis=-1)
        if self.mean is not None:
            mean, std = self.mean, self.std
            if self.reverse_channels:
                mean, std = mean[::-1], std[::-1]
            channels = x.shape[-1]
            mean = keras.ops.convert_to_tensor(mean[:channels] if channels > 1 else [
                sum(mean) / len(mean)], dtype=x.dtype)
            std = keras.ops.convert_to_tensor(std[:channels] if channels > 1 else [
                sum(std) / len(std)], dtype=x.dtype)
            x = (x - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] * self.repeat)

    def get_config(self) -> dict:
        return {**super().get_config(), "repeat": self.repeat, "mean": self.mean,
                "std": self.std, "reverse_channels": self.reverse_channels}


def backbone_of(model: keras.Model) -> keras.Model | None:
    """The nested backbone, or None for the seed CNN."""
    try:
        return model.get_layer(BACKBONE)
    except ValueError:
        return None
