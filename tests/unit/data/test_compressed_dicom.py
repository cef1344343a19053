"""Compressed DICOM as CR and DX archives store it: JPEG Lossless (process 14, and its selection
value 1), JPEG-LS (lossless and near-lossless) and 12-bit JPEG Extended.

The files are written here: GDCM encodes JPEG Lossless and JPEG-LS, and ``support.dicoms``
codes 12-bit JPEG Extended itself, so that its exact values are known. Two more come bundled
inside the installed pydicom wheel. Nothing is downloaded.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames
from pydicom.uid import (
    UID,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
)
from support.dicoms import JPEG_LS_NEAR, PHI_VALUES, block_pixels, default_pixels, write_dicom
from support.ingesting import TEST_KEY, ingest

from medimg.data.deid import deidentify
from medimg.data.images import (
    UndecodableImage,
    decode,
    decode_deidentified,
    read_dicom,
    read_image,
)
from medimg.data.manifest import load_manifest

KEY = TEST_KEY
LOSSLESS = [JPEGLossless, JPEGLosslessSV1, JPEGLSLossless]
ALL = [*LOSSLESS, JPEGLSNearLossless, JPEGExtended12Bit]


def _saved(ds: pydicom.Dataset) -> pydicom.Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def _sof(frame: bytes) -> tuple[int, int]:
    """(marker, precision) of a JPEG frame's start-of-frame segment."""
    for marker in (0xC1, 0xC3, 0xF7):
        at = frame.find(bytes((0xFF, marker)))
        if at > 0:
            return marker, frame[at + 4]
    raise AssertionError("no start-of-frame segment")


@pytest.mark.parametrize("syntax", LOSSLESS, ids=lambda uid: uid.keyword)
@pytest.mark.parametrize(("bits", "signed"), [(8, False), (12, False), (16, False), (12, True)])
def test_lossless_syntaxes_decode_after_deidentification_to_every_stored_value(
    tmp_path, syntax, bits, signed
):
    stored = default_pixels(frames=3, bits_stored=bits, signed=signed)
    options = {"bits_stored": bits, "signed": signed}
    path = write_dicom(tmp_path / "c.dcm", stored, transfer_syntax=syntax, **options)
    frame = next(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=3))
    assert _sof(frame) == (0xF7 if syntax == JPEGLSLossless else 0xC3, bits)

    result = deidentify(read_dicom(path.read_bytes()), KEY)
    out = _saved(result.dataset)
    assert out.file_meta.TransferSyntaxUID == syntax  # cleaned, not re-encoded
    np.testing.assert_array_equal(out.pixel_array, stored)  # lossless: exact
    # and the picture every later stage sees is the uncompressed file's, frame by frame
    plain = write_dicom(tmp_path / "plain.dcm", stored, **options).read_bytes()
    for frame_choice in ("first", "middle"):
        decoded = decode_deidentified(result, dicom_frame=frame_choice)
        expected = decode(plain, dicom_frame=frame_choice)
        np.testing.assert_array_equal(decoded.pixels, expected.pixels)
        assert (decoded.bit_depth, decoded.source_std8) == (bits, expected.source_std8)


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_jpeg_ls_near_lossless_stays_within_its_near_bound(tmp_path, bits):
    stored = default_pixels(frames=2, bits_stored=bits)
    path = write_dicom(tmp_path / "n.dcm", stored, bits_stored=bits,
                       transfer_syntax=JPEGLSNearLossless)  # fmt: skip
    result = deidentify(read_dicom(path.read_bytes()), KEY)
    out = _saved(result.dataset)
    assert out.file_meta.TransferSyntaxUID == JPEGLSNearLossless
    error = np.abs(out.pixel_array.astype(np.int64) - stored.astype(np.int64))
    assert error.max() <= JPEG_LS_NEAR
    decoded = decode_deidentified(result, dicom_frame="first")
    plain = decode(write_dicom(tmp_path / "p.dcm", stored, bits_stored=bits).read_bytes(),
                   dicom_frame="first")  # fmt: skip
    assert decoded.bit_depth == bits
    # the stored error, on the 0-255 scale, plus one for rounding
    tolerance = JPEG_LS_NEAR * 255 / (2**bits - 1) + 1
    assert np.abs(decoded.pixels.astype(int) - plain.pixels.astype(int)).max() <= tolerance


