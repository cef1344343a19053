"""Decoded pixels to the channel count a model takes, one way everywhere.

Ingest's checks, hashing, preprocessing and every prediction path convert through
:func:`to_channels`, so a colour film becomes the same grey image wherever it is read.
"""

from __future__ import annotations

import numpy as np

# ITU-R BT.601 luma weights: colour to grey, as every decoder and check in medimg does it
LUMA = np.array([0.299, 0.587, 0.114])


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """Convert a decoded image to (H, W, channels) uint8, the same way every time."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == channels:
        return pixels
    if channels == 1:
        grey = pixels[:, :, :3].astype(np.float64) @ LUMA
        return np.clip(np.round(grey), 0, 255).astype(np.uint8)[:, :, None]
    return np.repeat(pixels[:, :, :1], channels, axis=2)
