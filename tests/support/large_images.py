"""Large images made cheaply: PNGs of many millions of pixels whose rows repeat, so that they
deflate to a few hundred kilobytes and are written without the whole image in memory."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

PILLOW_DEFAULT_GUARD = 89_478_485
"""Pillow's default ``Image.MAX_IMAGE_PIXELS``, the bound preprocess and serving once had."""


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def write_striped_png(path: Path, width: int, height: int, stripe: int = 1000) -> Path:
    """An 8-bit greyscale PNG of ``width`` x ``height``: bands of ``stripe`` rows alternately
    black and white, so it is neither blank nor a single value, and every row compresses."""
    compressor = zlib.compressobj(6)
    rows = {value: b"\x00" + bytes([value]) * width for value in (0, 255)}
    body = bytearray()
    for y in range(height):
        body += compressor.compress(rows[255 if (y // stripe) % 2 else 0])
    body += compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
                           + _chunk(b"IDAT", bytes(body)) + _chunk(b"IEND", b""))
    return Path(path)
