from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import get_decoder
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)
from support.dicoms import PHI_VALUES, PRIVATE_CREATOR, default_pixels, write_dicom

from medimg.config import DataConfig
from medimg.data.images import (
    DEFAULT_MAX_PIXELS,
    TooManyPixels,
    UndecodableImage,
    decode,
    decode_array,
    decode_deidentified,
    decode_image,
    image_stats,
    is_dicom,
    read_image,
    to_channels,
)

H, W = 24, 32  # not square, so a transposed decode shows


def _grey() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return ((x * 7 + y * 3) % 256).astype(np.uint8)


def _rgb() -> np.ndarray:
    g = _grey()
    return np.stack([g, g[::-1], 255 - g], axis=-1)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _stretch(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return np.round((values - values.min()) * 255 / (values.max() - values.min())).astype(np.uint8)


def _palette_image(grey: bool) -> Image.Image:
    indices = (_grey() // 64).astype(np.uint8)  # four palette entries
    image = Image.fromarray(indices, mode="P")
    colours = [(0, 0, 0), (90, 90, 90), (170, 170, 170), (255, 255, 255)] if grey else [
        (255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 250, 10)]  # fmt: skip
    image.putpalette([c for colour in colours for c in colour])
    return image


# --- Pillow formats ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_lossless_greyscale_decodes_to_the_same_values(fmt):
    decoded = decode(_encode(Image.fromarray(_grey()), fmt))
    np.testing.assert_array_equal(decoded.pixels, _grey())
    assert (decoded.width, decoded.height, decoded.channels) == (W, H, 1)
    assert decoded.format == fmt.lower() and decoded.bit_depth == 8


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_lossless_rgb_keeps_its_channels(fmt):
    decoded = decode(_encode(Image.fromarray(_rgb()), fmt))
    np.testing.assert_array_equal(decoded.pixels, _rgb())
    assert decoded.pixels.shape == (H, W, 3) and decoded.channels == 3


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_alpha_is_dropped(fmt):
    alpha = Image.fromarray(np.full((H, W), 7, np.uint8))
    rgba = Image.merge("RGBA", [*Image.fromarray(_rgb()).split(), alpha])
    la = Image.merge("LA", [Image.fromarray(_grey()), alpha])
    np.testing.assert_array_equal(decode_image(_encode(rgba, fmt)), _rgb())
    np.testing.assert_array_equal(decode_image(_encode(la, fmt)), _grey())


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_bilevel_images_become_black_and_white(fmt):
    bits = _grey() > 128
    decoded = decode(_encode(Image.fromarray(bits), fmt))
    np.testing.assert_array_equal(decoded.pixels, np.where(bits, 255, 0).astype(np.uint8))
    assert decoded.bit_depth == 1


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_palette_with_colour_becomes_rgb(fmt):
    decoded = decode(_encode(_palette_image(grey=False), fmt))
    assert decoded.pixels.shape == (H, W, 3)
    np.testing.assert_array_equal(decoded.pixels[0, 0], [255, 0, 0])  # index 0
    np.testing.assert_array_equal(
        decoded.pixels[-1, -1], np.array(_palette_image(False).convert("RGB"))[-1, -1]
    )


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_palette_without_colour_becomes_greyscale(fmt):
    decoded = decode(_encode(_palette_image(grey=True), fmt))
    assert decoded.pixels.shape == (H, W)
    assert set(np.unique(decoded.pixels)) <= {0, 90, 170, 255}
    np.testing.assert_array_equal(decoded.pixels, np.array(_palette_image(True).convert("L")))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_palette_with_transparency_keeps_the_palette_colours(fmt):
    image = _palette_image(grey=False)
    data = _encode(image, fmt, transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and Pillow's transparency warning is not triggered
        decoded = decode(data)
    assert decoded.pixels.shape == (H, W, 3)
    np.testing.assert_array_equal(decoded.pixels, np.array(image.convert("RGB")))


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(fmt):
    cmyk = Image.fromarray(_rgb()).convert("CMYK")
    decoded = decode(_encode(cmyk, fmt, **({"quality": 95} if fmt == "JPEG" else {})))
    assert decoded.pixels.shape == (H, W, 3)
    error = np.abs(decoded.pixels.astype(int) - _rgb().astype(int)).mean()
    assert error < (6 if fmt == "JPEG" else 0.5)


@pytest.mark.parametrize(("mode", "shape"), [("L", (H, W)), ("RGB", (H, W, 3))])
def test_jpeg_decodes_close_to_its_source(mode, shape):
    source = _grey() if mode == "L" else _rgb()
    decoded = decode(_encode(Image.fromarray(source), "JPEG", quality=95))
    assert decoded.pixels.shape == shape and decoded.format == "jpeg"
    assert np.abs(decoded.pixels.astype(int) - source.astype(int)).mean() < 6


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_is_stretched_and_keeps_its_depth(fmt):
    values = (_grey().astype(np.uint16) * 100 + 1000).astype("<u2")
    image = Image.frombytes("I;16", (W, H), values.tobytes())
    decoded = decode(_encode(image, fmt))
    assert decoded.bit_depth == 16 and decoded.pixels.dtype == np.uint8
    np.testing.assert_array_equal(decoded.pixels, _stretch(values))
    assert decoded.source_std8 == pytest.approx(values.std() * 255 / 65535)


def test_big_endian_sixteen_bit_tiff_reads_the_right_values():
    image = Image.frombytes("I;16B", (W, H), (_grey().astype(">u2") * 200).tobytes())
    written = np.array([[image.getpixel((x, y)) for x in range(W)] for y in range(H)])
    data = _encode(image, "TIFF")
    assert data[:2] == b"MM"  # big-endian TIFF
    decoded = decode(data)
    assert decoded.bit_depth == 16
    np.testing.assert_array_equal(decoded.pixels, _stretch(written))


def test_float_tiff_in_unit_range_keeps_its_nominal_scale():
    values = _grey().astype(np.float32) / 255 * 0.5  # half of the full scale
    decoded = decode(_encode(Image.fromarray(values, mode="F"), "TIFF"))
    np.testing.assert_array_equal(decoded.pixels, _stretch(values))
    assert decoded.source_std8 == pytest.approx(values.std() * 255, rel=1e-4)


def test_exif_orientation_is_applied():
    image = np.zeros((20, 40, 3), np.uint8)
    image[2:6, 30:36] = 255  # marker near the top-right corner
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees clockwise to view
    decoded = decode(_encode(Image.fromarray(image), "JPEG", exif=exif, quality=95))
    assert (decoded.width, decoded.height) == (20, 40)
    rows, cols = np.nonzero(decoded.pixels[:, :, 0] > 128)
    # clockwise: (row r, column c) of a 20-row image goes to (row c, column 19 - r)
    assert 30 <= rows.mean() <= 36 and 14 <= cols.mean() <= 18


def test_png_bit_depth_comes_from_its_header():
    values = np.stack([_grey().astype(np.uint16) * 257] * 3, axis=-1)
    png = _encode(Image.fromarray(_grey()), "PNG")
    assert decode(png).bit_depth == 8
    # Pillow writes no 16-bit RGB, so patch the IHDR of a tiny one by hand
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    ihdr = struct.pack(">IIBBBBB", W, H, 16, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw))
    decoded = decode(data + _chunk(b"IEND", b""))
    assert decoded.bit_depth == 16 and decoded.pixels.shape == (H, W, 3)
    np.testing.assert_array_equal(decoded.pixels[:, :, 0], _grey())


# --- what cannot be decoded --------------------------------------------------------------------


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size but which carries no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b"")


def test_zero_byte_file_is_refused(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(UndecodableImage, match=r"^empty file \(0 bytes\)$"):
        read_image(path)


def test_text_renamed_to_png_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("patient notes, not an image\n")
    with pytest.raises(UndecodableImage, match=r"^not a recognised image format$"):
        read_image(path)


def test_truncated_png_says_so():
    png = _encode(Image.fromarray(_rgb()), "PNG")
    with pytest.raises(UndecodableImage, match=r"^truncated or corrupt image data: "):
        decode(png[: len(png) // 2])


def test_other_pillow_formats_are_refused_by_name():
    with pytest.raises(UndecodableImage, match="unsupported image format GIF"):
        decode(_encode(Image.fromarray(_grey()), "GIF"))


def test_decompression_bomb_is_refused_from_its_header():
    # No pixel data follows the header, so reaching the decoder would fail as "truncated".
    with pytest.raises(TooManyPixels, match="too many pixels"):
        decode(_png_header_only(100_000, 100_000))


def test_max_pixels_is_checked_before_decoding():
    noise = np.random.default_rng(0).integers(0, 256, (H, W), dtype=np.uint8)
    png = _encode(Image.fromarray(noise), "PNG")  # noise, so the pixel data is most of the file
    truncated = png[: len(png) // 2]
    with pytest.raises(UndecodableImage, match="truncated"):
        decode(truncated)
    with pytest.raises(TooManyPixels, match=f"{W}x{H} = {W * H} exceeds the limit of 100"):
        decode(truncated, max_pixels=100)
    assert isinstance(TooManyPixels("x"), UndecodableImage)  # callers may catch the base
    assert decode(png, max_pixels=W * H).pixels.shape == (H, W)  # the limit itself is allowed


def test_without_a_bound_the_default_of_data_max_pixels_applies_not_pillows():
    assert DEFAULT_MAX_PIXELS == DataConfig().max_pixels == 178_956_970
    # 100 million pixels: over Pillow's default guard (89,478,485), under data.max_pixels. The
    # header passes the bound and reaches the decoder, which finds no pixel data.
    header = _png_header_only(10_000, 10_000)
    with pytest.raises(UndecodableImage, match="truncated"):
        decode(header)
    with pytest.raises(TooManyPixels, match=r"exceeds the limit of 99999999; data\.max_pixels"):
        decode(header, max_pixels=10**8 - 1)


def test_a_bound_above_pillows_own_hard_limit_is_the_one_that_decides():
    # 200 million pixels: more than twice Pillow's default guard, where Pillow refuses by itself
    header = _png_header_only(20_000, 10_000)
    with pytest.raises(TooManyPixels) as caught:
        decode(header)
    assert str(caught.value) == ("too many pixels: 20000x10000 = 200000000 exceeds the limit of "
                                 "178956970; data.max_pixels in params.yaml sets it")
    with pytest.raises(UndecodableImage, match="truncated"):
        decode(header, max_pixels=3 * 10**8)


def test_a_refusal_by_pillows_own_guard_is_one_line_naming_the_bound():
    # 10^10 pixels: beyond twice any bound Pillow's guard has been raised to here, so Pillow
    # refuses while opening, before medimg's check; it reads the same.
    with pytest.raises(TooManyPixels) as caught:
        decode(_png_header_only(100_000, 100_000), max_pixels=1000)
    assert "\n" not in str(caught.value) and "exceeds the limit of 1000" in str(caught.value)
    assert caught.value.code == "too_many_pixels"


def test_the_same_bytes_decode_to_the_same_pixels():
    data = _encode(Image.fromarray(_rgb()), "JPEG", quality=80)
    first, second = decode(data), decode(data)
    np.testing.assert_array_equal(first.pixels, second.pixels)
    assert (first.bit_depth, first.source_std8) == (second.bit_depth, second.source_std8)


# --- DICOM -------------------------------------------------------------------------------------


def _dicom(tmp_path: Path, name: str = "image.dcm", **options) -> bytes:
    return write_dicom(tmp_path / name, **options).read_bytes()


def _expected(stored: np.ndarray) -> np.ndarray:
    return _stretch(stored)


def _windowed(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 LINEAR windowing onto 0-255."""
    out = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.round(np.clip(out, 0, 255)).astype(np.uint8)


def test_monochrome2_decodes_the_stored_values(tmp_path):
    decoded = decode(_dicom(tmp_path))
    assert decoded.format == "dicom" and decoded.bit_depth == 12
    np.testing.assert_array_equal(decoded.pixels, _expected(default_pixels()))
    stored = default_pixels().astype(np.float64)
    assert decoded.source_std8 == pytest.approx(stored.std() * 255 / 4095)


def test_monochrome1_is_inverted(tmp_path):
    mono2 = decode_image(_dicom(tmp_path, "m2.dcm"))
    mono1 = decode_image(_dicom(tmp_path, "m1.dcm", photometric="MONOCHROME1"))
    np.testing.assert_array_equal(mono1.astype(int), 255 - mono2.astype(int))


def test_negative_rescale_slope_inverts(tmp_path):
    mono2 = decode_image(_dicom(tmp_path, "a.dcm"))
    flipped = decode_image(_dicom(tmp_path, "b.dcm", slope=-1.0, intercept=4095.0))
    np.testing.assert_array_equal(flipped, 255 - mono2)


def test_window_is_applied_in_rescaled_units(tmp_path):
    stored = default_pixels()
    data = _dicom(tmp_path, slope=2.0, intercept=-1024.0, window=(2000.0, 1500.0))
    expected = _windowed(stored * 2.0 - 1024.0, 2000.0, 1500.0)
    decoded = decode_image(data)
    assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= 1
    assert (decoded == 0).any() and (decoded == 255).any()  # the window clips both ends


def test_monochrome1_inverts_after_the_window(tmp_path):
    window = {"window": (1500.0, 800.0)}
    mono2 = decode_image(_dicom(tmp_path, "a.dcm", **window))
    mono1 = decode_image(_dicom(tmp_path, "b.dcm", photometric="MONOCHROME1", **window))
    np.testing.assert_array_equal(mono1, 255 - mono2)


def test_voi_lut_sequence_is_applied(tmp_path):
    stored = default_pixels()
    table = (np.sqrt(np.arange(4096) / 4095) * 1000).astype(np.uint16)  # a gamma-like curve
    decoded = decode_image(_dicom(tmp_path, voi_lut=table))
    expected = np.round(table[stored].astype(float) * 255 / table.max()).astype(np.uint8)
    assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= 1


def test_an_unusable_window_falls_back_to_the_full_range_without_logging_phi(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    decoded = decode_image(_dicom(tmp_path, window=(100.0, 0.0)))  # width 0 is invalid
    np.testing.assert_array_equal(decoded, _expected(default_pixels()))
    assert "VOI" in caplog.text
    assert not any(value in caplog.text for value in PHI_VALUES.values())


@pytest.mark.parametrize(("bits", "signed"), [(8, False), (8, True), (12, False), (12, True),
                                              (16, False), (16, True)])  # fmt: skip
def test_bit_depths_and_signedness(tmp_path, bits, signed):
    stored = default_pixels(bits_stored=bits, signed=signed)
    decoded = decode(_dicom(tmp_path, bits_stored=bits, signed=signed))
    assert decoded.bit_depth == bits
    np.testing.assert_array_equal(decoded.pixels, _expected(stored))
    assert decoded.source_std8 == pytest.approx(stored.astype(float).std() * 255 / (2**bits - 1))


def test_multiframe_keeps_the_middle_or_first_frame(tmp_path):
    path = write_dicom(tmp_path / "cine.dcm", frames=5)
    frames = default_pixels(frames=5)
    middle = read_image(path)
    first = read_image(path, dicom_frame="first")
    np.testing.assert_array_equal(middle, _expected(frames[2]))
    np.testing.assert_array_equal(first, _expected(frames[0]))
    assert not np.array_equal(first, middle)


@pytest.mark.parametrize(
    "syntax", [RLELossless, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]
)
@pytest.mark.parametrize("frames", [1, 3])
def test_lossless_transfer_syntaxes_decode_equal_to_uncompressed(tmp_path, syntax, frames):
    plain = read_image(write_dicom(tmp_path / "plain.dcm", frames=frames))
    other = read_image(write_dicom(tmp_path / "other.dcm", frames=frames, transfer_syntax=syntax))
    assert pydicom.dcmread(tmp_path / "other.dcm").file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(other, plain)


def test_jpeg2000_lossless_decodes_equal_to_uncompressed(tmp_path):
    if not get_decoder(JPEG2000Lossless).is_available:
        pytest.skip("no installed pydicom plugin decodes JPEG 2000")
    plain = read_image(write_dicom(tmp_path / "plain.dcm"))
    j2k = read_image(write_dicom(tmp_path / "j2k.dcm", transfer_syntax=JPEG2000Lossless))
    np.testing.assert_array_equal(j2k, plain)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "RGB"])
def test_jpeg_baseline_decodes_close_to_uncompressed(tmp_path, photometric):
    if not get_decoder(JPEGBaseline8Bit).is_available:
        pytest.skip("no installed pydicom plugin decodes JPEG Baseline")
    options = {"bits_stored": 8, "photometric": photometric}
    plain = read_image(write_dicom(tmp_path / "plain.dcm", **options))
    jpeg = read_image(write_dicom(tmp_path / "j.dcm", transfer_syntax=JPEGBaseline8Bit, **options))
    assert jpeg.shape == plain.shape
    assert np.abs(jpeg.astype(int) - plain.astype(int)).mean() < 4


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_dicom_comes_out_as_rgb(tmp_path, photometric):
    rgb = default_pixels(bits_stored=8, samples_per_pixel=3)
    decoded = decode(_dicom(tmp_path, photometric=photometric, bits_stored=8))
    assert decoded.pixels.shape == (*rgb.shape[:2], 3)
    # YBR_FULL is stored rounded, so the way back may be off by one
    assert np.abs(decoded.pixels.astype(int) - rgb.astype(int)).max() <= 1


@pytest.mark.skipif(
    get_decoder(HTJ2KLossless).is_available, reason="only without an HTJ2K plugin installed"
)
def test_transfer_syntax_without_a_plugin_names_itself(tmp_path):
    path = write_dicom(tmp_path / "rle.dcm", transfer_syntax=RLELossless)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless  # as an HTJ2K file would say
    ds.save_as(tmp_path / "htj2k.dcm")
    with pytest.raises(UndecodableImage) as caught:
        read_image(tmp_path / "htj2k.dcm")
    reason = str(caught.value)
    assert "High-Throughput JPEG 2000" in reason and "1.2.840.10008.1.2.4.201" in reason
    assert reason.endswith("cannot be decoded by the installed pydicom plugins")
    assert caught.value.code == "unsupported"


def test_unknown_transfer_syntax_is_refused(tmp_path):
    path = write_dicom(tmp_path / "x.dcm")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.8.498.999"
    ds.save_as(tmp_path / "y.dcm")
    with pytest.raises(UndecodableImage, match="not supported by pydicom"):
        read_image(tmp_path / "y.dcm")


def test_dicom_without_extension_is_recognised_by_its_preamble(tmp_path):
    path = write_dicom(tmp_path / "IM0001")
    data = path.read_bytes()
    assert is_dicom(data) and path.suffix == ""
    np.testing.assert_array_equal(read_image(path), _expected(default_pixels()))


def test_dicom_without_preamble_is_recognised_by_content_and_decodes(tmp_path):
    path = write_dicom(tmp_path / "bare", preamble=False)
    data = path.read_bytes()
    assert data[128:132] != b"DICM" and is_dicom(data)
    np.testing.assert_array_equal(decode_image(data), _expected(default_pixels()))


@pytest.mark.parametrize("implicit", [True, False])
def test_a_data_set_without_file_meta_is_recognised_as_dicom_and_decodes(tmp_path, implicit):
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    ds = pydicom.dcmread(write_dicom(tmp_path / "x.dcm"))
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, implicit
    write_dataset(out, ds)  # no preamble, no 'DICM', no file meta: the data set alone
    data = out.getvalue()
    assert data[:2] == b"\x08\x00" and is_dicom(data[:1024])
    np.testing.assert_array_equal(decode_image(data), _expected(default_pixels()))


@pytest.mark.parametrize("make", ["png", "jpeg", "bmp", "tiff", "text", "csv", "zeros"])
def test_other_files_are_not_taken_for_dicom(make):
    if make in ("png", "jpeg", "bmp", "tiff"):
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((40, 40), np.uint8)).save(buffer, format=make.upper())
        data = buffer.getvalue()
    else:
        data = {"text": b"Radiology report\nPatient: DOE^JANE\n" * 20,
                "csv": b"path,label\na.png,0\n" * 40, "zeros": b"\x00" * 64}[make]
    assert not is_dicom(data[:1024])


def test_dicom_pixels_are_decoded_only_after_de_identification(tmp_path):
    """The one DICOM pixel decoder takes a de-identification result, never a raw data set."""
    import inspect

    from medimg.data import images

    parameters = list(inspect.signature(images.decode_deidentified).parameters)
    assert parameters[0] == "result"
    assert not hasattr(images, "decode_dicom_dataset")
    ds = pydicom.dcmread(write_dicom(tmp_path / "x.dcm"))
    with pytest.raises(AttributeError):
        decode_deidentified(ds)  # a bare data set has no .dataset: it was not de-identified


def test_dicom_bytes_reach_the_pixel_decoder_only_de_identified(tmp_path, monkeypatch):
    from medimg.data import deid, images

    data = write_dicom(tmp_path / "x.dcm").read_bytes()
    seen = []
    real = images.decode_deidentified

    def watching(result, **options):
        seen.append((str(result.dataset.PatientName), result.dataset.PatientIdentityRemoved))
        return real(result, **options)

    monkeypatch.setattr(images, "decode_deidentified", watching)
    decode(data)
    [(name, removed)] = seen
    assert removed == "YES" and name != PHI_VALUES["PatientName"] and name.startswith("p-")

    def failing(ds, key, **options):
        raise ValueError("cannot")

    monkeypatch.setattr(deid, "deidentify", failing)
    with pytest.raises(UndecodableImage, match="could not be de-identified"):
        decode(data)
    assert len(seen) == 1  # no pixel was decoded without de-identification


def test_dicom_without_pixel_data(tmp_path):
    with pytest.raises(UndecodableImage, match=r"^DICOM has no pixel data$"):
        decode(_dicom(tmp_path, pixel_data=False))


def test_dicom_size_is_checked_before_its_pixels_are_touched(tmp_path):
    data = _dicom(tmp_path)
    broken = data[:-100]  # pixel data now too short to decode
    with pytest.raises(UndecodableImage, match="pixel data cannot be decoded"):
        decode(broken)
    with pytest.raises(TooManyPixels, match="48x64"):
        decode(broken, max_pixels=1000)


def test_dicom_errors_never_carry_header_values(tmp_path):
    data = _dicom(tmp_path)
    reasons = []
    for broken in (data[:-100], data[:1000], data[:140] + b"\xff" * 40):
        try:
            decode(broken)
        except UndecodableImage as exc:
            reasons.append(str(exc))
    assert len(reasons) == 3
    for reason in reasons:
        assert not any(value in reason for value in PHI_VALUES.values()), reason


def test_decoding_a_deidentified_dataset_equals_decoding_its_bytes(tmp_path):
    from medimg.data.deid import deidentify

    path = write_dicom(tmp_path / "x.dcm", frames=3, window=(1000.0, 2000.0))
    result = deidentify(pydicom.dcmread(path), b"k" * 32)
    ds = result.dataset
    before = ds.to_json_dict()
    from_ds = decode_deidentified(result, dicom_frame="first")
    from_bytes = decode(path.read_bytes(), dicom_frame="first")
    np.testing.assert_array_equal(from_ds.pixels, from_bytes.pixels)
    assert from_ds.bit_depth == from_bytes.bit_depth == 12
    assert ds.to_json_dict() == before  # the caller's dataset is left as it was


def test_dicom_writer_carries_every_identifier(tmp_path):
    path = write_dicom(tmp_path / "phi.dcm")
    data = path.read_bytes()
    for key, value in PHI_VALUES.items():
        assert value.encode() in data, key
    ds = pydicom.dcmread(path)
    assert str(ds.PatientName) == PHI_VALUES["PatientName"]
    assert ds.private_block(0x0009, PRIVATE_CREATOR)[0x10].value == PHI_VALUES["PrivateIdentifier"]
    request = ds.RequestAttributesSequence[0]
    assert str(request.RequestingPhysician) == PHI_VALUES["RequestingPhysician"]
    assert ds.BurnedInAnnotation == "NO"


def test_dicom_writer_is_deterministic_and_takes_overrides(tmp_path):
    first = write_dicom(tmp_path / "a.dcm", phi={"PatientName": "ROE^RICHARD"}).read_bytes()
    second = write_dicom(tmp_path / "b.dcm", phi={"PatientName": "ROE^RICHARD"}).read_bytes()
    assert first == second
    assert b"ROE^RICHARD" in first and PHI_VALUES["PatientName"].encode() not in first


def test_burned_in_text_is_drawn_and_flagged(tmp_path):
    path = write_dicom(tmp_path / "burned.dcm", burned_in="DOE JANE")
    ds = pydicom.dcmread(path)
    assert ds.BurnedInAnnotation == "YES"
    assert not np.array_equal(ds.pixel_array, default_pixels())
    assert (ds.pixel_array[:14] == 4095).sum() > 20  # the text, at full scale, near the top


# --- arrays, statistics, channels ----------------------------------------------------------------


def test_decode_array_keeps_uint8_and_squeezes_one_channel():
    decoded = decode_array(_grey()[:, :, None])
    np.testing.assert_array_equal(decoded.pixels, _grey())
    assert (decoded.format, decoded.bit_depth, decoded.channels) == ("array", 8, 1)
    assert decode_array(_rgb()).pixels.shape == (H, W, 3)


def test_decode_array_stretches_deeper_integers_and_floats():
    values = _grey().astype(np.uint16) * 100
    decoded = decode_array(values)
    np.testing.assert_array_equal(decoded.pixels, _stretch(values))
    assert decoded.bit_depth == 16
    unit = _grey().astype(np.float64) / 510  # floats in [0, 0.5]
    assert decode_array(unit).source_std8 == pytest.approx(unit.std() * 255)


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.zeros((4, 4, 2), np.uint8), "not an image"),
        (np.zeros((2, 4, 4, 3), np.uint8), "not an image"),
        (np.zeros((0, 4), np.uint8), "empty"),
        (np.array([[0.0, np.nan]]), "NaN"),
        (np.array([["a", "b"]]), "not an image"),
    ],
)
def test_decode_array_refuses_what_is_not_an_image(array, reason):
    with pytest.raises(UndecodableImage, match=reason):
        decode_array(array)


def test_constant_images_become_all_zeros():
    decoded = decode_array(np.full((8, 8), 30_000, np.uint16))
    assert not decoded.pixels.any() and decoded.source_std8 == 0.0


def test_near_constant_sixteen_bit_image_looks_blank_before_stretching():
    rng = np.random.default_rng(0)
    values = (30_000 + rng.integers(-5, 6, (64, 64))).astype("<u2")
    decoded = decode(_encode(Image.frombytes("I;16", (64, 64), values.tobytes()), "PNG"))
    assert image_stats(decoded.pixels)["intensity_std"] > 50  # stretching hides it ...
    assert decoded.source_std8 < 0.05  # ... the source's own scale does not


def test_image_stats_exact_values():
    pixels = np.array([[0, 255], [100, 5]], np.uint8)
    stats = image_stats(pixels)
    assert stats == {
        "intensity_min": 0,
        "intensity_max": 255,
        "intensity_mean": 90.0,
        "intensity_std": pytest.approx(np.std([0, 255, 100, 5])),
        "saturated_fraction": 0.25,
        "blank_fraction": 0.25,
    }
    assert isinstance(stats["intensity_min"], int) and isinstance(stats["intensity_max"], int)


def test_image_stats_reduces_colour_to_luma():
    pixels = np.array([[[255, 0, 0], [255, 255, 255]], [[0, 0, 0], [0, 255, 0]]], np.uint8)
    stats = image_stats(pixels)
    # ITU-R 601: red 0.299 * 255 = 76.2 -> 76, green 0.587 * 255 = 149.7 -> 150
    assert stats["intensity_mean"] == pytest.approx((76 + 255 + 0 + 150) / 4)
    assert stats["saturated_fraction"] == 0.25 and stats["blank_fraction"] == 0.25


def test_to_channels_is_unchanged():
    assert to_channels(_grey(), 3).shape == (H, W, 3)
    np.testing.assert_array_equal(to_channels(_grey(), 1)[:, :, 0], _grey())
    grey = to_channels(_rgb(), 1)[:, :, 0]
    expected = np.round(_rgb().astype(float) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    np.testing.assert_array_equal(grey, expected)
