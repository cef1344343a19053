"""Pixels-only copies: the same image with every place an identifier could hide taken out.

Image files carry text beside their pixels: PNG text chunks (tEXt, zTXt, iTXt), EXIF and XMP
(PNG eXIf, JPEG APP1), JPEG comments, ICC profiles with descriptions (PNG iCCP, JPEG APP2), TIFF
tags. Text also hides inside the structures that are kept: bytes past a chunk's or a segment's
defined length, past the end of the compressed pixels, in palette entries or tables no pixel
uses. Ingest stores what later stages read as a copy made here, so none of that travels on.

The rule is "when in doubt, re-encode the pixels": a structure is copied only when it is parsed
field by field and re-emitted at its exact length; anything this module cannot vouch for raises
:class:`NotStrippable`, and :func:`pixels_only_copy` stores a PNG of the decoded pixels instead.

- PNG keeps its header, its display chunks (each checked against its definition), and its
  pixels: the filtered scanlines, inflated, cut to the size the header defines and deflated
  into one IDAT. Palette images are re-encoded, since a palette can hold entries no pixel uses.
- JPEG keeps its coding segments, each re-emitted at its exact length, only the quantisation
  and Huffman tables that a scan uses, and the entropy-coded data as it is: the same pixels bit
  for bit. Every APPn segment but JFIF (APP0) and Adobe (APP14), COM and the JFIF thumbnail
  are dropped. The same walk reads the lossless (SOF3) and JPEG-LS (SOF55) frames of DICOM
  files: lossless scans use Huffman DC tables only, JPEG-LS scans no table, and of JPEG-LS's
  own LSE segments only the preset coding parameters, which have a fixed size, are kept.
- A file whose EXIF or XMP orientation turns it becomes a PNG of the decoded pixels, since
  dropping the tag would turn the image.
- Anything else (TIFF, BMP, an array) becomes a PNG of the decoded pixels.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks a pixels-only PNG may hold: the header, the pixels, and how to display them.
PIXEL_CHUNKS = frozenset(
    {b"IHDR", b"IDAT", b"IEND", b"tRNS", b"sBIT", b"gAMA", b"cHRM", b"sRGB", b"pHYs"}
)
_PNG_DISPLAY_CHUNKS = PIXEL_CHUNKS - {b"IHDR", b"IDAT", b"IEND"}
# Pillow reads an orientation from these (EXIF, "Raw profile type exif" text, XMP in iTXt).
_PNG_ORIENTATION_CHUNKS = frozenset({b"eXIf", b"tEXt", b"zTXt", b"iTXt"})
_PNG_SAMPLES = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type (palette, 3, is re-encoded): samples
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 4: (8, 16), 6: (8, 16)}
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)  # (x0, y0, dx, dy) of each interlace pass
_GAMMA_RANGE = range(16, 625_000_001)  # libpng's bounds on gAMA (gamma x 100000)
_CHROMATICITY_MAX = 100_000  # cHRM holds x and y in [0, 1], times 100000

_EOI, _SOS, _DQT, _DHT, _DRI, _DNL, _COM = 0xD9, 0xDA, 0xDB, 0xC4, 0xDD, 0xDC, 0xFE
_APP0, _APP1, _APP14 = 0xE0, 0xE1, 0xEE
_LSE = 0xF8  # JPEG-LS preset parameters (ITU-T T.87 C.2.4)
_LSE_PRESET_BODY = 11  # ID 1, then MAXVAL, T1, T2, T3 and RESET, two bytes each
FrameKind = Literal["sequential", "progressive", "lossless", "jpeg-ls"]
# The frames this parser reads: Huffman baseline and extended, progressive, lossless (process
# 14), and JPEG-LS. Arithmetic-coded and hierarchical frames are refused.
_SOFS: dict[int, FrameKind] = {
    0xC0: "sequential", 0xC1: "sequential", 0xC2: "progressive", 0xC3: "lossless",
    0xF7: "jpeg-ls",
}  # fmt: skip
_SEGMENTS = frozenset({*_SOFS, _DQT, _DHT, _SOS, _DRI, _DNL, _COM, _LSE, *range(0xE0, 0xF0)})
_RESTARTS = range(0xD0, 0xD8)
_JFIF_BODY = 14  # "JFIF\0", version (2), units (1), densities (2 x 2), thumbnail size (2)
_ADOBE_BODY = 12  # "Adobe", version (2), flags0 (2), flags1 (2), colour transform (1)


class NotStrippable(ValueError):
    """The bytes cannot be copied without their metadata as they are; re-encode the pixels."""


def png_pixels(pixels: np.ndarray) -> bytes:
    """A PNG of decoded pixels with nothing but its pixel chunks."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return strip_png(buffer.getvalue())


