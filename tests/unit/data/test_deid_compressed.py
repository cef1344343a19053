"""De-identification of JPEG Lossless, JPEG-LS and 12-bit JPEG Extended frames: no identifier
survives in a frame's own segments, and the pixels are not touched."""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
)
from support.dicoms import block_pixels, default_pixels, write_dicom

from medimg.data.deid import NotDeidentifiable, deidentify
from medimg.data.images import decode_deidentified, read_dicom

KEY = b"unit-test-key-0123456789abcdef"
PLANTED = "MRN-ZQX-5150"
SYNTAXES = [JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless, JPEGExtended12Bit]


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


# A comment, EXIF (APP1), a vendor note (APP8, where JPEG-LS writers put SPIFF) and an XMP-like
# APP1, each naming the patient.
PLANTED_SEGMENTS = (
    _segment(0xFFFE, b"ZQX comment " + PLANTED.encode()),
    _segment(0xFFE1, b"Exif\x00\x00II*\x00\x08\x00\x00\x00ZQX " + PLANTED.encode()),
    _segment(0xFFE8, b"SPIFF\x00ZQX " + PLANTED.encode()),
    _segment(0xFFE1, b"http://ns.adobe.com/xap/1.0/\x00<x>ZQX " + PLANTED.encode() + b"</x>"),
)


def _pixels(syntax: str) -> np.ndarray:
    pixels = default_pixels(frames=2, bits_stored=12)
    return block_pixels(pixels) if syntax == JPEGExtended12Bit else pixels


def _saved(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _with_frames(ds: pydicom.Dataset, frames: list[bytes]) -> pydicom.Dataset:
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].is_undefined_length = True
    return ds


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda uid: uid.keyword)
def test_no_identifier_survives_in_a_compressed_frames_segments(tmp_path, syntax):
    pixels = _pixels(syntax)
    path = write_dicom(tmp_path / "planted.dcm", pixels, transfer_syntax=syntax,
                       phi={"PatientID": PLANTED}, frame_segments=PLANTED_SEGMENTS)  # fmt: skip
    ds = read_dicom(path.read_bytes())
    # and text after each frame's end of image, inside the fragment
    frames = list(generate_frames(ds.PixelData, number_of_frames=2))
    ds = _with_frames(ds, [f + b"ZQX trailer " + PLANTED.encode() for f in frames])
    assert ds.PixelData.count(PLANTED.encode()) == 2 * (len(PLANTED_SEGMENTS) + 1)

    result = deidentify(ds, KEY)
    saved = _saved(result.dataset)
    assert b"ZQX" not in saved and PLANTED.encode() not in saved
    out = pydicom.dcmread(io.BytesIO(saved))
    assert out.file_meta.TransferSyntaxUID == syntax  # cleaned, not re-encoded
    cleaned = list(generate_frames(out.PixelData, number_of_frames=2))
    assert all(f.startswith(b"\xff\xd8") and f.rstrip(b"\x00").endswith(b"\xff\xd9")
               for f in cleaned)  # fmt: skip

    # the same pixels as the file written without anything planted
    clean = read_dicom(write_dicom(tmp_path / "clean.dcm", pixels,
                                   transfer_syntax=syntax).read_bytes())  # fmt: skip
    for frame_choice in ("first", "middle"):
        np.testing.assert_array_equal(
            decode_deidentified(result, dicom_frame=frame_choice).pixels,
            decode_deidentified(deidentify(clean, KEY), dicom_frame=frame_choice).pixels,
        )
    if syntax != JPEGExtended12Bit:  # pydicom's own plugins decode the rest
        np.testing.assert_array_equal(out.pixel_array, clean.pixel_array)


def test_jpeg_ls_keeps_its_preset_parameters_at_their_exact_length(tmp_path):
    path = write_dicom(tmp_path / "jls.dcm", bits_stored=16, transfer_syntax=JPEGLSLossless)
    ds = read_dicom(path.read_bytes())
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    at = frame.index(b"\xff\xf8")  # CharLS writes its preset parameters for 16-bit samples
    (length,) = struct.unpack_from(">H", frame, at + 2)
    assert frame[at + 4] == 1 and length == 13
    # text appended inside the segment, its length grown to cover it
    grown = _segment(0xFFF8, frame[at + 4 : at + 2 + length] + b"ZQX " + PLANTED.encode())
    ds = _with_frames(ds, [frame[:at] + grown + frame[at + 2 + length :]])
    result = deidentify(ds, KEY)
    saved = _saved(result.dataset)
    assert b"ZQX" not in saved
    out = pydicom.dcmread(io.BytesIO(saved))
    cleaned = next(generate_frames(out.PixelData, number_of_frames=1))
    assert cleaned[cleaned.index(b"\xff\xf8") :].startswith(frame[at : at + 2 + length])
    np.testing.assert_array_equal(out.pixel_array, pydicom.dcmread(path).pixel_array)


@pytest.mark.parametrize(
    ("rewrite", "reason"),
    [
        # a mapping table (LSE ID 2): entries no pixel needs to use could hold text
        (lambda f: f[:2] + _segment(0xFFF8, b"\x02\x01\x01" + b"ZQX " + PLANTED.encode())
         + f[2:], "LSE segment of kind 2"),
        # a scan that selects a mapping table
        (lambda f: f.replace(b"\xff\xda\x00\x08\x01\x01\x00", b"\xff\xda\x00\x08\x01\x01\x01"),
         "mapping table"),
    ],
    ids=["mapping-table", "scan-selects-a-table"],
)
def test_a_jpeg_ls_frame_that_cannot_be_vouched_for_fails(tmp_path, rewrite, reason):
    ds = read_dicom(write_dicom(tmp_path / "jls.dcm", transfer_syntax=JPEGLSLossless).read_bytes())
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    changed = rewrite(frame)
    assert changed != frame
    with pytest.raises(NotDeidentifiable, match=reason):
        deidentify(_with_frames(ds, [changed]), KEY)
