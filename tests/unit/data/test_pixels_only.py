"""Pixels-only copies: every place an identifier could hide in an image file is taken out, and
not one pixel changes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from medimg.data.images import decode
from medimg.data.pixels_only import (
    PIXEL_CHUNKS,
    png_chunks,
    pixels_only_copy,
    strip_jpeg,
    strip_png,
)

PLANTED = ("DOE^JANE", "MRN-770-QX", "19610704", "ICC-DESC-ST-ELSEWHERE")


def _pixels(channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(7)
    shape = (48, 64, 3) if channels == 3 else (48, 64)
    return rng.integers(0, 255, shape, dtype=np.uint8)


def _exif(orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[0x010E] = f"{PLANTED[0]} {PLANTED[1]}"  # ImageDescription
    exif[0x013B] = PLANTED[0]  # Artist
    exif[0x0112] = orientation
    return exif.tobytes()


def _png_with_text(pixels: np.ndarray) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Patient", PLANTED[0])
    info.add_itxt("MRN", PLANTED[1])
    info.add_text("DOB", PLANTED[2], zip=True)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", pnginfo=info, exif=_exif(),
                                 icc_profile=PLANTED[3].encode() * 8)
    return buffer.getvalue()


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def _assert_clean(data: bytes) -> None:
    for value in PLANTED:
        assert value.encode() not in data, value


@pytest.mark.parametrize("channels", [1, 3])
def test_png_keeps_its_pixel_chunks_and_nothing_else(channels):
    pixels = _pixels(channels)
    data = _png_with_text(pixels)
    assert {b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"iCCP"} <= set(png_chunks(data))
    stripped = strip_png(data)
    assert set(png_chunks(stripped)) <= PIXEL_CHUNKS
    _assert_clean(stripped)
    np.testing.assert_array_equal(decode(stripped).pixels, decode(data).pixels)


def test_sixteen_bit_png_stays_sixteen_bit():
    pixels = np.random.default_rng(3).integers(0, 65535, (40, 40), dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    stripped = strip_png(buffer.getvalue())
    assert decode(stripped).bit_depth == 16
    np.testing.assert_array_equal(decode(stripped).pixels, decode(buffer.getvalue()).pixels)


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_loses_exif_comments_and_icc_without_re_encoding(progressive):
    pixels = _pixels()
    data = _jpeg(pixels, exif=_exif(), comment=PLANTED[1].encode(), progressive=progressive,
                 icc_profile=PLANTED[3].encode() * 8)
    for value in PLANTED[:2]:
        assert value.encode() in data
    stripped = strip_jpeg(data)
    _assert_clean(stripped)
    assert len(stripped) < len(data)
    # the entropy-coded data is copied, not re-encoded: the decoded pixels are identical
    np.testing.assert_array_equal(decode(stripped).pixels, decode(data).pixels)


def test_cmyk_jpeg_keeps_its_colour_transform():
    buffer = io.BytesIO()
    Image.fromarray(_pixels()).convert("CMYK").save(buffer, "JPEG", comment=b"DOE^JANE")
    data = buffer.getvalue()
    stripped = strip_jpeg(data)
    _assert_clean(stripped)
    np.testing.assert_array_equal(decode(stripped).pixels, decode(data).pixels)


def test_a_rotating_exif_orientation_becomes_a_png_of_the_turned_pixels():
    data = _jpeg(_pixels(), exif=_exif(orientation=6))
    decoded = decode(data)
    assert decoded.pixels.shape[:2] == (64, 48)  # EXIF orientation 6 turns the image
    copy, suffix = pixels_only_copy(data, "jpeg", lambda: decoded.pixels)
    assert suffix == ".png" and set(png_chunks(copy)) <= PIXEL_CHUNKS
    _assert_clean(copy)
    np.testing.assert_array_equal(decode(copy).pixels, decoded.pixels)


@pytest.mark.parametrize("fmt", ["TIFF", "BMP"])
def test_other_formats_become_pngs_of_their_decoded_pixels(fmt):
    buffer = io.BytesIO()
    image = Image.fromarray(_pixels())
    if fmt == "TIFF":
        image.save(buffer, fmt, tiffinfo={270: f"{PLANTED[0]} {PLANTED[1]}", 315: PLANTED[0]})
    else:
        image.save(buffer, fmt)
    data = buffer.getvalue()
    decoded = decode(data)
    copy, suffix = pixels_only_copy(data, decoded.format, lambda: decoded.pixels)
    assert suffix == ".png" and set(png_chunks(copy)) <= PIXEL_CHUNKS
    _assert_clean(copy)
    np.testing.assert_array_equal(decode(copy).pixels, decoded.pixels)
