"""Pixels-only copies: every place an identifier could hide in an image file is taken out, and
not one pixel changes."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from medimg.data.images import decode
from medimg.data.pixels_only import (
    PIXEL_CHUNKS,
    PNG_SIGNATURE,
    NotStrippable,
    pixels_only_copy,
    png_chunks,
    png_pixels,
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
    Image.fromarray(pixels).save(
        buffer, "PNG", pnginfo=info, exif=_exif(), icc_profile=PLANTED[3].encode() * 8
    )
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
    data = _jpeg(
        pixels,
        exif=_exif(),
        comment=PLANTED[1].encode(),
        progressive=progressive,
        icc_profile=PLANTED[3].encode() * 8,
    )
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


# --- planted text inside the structures that are kept ----------------------------------------

PLANT = b"ZQXPLANT"


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _rows(
    pixels: np.ndarray, depth: int, filter_type: int = 0, *, fill_unused: bool = False
) -> bytes:
    """Scanlines of (H, W) or (H, W, C) samples, as they are, each after a filter-type byte
    (a type other than 0 only suits tests of the fallback). ``fill_unused`` sets the bits past
    the last pixel of each row, where pixels are narrower than a byte."""
    rows = pixels.reshape(pixels.shape[0], -1)
    if depth == 16:
        packed = rows.astype(">u2").view(np.uint8).reshape(rows.shape[0], -1)
    elif depth == 8:
        packed = rows.astype(np.uint8)
    else:
        bits = np.unpackbits(rows.astype(np.uint8)[:, :, None], axis=2)[:, :, 8 - depth :]
        packed = np.packbits(bits.reshape(rows.shape[0], -1), axis=1)
        if fill_unused:
            packed[:, -1] |= (1 << (packed.shape[1] * 8 - bits.shape[1] * depth)) - 1
    lead = np.full((rows.shape[0], 1), filter_type, dtype=np.uint8)
    return np.hstack([lead, packed]).tobytes()


def _adam7_rows(pixels: np.ndarray, depth: int, *, fill_unused: bool = False) -> bytes:
    passes = (
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    )
    return b"".join(
        _rows(pixels[y0::dy, x0::dx], depth, fill_unused=fill_unused)
        for x0, y0, dx, dy in passes
        if pixels[y0::dy, x0::dx].size
    )


def _png(
    pixels: np.ndarray,
    depth: int,
    colour: int,
    *,
    before: Sequence[bytes] = (),
    idat: Sequence[bytes] | None = None,
    after: Sequence[bytes] = (),
    interlaced: bool = False,
    scanlines: bytes | None = None,
) -> bytes:
    """A PNG written chunk by chunk: IHDR, ``before``, IDAT (``idat`` replaces it), ``after``."""
    height, width = pixels.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, int(interlaced))
    if scanlines is None:
        scanlines = _adam7_rows(pixels, depth) if interlaced else _rows(pixels, depth)
    if idat is None:
        idat = [_chunk(b"IDAT", zlib.compress(scanlines))]
    return b"".join(
        [PNG_SIGNATURE, _chunk(b"IHDR", header), *before, *idat, *after, _chunk(b"IEND", b"")]
    )


def _assert_exact_png(png: bytes) -> None:
    """Every chunk a pixel chunk with the right CRC, and nothing after IEND."""
    offset = len(PNG_SIGNATURE)
    assert png.startswith(PNG_SIGNATURE)
    while True:
        length, kind = struct.unpack_from(">I4s", png, offset)
        body = png[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack_from(">I", png, offset + 8 + length)
        assert crc == zlib.crc32(kind + body), kind
        assert kind in PIXEL_CHUNKS, kind
        offset += 12 + length
        if kind == b"IEND":
            assert offset == len(png) and length == 0
            return


def _idat(png: bytes) -> bytes:
    """The inflated pixel data of a PNG."""
    offset, compressed = len(PNG_SIGNATURE), b""
    while offset < len(png):
        length, kind = struct.unpack_from(">I4s", png, offset)
        if kind == b"IDAT":
            compressed += png[offset + 8 : offset + 8 + length]
        offset += 12 + length
    return zlib.decompress(compressed)


def _clean_copy(data: bytes, fmt: str, *, stripped: bool, planted: bytes = PLANT) -> bytes:
    """The pixels-only copy of a file that decodes. Checks that it holds the same pixels and not
    one planted byte; stripped, at the same bit depth; else re-encoded as a PNG."""
    original = decode(data)
    copy, suffix = pixels_only_copy(data, fmt, lambda: original.pixels)
    assert planted not in copy
    copied = decode(copy)
    np.testing.assert_array_equal(copied.pixels, original.pixels)
    strip = strip_png if fmt == "png" else strip_jpeg
    if stripped:
        assert copy == strip(data) and copied.bit_depth == original.bit_depth
        assert suffix == (".png" if fmt == "png" else ".jpg")
    else:
        with pytest.raises(NotStrippable):
            strip(data)
        assert suffix == ".png"
    if suffix == ".png":
        _assert_exact_png(copy)
        assert planted not in _idat(copy)
    return copy


def _grey(height: int = 9, width: int = 13, depth: int = 8, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**depth, (height, width), dtype=np.uint16)


def _rgb(height: int = 9, width: int = 13, depth: int = 8, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**depth, (height, width, 3), dtype=np.uint16)


CHRM = struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)


@pytest.mark.parametrize(
    ("kind", "body", "colour"),
    [
        pytest.param(
            b"pHYs", struct.pack(">IIB", 2835, 2835, 1) + PLANT, 2, id="pHYs past 9 bytes"
        ),
        pytest.param(b"gAMA", struct.pack(">I", 45455) + PLANT, 2, id="gAMA past 4 bytes"),
        pytest.param(b"sRGB", b"\x00" + PLANT, 2, id="sRGB past 1 byte"),
        pytest.param(b"cHRM", CHRM + PLANT, 2, id="cHRM past 32 bytes"),
        pytest.param(b"sBIT", b"\x08\x08\x08" + PLANT, 2, id="sBIT past 3 bytes (RGB)"),
        pytest.param(b"sBIT", b"\x08" + PLANT, 0, id="sBIT past 1 byte (grey)"),
        pytest.param(b"cHRM", PLANT * 4, 2, id="cHRM of text"),  # chromaticities no colour has
        pytest.param(b"gAMA", PLANT[:4], 0, id="gAMA of text"),  # past libpng's range
        pytest.param(b"tRNS", struct.pack(">H", 7) + PLANT, 0, id="tRNS past 2 bytes (grey)"),
        pytest.param(b"tRNS", struct.pack(">3H", 1, 2, 3) + PLANT, 2, id="tRNS past 6 bytes (RGB)"),
        pytest.param(b"tRNS", PLANT[:2], 0, id="tRNS of text"),  # a grey level past 8 bits
    ],
)
def test_text_after_a_display_chunks_defined_length_is_not_copied(kind, body, colour):
    pixels = _grey() if colour == 0 else _rgb()
    planted = PLANT if PLANT in body else body
    data = _png(pixels, 8, colour, before=[_chunk(kind, body)])
    assert planted in data
    # a display chunk is dropped; a tRNS that is not exact re-encodes the pixels
    copy = _clean_copy(data, "png", stripped=kind != b"tRNS", planted=planted)
    assert kind not in png_chunks(copy)


@pytest.mark.parametrize(
    ("kind", "body", "colour"),
    [
        (b"pHYs", struct.pack(">IIB", 2835, 2835, 1), 2),
        (b"gAMA", struct.pack(">I", 45455), 2),
        (b"sRGB", b"\x00", 2),
        (b"cHRM", CHRM, 2),
        (b"sBIT", b"\x05\x06\x05", 2),
        (b"tRNS", struct.pack(">H", 7), 0),
        (b"tRNS", struct.pack(">3H", 1, 2, 3), 2),
    ],
)
def test_well_formed_display_chunks_are_kept_as_they_are(kind, body, colour):
    pixels = _grey() if colour == 0 else _rgb()
    data = _png(pixels, 8, colour, before=[_chunk(kind, body)])
    copy = _clean_copy(data, "png", stripped=True)
    assert _chunk(kind, body) in copy


def test_bytes_after_the_compressed_pixels_are_not_copied():
    pixels = _grey()
    stream = zlib.compress(_rows(pixels, 8))
    cases = {
        "in the IDAT, after the stream": [_chunk(b"IDAT", stream + PLANT)],
        "in an IDAT after the stream": [_chunk(b"IDAT", stream), _chunk(b"IDAT", PLANT)],
        "in an IDAT after another chunk": [
            _chunk(b"IDAT", stream),
            _chunk(b"tEXt", b"a\0b"),
            _chunk(b"IDAT", zlib.compress(PLANT)),
        ],
        "in the stream, after the image": [
            _chunk(b"IDAT", zlib.compress(_rows(pixels, 8) + PLANT * 4))
        ],
        "the stream split in three": [
            _chunk(b"IDAT", stream[:5]),
            _chunk(b"IDAT", stream[5:9]),
            _chunk(b"IDAT", stream[9:]),
        ],
    }
    for name, idat in cases.items():
        data = _png(pixels, 8, 0, idat=idat)
        copy = _clean_copy(data, "png", stripped=True)
        assert png_chunks(copy) == [b"IHDR", b"IDAT", b"IEND"], name
        assert _idat(copy) == _rows(pixels, 8), name


def test_a_header_longer_than_13_bytes_and_data_after_iend_are_not_copied():
    pixels = _grey()
    data = _png(pixels, 8, 0) + PLANT
    ihdr = data.index(b"IHDR") - 4
    header = data[ihdr + 8 : ihdr + 21]
    data = data[:ihdr] + _chunk(b"IHDR", header + PLANT) + data[ihdr + 25 :]
    copy = _clean_copy(data, "png", stripped=True)
    assert _chunk(b"IHDR", header) in copy


def test_a_palette_png_becomes_a_png_of_its_colours():
    # four colours used, eight more entries that no pixel uses spell the planted text
    indices = np.random.default_rng(2).integers(0, 4, (9, 13), dtype=np.uint8)
    palette = bytes([0, 0, 0, 90, 20, 20, 20, 200, 90, 255, 255, 255]) + PLANT * 3
    data = _png(indices, 8, 3, before=[_chunk(b"PLTE", palette)])
    assert decode(data).pixels.shape == (9, 13, 3)
    copy = _clean_copy(data, "png", stripped=False)
    assert b"PLTE" not in png_chunks(copy)


def test_a_suggested_palette_in_a_colour_png_is_not_copied():
    pixels = _rgb(depth=16)
    data = _png(pixels, 16, 2, before=[_chunk(b"PLTE", PLANT * 3)])
    copy = _clean_copy(data, "png", stripped=True)
    assert decode(copy).bit_depth == 16 and b"PLTE" not in png_chunks(copy)


@pytest.mark.parametrize("interlaced", [False, True])
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_bits_past_the_last_narrow_pixel_of_a_row_are_zeroed(depth, interlaced):
    pixels = _grey(height=11, width=13, depth=depth)  # rows that end inside a byte
    rows = _adam7_rows if interlaced else _rows
    filled = rows(pixels, depth, fill_unused=True)
    assert filled != rows(pixels, depth)
    data = _png(pixels, depth, 0, interlaced=interlaced, scanlines=filled)
    copy = _clean_copy(data, "png", stripped=True)
    assert decode(copy).bit_depth == depth
    assert _idat(copy) == rows(pixels, depth)


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (2, 3), (9, 2)])
@pytest.mark.parametrize(("depth", "colour"), [(1, 0), (16, 0), (8, 2), (16, 2)])
def test_small_interlaced_pngs_with_empty_passes_keep_their_pixels(shape, depth, colour):
    pixels = (_grey if colour == 0 else _rgb)(*shape, depth=depth)
    data = _png(pixels, depth, colour, interlaced=True, after=[_chunk(b"tEXt", b"a\0" + PLANT)])
    copy = _clean_copy(data, "png", stripped=True)
    assert _idat(copy) == _adam7_rows(pixels, depth)


def _filter_bytes(scanlines: bytes, rows: int, filter_type: int) -> bytes:
    """Filter the rows of one pass the way an encoder does when a pixel is narrower than a byte
    (the left neighbour is the byte before)."""
    raw = np.frombuffer(scanlines, dtype=np.uint8).reshape(rows, -1)[:, 1:].astype(np.int64)
    up = np.vstack([np.zeros_like(raw[:1]), raw[:-1]])
    left = np.hstack([np.zeros_like(raw[:, :1]), raw[:, :-1]])
    corner = np.hstack([np.zeros_like(up[:, :1]), up[:, :-1]])
    estimate = left + up - corner
    near_left, near_up, near_corner = (np.abs(estimate - n) for n in (left, up, corner))
    paeth = np.where(
        (near_left <= near_up) & (near_left <= near_corner),
        left,
        np.where(near_up <= near_corner, up, corner),
    )
    guess = [np.zeros_like(raw), left, up, (left + up) // 2, paeth][filter_type]
    filtered = ((raw - guess) % 256).astype(np.uint8)
    lead = np.full((rows, 1), filter_type, dtype=np.uint8)
    return np.hstack([lead, filtered]).tobytes()


@pytest.mark.parametrize("filter_type", [1, 2, 3, 4], ids=["Sub", "Up", "Average", "Paeth"])
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_unused_bits_of_filtered_rows_are_zeroed(depth, filter_type):
    pixels = _grey(height=11, width=13, depth=depth)
    data = _png(
        pixels,
        depth,
        0,
        scanlines=_filter_bytes(_rows(pixels, depth, fill_unused=True), 11, filter_type),
    )
    copy = _clean_copy(data, "png", stripped=True)
    assert decode(copy).bit_depth == depth
    assert _idat(copy) == _rows(pixels, depth)  # unfiltered, the unused bits zero


@pytest.mark.parametrize("width", [1, 7, 17, 30])
def test_a_png_of_a_mask_keeps_one_bit_per_pixel(width):
    mask = np.random.default_rng(width).integers(0, 2, (23, width)).astype(bool)
    copy = png_pixels(mask)  # Pillow filters its rows
    _assert_exact_png(copy)
    decoded = decode(copy)
    assert decoded.bit_depth == 1
    np.testing.assert_array_equal(decoded.pixels, mask.astype(np.uint8) * 255)


@pytest.mark.parametrize("source", ["eXIf", "XMP"])
def test_a_png_whose_orientation_turns_it_becomes_a_png_of_the_turned_pixels(source):
    buffer = io.BytesIO()
    if source == "eXIf":
        Image.fromarray(_pixels()).save(buffer, "PNG", exif=_exif(orientation=6))
    else:
        info = PngImagePlugin.PngInfo()
        info.add_itxt(
            "XML:com.adobe.xmp",
            '<x:xmpmeta xmlns:tiff="http://ns.adobe.com/tiff/1.0/">'
            '<rdf:Description tiff:Orientation="6"/></x:xmpmeta>',
        )
        Image.fromarray(_pixels()).save(buffer, "PNG", pnginfo=info)
    data = buffer.getvalue()
    assert decode(data).pixels.shape[:2] == (64, 48)
    _clean_copy(data, "png", stripped=False, planted=b"Orientation")


def test_an_animated_png_becomes_a_png_of_its_first_frame():
    buffer = io.BytesIO()
    first, second = Image.fromarray(_pixels()), Image.fromarray(_pixels()[::-1])
    first.save(buffer, "PNG", save_all=True, append_images=[second])
    data = buffer.getvalue()
    assert b"acTL" in png_chunks(data)
    _clean_copy(data, "png", stripped=False)


# --- JPEG segments ---------------------------------------------------------------------------


def _segments(jpeg: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each header segment up to the first scan header."""
    found, offset = [], 2
    while True:
        marker = jpeg[offset + 1]
        (length,) = struct.unpack_from(">H", jpeg, offset + 2)
        found.append((marker, offset, offset + 2 + length))
        if marker == 0xDA:
            return found
        offset += 2 + length


