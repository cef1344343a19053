"""Decoding image files into arrays, the same way for ingest, preprocessing and serving.

Every format ends as a :class:`DecodedImage` whose ``pixels`` are ``uint8`` (H, W) or (H, W, 3):
alpha is dropped, palettes and CMYK become RGB (or greyscale when the palette has no colour),
EXIF orientation is applied, and deeper-than-8-bit or floating-point samples are min-max stretched
per image. DICOM goes through its modality LUT (rescale), then its VOI LUT or first window, and
MONOCHROME1 is inverted so that bright is dense in every output.

DICOM is recognised by content, never by name, and its pixels are decoded by one function,
:func:`decode_deidentified`, which takes only what :func:`medimg.data.deid.deidentify` returns:
no DICOM pixel is decoded before its header has been de-identified.

Every decoder refuses an image of more than ``max_pixels`` (width x height) before decoding it,
and the bound is one number everywhere: ``data.max_pixels`` from ``params.yaml``, which ingest and
preprocess pass, and whose default applies where no workspace says otherwise (a served model).
Pillow's own decompression-bomb guard is raised to that bound, so Pillow's default never decides
first, and every refusal is a one-line :class:`TooManyPixels`.

Compressed DICOM is decoded by pydicom's plugins (GDCM for the JPEG family: baseline, lossless,
JPEG-LS and JPEG 2000), except 12-bit JPEG Extended, which pydicom's GDCM plugin declines and
GDCM itself decodes here.

Nothing here logs or raises with a DICOM header value in it: headers carry patient data.
"""

from __future__ import annotations

import copy
import io
import logging
import re
import secrets
import struct
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from medimg.config import DataConfig
from medimg.channels import to_channels

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from medimg.data.deid import DeidResult

logger = logging.getLogger(__name__)
# Pillow's debug records quote EXIF and TIFF tag values, which may name the patient.
logging.getLogger("PIL").setLevel(logging.INFO)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm"})

DicomFrame = Literal["first", "middle"]

# Pillow format name -> our name. Other formats Pillow can open (GIF, EPS, ICO, ...) are refused:
# they are not medical image formats and some of them run external programs to decode.
_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "BMP": "bmp", "TIFF": "tiff"}
_PHOTOMETRICS = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422",
     "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "HSV", "ARGB", "CMYK", "YBR_PARTIAL_422"}
)  # fmt: skip
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
# ITU-R 601 luma, as Pillow's convert("L")
DICOM_SNIFF_BYTES = 1024
"""How much of a file's head :func:`is_dicom` needs to recognise DICOM."""
_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
    b"UN UR US UT UV".split()
)
# A data set without preamble starts with its file meta group (0002) or, with no meta at all,
# with its lowest group: (0008) in practice, as SOP Class UID (0008,0016) is mandatory.
_FIRST_GROUPS = range(0x0002, 0x0029, 2)

DEFAULT_MAX_PIXELS: int = DataConfig.model_fields["max_pixels"].default
"""The bound used when a caller passes none: ``data.max_pixels``'s default, from config."""
_PILLOW_GUARD = threading.Lock()
_JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
# Start-of-frame markers: SOF0-SOF15 but DHT (C4), JPG (C8) and DAC (CC), and JPEG-LS (SOF55).
_JPEG_SOFS = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC} | {0xF7})
_PILLOW_SIZE = re.compile(r"\((\d+) pixels\)")


class UndecodableImage(Exception):
    """A file that is not a readable image; its message is the quarantine reason and ``code``
    the reason's code (``empty``, ``not_an_image``, ``corrupt``, ``unsupported``...)."""

    def __init__(self, message: str, code: str = "corrupt") -> None:
        super().__init__(message)
        self.code = code


