"""The seed's three image steps: contrast enhancement, denoising, resizing.

One implementation serves the preprocess stage, evaluation and every prediction path, so a
deployed model sees its inputs exactly as it saw them in training.
"""

from __future__ import annotations

import cv2
import numpy as np

from medimg.channels import to_channels
from medimg.config import PreprocessConfig


def enhance_contrast(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """CLAHE or global histogram equalisation on a uint8 (H, W, C) image.

    Colour images are equalised on their lightness only, so hues do not shift.
    """
    if config.contrast == "none":
        return image
    if config.contrast == "clahe":
        clahe = cv2.createCLAHE(
            clipLimit=config.clahe_clip_limit,
            tileGridSize=(config.clahe_tile_grid, config.clahe_tile_grid),
        )
        equalise = clahe.apply
    else:
        equalise = cv2.equalizeHist
    if image.shape[2] == 1:
        return equalise(np.ascontiguousarray(image[:, :, 0]))[:, :, None]
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[:, :, 0] = equalise(np.ascontiguousarray(lab[:, :, 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def denoise(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Median or Gaussian filtering with ``preprocess.denoise_kernel``."""
    if config.denoise == "none":
        return image
    k = config.denoise_kernel
    out = cv2.medianBlur(image, k) if config.denoise == "median" else cv2.GaussianBlur(
        image, (k, k), 0)
    return out.reshape(image.shape)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size`` x ``size``: area averaging to shrink, bilinear to enlarge."""
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    interpolation = cv2.INTER_AREA if size < min(height, width) else cv2.INTER_LINEAR
    out = cv2.resize(image, (size, size), interpolation=interpolation)
    return out.reshape(size, size, image.shape[2])


def preprocess_image(
    pixels: np.ndarray, config: PreprocessConfig, image_size: int, channels: int
) -> np.ndarray:
    """Decoded pixels -> the model's uint8 (image_size, image_size, channels) input."""
    image = to_channels(pixels, channels)
    image = enhance_contrast(image, config)
    image = denoise(image, config)
    return resize(image, image_size)