@pytest.mark.parametrize(
    "options",
    [{}, {"photometric": "MONOCHROME1"}, {"window": (1500.0, 2500.0)}, {"slope": 2.0}],
    ids=["plain", "monochrome1", "window", "rescale"],
)
def test_12_bit_jpeg_extended_decodes_after_deidentification_to_its_coded_values(
    tmp_path, options
):
    stored = block_pixels(default_pixels(frames=3, bits_stored=12))
    path = write_dicom(tmp_path / "x.dcm", stored, transfer_syntax=JPEGExtended12Bit, **options)
    frame = next(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=3))
    assert _sof(frame) == (0xC1, 12)  # a real 12-bit process 4 stream
    result = deidentify(read_dicom(path.read_bytes()), KEY)
    assert _saved(result.dataset).file_meta.TransferSyntaxUID == JPEGExtended12Bit
    plain = write_dicom(tmp_path / "plain.dcm", stored, **options).read_bytes()
    for frame_choice in ("first", "middle"):
        decoded = decode_deidentified(result, dicom_frame=frame_choice)
        expected = decode(plain, dicom_frame=frame_choice)
        np.testing.assert_array_equal(decoded.pixels, expected.pixels)
        # the spread of the stored values, so equal only when every value is
        assert (decoded.bit_depth, decoded.source_std8) == (12, expected.source_std8)


def _bundled(name: str) -> Path:
    path = get_testdata_file(name, download=False)  # only what the installed wheel ships
    if path is None:
        pytest.skip(f"{name} is not bundled in this pydicom wheel")
    return Path(str(path))


def test_a_bundled_jpeg_ls_file_decodes_equal_to_its_uncompressed_original():
    jls = _bundled("MR_small_jpeg_ls_lossless.dcm").read_bytes()
    original = _bundled("MR_small.dcm").read_bytes()
    assert pydicom.dcmread(io.BytesIO(jls)).file_meta.TransferSyntaxUID == JPEGLSLossless
    decoded, expected = decode(jls), decode(original)
    np.testing.assert_array_equal(decoded.pixels, expected.pixels)
    assert decoded.source_std8 == expected.source_std8


def test_a_bundled_12_bit_jpeg_extended_file_decodes():
    data = _bundled("JPGExtended.dcm").read_bytes()
    ds = pydicom.dcmread(io.BytesIO(data))
    assert (ds.file_meta.TransferSyntaxUID, ds.BitsStored) == (JPEGExtended12Bit, 12)
    decoded = decode(data)
    assert decoded.pixels.shape == (ds.Rows, ds.Columns) and decoded.bit_depth == 12
    assert decoded.pixels.min() == 0 and decoded.pixels.max() == 255  # a full range, not noise
    assert decoded.source_std8 > 1.0


def _distinct_blocks(seed: int) -> np.ndarray:
    """12-bit pixels constant on 8x8 blocks (so every syntax here codes them), one set per
    seed, so no two files are duplicates."""
    blocks = np.random.default_rng(seed).integers(0, 4096, (8, 6), dtype=np.uint16)
    return np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)


def test_ingest_accepts_every_compressed_syntax_and_stores_it_deidentified(
    make_workspace, tmp_path
):
    ws = make_workspace(with_data=False)
    src = tmp_path / "archive"
    originals: dict[str, Path] = {}
    for k, syntax in enumerate(ALL):
        for label in ("normal", "pneumonia"):
            seed = 2 * k + (label == "pneumonia")
            (src / label).mkdir(parents=True, exist_ok=True)
            name = f"{syntax.keyword}-{label}.dcm"
            originals[name] = write_dicom(
                src / label / name, _distinct_blocks(seed), modality="CR",
                phi={"PatientID": f"MRN-{seed}"}, transfer_syntax=syntax,
            )  # fmt: skip
    summary = ingest(ws, [src])
    assert summary.quarantined == []
    assert summary.ingested == 2 * len(ALL)

    manifest = load_manifest(ws.manifest_path)
    assert set(manifest["format"]) == {"dicom"} and set(manifest["bit_depth"]) == {12}
    syntaxes = set()
    for row in manifest.itertuples():
        stored = ws.resolve(row.source_path)
        data = stored.read_bytes()
        assert not any(value.encode() in data for value in PHI_VALUES.values())
        syntaxes.add(UID(pydicom.dcmread(stored).file_meta.TransferSyntaxUID))
        original = next(p for n, p in originals.items() if row.source_ref.endswith(n))
        np.testing.assert_array_equal(read_image(stored), read_image(original))
    assert syntaxes == set(ALL)  # each is stored as it came, never re-encoded


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEGExtended12Bit], ids=lambda u: u.keyword)
def test_a_frame_coding_more_pixels_than_rows_and_columns_say_is_refused(tmp_path, syntax):
    # The decoder follows the stream's own frame header, so the pixel bound, which Rows and
    # Columns pass, must be the stream's size too.
    path = write_dicom(tmp_path / "x.dcm", transfer_syntax=syntax)
    ds = read_dicom(path.read_bytes())
    ds.Rows = 32  # the frame still codes 48x64
    with pytest.raises(UndecodableImage) as caught:
        decode_deidentified(deidentify(ds, KEY))
    assert str(caught.value) == "DICOM frame codes 48x64 pixels, but Columns x Rows say 48x32"