class TooManyPixels(UndecodableImage):
    """The image is larger than allowed; raised before any pixel data is decoded."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="too_many_pixels")


@dataclass(frozen=True)
class DecodedImage:
    """One decoded image and what the source said about its samples.

    Attributes:
        pixels: ``uint8`` (H, W) for greyscale or (H, W, 3) for colour; the 8-bit view every
            later stage sees.
        bit_depth: Bits per sample in the source: 8 for 8-bit PNG or JPEG, 16 for 16-bit PNG or
            TIFF, BitsStored for DICOM (e.g. 12), 1 for bilevel images.
        format: ``"png"``, ``"jpeg"``, ``"tiff"``, ``"bmp"``, ``"dicom"`` or ``"array"``.
        source_std8: Standard deviation of the source samples on a 0-255 scale, taken against
            the nominal full scale (``2**bit_depth - 1``) before any stretching, so a blank or
            near-constant image looks blank even when its stretched pixels span 0-255.
    """

    pixels: np.ndarray
    bit_depth: int
    format: str
    source_std8: float

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return 1 if self.pixels.ndim == 2 else int(self.pixels.shape[2])


def is_dicom(data: bytes) -> bool:
    """True for bytes that parse as DICOM, whatever the file is called.

    That is the 'DICM' magic after the 128-byte preamble, or, where an exporter left the
    preamble out, a little-endian data set from byte 0: its file meta group, or a data set
    without meta (explicit or implicit VR) whose first element is a known tag of a low group.
    Give it at least :data:`DICOM_SNIFF_BYTES` of the file's head.
    """
    if len(data) >= 132 and data[128:132] == b"DICM":
        return True
    return _starts_with_element(data)


def _starts_with_element(data: bytes) -> bool:
    from pydicom.datadict import dictionary_has_tag

    if len(data) < 8:
        return False
    group, element = struct.unpack_from("<HH", data)
    tag = (group << 16) | element
    if group not in _FIRST_GROUPS or not (element == 0 or dictionary_has_tag(tag)):
        return False
    if data[4:6] in _VRS:  # explicit VR
        return True
    # Implicit VR: a 32-bit length, then (when it is in the head) a higher tag.
    (length,) = struct.unpack_from("<I", data, 4)
    if length == 0xFFFFFFFF:
        return True
    following = 8 + length
    if following + 4 > len(data):
        return length < 1 << 24
    next_group, next_element = struct.unpack_from("<HH", data, following)
    return ((next_group << 16) | next_element) > tag


def decode(
    data: bytes, *, dicom_frame: DicomFrame = "middle", max_pixels: int | None = None
) -> DecodedImage:
    """Decode PNG, JPEG, BMP, TIFF or DICOM bytes.

    DICOM is recognised by content (:func:`is_dicom`); the file name plays no part. Its header
    is de-identified in memory, with a throwaway key, before its pixels are decoded.

    Args:
        data: The encoded file.
        dicom_frame: Which frame of a multi-frame DICOM to keep.
        max_pixels: Refuse images with more pixels (width x height) than this, before decoding;
            pass ``data.max_pixels``. ``None`` uses its default, :data:`DEFAULT_MAX_PIXELS`.

    Raises:
        TooManyPixels: The image is larger than ``max_pixels``.
        UndecodableImage: With the reason, when the bytes are not a complete, supported image.
    """
    if not data:
        raise UndecodableImage("empty file (0 bytes)", code="empty")
    if is_dicom(data):
        return _decode_dicom(data, dicom_frame=dicom_frame, max_pixels=max_pixels)
    return _decode_pil(data, max_pixels)


def decode_image(
    data: bytes, *, dicom_frame: DicomFrame = "middle", max_pixels: int | None = None
) -> np.ndarray:
    """Decode encoded image bytes into uint8 (H, W) or (H, W, 3). See :func:`decode`.

    Raises:
        UndecodableImage: with the reason, when the bytes are not a complete image.
    """
    return decode(data, dicom_frame=dicom_frame, max_pixels=max_pixels).pixels


def read_image(
    path: Path, *, dicom_frame: DicomFrame = "middle", max_pixels: int | None = None
) -> np.ndarray:
    """Read and decode one image file. See :func:`decode`."""
    return decode_image(Path(path).read_bytes(), dicom_frame=dicom_frame, max_pixels=max_pixels)


def image_stats(pixels: np.ndarray) -> dict[str, float | int]:
    """Intensity statistics of uint8 pixels; colour is reduced to ITU-R 601 luma first.

    Returns:
        ``intensity_min`` and ``intensity_max`` (ints), ``intensity_mean``, ``intensity_std``,
        ``saturated_fraction`` (share of pixels at 255) and ``blank_fraction`` (share at 0).
    """
    if pixels.dtype != np.uint8:
        raise ValueError(f"image_stats needs uint8 pixels, got {pixels.dtype}; decode first")
    grey = to_channels(pixels, 1)[:, :, 0]
    if grey.size == 0:
        raise ValueError("image_stats needs at least one pixel, got an empty array")
    values = grey.astype(np.float64)
    return {
        "intensity_min": int(grey.min()),
        "intensity_max": int(grey.max()),
        "intensity_mean": float(values.mean()),
        "intensity_std": float(values.std()),
        "saturated_fraction": float(np.count_nonzero(grey == 255) / grey.size),
        "blank_fraction": float(np.count_nonzero(grey == 0) / grey.size),
    }


def decode_array(array: np.ndarray) -> DecodedImage:
    """Decode an in-memory image array, e.g. one entry of a MedMNIST ``.npz``.

    Args:
        array: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of any integer, boolean or float dtype.
            uint8 is kept as it is; deeper integers and floats are min-max stretched.

    Raises:
        UndecodableImage: The shape or dtype is not an image, or floats are not finite.
    """
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[:, :, 0] if array.shape[2] == 1 else array[:, :, :3]
    if array.ndim != 2 and (array.ndim != 3 or array.shape[2] != 3):
        raise UndecodableImage(
            f"array of shape {array.shape} is not an image; expected (H, W), (H, W, 1) or (H, W, 3)"
        )
    if array.size == 0:
        raise UndecodableImage(f"empty image array of shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * np.uint8(255)
        return DecodedImage(array, 1, "array", _std(array))
    if array.dtype == np.uint8:
        return DecodedImage(np.ascontiguousarray(array), 8, "array", _std(array))
    if np.issubdtype(array.dtype, np.integer):
        bits = array.dtype.itemsize * 8
        return DecodedImage(_to_uint8(array), bits, "array", _std(array) * 255 / (2**bits - 1))
    if np.issubdtype(array.dtype, np.floating):
        return _decode_float(array, array.dtype.itemsize * 8, "array")
    raise UndecodableImage(f"array of dtype {array.dtype} is not an image; use integers or floats")


# --- Pillow formats --------------------------------------------------------------------------


def _decode_pil(data: bytes, max_pixels: int | None) -> DecodedImage:
    limit = _limit(max_pixels)
    _raise_pillow_guard(limit)
    try:
        with warnings.catch_warnings():
            # Pillow warns above its guard, which is now at least the limit: such an image is
            # refused below, by the limit, so the warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt = _PIL_FORMATS.get(image.format or "")
                if fmt is None:
                    raise UndecodableImage(
                        f"unsupported image format {image.format}; "
                        "use PNG, JPEG, BMP, TIFF or DICOM",
                        code="unsupported",
                    )
                # Pillow reads only the header on open, so the size check comes before decoding.
                _check_pixels(image.width, image.height, limit)
                image.load()
                return _from_pil(image, fmt, data)
    except UndecodableImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's hard error, at twice its guard: far beyond the limit.
        found = _PILLOW_SIZE.search(str(exc))
        size = f"{found.group(1)} pixels" if found else "the image"
        raise TooManyPixels(f"too many pixels: {size} exceeds the limit of {limit}; "
                            "data.max_pixels in params.yaml sets it") from None
    except UnidentifiedImageError:
        raise UndecodableImage("not a recognised image format", code="not_an_image") from None
    except Exception as exc:
        # Pillow signals damaged data with OSError, SyntaxError, ValueError, struct.error and
        # more; every one of them means the same to a caller.
        raise UndecodableImage(f"truncated or corrupt image data: {_short(exc)}") from None


def _limit(max_pixels: int | None) -> int:
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if limit < 1:
        raise ValueError(f"max_pixels {limit} must be positive; set data.max_pixels in params.yaml")
    return limit


def _raise_pillow_guard(limit: int) -> None:
    """Make Pillow's decompression-bomb guard at least ``limit``, so that the limit decides.

    Pillow warns above ``Image.MAX_IMAGE_PIXELS`` and refuses above twice it, and that
    threshold is module state: it is only ever raised here, never lowered, so concurrent
    decodes under different limits all keep their own.
    """
    with _PILLOW_GUARD:
        current = Image.MAX_IMAGE_PIXELS
        if current is not None and current < limit:
            Image.MAX_IMAGE_PIXELS = limit


def _check_pixels(width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise TooManyPixels(
            f"too many pixels: {width}x{height} = {width * height} exceeds the limit of {limit}; "
            "data.max_pixels in params.yaml sets it"
        )


def _from_pil(image: Image.Image, fmt: str, data: bytes) -> DecodedImage:
    mode = image.mode
    bits = _pil_bit_depth(image, fmt, data)  # before exif_transpose, which drops format tags
    image = ImageOps.exif_transpose(image)
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(image)
        if mode == "I" and bits not in range(1, 33):
            bits = 16 if values.min() >= 0 and values.max() <= 65535 else 32
        return DecodedImage(_to_uint8(values), bits, fmt, _std(values) * 255 / (2**bits - 1))
    if mode == "F":
        return _decode_float(np.asarray(image), 32, fmt)
    if mode in ("1", "L", "LA", "La"):
        pixels = np.asarray(image.convert("L"))
    elif mode in ("P", "PA"):
        pixels = _from_palette(image)
    else:  # RGB, RGBA, CMYK, YCbCr, LAB, HSV, ...: alpha is dropped, colour goes to RGB
        pixels = np.asarray(image.convert("RGB"))
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    return DecodedImage(pixels, bits, fmt, _std(pixels))


def _pil_bit_depth(image: Image.Image, fmt: str, data: bytes) -> int:
    """Bits per sample in the file; 0 when a mode "I" image does not say."""
    if image.mode == "1":
        return 1
    if image.mode in _SIXTEEN_BIT_MODES:
        return 16
    if fmt == "png" and len(data) > 25:
        # IHDR: Pillow reads 16-bit colour PNGs as 8-bit RGB and low-depth grey as L, so the
        # header is the only place the source depth shows. Palette depth counts indices.
        depth, colour_type = data[24], data[25]
        if colour_type != 3 and depth in (1, 2, 4, 8, 16):
            return depth
        return 8
    if fmt == "tiff" and hasattr(image, "tag_v2"):
        bits = image.tag_v2.get(258)
        bits = bits[0] if isinstance(bits, tuple) and bits else bits
        if isinstance(bits, int) and 1 <= bits <= 32:
            return bits
    return 0 if image.mode == "I" else 8


def _from_palette(image: Image.Image) -> np.ndarray:
    has_alpha = image.mode == "PA" or "transparency" in image.info
    # Through RGBA when the palette carries transparency, so Pillow does not warn; alpha is
    # then dropped and each pixel keeps its palette colour.
    rgb = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))[:, :, :3]
    if np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2]):
        return rgb[:, :, 0]
    return rgb


# --- DICOM -----------------------------------------------------------------------------------


def read_dicom(data: bytes) -> Dataset:
    """Parse DICOM bytes, with or without preamble, quietly: pydicom's warnings quote values.

    Raises:
        UndecodableImage: the header cannot be parsed (the message names no value).
    """
    import pydicom

    logging.getLogger("pydicom").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
            _complete_file_meta(ds)
    except Exception as exc:
        # The parser's message may quote element values, so only its type is kept.
        raise UndecodableImage(f"truncated or corrupt DICOM data ({type(exc).__name__})") from None
    return ds


def _complete_file_meta(ds: Dataset) -> None:
    """A data set read without file meta gets the transfer syntax it was read in, so that its
    pixels decode and it can be written as a proper Part-10 file."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else
        ExplicitVRLittleEndian if little or little is None else ExplicitVRBigEndian
    )
    for meta_keyword, keyword in (("MediaStorageSOPClassUID", "SOPClassUID"),
                                  ("MediaStorageSOPInstanceUID", "SOPInstanceUID")):
        if keyword in ds and meta_keyword not in meta:
            setattr(meta, meta_keyword, ds[keyword].value)


