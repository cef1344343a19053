"""Pixels-only copies: the same image with every place an identifier could hide taken out.

Image files carry text beside their pixels: PNG text chunks (tEXt, zTXt, iTXt), EXIF and XMP
(PNG eXIf, JPEG APP1), JPEG comments, ICC profiles with descriptions (PNG iCCP, JPEG APP2), TIFF
tags. Ingest stores what later stages read as a copy made here, so none of that travels on.

- PNG keeps its chunks that define the pixels and drops the rest: no re-encoding.
- JPEG keeps its coding segments and drops APP1-APP13, APP15 and COM: no re-encoding, the same
  pixels bit for bit. A JPEG whose EXIF orientation rotates it becomes a PNG of the decoded
  pixels, since dropping the tag would turn the image.
- Anything else (TIFF, BMP, an array) becomes a PNG of the decoded pixels.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks that define the pixels or how to display them; every other chunk is dropped.
PIXEL_CHUNKS = frozenset(
    {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"sBIT", b"gAMA", b"cHRM", b"sRGB", b"pHYs"}
)
_JPEG_KEPT_APPS = {0xE0: b"JFIF", 0xE0 + 14: b"Adobe"}  # density; colour transform for CMYK
_STANDALONE = frozenset({0xD8, 0xD9, 0x01, *range(0xD0, 0xD8)})


class NotStrippable(ValueError):
    """The bytes cannot be copied without their metadata as they are; re-encode the pixels."""


def png_pixels(pixels: np.ndarray) -> bytes:
    """A PNG of decoded pixels with nothing but its pixel chunks."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return strip_png(buffer.getvalue())


def strip_png(data: bytes) -> bytes:
    """The PNG with its pixel chunks only (see :data:`PIXEL_CHUNKS`)."""
    if not data.startswith(PNG_SIGNATURE):
        raise NotStrippable("not a PNG")
    out = [PNG_SIGNATURE]
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        end = offset + 12 + length
        if end > len(data):
            raise NotStrippable("truncated PNG chunk")
        if kind in PIXEL_CHUNKS:
            out.append(data[offset:end])
        offset = end
        if kind == b"IEND":
            return b"".join(out)
    raise NotStrippable("PNG without IEND")


def png_chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG, in order (for checks and tests)."""
    kinds, offset = [], len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        kinds.append(kind)
        offset += 12 + length
    return kinds


def strip_jpeg(data: bytes) -> bytes:
    """The JPEG with its coding segments only: the first image, up to its EOI.

    Raises:
        NotStrippable: not a baseline or progressive JPEG this parser can walk, or an EXIF
            orientation other than 1 (the pixels must be re-encoded instead).
    """
    if not data.startswith(b"\xff\xd8"):
        raise NotStrippable("not a JPEG")
    out = [b"\xff\xd8"]
    offset = 2
    while offset + 2 <= len(data):
        if data[offset] != 0xFF:
            raise NotStrippable("JPEG marker expected")
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker == 0xD9:
            out.append(b"\xff\xd9")
            return b"".join(out)
        if marker in _STANDALONE:
            out.append(data[offset:offset + 2])
            offset += 2
            continue
        if offset + 4 > len(data):
            break
        (length,) = struct.unpack_from(">H", data, offset + 2)
        end = offset + 2 + length
        if length < 2 or end > len(data):
            raise NotStrippable("truncated JPEG segment")
        segment = data[offset:end]
        if marker == 0xE1 and _exif_rotates(segment[4:]):
            raise NotStrippable("EXIF orientation turns the image")
        if marker == 0xDA:  # start of scan: the entropy-coded data follows, to the next marker
            scan_end = _scan_end(data, end)
            out.append(data[offset:scan_end])
            offset = scan_end
            continue
        keep_app = _JPEG_KEPT_APPS.get(marker)
        if (0xE0 <= marker <= 0xEF and not (keep_app and segment[4:].startswith(keep_app))) or (
            marker == 0xFE
        ):
            offset = end  # APPn metadata (EXIF, XMP, ICC, IPTC, vendor notes) or a comment
            continue
        if marker == 0xE0:
            segment = _jfif_without_thumbnail(segment)
        out.append(segment)
        offset = end
    raise NotStrippable("JPEG without EOI")


def _scan_end(data: bytes, offset: int) -> int:
    """Where the entropy-coded data that starts at ``offset`` ends: at the next real marker."""
    while True:
        found = data.find(b"\xff", offset)
        if found < 0 or found + 1 >= len(data):
            raise NotStrippable("JPEG scan without an end")
        following = data[found + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            offset = found + (1 if following == 0xFF else 2)
            continue
        return found


def _jfif_without_thumbnail(segment: bytes) -> bytes:
    """APP0 JFIF may embed a thumbnail; keep its density fields only."""
    if len(segment) < 18 or segment[4:9] != b"JFIF\x00":
        return segment
    body = bytearray(segment[4:18])
    body[12:14] = b"\x00\x00"  # no thumbnail
    return b"\xff\xe0" + struct.pack(">H", len(body) + 2) + bytes(body)


def _exif_rotates(payload: bytes) -> bool:
    """True when an APP1 EXIF payload holds an Orientation (0x0112) other than 1."""
    if not payload.startswith(b"Exif\x00\x00"):
        return False
    tiff = payload[6:]
    if len(tiff) < 8:
        return False
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return False
    (ifd,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd + 2 > len(tiff):
        return False
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    for index in range(count):
        entry = ifd + 2 + 12 * index
        if entry + 12 > len(tiff):
            return False
        tag, _kind, _n = struct.unpack_from(order + "HHI", tiff, entry)
        if tag == 0x0112:
            (value,) = struct.unpack_from(order + "H", tiff, entry + 8)
            return value not in (0, 1)
    return False


def pixels_only_copy(
    data: bytes, fmt: str, pixels: Callable[[], np.ndarray]
) -> tuple[bytes, str]:
    """The stored copy of an image file and its suffix: stripped when that keeps every pixel,
    else a PNG of ``pixels()`` (the decoded image)."""
    try:
        if fmt == "png":
            return strip_png(data), ".png"
        if fmt == "jpeg":
            return strip_jpeg(data), ".jpg"
    except (NotStrippable, struct.error, zlib.error):
        pass
    return png_pixels(pixels()), ".png"
