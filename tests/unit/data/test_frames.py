"""Encapsulated frames cleaned of their format's metadata: JPEG 2000 comments go, from the main
header and from tile-part headers, and what cannot be cleaned safely is refused.

JPEG frames are stripped by :func:`medimg.data.pixels_only.strip_jpeg` (its tests are in
test_pixels_only.py; through :func:`deidentify`, in test_deid.py and test_deid_compressed.py).
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless
from support.dicoms import write_dicom

from medimg.data.deid import NotDeidentifiable, deidentify
from medimg.data.frames import strip_frame_metadata
from medimg.data.images import decode_deidentified, read_dicom
from medimg.data.pixels_only import NotStrippable

KEY = b"unit-test-key-0123456789abcdef"
PLANTED_ID = "ZQXPID_4471"


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def _saved(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _assert_nothing_planted(saved: bytes) -> None:
    assert b"zqx" not in saved.lower()


def _decoded(ds: Dataset) -> np.ndarray:
    """What a later stage sees of the pixels of ``ds``, de-identified with its own copy."""
    return decode_deidentified(deidentify(ds, KEY)).pixels


def _j2k_with_tile_comment(frame: bytes, comment: bytes) -> bytes:
    """``frame`` with a COM segment in its first tile-part header, its length adjusted."""
    sot = frame.index(b"\xff\x90")
    (length,) = struct.unpack_from(">I", frame, sot + 6)
    segment = _jpeg_segment(0xFF64, b"\x00\x01" + comment)
    header = bytearray(frame[sot : sot + 12])
    if length:
        struct.pack_into(">I", header, 6, length + len(segment))
    return frame[:sot] + bytes(header) + segment + frame[sot + 12 :]


def test_jpeg_2000_frames_lose_their_comments_and_keep_their_pixels(tmp_path):
    main = _jpeg_segment(0xFF64, b"\x00\x01ZQXJ2K main header " + PLANTED_ID.encode())
    path = write_dicom(tmp_path / "j2k.dcm", transfer_syntax=JPEG2000Lossless,
                       phi={"PatientID": PLANTED_ID}, frame_segments=(main,))  # fmt: skip
    ds = read_dicom(path.read_bytes())
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([_j2k_with_tile_comment(frame, b"ZQXJ2K tile-part")])
    ds["PixelData"].is_undefined_length = True
    clean = read_dicom(write_dicom(tmp_path / "clean.dcm",
                                   transfer_syntax=JPEG2000Lossless).read_bytes())  # fmt: skip
    np.testing.assert_array_equal(ds.pixel_array, clean.pixel_array)  # the comments decode
    result = deidentify(ds, KEY)
    saved = _saved(result.dataset)
    _assert_nothing_planted(saved)
    assert b"OpenJPEG" not in saved  # the encoder's own comment goes too
    out = pydicom.dcmread(io.BytesIO(saved))
    np.testing.assert_array_equal(out.pixel_array, clean.pixel_array)
    np.testing.assert_array_equal(decode_deidentified(result).pixels, _decoded(clean))


def _in_jp2_boxes(frame: bytes) -> bytes:
    signature = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    return signature + struct.pack(">I", 8 + len(frame)) + b"jp2c" + frame


def _with_tlm_and_tile_comment(frame: bytes) -> bytes:
    """A TLM table (tile-part lengths) in the main header and a comment in the tile-part."""
    frame = _j2k_with_tile_comment(frame, b"ZQXJ2K tile-part")
    (psot,) = struct.unpack_from(">I", frame, frame.index(b"\xff\x90") + 6)
    siz_end = 4 + int.from_bytes(frame[4:6], "big")
    tlm = _jpeg_segment(0xFF55, bytes([0, 0x40]) + struct.pack(">I", psot))
    return frame[:siz_end] + tlm + frame[siz_end:]


@pytest.mark.parametrize(
    ("rewrite", "reason"),
    [(_in_jp2_boxes, "JP2"), (_with_tlm_and_tile_comment, "TLM")],
)
def test_a_jpeg_2000_frame_that_cannot_be_cleaned_safely_fails(tmp_path, rewrite, reason):
    path = write_dicom(tmp_path / "j2k.dcm", transfer_syntax=JPEG2000Lossless)
    ds = read_dicom(path.read_bytes())
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([rewrite(frame)])
    with pytest.raises(NotDeidentifiable, match=reason):
        deidentify(ds, KEY)


def _j2k_dataset(tmp_path, rewrite=None) -> Dataset:
    """A JPEG 2000 dataset, its one frame rewritten by ``rewrite``."""
    ds = read_dicom(write_dicom(tmp_path / "j2k.dcm", transfer_syntax=JPEG2000Lossless)
                    .read_bytes())
    if rewrite is not None:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        ds.PixelData = encapsulate([rewrite(frame)])
        ds["PixelData"].is_undefined_length = True
    return ds


def test_stripping_rewrites_only_the_frames_and_keeps_their_pixels(tmp_path):
    ds = _j2k_dataset(tmp_path, lambda f: _j2k_with_tile_comment(f, b"ZQXJ2K tile-part"))
    pixels = ds.pixel_array.copy()
    strip_frame_metadata(ds)
    [frame] = generate_frames(ds.PixelData, number_of_frames=1)
    assert b"ZQXJ2K" not in frame and b"\xff\x64" not in frame
    np.testing.assert_array_equal(ds.pixel_array, pixels)


@pytest.mark.parametrize(
    ("rewrite", "reason"),
    [(_in_jp2_boxes, "JP2"), (_with_tlm_and_tile_comment, "TLM")],
)
def test_a_frame_that_cannot_be_cleaned_is_refused_and_the_dataset_left_as_it_was(
    tmp_path, rewrite, reason
):
    ds = _j2k_dataset(tmp_path, rewrite)
    before = _saved(ds)
    with pytest.raises(NotStrippable, match=reason):
        strip_frame_metadata(ds)
    assert _saved(ds) == before


def test_pixel_data_that_is_not_the_frames_it_says_is_refused(tmp_path):
    ds = _j2k_dataset(tmp_path)
    ds.NumberOfFrames = 2  # one frame in the pixel data
    with pytest.raises(NotStrippable, match="holds 1 frames, not 2"):
        strip_frame_metadata(ds)


def test_native_pixel_data_is_left_as_it_is(tmp_path):
    ds = read_dicom(write_dicom(tmp_path / "native.dcm").read_bytes())
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    before = _saved(ds)
    strip_frame_metadata(ds)
    assert _saved(ds) == before