def _with_payload(jpeg: bytes, marker: int, change) -> bytes:
    """The JPEG with the payload of its first ``marker`` segment replaced by ``change(payload)``."""
    _, start, end = next(s for s in _segments(jpeg) if s[0] == marker)
    payload = change(jpeg[start + 4 : end])
    return jpeg[:start] + _segment(marker, payload) + jpeg[end:]


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _before_frame(jpeg: bytes, *segments: bytes) -> bytes:
    _, start, _ = next(s for s in _segments(jpeg) if s[0] in (0xC0, 0xC1, 0xC2))
    return jpeg[:start] + b"".join(segments) + jpeg[start:]


def _cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_pixels()).convert("CMYK").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


UNUSED_HUFFMAN = b"\x13" + bytes(7) + b"\x08" + bytes(8) + PLANT  # AC table 3: 8 codes of 8 bits


@pytest.mark.parametrize(
    "case",
    [
        "Adobe payload",
        "JFIF payload",
        "JFIF thumbnail",
        "APP0 not JFIF",
        "DNL",
        "unused quantisation table",
        "unused Huffman table",
        "redefined Huffman table",
    ],
)
def test_text_in_a_kept_jpeg_segment_is_not_copied(case):
    jpeg = _cmyk_jpeg() if case == "Adobe payload" else _jpeg(_pixels())
    if case == "Adobe payload":
        data = _with_payload(jpeg, 0xEE, lambda p: p + PLANT)
    elif case == "JFIF payload":
        data = _with_payload(jpeg, 0xE0, lambda p: p + PLANT)
    elif case == "JFIF thumbnail":
        data = _with_payload(jpeg, 0xE0, lambda p: p[:12] + b"\x08\x01" + PLANT * 3)
    elif case == "APP0 not JFIF":
        data = _before_frame(jpeg, _segment(0xE0, b"JFIF" + PLANT), _segment(0xE0, b"JFXX" + PLANT))
    elif case == "DNL":
        data = jpeg[:-2] + _segment(0xDC, struct.pack(">H", 48) + PLANT) + jpeg[-2:]
    elif case == "unused quantisation table":
        data = _with_payload(jpeg, 0xDB, lambda p: p + b"\x03" + PLANT * 8)
    elif case == "unused Huffman table":
        data = _with_payload(jpeg, 0xC4, lambda p: p + UNUSED_HUFFMAN)
    else:  # a table the next definition of its slot replaces before any scan reads it
        dc_table = next(jpeg[s + 4 : e] for m, s, e in _segments(jpeg) if m == 0xC4)
        assert dc_table[0] == 0x00
        stand_in = b"\x00" + bytes(7) + b"\x08" + bytes(8) + PLANT
        data = _before_frame(jpeg, _segment(0xC4, stand_in))
    assert PLANT in data
    _clean_copy(data, "jpeg", stripped=True)