def _decode_dicom(
    data: bytes, *, dicom_frame: DicomFrame, max_pixels: int | None
) -> DecodedImage:
    """DICOM bytes met outside ingest (a prediction request): de-identified in memory first,
    with a key that is thrown away, so that nothing derived from them carries the header."""
    from medimg.data import deid

    ds = read_dicom(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = deid.deidentify(ds, secrets.token_bytes(32))
    except Exception:  # what cannot be de-identified is not decoded
        raise UndecodableImage("DICOM could not be de-identified", code="deid_failed") from None
    return decode_deidentified(result, dicom_frame=dicom_frame, max_pixels=max_pixels)


def decode_deidentified(
    result: DeidResult, *, dicom_frame: DicomFrame = "middle", max_pixels: int | None = None
) -> DecodedImage:
    """Decode the pixels of a de-identified DICOM data set: the only DICOM pixel decoder.

    It takes what :func:`medimg.data.deid.deidentify` returned, so no DICOM pixel is decoded
    before its header is de-identified.

    Applies the modality LUT (Rescale Slope/Intercept), then the VOI LUT or the first Window
    Center/Width, then inverts MONOCHROME1. Without a VOI transform the values are min-max
    stretched. Colour (RGB, YBR, palette) comes out as RGB.

    Args:
        result: The de-identified data set, with its file meta (for its transfer syntax); it is
            not modified.
        dicom_frame: Which frame of a multi-frame image to keep.
        max_pixels: Refuse images whose Rows x Columns exceeds this, before decoding; pass
            ``data.max_pixels``. ``None`` uses its default, :data:`DEFAULT_MAX_PIXELS`.

    Raises:
        TooManyPixels: Rows x Columns exceeds ``max_pixels``.
        UndecodableImage: No pixel data, an undecodable transfer syntax, or corrupt pixel data.
    """
    from pydicom.pixels import get_decoder, pixel_array
    from pydicom.pixels.utils import get_nr_frames

    ds = result.dataset
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise UndecodableImage("DICOM has no pixel data", code="no_pixels")
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if not isinstance(rows, int) or not isinstance(columns, int) or rows < 1 or columns < 1:
        raise UndecodableImage("DICOM has no valid Rows and Columns")
    _check_pixels(columns, rows, _limit(max_pixels))

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if not syntax:
        raise UndecodableImage("DICOM has no transfer syntax in its file meta")
    label = f"{syntax.name} ({syntax})" if syntax.name != str(syntax) else str(syntax)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise UndecodableImage(
            f"DICOM transfer syntax {label} is not supported by pydicom", code="unsupported"
        ) from None
    if not decoder.is_available:
        raise UndecodableImage(
            f"DICOM transfer syntax {label} cannot be decoded by the installed pydicom plugins",
            code="unsupported",
        )

    frames = get_nr_frames(ds, warn=False)
    index = frames // 2 if dicom_frame == "middle" and frames > 1 else 0
    encoded = _encoded_frame(ds, index, frames) if syntax.is_encapsulated else None
    if encoded is not None:
        _check_encoded_size(encoded, rows, columns)
    try:
        # One frame only, so a long cine loop is not decoded whole to keep one picture.
        if encoded is not None and syntax == _JPEG_EXTENDED and int(ds.get("BitsStored", 8)) > 8:
            stored = _decode_jpeg_extended_12(encoded, ds)
        else:
            stored = pixel_array(ds, index=index)
    except UndecodableImage:
        raise
    except Exception as exc:
        raise UndecodableImage(
            f"DICOM pixel data cannot be decoded ({label}): {_short(exc)}"
        ) from None

    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    source_std8 = _std(stored) * 255 / (2**bits - 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    # Only a known value may reach a message: any other header text could be patient data.
    shown = photometric if photometric in _PHOTOMETRICS else "(unrecognised)"
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    try:
        if samples == 1 and photometric == "PALETTE COLOR":
            pixels = _dicom_palette(stored, ds)
        elif samples == 1:
            pixels = _dicom_grey(stored, ds, photometric, shown)
        else:
            # pixel_array has already turned YBR_FULL and YBR_FULL_422 into RGB.
            pixels = stored if stored.dtype == np.uint8 else _to_uint8(stored)
    except UndecodableImage:
        raise
    except Exception as exc:
        raise UndecodableImage(
            f"DICOM pixel values cannot be transformed ({shown}): {_short(exc)}"
        ) from None
    if pixels.ndim == 3 and pixels.shape[2] != 3:
        raise UndecodableImage(f"DICOM with {pixels.shape[2]} samples per pixel is not supported")
    return DecodedImage(np.ascontiguousarray(pixels), bits, "dicom", source_std8)


def _encoded_frame(ds: Dataset, index: int, frames: int) -> bytes:
    from pydicom.encaps import get_frame

    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        return get_frame(ds.PixelData, index, number_of_frames=frames, extended_offsets=extended)
    except Exception as exc:
        raise UndecodableImage(
            f"DICOM encapsulated pixel data cannot be split into frames: {_short(exc)}"
        ) from None


def _check_encoded_size(frame: bytes, rows: int, columns: int) -> None:
    """A JPEG or JPEG 2000 frame must code the size Rows and Columns say, which the pixel
    bound has checked: a decoder follows the stream's own header, so a larger one would
    bypass the bound."""
    if frame.startswith(b"\xff\xd8"):
        header = _jpeg_frame_header(frame)
        size = None if header is None else (header[2], header[1] or rows)  # height 0: see DNL
    else:
        size = _j2k_size(frame)
    if size is not None and size != (columns, rows):
        raise UndecodableImage(
            f"DICOM frame codes {size[0]}x{size[1]} pixels, but Columns x Rows say "
            f"{columns}x{rows}"
        )


def _jpeg_frame_header(frame: bytes) -> tuple[int, int, int] | None:
    """(precision, height, width) from a JPEG or JPEG-LS frame header, or None without one."""
    offset = 2
    while offset + 4 <= len(frame) and frame[offset] == 0xFF:
        marker = frame[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        (length,) = struct.unpack_from(">H", frame, offset + 2)
        if marker in _JPEG_SOFS:
            if offset + 9 > len(frame):
                return None
            return struct.unpack_from(">BHH", frame, offset + 4)
        if marker == 0xDA:  # a scan before any frame header
            return None
        offset += 2 + length
    return None


def _j2k_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG 2000 codestream's SIZ segment, or None without one."""
    if not frame.startswith(b"\xff\x4f\xff\x51") or len(frame) < 24:
        return None
    width, height, x_offset, y_offset = struct.unpack_from(">IIII", frame, 8)
    return width - x_offset, height - y_offset


def _decode_jpeg_extended_12(frame: bytes, ds: Dataset) -> np.ndarray:
    """A 12-bit JPEG Extended (process 4) frame, decoded by GDCM directly.

    pydicom's GDCM plugin declines 12-bit samples, although GDCM's 12-bit libjpeg decodes them;
    this builds the same GDCM image that plugin builds, without that check.
    """
    try:
        import gdcm
    except ImportError:
        raise UndecodableImage(
            "DICOM transfer syntax JPEG Extended with 12-bit samples needs python-gdcm",
            code="unsupported",
        ) from None
    rows, columns = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits_stored = int(ds.BitsStored)
    signed = int(ds.get("PixelRepresentation", 0) or 0)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2") or bits_stored > 12:
        raise UndecodableImage(
            "DICOM JPEG Extended with more than 8 bits is decoded for 12-bit greyscale only",
            code="unsupported",
        )
    fragment = gdcm.Fragment()
    fragment.SetByteStringValue(frame)
    fragments = gdcm.SequenceOfFragments.New()
    fragments.AddFragment(fragment)
    element = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    element.SetValue(fragments.__ref__())
    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimensions((columns, rows, 1))
    image.SetDataElement(element)
    image.SetPhotometricInterpretation(
        gdcm.PhotometricInterpretation(gdcm.PhotometricInterpretation.GetPIType(photometric))
    )
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGExtendedProcess2_4))
    # GDCM picks its 8-, 12- or 16-bit libjpeg by Bits Allocated and, after a wrong pick,
    # retries the others with a message on stderr: name the stream's own precision. Every
    # pick returns 16-bit samples.
    header = _jpeg_frame_header(frame)
    allocated = 12 if header is not None and header[0] == 12 else 16
    image.SetPixelFormat(gdcm.PixelFormat(1, allocated, bits_stored, bits_stored - 1, signed))
    buffer = image.GetBuffer()  # GDCM hands char* back as str
    data = buffer.encode("utf-8", "surrogateescape") if isinstance(buffer, str) else bytes(buffer)
    if len(data) != rows * columns * 2:
        raise UndecodableImage("DICOM pixel data cannot be decoded (JPEG Extended, 12-bit)")
    values = np.frombuffer(data, dtype="<i2" if signed else "<u2").reshape(rows, columns)
    return values.astype(np.int16 if signed else np.uint16)


def _dicom_grey(stored: np.ndarray, ds: Dataset, photometric: str, shown: str) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise UndecodableImage(
            f"DICOM photometric interpretation {shown} with one sample is not supported"
        )
    values = apply_modality_lut(stored, ds)
    pixels = None
    if _has_voi(ds):
        try:
            pixels = _apply_voi(values, ds)
        except (ValueError, NotImplementedError, IndexError, TypeError) as exc:
            # A broken window must not lose the image; the full range is still meaningful.
            logger.warning("ignoring an unusable DICOM VOI transform (%s)", type(exc).__name__)
    if pixels is None:
        pixels = _to_uint8(values)
    if photometric == "MONOCHROME1":
        pixels = 255 - pixels
    return pixels


def _has_voi(ds: Dataset) -> bool:
    return bool(ds.get("VOILUTSequence")) or (
        ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
    )


def _apply_voi(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """The first VOI LUT or window, mapped onto 0-255 by its own output range."""
    from pydicom.pixels import apply_voi_lut

    # pydicom's helpers coerce a few attributes of the dataset they are given; work on a copy.
    ds = _voi_copy(ds)
    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        entries = int(item.LUTDescriptor[0]) or 2**16
        first = int(item.LUTDescriptor[1])
        table = apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), ds)
        lo, hi = float(np.min(table)), float(np.max(table))
        if not np.issubdtype(values.dtype, np.integer):
            values = np.round(values).astype(np.int64)
    else:
        # Values beyond either edge of the window map to its output minimum and maximum.
        lo, hi = (float(v) for v in apply_voi_lut(np.array([-np.inf, np.inf]), ds))
    out = apply_voi_lut(values, ds).astype(np.float64)
    if hi <= lo:
        return np.zeros(out.shape, dtype=np.uint8)
    return np.clip(np.round((out - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _voi_copy(ds: Dataset) -> Dataset:
    from pydicom.dataset import Dataset as PydicomDataset

    keep = (
        "PhotometricInterpretation", "BitsStored", "BitsAllocated", "PixelRepresentation",
        "RescaleSlope", "RescaleIntercept", "ModalityLUTSequence", "VOILUTSequence",
        "WindowCenter", "WindowWidth", "VOILUTFunction",
    )  # fmt: skip
    out = PydicomDataset()
    for keyword in keep:
        if keyword in ds:
            out[keyword] = copy.deepcopy(ds[keyword])
    if hasattr(ds, "file_meta"):
        out.file_meta = ds.file_meta
    return out


def _dicom_palette(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(stored, ds)
    return rgb if rgb.dtype == np.uint8 else _to_uint8(rgb)


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# --- shared ----------------------------------------------------------------------------------


def _decode_float(values: np.ndarray, bits: int, fmt: str) -> DecodedImage:
    if not np.all(np.isfinite(values)):
        raise UndecodableImage("image holds NaN or infinite values")
    pixels = _to_uint8(values)
    lo, hi = float(values.min()), float(values.max())
    # Floats in [0, 1] have a nominal full scale; other ranges have none, so the stretched
    # image stands in.
    std8 = _std(values) * 255 if lo >= 0.0 and hi <= 1.0 else _std(pixels)
    return DecodedImage(pixels, bits, fmt, std8)


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    values = pixels.astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _std(values: np.ndarray) -> float:
    return float(np.std(values, dtype=np.float64))