def pixels_only_copy(data: bytes, fmt: str, pixels: Callable[[], np.ndarray]) -> tuple[bytes, str]:
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


def png_chunks(data: bytes) -> list[bytes]:
    """The chunk types of a PNG, in order (for checks and tests)."""
    kinds, offset = [], len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        kinds.append(kind)
        offset += 12 + length
    return kinds


# --- PNG -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PngHeader:
    width: int
    height: int
    depth: int
    colour: int
    interlaced: bool

    @classmethod
    def parse(cls, body: bytes) -> _PngHeader:
        if len(body) < 13:
            raise NotStrippable(f"PNG header of {len(body)} bytes, 13 expected")
        width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(
            ">IIBBBBB", body
        )
        if colour == 3:
            raise NotStrippable("palette PNG: a palette can hold entries no pixel uses")
        if depth not in _PNG_DEPTHS.get(colour, ()):
            raise NotStrippable(f"PNG colour type {colour} with bit depth {depth}")
        if not (0 < width < 2**31 and 0 < height < 2**31):
            raise NotStrippable(f"PNG of {width}x{height} pixels")
        if compression != 0 or filtering != 0 or interlace > 1:
            raise NotStrippable("PNG compression, filter or interlace method unknown")
        return cls(width, height, depth, colour, interlace == 1)

    def pack(self) -> bytes:
        return struct.pack(
            ">IIBBBBB", self.width, self.height, self.depth, self.colour, 0, 0, int(self.interlaced)
        )

    @property
    def pixel_bits(self) -> int:
        return self.depth * _PNG_SAMPLES[self.colour]

    def passes(self) -> Iterator[tuple[int, int]]:
        """(rows, pixels per row) of each non-empty pass: the whole image, or Adam7's seven."""
        if not self.interlaced:
            yield self.height, self.width
            return
        for x0, y0, dx, dy in _ADAM7:
            columns = (self.width - x0 + dx - 1) // dx
            rows = (self.height - y0 + dy - 1) // dy
            if columns > 0 and rows > 0:
                yield rows, columns

    def fits(self, kind: bytes, body: bytes) -> bool:
        """Whether a display chunk is exactly what its definition allows for this image."""
        if kind == b"sRGB":
            return len(body) == 1 and body[0] <= 3
        if kind == b"gAMA":
            return len(body) == 4 and struct.unpack(">I", body)[0] in _GAMMA_RANGE
        if kind == b"cHRM":
            return len(body) == 32 and max(struct.unpack(">8I", body)) <= _CHROMATICITY_MAX
        if kind == b"pHYs":
            return len(body) == 9 and body[8] <= 1
        if kind == b"sBIT":
            samples = _PNG_SAMPLES[self.colour]
            return len(body) == samples and all(1 <= bits <= self.depth for bits in body)
        if kind == b"tRNS":
            samples = {0: 1, 2: 3}.get(self.colour)
            if samples is None or len(body) != 2 * samples:
                return False
            return max(struct.unpack(f">{samples}H", body)) < 2**self.depth
        return False