@pytest.mark.parametrize(
    "marker", [0xDB, 0xC4, 0xC0, 0xDA, 0xDD], ids=["DQT", "DHT", "SOF0", "SOS", "DRI"]
)
def test_bytes_past_a_coding_segments_structure_are_not_copied(marker):
    # libjpeg refuses these outright; a decoder that reads them still gets the same tables
    clean = _jpeg(_pixels(), restart_marker_blocks=3)
    data = _with_payload(clean, marker, lambda p: p + PLANT)
    assert strip_jpeg(data) == strip_jpeg(clean)


@pytest.mark.parametrize(
    ("marker", "change"),
    [
        pytest.param(0xDB, lambda p: p[:-10], id="DQT table cut short"),
        pytest.param(
            0xDB, lambda p: bytes(65) + b"\x01" + p[1:30], id="DQT second table cut short"
        ),
        pytest.param(0xC4, lambda p: p[:-3], id="DHT values cut short"),
        pytest.param(
            0xC0, lambda p: p[:5] + b"\x04" + p[6:], id="SOF0 four components, three told"
        ),
        pytest.param(0xDA, lambda p: p[:-2], id="SOS cut short"),
        pytest.param(0xDD, lambda p: p[:1], id="DRI cut short"),
    ],
)
def test_a_coding_segment_shorter_than_its_structure_is_not_strippable(marker, change):
    data = _with_payload(_jpeg(_pixels(), restart_marker_blocks=3), marker, change)
    with pytest.raises(NotStrippable):
        strip_jpeg(data)


