"""A DICOM Part-10 writer for tests: real files with realistic (made-up) patient data.

Every file carries the identifiers a de-identifier has to find: names, IDs, dates and times,
addresses, UIDs, a private tag block and a sequence with a person name inside. The default
values live in :data:`PHI_VALUES` so a test can scan any output (files, logs, manifests) for
them. The same arguments give byte-identical files.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

Photometric = Literal["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL"]

# Made-up but realistic identifiers, each distinctive enough to grep for in any output.
PHI_VALUES: dict[str, str] = {
    "PatientName": "DOE^JANE^Q",
    "PatientID": "MRN-4471-0099",
    "OtherPatientIDs": "MRN-OLD-31337-B",
    "PatientBirthDate": "19610704",
    "PatientAddress": "12 Quarry Lane^Springfield^IL^62704",
    "PatientTelephoneNumbers": "555-0142-7788",
    "InstitutionName": "St Elsewhere General Hospital",
    "InstitutionAddress": "1 Hospital Plaza^Boston^MA^02115",
    "ReferringPhysicianName": "HOUSE^GREGORY^M",
    "PerformingPhysicianName": "QUINCY^MARGARET^J",
    "OperatorsName": "RADTECH^OLIVER^K",
    "RequestingPhysician": "KILDARE^JAMES^T",
    "AccessionNumber": "ACC-88812-ZZ",
    "StudyDate": "20230314",
    "SeriesDate": "20230315",
    "AcquisitionDate": "20230316",
    "ContentDate": "20230317",
    "StudyTime": "101530.123",
    "SeriesTime": "101612.5",
    "AcquisitionTime": "101645.25",
    "ContentTime": "101702.75",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.44710099.1.1",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.44710099.1.2",
    "StudyID": "STUDY-5532-Q",
    "DeviceSerialNumber": "SN-XR-000981-K",
    "StationName": "XRAY-ROOM-7B",
    "RequestedProcedureID": "RP-2023-5521",
    "ScheduledProcedureStepID": "SPS-2023-7781",
    "PrivateIdentifier": "PRIV-ID-7731-XQ",
}

PRIVATE_GROUP = 0x0009
PRIVATE_CREATOR = "ACME MEDIMG 1.0"

# Elements written at the top level of the dataset, in PHI_VALUES order.
_TOP_LEVEL_PHI = (
    "PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate", "PatientAddress",
    "PatientTelephoneNumbers", "InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "AccessionNumber", "StudyDate", "SeriesDate",
    "AcquisitionDate", "ContentDate", "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime",
    "StudyInstanceUID", "SeriesInstanceUID", "StudyID", "DeviceSerialNumber", "StationName",
)  # fmt: skip
_SOP_CLASSES = {"DX": DigitalXRayImageStorageForPresentation, "CR": ComputedRadiographyImageStorage}
_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
# Encoded by GDCM (its IJG lossless codec and CharLS), with the GDCM name of each syntax.
_GDCM_SYNTAXES = {
    JPEGLossless: "JPEGLosslessProcess14",
    JPEGLosslessSV1: "JPEGLosslessProcess14_1",
    JPEGLSLossless: "JPEGLSLossless",
    JPEGLSNearLossless: "JPEGLSNearLossless",
}
JPEG_LS_NEAR = 2
"""The NEAR (largest error per sample) of :func:`write_dicom`'s JPEG-LS Near-Lossless."""
WRITABLE_TRANSFER_SYNTAXES = (
    *_NATIVE, RLELossless, JPEGBaseline8Bit, JPEG2000Lossless, JPEGExtended12Bit, *_GDCM_SYNTAXES
)  # fmt: skip
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."


def default_pixels(
    rows: int = 64,
    columns: int = 48,
    *,
    frames: int = 1,
    bits_stored: int = 12,
    signed: bool = False,
    samples_per_pixel: int = 1,
) -> np.ndarray:
    """The stored values :func:`write_dicom` uses when given none.

    A diagonal ramp over the full stored range with a bright square that moves from frame to
    frame, so frames differ and a transposed or flipped decode shows.

    Returns:
        (rows, columns), (frames, rows, columns) or with a trailing axis of 3 for colour;
        dtype uint8/int8 for ``bits_stored <= 8``, else uint16/int16.
    """
    lo, hi = _stored_range(bits_stored, signed)
    y, x = np.mgrid[0:rows, 0:columns]
    ramp = (y / max(rows - 1, 1) * 0.7 + x / max(columns - 1, 1) * 0.3) * 0.8
    stack = []
    for k in range(frames):
        frame = ramp.copy()
        top = (4 + 6 * k) % max(rows - 8, 1)
        frame[top : top + 8, 4:12] = 1.0
        stack.append(lo + np.round(frame * (hi - lo)))
    out = np.stack(stack).astype(_dtype(bits_stored, signed))
    if samples_per_pixel == 3:
        # Three different channels, so a channel swap shows
        out = np.stack([out, out[:, ::-1, :] if rows > 1 else out, np.flip(out, 2)], axis=-1)
    return out if frames > 1 else out[0]