def strip_png(data: bytes) -> bytes:
    """The PNG with its pixel chunks only (see :data:`PIXEL_CHUNKS`), each at its exact length.

    Raises:
        NotStrippable: not a PNG this parser can vouch for (a palette, a malformed header or
            tRNS, animation, an orientation that turns the image): re-encode the pixels instead.
    """
    chunks = list(_read_png_chunks(data))
    if not chunks or chunks[0][0] != b"IHDR":
        raise NotStrippable("PNG without a leading IHDR")
    header = _PngHeader.parse(chunks[0][1])
    kinds = {kind for kind, _ in chunks}
    if b"acTL" in kinds:
        raise NotStrippable("animated PNG")
    if kinds & _PNG_ORIENTATION_CHUNKS and _pillow_turns(data):
        raise NotStrippable("EXIF or XMP orientation turns the image")
    display: dict[bytes, bytes] = {}
    compressed: list[bytes] = []
    after_pixels = False
    for kind, body in chunks[1:]:
        if kind == b"IDAT":
            if not after_pixels:  # only the first run of IDAT chunks holds the image
                compressed.append(body)
            continue
        after_pixels = after_pixels or bool(compressed)
        if after_pixels or kind not in _PNG_DISPLAY_CHUNKS or kind in display:
            continue  # metadata, a display chunk after the pixels, or a second copy
        if header.fits(kind, body):
            display[kind] = body
        elif kind == b"tRNS":
            raise NotStrippable("PNG tRNS does not fit the image")
    if not compressed:
        raise NotStrippable("PNG without IDAT")
    stream = b"".join(compressed)
    pixels, exact = _png_scanlines(header, stream)
    # A stream that holds exactly the image's scanlines, and no spare bits to zero, is kept as
    # it is (deflating again costs more than decoding); anything else is deflated anew.
    idat = stream if exact else zlib.compress(pixels)
    out = [PNG_SIGNATURE, _png_chunk(b"IHDR", header.pack())]
    out += [_png_chunk(kind, body) for kind, body in display.items()]
    out += [_png_chunk(b"IDAT", idat), _png_chunk(b"IEND", b"")]
    return b"".join(out)


def _read_png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, data) of each chunk up to IEND; whatever follows IEND is not read."""
    if not data.startswith(PNG_SIGNATURE):
        raise NotStrippable("not a PNG")
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        end = offset + 12 + length
        if length >= 2**31 or end > len(data):
            raise NotStrippable("truncated PNG chunk")
        yield kind, data[offset + 8 : end - 4]
        if kind == b"IEND":
            return
        offset = end
    raise NotStrippable("PNG without IEND")


def _png_scanlines(header: _PngHeader, compressed: bytes) -> tuple[bytes, bool]:
    """The filtered scanlines the header defines, nothing after them, unused bits zeroed; and
    whether ``compressed`` is exactly one zlib stream of them, with no spare bits to zero."""
    rows_and_bytes = [
        (rows, (columns * header.pixel_bits + 7) // 8, columns) for rows, columns in header.passes()
    ]
    size = sum(rows * (1 + row_bytes) for rows, row_bytes, _ in rows_and_bytes)
    # Anything past the image (in the stream, after it, in later IDATs) is never read.
    stream = zlib.decompressobj()
    raw = stream.decompress(compressed, size)
    if len(raw) < size:
        raise NotStrippable(f"PNG pixels end after {len(raw)} of {size} bytes")
    exact = stream.eof and not stream.unused_data and not stream.unconsumed_tail
    lines = np.frombuffer(bytearray(raw), dtype=np.uint8)
    start = 0
    for rows, row_bytes, columns in rows_and_bytes:
        block = lines[start : start + rows * (1 + row_bytes)].reshape(rows, 1 + row_bytes)
        start += block.size
        if block[:, 0].max() > 4:
            raise NotStrippable("PNG scanline filter type unknown")
        unused = row_bytes * 8 - columns * header.pixel_bits
        if unused:
            exact = False
            # Pixels narrower than a byte leave bits at the end of each row. Filters carry them
            # into the next bytes and rows, so the rows are unfiltered before they are zeroed.
            if block[:, 0].any():
                _unfilter_bytes(block)
            block[:, -1] &= (0xFF << unused) & 0xFF
    return lines.tobytes(), exact


def _unfilter_bytes(block: np.ndarray) -> None:
    """Undo the filters of one pass of rows whose filter unit is one byte, in place, leaving
    every row with filter type 0 (pixels narrower than a byte are filtered byte by byte)."""
    prior = np.zeros(block.shape[1] - 1, dtype=np.uint8)
    for row in block:
        kind, line = int(row[0]), row[1:]
        if kind == 1:  # Sub: the byte to the left
            line[:] = np.cumsum(line, dtype=np.uint8)
        elif kind == 2:  # Up: the byte above
            line += prior
        elif kind in (3, 4):  # Average, Paeth: each byte needs the one just restored
            values, above = line.tolist(), prior.tolist()
            left = upper_left = 0
            for index, (value, up) in enumerate(zip(values, above, strict=True)):
                guess = (left + up) >> 1 if kind == 3 else _paeth(left, up, upper_left)
                left = values[index] = (value + guess) & 0xFF
                upper_left = up
            line[:] = values
        row[0] = 0
        prior = line


def _paeth(left: int, up: int, corner: int) -> int:
    """The PNG Paeth predictor: whichever neighbour is nearest to left + up - corner."""
    estimate = left + up - corner
    near_left, near_up, near_corner = (abs(estimate - n) for n in (left, up, corner))
    if near_left <= near_up and near_left <= near_corner:
        return left
    return up if near_up <= near_corner else corner


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _pillow_turns(data: bytes) -> bool:
    """True when the orientation that :func:`medimg.data.images.decode` applies turns the image.

    Pillow finds it in EXIF, in PNG text and in XMP; asking Pillow keeps the two in step.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # The caller has decoded the image already, under its own pixel limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.getexif().get(0x0112, 1) in range(2, 9)
    except Exception as exc:  # Pillow signals damage with many types; all mean "re-encode"
        raise NotStrippable(f"orientation unreadable: {type(exc).__name__}") from None


