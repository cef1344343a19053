"""Decoding image files into arrays, the same way for ingest, preprocessing and serving."""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"})


class UndecodableImage(Exception):
    """A file that is not a readable image; its message is the quarantine reason."""


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    channels: int


def is_dicom(data: bytes) -> bool:
    """True for bytes that carry the DICOM preamble ('DICM' at offset 128)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _decode_dicom(data: bytes) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        pixels = ds.pixel_array.astype(np.float64)
    except Exception as exc:
        raise UndecodableImage(f"DICOM pixel data cannot be decoded: {exc}") from None
    if pixels.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1:
        pixels = pixels[pixels.shape[0] // 2]
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    pixels = pixels * slope + intercept
    if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = pixels.max() - pixels
    return _to_uint8(pixels)


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    lo, hi = float(np.min(pixels)), float(np.max(pixels))
    if hi <= lo:
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.round((pixels - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _pil_to_array(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _to_uint8(np.asarray(image, dtype=np.float64))
    if image.mode in ("1", "L", "P", "LA", "PA"):
        image = image.convert("RGBA" if image.mode in ("P", "PA") and "transparency" in
                              image.info else "L")
    if image.mode in ("RGBA", "LA", "CMYK", "YCbCr", "HSV", "LAB", "RGBX"):
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, BMP, TIFF or DICOM) into uint8 (H, W) or (H, W, 3).

    Raises:
        UndecodableImage: with the reason, when the bytes are not a complete image.
    """
    if not data:
        raise UndecodableImage("empty file (0 bytes)")
    if is_dicom(data):
        return _decode_dicom(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                return _pil_to_array(image)
    except UnidentifiedImageError:
        raise UndecodableImage("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UndecodableImage(f"truncated or corrupt image data: {exc}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UndecodableImage(f"too many pixels (decompression bomb guard): {exc}") from None


def read_image(path: Path) -> np.ndarray:
    """Read and decode one image file. See :func:`decode_image`."""
    return decode_image(Path(path).read_bytes())


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """Convert a decoded image to (H, W, channels) uint8, the same way every time."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == channels:
        return pixels
    if channels == 1:
        # ITU-R 601 luma, as Pillow's convert("L")
        weights = np.array([0.299, 0.587, 0.114])
        grey = pixels[:, :, :3].astype(np.float64) @ weights
        return np.clip(np.round(grey), 0, 255).astype(np.uint8)[:, :, None]
    return np.repeat(pixels[:, :, :1], channels, axis=2)


def describe(pixels: np.ndarray) -> ImageInfo:
    height, width = pixels.shape[:2]
    return ImageInfo(width=width, height=height, channels=1 if pixels.ndim == 2 else pixels.shape[2])
