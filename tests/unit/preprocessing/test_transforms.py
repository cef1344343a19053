from __future__ import annotations

import numpy as np
import pytest

from medimg.config import PreprocessConfig
from medimg.preprocessing.transforms import denoise, enhance_contrast, preprocess_image, resize


def _low_contrast(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(100, 140, (64, 64, 1), dtype=np.uint8)


@pytest.mark.parametrize("method", ["clahe", "equalize"])
def test_contrast_enhancement_widens_the_intensity_range(method):
    image = _low_contrast()
    out = enhance_contrast(image, PreprocessConfig(contrast=method))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.ptp(out) > 2 * np.ptp(image)


def test_contrast_none_is_identity():
    image = _low_contrast()
    assert enhance_contrast(image, PreprocessConfig(contrast="none")) is image


def test_colour_contrast_keeps_three_channels():
    rng = np.random.default_rng(1)
    image = rng.integers(90, 150, (32, 32, 3), dtype=np.uint8)
    out = enhance_contrast(image, PreprocessConfig(contrast="clahe"))
    assert out.shape == (32, 32, 3)
    # lightness is stretched...
    assert np.ptp(out.mean(axis=2)) > 1.5 * np.ptp(image.mean(axis=2))
    # ...while the colour of each pixel keeps its dominant channel mostly
    assert (out.argmax(axis=2) == image.argmax(axis=2)).mean() > 0.6


@pytest.mark.parametrize("method", ["median", "gaussian"])
def test_denoising_reduces_pixel_noise(method):
    rng = np.random.default_rng(4)
    image = np.clip(128 + rng.normal(0, 20, (32, 32, 1)), 0, 255).astype(np.uint8)
    out = denoise(image, PreprocessConfig(denoise=method, denoise_kernel=3))
    assert out.shape == image.shape
    assert out.std() < 0.7 * image.std()


def test_median_removes_isolated_outlier_exactly():
    image = np.full((9, 9, 1), 50, dtype=np.uint8)
    image[4, 4] = 255
    out = denoise(image, PreprocessConfig(denoise="median", denoise_kernel=3))
    assert out[4, 4, 0] == 50


@pytest.mark.parametrize("size", [32, 64, 200])
def test_resize_to_square(size):
    image = np.zeros((100, 150, 1), dtype=np.uint8)
    image[:, 75:] = 200
    out = resize(image, size)
    assert out.shape == (size, size, 1)
    # the left half stays dark and the right half bright after resizing
    assert out[:, : size // 3].mean() < 20 and out[:, -size // 3:].mean() > 180


def test_pipeline_converts_channels_and_size():
    rgb = np.random.default_rng(2).integers(0, 255, (80, 60, 3), dtype=np.uint8)
    out = preprocess_image(rgb, PreprocessConfig(), image_size=48, channels=1)
    assert out.shape == (48, 48, 1) and out.dtype == np.uint8
    grey = np.random.default_rng(3).integers(0, 255, (80, 60), dtype=np.uint8)
    assert preprocess_image(grey, PreprocessConfig(), 48, 3).shape == (48, 48, 3)