# --- JPEG ------------------------------------------------------------------------------------


@dataclass
class _Table:
    """One quantisation or Huffman table; kept only when a scan uses it."""

    body: bytes
    used: bool = False


@dataclass
class _Tables:
    """A DQT or DHT segment, written once every scan has said which tables it uses."""

    marker: int
    tables: list[_Table]

    def render(self) -> bytes:
        body = b"".join(table.body for table in self.tables if table.used)
        return _jpeg_segment(self.marker, body) if body else b""


@dataclass(frozen=True)
class _Frame:
    body: bytes
    kind: FrameKind
    precision: int
    quant_tables: dict[int, int]  # component id: quantisation table


def strip_jpeg(data: bytes) -> bytes:
    """The JPEG with its coding segments only, each at its exact length: the first image, up to
    its EOI, with the entropy-coded data as it is.

    Reads Huffman baseline, extended (8 and 12 bits), progressive and lossless (process 14)
    JPEG, and JPEG-LS: every kind DICOM encapsulates as JPEG.

    Raises:
        NotStrippable: not a JPEG this parser can vouch for (a segment shorter than its
            structure, a marker it does not parse, a JPEG-LS mapping table), or an EXIF or XMP
            orientation that turns the image: re-encode the pixels instead.
    """
    if not data.startswith(b"\xff\xd8"):
        raise NotStrippable("not a JPEG")
    out: list[bytes | _Tables] = [b"\xff\xd8"]
    quant: dict[int, _Table] = {}
    huffman: dict[tuple[int, int], _Table] = {}
    frame: _Frame | None = None
    scans, has_app1 = 0, False
    offset = 2
    while True:
        marker, offset = _jpeg_marker(data, offset)
        if marker == _EOI:
            break
        if marker not in _SEGMENTS:
            raise NotStrippable(f"JPEG marker 0xFF{marker:02X} is not one this copy reads")
        payload, offset = _jpeg_payload(data, offset)
        if 0xE0 <= marker <= 0xEF:
            has_app1 = has_app1 or marker == _APP1
            kept = _kept_app(marker, payload)
            if kept is not None:
                out.append(_jpeg_segment(marker, kept))
        elif marker == _COM:
            continue
        elif marker == _DQT:
            quant_tables = _dqt_tables(payload)
            quant.update(quant_tables)
            out.append(_Tables(marker, [table for _, table in quant_tables]))
        elif marker == _DHT:
            huffman_tables = _dht_tables(payload)
            huffman.update(huffman_tables)
            out.append(_Tables(marker, [table for _, table in huffman_tables]))
        elif marker == _LSE:
            out.append(_jpeg_segment(marker, _lse_preset(payload)))
        elif marker in _SOFS:
            if frame is not None:
                raise NotStrippable("JPEG with a second frame header")
            frame = _parse_frame(payload, kind=_SOFS[marker])
            out.append(_jpeg_segment(marker, frame.body))
        elif marker == _SOS:
            if frame is None:
                raise NotStrippable("JPEG scan before its frame header")
            out.append(_jpeg_segment(marker, _parse_scan(payload, frame, quant, huffman)))
            scan_end = _scan_end(data, offset, jpeg_ls=frame.kind == "jpeg-ls")
            out.append(data[offset:scan_end])
            offset, scans = scan_end, scans + 1
        elif marker == _DRI:
            # JPEG-LS widens the restart interval to up to four bytes (T.87 C.2.5)
            size = len(payload) if frame and frame.kind == "jpeg-ls" else 2
            if size not in (2, 3, 4) or len(payload) < size:
                raise NotStrippable("JPEG restart interval cut short")
            out.append(_jpeg_segment(marker, payload[:size]))
        else:  # DNL (number of lines): two bytes, after the first scan
            if len(payload) < 2 or not scans:
                raise NotStrippable(f"JPEG marker 0xFF{marker:02X} out of place or cut short")
            out.append(_jpeg_segment(marker, payload[:2]))
    if frame is None or not scans:
        raise NotStrippable("JPEG without a scan")
    # Only an image Pillow decodes is turned by its orientation; DICOM decoders ignore EXIF.
    pillow_reads = frame.kind in ("sequential", "progressive") and frame.precision == 8
    if has_app1 and pillow_reads and _pillow_turns(data):
        raise NotStrippable("EXIF or XMP orientation turns the image")
    out.append(b"\xff\xd9")
    return b"".join(piece if isinstance(piece, bytes) else piece.render() for piece in out)