def block_pixels(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` made constant on each 8x8 block (its top-left value): what the JPEG Extended
    of :func:`write_dicom` codes exactly, and so what a decoder must give back."""
    rows, columns = pixels.shape[-2:]
    tops = pixels[..., ::8, ::8]
    return np.repeat(np.repeat(tops, 8, axis=-2), 8, axis=-1)[..., :rows, :columns]


def write_dicom(
    path: Path,
    pixels: np.ndarray | None = None,
    *,
    phi: Mapping[str, str] | None = None,
    modality: Literal["DX", "CR"] = "DX",
    photometric: Photometric = "MONOCHROME2",
    bits_stored: int = 12,
    signed: bool = False,
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    voi_lut: np.ndarray | None = None,
    frames: int = 1,
    transfer_syntax: str = ExplicitVRLittleEndian,
    burned_in: str | None = None,
    private_tags: bool = True,
    samples_per_pixel: int = 1,
    sop_instance_uid: str | None = None,
    pixel_data: bool = True,
    preamble: bool = True,
    frame_segments: tuple[bytes, ...] = (),
) -> Path:
    """Write a DICOM Part-10 file with realistic PHI and the given pixels.

    Args:
        path: Destination file; its folder must exist. Any suffix (or none) is fine.
        pixels: Stored values, (rows, columns) or (frames, rows, columns), with a trailing axis
            of 3 for colour. ``None`` uses :func:`default_pixels`.
        phi: Overrides for :data:`PHI_VALUES`, by key.
        modality: ``"DX"`` or ``"CR"``; sets the SOP class.
        photometric: ``MONOCHROME1``/``MONOCHROME2`` for one sample, ``RGB``/``YBR_FULL`` for
            three; for ``YBR_FULL`` give RGB pixels and they are converted before storing.
        bits_stored: Bits Stored; 8 bits or fewer are allocated 8, more are allocated 16.
        signed: Pixel Representation 1 (two's complement).
        slope: Rescale Slope; written with the intercept when either is not the identity.
        intercept: Rescale Intercept.
        window: ``(center, width)`` written as the only Window Center/Width.
        voi_lut: A 1-D table written as the only VOI LUT Sequence item, first value mapped 0.
        frames: Number of frames when ``pixels`` is ``None``.
        transfer_syntax: One of :data:`WRITABLE_TRANSFER_SYNTAXES`. JPEG Baseline needs 8-bit
            unsigned data; JPEG 2000 Lossless is encoded by Pillow; JPEG Lossless (process 14,
            any predictor or selection value 1) and JPEG-LS by GDCM, Near-Lossless with
            :data:`JPEG_LS_NEAR`; JPEG Extended as 12-bit greyscale by this module, which codes
            only pixels constant on 8x8 blocks (:func:`block_pixels`), exactly.
        burned_in: Text drawn into every frame at the top left (Burned In Annotation YES).
        private_tags: Add a private block holding :data:`PHI_VALUES` ``["PrivateIdentifier"]``.
        samples_per_pixel: 1 for greyscale, 3 for colour when ``pixels`` is ``None``.
        sop_instance_uid: Defaults to a UID derived from the PHI and the pixels.
        pixel_data: ``False`` writes the header only, without Pixel Data.
        preamble: ``False`` writes no 128-byte preamble and no ``DICM`` prefix (non-conformant
            files that some exporters still make).
        frame_segments: Whole marker segments (marker, length and payload) put into every
            JPEG or JPEG-LS frame right after its SOI, or every JPEG 2000 frame right after its
            SIZ, such as a COM or an APP1 EXIF segment carrying text.

    Returns:
        ``path``.
    """
    values = {**PHI_VALUES, **(phi or {})}
    if samples_per_pixel == 1 and photometric in ("RGB", "YBR_FULL"):
        samples_per_pixel = 3
    if pixels is None:
        pixels = default_pixels(
            frames=frames,
            bits_stored=bits_stored,
            signed=signed,
            samples_per_pixel=samples_per_pixel,
        )
        if transfer_syntax == JPEGExtended12Bit:
            pixels = block_pixels(pixels)
    pixels = _check_pixels(np.asarray(pixels), bits_stored, signed, samples_per_pixel)
    n_frames = pixels.shape[0] if pixels.ndim == (3 if samples_per_pixel == 1 else 4) else 1
    if burned_in:
        pixels = _burn_in(pixels, burned_in, bits_stored, signed, n_frames)

    sop_class = _SOP_CLASSES[modality]
    if sop_instance_uid is None:
        digest = hashlib.sha256(repr(sorted(values.items())).encode() + pixels.tobytes())
        sop_instance_uid = generate_uid(_UID_PREFIX, entropy_srcs=[digest.hexdigest()])

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance_uid
    ds.Modality = modality
    ds.Manufacturer = "ACME Imaging"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientSex = "F"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    for keyword in _TOP_LEVEL_PHI:
        setattr(ds, keyword, values[keyword])
    request = Dataset()
    request.RequestedProcedureID = values["RequestedProcedureID"]
    request.ScheduledProcedureStepID = values["ScheduledProcedureStepID"]
    request.RequestingPhysician = values["RequestingPhysician"]
    ds.RequestAttributesSequence = Sequence([request])
    if private_tags:
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
        block.add_new(0x10, "LO", values["PrivateIdentifier"])
        block.add_new(0x11, "DS", "42.5")  # a non-identifying private value beside it

    if slope != 1.0 or intercept != 0.0:
        ds.RescaleSlope = _ds_text(slope)
        ds.RescaleIntercept = _ds_text(intercept)
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter = _ds_text(window[0])
        ds.WindowWidth = _ds_text(window[1])
    if voi_lut is not None:
        ds.VOILUTSequence = Sequence([_voi_item(np.asarray(voi_lut))])

    if pixel_data:
        _set_pixels(ds, pixels, photometric, bits_stored, transfer_syntax, frame_segments)
    else:
        ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)

    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.file_meta.FileMetaInformationVersion = b"\x00\x01"
        ds.preamble = None
        ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)
    return Path(path)


def _set_pixels(
    ds: Dataset,
    pixels: np.ndarray,
    photometric: str,
    bits_stored: int,
    syntax: str,
    frame_segments: tuple[bytes, ...] = (),
) -> None:
    stored = pixels
    if photometric == "YBR_FULL":
        from pydicom.pixels import convert_color_space

        stored = convert_color_space(pixels, "RGB", "YBR_FULL").astype(pixels.dtype)
    ds.set_pixel_data(stored, photometric, bits_stored, generate_instance_uid=False)
    syntax = UID(syntax)
    if syntax in _NATIVE:
        ds.file_meta.TransferSyntaxUID = syntax
    elif syntax == RLELossless:
        ds.compress(RLELossless, generate_instance_uid=False)
    elif syntax in (JPEGBaseline8Bit, JPEG2000Lossless):
        _encapsulate_with_pillow(ds, pixels, syntax, bits_stored, frame_segments)
    elif syntax in _GDCM_SYNTAXES:
        _encapsulate_with_gdcm(ds, syntax, frame_segments)
    elif syntax == JPEGExtended12Bit:
        frames = pixels if "NumberOfFrames" in ds else pixels[None]
        if frames.ndim != 3 or frames.dtype.kind != "u" or bits_stored > 12:
            raise ValueError("JPEG Extended here needs unsigned greyscale of at most 12 bits")
        coded = [_with_segments(_jpeg_extended_12(f), frame_segments, syntax) for f in frames]
        _set_encapsulated(ds, coded, syntax)
        ds.LossyImageCompression = "01"
    else:
        raise ValueError(
            f"write_dicom cannot encode {syntax.name}; use one of "
            f"{[uid.name for uid in WRITABLE_TRANSFER_SYNTAXES]}"
        )


def _encapsulate_with_pillow(
    ds: Dataset, pixels: np.ndarray, syntax: UID, bits: int, segments: tuple[bytes, ...] = ()
) -> None:
    frames = pixels if "NumberOfFrames" in ds else pixels[None]
    colour = frames.ndim == 4
    if syntax == JPEGBaseline8Bit and (frames.dtype != np.uint8 or bits != 8):
        raise ValueError("JPEG Baseline needs 8-bit unsigned pixels; set bits_stored=8")
    if syntax == JPEG2000Lossless and frames.dtype.kind == "i":
        raise ValueError("JPEG 2000 via Pillow needs unsigned pixels; set signed=False")
    fragments = []
    for frame in frames:
        buffer = io.BytesIO()
        if frame.dtype == np.uint16:
            height, width = frame.shape
            image = Image.frombytes("I;16", (width, height), frame.astype("<u2").tobytes())
        else:
            image = Image.fromarray(frame)
        if syntax == JPEGBaseline8Bit:
            # 4:2:2 chroma subsampling matches YBR_FULL_422
            image.save(buffer, format="JPEG", quality=95, subsampling=1)
        else:
            image.save(buffer, format="JPEG2000", irreversible=False, no_jp2=True)
        fragments.append(_with_segments(buffer.getvalue(), segments, syntax))
    ds.PixelData = encapsulate(fragments)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax
    if syntax == JPEGBaseline8Bit:
        ds.LossyImageCompression = "01"
        if colour:
            ds.PhotometricInterpretation = "YBR_FULL_422"
    elif colour:
        ds.PhotometricInterpretation = "RGB"


def _with_segments(frame: bytes, segments: tuple[bytes, ...], syntax: UID) -> bytes:
    if not segments:
        return frame
    # JPEG and JPEG-LS: after SOI; JPEG 2000: after SIZ, which must follow SOC directly.
    at = 2 if frame.startswith(b"\xff\xd8") else 4 + int.from_bytes(frame[4:6], "big")
    return frame[:at] + b"".join(segments) + frame[at:]


def _set_encapsulated(ds: Dataset, frames: list[bytes], syntax: UID) -> None:
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = syntax


def _encapsulate_with_gdcm(ds: Dataset, syntax: UID, segments: tuple[bytes, ...]) -> None:
    """Encode the native pixels of ``ds`` with GDCM, as ``gdcmconv`` would.

    GDCM reads and writes files here: its Python objects for fragments are not safe to hold.
    """
    import gdcm

    with tempfile.TemporaryDirectory() as folder:
        native, coded = Path(folder) / "native.dcm", Path(folder) / "coded.dcm"
        ds.save_as(native, enforce_file_format=True)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(native))
        if not reader.Read():
            raise ValueError("GDCM cannot read the native file")
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax,
                                                             _GDCM_SYNTAXES[syntax])))
        if syntax == JPEGLSNearLossless:
            codec = gdcm.JPEGLSCodec()
            codec.SetLossless(False)
            codec.SetLossyError(JPEG_LS_NEAR)
            change.SetUserCodec(codec)
        image = reader.GetImage()
        if ds.BitsStored == 12:
            # GDCM codes the precision of Bits Allocated (16) unless told 12; modalities code
            # Bits Stored, so the stream's frame header says 12, as theirs do
            pixel_format = image.GetPixelFormat()
            pixel_format.SetBitsAllocated(12)
            image.SetPixelFormat(pixel_format)
        change.SetInput(image)
        if not change.Change():
            raise ValueError(f"GDCM cannot encode {syntax.name}")
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(coded))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        if not writer.Write():
            raise ValueError(f"GDCM cannot write {syntax.name}")
        written = dcmread(coded)
    count = int(ds.get("NumberOfFrames") or 1)
    frames = [_with_segments(f, segments, syntax)
              for f in generate_frames(written.PixelData, number_of_frames=count)]
    _set_encapsulated(ds, frames, syntax)
    if syntax == JPEGLSNearLossless:
        ds.LossyImageCompression = "01"


def _jpeg_extended_12(frame: np.ndarray) -> bytes:
    """A 12-bit JPEG Extended (SOF1, process 4) stream of a frame constant on 8x8 blocks.

    Each block is then one DC coefficient and no AC: with a quantisation table of ones a
    decoder's inverse DCT gives each block's value back exactly, so tests can compare pixels.
    """
    rows, columns = frame.shape
    if int(frame.max(initial=0)) > 4095:
        raise ValueError("JPEG Extended codes at most 12 bits")
    block_rows, block_columns = -(-rows // 8), -(-columns // 8)
    padded = np.pad(frame.astype(np.int64),
                    ((0, 8 * block_rows - rows), (0, 8 * block_columns - columns)), mode="edge")
    blocks = padded.reshape(block_rows, 8, block_columns, 8).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(-1, 64)
    if np.any(blocks != blocks[:, :1]):
        raise ValueError("JPEG Extended here codes 8x8 blocks of one value; use block_pixels()")
    bits: list[str] = []
    previous = 0
    for value in blocks[:, 0]:
        dc = 8 * (int(value) - 2048)  # level shift, then the DCT's DC gain of 8
        diff, previous = dc - previous, dc
        size = abs(diff).bit_length()
        bits.append(format(size, "05b"))  # DC symbol s has the 5-bit code s (table below)
        if size:
            bits.append(format(diff if diff > 0 else diff + (1 << size) - 1, f"0{size}b"))
        bits.append("0")  # end of block, the only AC symbol
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    scan = bytes(int(stream[i : i + 8], 2) for i in range(0, len(stream), 8))
    scan = scan.replace(b"\xff", b"\xff\x00")

    def segment(marker: int, body: bytes) -> bytes:
        return bytes((0xFF, marker)) + (len(body) + 2).to_bytes(2, "big") + body

    dc_counts = bytes(16 if length == 5 else 0 for length in range(1, 17))
    ac_counts = bytes(1 if length == 1 else 0 for length in range(1, 17))
    return b"".join((
        b"\xff\xd8",
        segment(0xDB, b"\x00" + b"\x01" * 64),
        segment(0xC1, bytes([12]) + rows.to_bytes(2, "big") + columns.to_bytes(2, "big")
                + bytes([1, 1, 0x11, 0])),
        segment(0xC4, b"\x00" + dc_counts + bytes(range(16))),
        segment(0xC4, b"\x10" + ac_counts + b"\x00"),
        segment(0xDA, bytes([1, 1, 0x00, 0, 63, 0])),
        scan,
        b"\xff\xd9",
    ))  # fmt: skip


def _check_pixels(pixels: np.ndarray, bits: int, signed: bool, samples: int) -> np.ndarray:
    if not 1 <= bits <= 16:
        raise ValueError(f"bits_stored {bits} must be 1..16")
    lo, hi = _stored_range(bits, signed)
    if pixels.size and (pixels.min() < lo or pixels.max() > hi):
        raise ValueError(
            f"pixel values {pixels.min()}..{pixels.max()} do not fit bits_stored={bits} "
            f"signed={signed} ({lo}..{hi})"
        )
    if samples == 3 and (pixels.ndim not in (3, 4) or pixels.shape[-1] != 3):
        raise ValueError(f"colour pixels must end in an axis of 3, got shape {pixels.shape}")
    if samples == 1 and pixels.ndim not in (2, 3):
        raise ValueError(f"greyscale pixels must be (rows, columns) or (frames, rows, columns), "
                         f"got shape {pixels.shape}")  # fmt: skip
    return pixels.astype(_dtype(bits, signed))


def _burn_in(pixels: np.ndarray, text: str, bits: int, signed: bool, n_frames: int) -> np.ndarray:
    _, hi = _stored_range(bits, signed)
    frames = pixels if n_frames > 1 else pixels[None]
    # OpenCV draws text on 8-bit images only, so draw a mask and paint through it.
    mask = np.zeros(frames.shape[1:3], dtype=np.uint8)
    cv2.putText(mask, text, (2, 12), cv2.FONT_HERSHEY_PLAIN, 0.8, 255, 1, cv2.LINE_8)
    out = frames.copy()
    out[:, mask > 0] = hi
    return out if n_frames > 1 else out[0]


def _voi_item(table: np.ndarray) -> Dataset:
    item = Dataset()
    bits = 8 if table.max() < 256 else 16
    item.LUTDescriptor = [len(table) % 65536, 0, bits]
    item.LUTData = [int(v) for v in table]
    item["LUTData"].VR = "US"
    return item


def _stored_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def _dtype(bits: int, signed: bool) -> type[np.integer]:
    if bits <= 8:
        return np.int8 if signed else np.uint8
    return np.int16 if signed else np.uint16


def _ds_text(value: float) -> str:
    # DS is at most 16 characters; repr keeps exact values such as 0.5 or -1024
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text[:16]