def test_a_jpeg_with_a_marker_this_copy_does_not_read_becomes_a_png():
    # DAC (arithmetic-coding conditioning) is read and ignored by a Huffman decoder
    data = _before_frame(_jpeg(_pixels()), _segment(0xCC, b"\x00\x00"), _segment(0xE0, PLANT))
    _clean_copy(data, "jpeg", stripped=False)


def test_a_jpeg_whose_xmp_orientation_turns_it_becomes_a_png_of_the_turned_pixels():
    xmp = (
        b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:Description "
        b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></x:xmpmeta>'
    )
    data = _before_frame(_jpeg(_pixels()), _segment(0xE1, xmp))
    assert decode(data).pixels.shape[:2] == (64, 48)
    _clean_copy(data, "jpeg", stripped=False, planted=b"tiff:Orientation")


@pytest.mark.parametrize("seed", range(12))
def test_random_images_copy_to_the_same_pixels(seed):
    """Property: whatever the size, colour, depth and coding, the copy decodes to the same
    pixels at the same bit depth, and a stripped copy is not re-encoded."""
    rng = np.random.default_rng(seed)
    height, width = (int(n) for n in rng.integers(1, 40, 2))
    colour = int(rng.choice([0, 2]))
    png_depth = int(rng.choice([8, 16] if colour == 2 else [1, 2, 4, 8, 16]))
    pixels = (_grey if colour == 0 else _rgb)(height, width, png_depth, seed)
    png = _png(
        pixels,
        png_depth,
        colour,
        interlaced=bool(rng.integers(2)),
        before=[_chunk(b"tEXt", b"Patient\0" + PLANT)],
    )
    _clean_copy(png, "png", stripped=True)

    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    mode = str(rng.choice(["L", "RGB", "CMYK"]))
    options = {
        "quality": int(rng.integers(30, 100)),
        "progressive": bool(rng.integers(2)),
        "restart_marker_blocks": int(rng.choice([0, 1, 5])),
        "comment": PLANT,
    }
    if mode == "RGB":
        options["subsampling"] = int(rng.integers(0, 3))
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, "JPEG", **options)
    _clean_copy(buffer.getvalue(), "jpeg", stripped=True)