def _jpeg_marker(data: bytes, offset: int) -> tuple[int, int]:
    """The marker at ``offset`` (after any fill bytes) and where its segment starts."""
    if offset >= len(data) or data[offset] != 0xFF:
        raise NotStrippable("JPEG marker expected")
    while offset + 1 < len(data) and data[offset + 1] == 0xFF:
        offset += 1  # fill bytes
    if offset + 1 >= len(data):
        raise NotStrippable("JPEG without EOI")
    return data[offset + 1], offset + 2


def _jpeg_payload(data: bytes, offset: int) -> tuple[bytes, int]:
    """The payload of the segment whose length field is at ``offset``, and where it ends."""
    if offset + 2 > len(data):
        raise NotStrippable("truncated JPEG segment")
    (length,) = struct.unpack_from(">H", data, offset)
    end = offset + length
    if length < 2 or end > len(data):
        raise NotStrippable("truncated JPEG segment")
    return data[offset + 2 : end], end


def _jpeg_segment(marker: int, body: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(body) + 2) + body


def _kept_app(marker: int, payload: bytes) -> bytes | None:
    """The part of an APPn segment that decoding reads, or None to drop the segment."""
    if marker == _APP0 and payload.startswith(b"JFIF\x00"):
        if len(payload) < _JFIF_BODY:
            raise NotStrippable("JFIF header cut short")
        return payload[: _JFIF_BODY - 2] + b"\x00\x00"  # density only, no thumbnail
    if marker == _APP14 and payload.startswith(b"Adobe"):
        # It says how to read the colour (YCbCr, YCCK, CMYK); libjpeg reads 12 bytes of it.
        if len(payload) < _ADOBE_BODY:
            raise NotStrippable("Adobe colour-transform header cut short")
        return payload[:_ADOBE_BODY]
    return None  # EXIF, XMP, ICC, IPTC, vendor notes


def _dqt_tables(payload: bytes) -> list[tuple[int, _Table]]:
    """The quantisation tables of a DQT segment: (slot, table) each; bytes after them dropped."""
    tables, offset = [], 0
    while offset < len(payload):
        precision, slot = payload[offset] >> 4, payload[offset] & 0x0F
        if precision > 1 or slot > 3:
            break  # not a table: bytes appended after the tables
        end = offset + 1 + 64 * (precision + 1)
        if end > len(payload):
            raise NotStrippable("JPEG quantisation table cut short")
        tables.append((slot, _Table(payload[offset:end])))
        offset = end
    if not tables:
        raise NotStrippable("DQT segment without a table")
    return tables


def _dht_tables(payload: bytes) -> list[tuple[tuple[int, int], _Table]]:
    """The Huffman tables of a DHT segment: ((class, slot), table) each; bytes after dropped."""
    tables, offset = [], 0
    while offset + 17 <= len(payload):
        kind, slot = payload[offset] >> 4, payload[offset] & 0x0F
        count = sum(payload[offset + 1 : offset + 17])
        if kind > 1 or slot > 3 or count > 256:
            break  # not a table: bytes appended after the tables
        end = offset + 17 + count
        if end > len(payload):
            raise NotStrippable("JPEG Huffman table cut short")
        tables.append(((kind, slot), _Table(payload[offset:end])))
        offset = end
    if not tables:
        raise NotStrippable("DHT segment without a table")
    return tables


def _lse_preset(payload: bytes) -> bytes:
    """The preset coding parameters of a JPEG-LS LSE segment, at their exact length.

    Mapping tables (IDs 2 and 3) and other LSE kinds are refused: a table holds entries no
    pixel needs to use, where text could hide.
    """
    if not payload or payload[0] != 1:
        kind = payload[0] if payload else "none"
        raise NotStrippable(f"JPEG-LS LSE segment of kind {kind} is not one this copy reads")
    if len(payload) < _LSE_PRESET_BODY:
        raise NotStrippable("JPEG-LS preset parameters cut short")
    return payload[:_LSE_PRESET_BODY]


def _parse_frame(payload: bytes, *, kind: FrameKind) -> _Frame:
    if len(payload) < 6:
        raise NotStrippable("JPEG frame header cut short")
    precision, _height, width, count = struct.unpack_from(">BHHB", payload)
    size = 6 + 3 * count
    precisions = (8, 12) if kind in ("sequential", "progressive") else range(2, 17)
    if precision not in precisions or width == 0 or not 1 <= count <= 4 or len(payload) < size:
        raise NotStrippable("JPEG frame header malformed or cut short")
    quant_tables = {}
    for index in range(count):
        component, sampling, table = payload[6 + 3 * index : 9 + 3 * index]
        if (
            component in quant_tables
            or table > 3
            or not (1 <= sampling >> 4 <= 4 and 1 <= sampling & 0x0F <= 4)
        ):
            raise NotStrippable("JPEG frame component malformed")
        quant_tables[component] = table
    return _Frame(payload[:size], kind, precision, quant_tables)


def _parse_scan(
    payload: bytes,
    frame: _Frame,
    quant: dict[int, _Table],
    huffman: dict[tuple[int, int], _Table],
) -> bytes:
    """The scan header at its exact length; marks the tables the scan decodes with as used.

    Its last three bytes are the spectral band and approximation for DCT scans, the predictor,
    zero and point transform for lossless scans, and NEAR, interleave mode and point transform
    for JPEG-LS scans.
    """
    count = payload[0] if payload else 0
    size = 1 + 2 * count + 3
    if not 1 <= count <= 4 or len(payload) < size:
        raise NotStrippable("JPEG scan header malformed or cut short")
    first, last, approximation = payload[size - 3 : size]
    if frame.kind == "lossless" and not (1 <= first <= 7 and last == 0 and approximation < 16):
        raise NotStrippable("JPEG lossless scan header malformed")
    if frame.kind == "jpeg-ls" and not (last <= 2 and approximation < 16):
        raise NotStrippable("JPEG-LS scan header malformed")
    for index in range(count):
        component, tables = payload[1 + 2 * index : 3 + 2 * index]
        dc, ac = tables >> 4, tables & 0x0F
        if component not in frame.quant_tables or dc > 3 or ac > 3:
            raise NotStrippable("JPEG scan component malformed")
        if frame.kind == "jpeg-ls":
            if tables:  # the byte selects a mapping table, and none is kept
                raise NotStrippable("JPEG-LS scan uses a mapping table")
            continue
        if frame.kind == "lossless":
            used = [(0, dc)]  # lossless scans code differences with DC tables alone
        else:
            table = quant.get(frame.quant_tables[component])
            if table is None:
                raise NotStrippable("JPEG scan before its quantisation table")
            table.used = True
            # Which Huffman tables a scan decodes with, as libjpeg derives them: sequential
            # scans both; progressive DC scans the DC table on the first pass only; AC scans
            # the AC table.
            used = [(0, dc), (1, ac)]
            if frame.kind == "progressive":
                used = [(1, ac)] if first else [(0, dc)] if approximation >> 4 == 0 else []
        for slot in used:
            if slot in huffman:
                huffman[slot].used = True
    return payload[:size]


def _scan_end(data: bytes, offset: int, *, jpeg_ls: bool = False) -> int:
    """Where the entropy-coded data that starts at ``offset`` ends: at the next real marker.

    JPEG stuffs a zero byte after each 0xFF of data; JPEG-LS instead clears the top bit of the
    byte that follows, so there a marker is 0xFF and a byte of at least 0x80 (T.87 A.1).
    """
    while True:
        found = data.find(b"\xff", offset)
        if found < 0 or found + 1 >= len(data):
            raise NotStrippable("JPEG scan without an end")
        following = data[found + 1]
        stuffed = following < 0x80 if jpeg_ls else following == 0x00
        if stuffed or following in _RESTARTS or following == 0xFF:
            offset = found + (1 if following == 0xFF else 2)
            continue
        return found
