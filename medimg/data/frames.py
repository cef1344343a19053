"""Encapsulated DICOM frames cleaned of the metadata their own format can carry.

:func:`medimg.data.deid.deidentify` calls :func:`strip_frame_metadata` first, as it is the step
most likely to refuse a file. The pixel data is not re-encoded:

- JPEG (8- and 12-bit), JPEG Lossless and JPEG-LS frames lose their APPn segments (EXIF, XMP,
  ICC, SPIFF, vendor notes; JFIF and Adobe stay, without thumbnail), their comments, any table
  no scan uses and anything after their end of image, through
  :func:`medimg.data.pixels_only.strip_jpeg`. Of JPEG-LS's own LSE segments only the preset
  coding parameters stay, at their fixed length; a mapping table, whose unused entries could
  hold text, makes the dataset fail. So does any frame that cannot be walked this way: it is
  quarantined rather than stored.
- JPEG 2000 and HTJ2K frames lose their comment (COM) segments, from the main header and from
  tile-part headers (whose lengths are rewritten). A frame wrapped in JP2 boxes, which DICOM
  forbids and whose boxes can carry XML, or a tile-part comment beside a TLM table of tile-part
  lengths, makes the dataset fail.
- RLE frames carry no metadata. Video (MPEG, HEVC) is not looked into: its user data is kept.

Frames of a syntax that no installed pydicom plugin decodes are left as they are: medimg cannot
decode such a dataset, so never stores it (ingest stores only what
:func:`medimg.data.images.decode_deidentified` has read), and it is reported as unsupported,
which names the plugin missing, rather than as not de-identifiable.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.pixels import get_decoder

from medimg.data.pixels_only import NotStrippable, strip_jpeg

# Transfer syntaxes whose frames are JPEG-style streams of marker segments: JPEG Baseline,
# Extended, Lossless (and SV1), JPEG-LS, and the retired JPEG processes.
_JPEG_SYNTAXES = frozenset(
    f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 57, 70, 80, 81, *range(52, 57), *range(58, 67))
)
# JPEG 2000 (Part 1 and Part 2 multi-component) and High-Throughput JPEG 2000 codestreams.
_J2K_SYNTAXES = frozenset(f"1.2.840.10008.1.2.4.{n}" for n in (90, 91, 92, 93, 201, 202, 203))
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_SOC, _J2K_SIZ, _J2K_TLM, _J2K_COM = 0xFF4F, 0xFF51, 0xFF55, 0xFF64
_J2K_SOT, _J2K_SOD, _J2K_EOC = 0xFF90, 0xFF93, 0xFFD9


def strip_frame_metadata(ds: Dataset) -> None:
    """Rewrite each encapsulated frame without the metadata segments of its format.

    Raises:
        NotStrippable: the pixel data cannot be split into its frames, or a frame cannot be
            cleaned; ``ds`` is then left as it was.
    """
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) or "").strip()
    strip: Callable[[bytes], bytes]
    if syntax in _JPEG_SYNTAXES:
        strip = strip_jpeg
    elif syntax in _J2K_SYNTAXES:
        strip = _strip_j2k
    else:
        return
    if "PixelData" not in ds or not _decodable(syntax):
        return
    data = ds.PixelData
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        expected = int(ds.get("NumberOfFrames") or 1)
        frames = list(generate_frames(data, number_of_frames=expected, extended_offsets=extended))
    except Exception:
        raise NotStrippable("the encapsulated pixel data cannot be split into frames") from None
    if len(frames) != expected:
        raise NotStrippable(
            f"the encapsulated pixel data holds {len(frames)} frames, not {expected}"
        )
    try:
        stripped = [strip(frame) for frame in frames]
    except Exception as exc:  # NotStrippable, or a parser error on a malformed frame
        reason = str(exc) if isinstance(exc, NotStrippable) else type(exc).__name__
        raise NotStrippable(
            f"a frame of the pixel data cannot be cleaned of its metadata segments ({reason})"
        ) from None
    if stripped == frames:
        return
    if extended is not None:
        data, offsets, lengths = encapsulate_extended(stripped)
        ds.ExtendedOffsetTable = offsets
        ds.ExtendedOffsetTableLengths = lengths
    else:
        data = encapsulate(stripped)
    ds.PixelData = data
    ds["PixelData"].is_undefined_length = True


def _decodable(syntax: str) -> bool:
    try:
        return bool(get_decoder(syntax).is_available)
    except NotImplementedError:
        return False


def _strip_j2k(data: bytes) -> bytes:
    """A JPEG 2000 codestream without its comment (COM) segments.

    Raises:
        NotStrippable: JP2 boxes instead of a bare codestream, a structure this walk does not
            follow, or a tile-part comment whose removal would need the TLM table rewritten.
    """
    if data.startswith(_JP2_SIGNATURE):
        raise NotStrippable("JPEG 2000 frame in JP2 boxes")
    if struct.pack(">H", _J2K_COM) not in data:
        return data  # no comment anywhere: nothing to walk for
    if _marker(data, 0) != _J2K_SOC or _marker(data, 2) != _J2K_SIZ:
        raise NotStrippable("not a JPEG 2000 codestream")
    out = [data[:2]]
    position, has_tlm = 2, False
    while (marker := _marker(data, position)) != _J2K_SOT:  # main header
        end = _segment_end(data, position, len(data))
        has_tlm |= marker == _J2K_TLM
        if marker != _J2K_COM:
            out.append(data[position:end])
        position = end
    while _marker(data, position) == _J2K_SOT:
        if position + 12 > len(data) or struct.unpack_from(">H", data, position + 2)[0] != 10:
            raise NotStrippable("JPEG 2000 SOT segment of unexpected length")
        (length,) = struct.unpack_from(">I", data, position + 6)
        end = position + length if length else data.rfind(struct.pack(">H", _J2K_EOC))
        if end < position + 12 or end > len(data):
            raise NotStrippable("JPEG 2000 tile-part runs past the frame")
        header, removed, cursor = [], 0, position + 12
        while _marker(data, cursor) != _J2K_SOD:  # tile-part header
            segment_end = _segment_end(data, cursor, end)
            if _marker(data, cursor) == _J2K_COM:
                removed += segment_end - cursor
            else:
                header.append(data[cursor:segment_end])
            cursor = segment_end
        if removed and has_tlm:
            raise NotStrippable("JPEG 2000 tile-part comment beside a TLM table")
        sot = bytearray(data[position : position + 12])
        if length:
            struct.pack_into(">I", sot, 6, length - removed)
        out += [bytes(sot), *header, data[cursor:end]]
        position = end
    if _marker(data, position) != _J2K_EOC:
        raise NotStrippable("JPEG 2000 codestream without EOC")
    out.append(data[position : position + 2])
    return b"".join(out)


def _marker(data: bytes, position: int) -> int:
    if position + 2 > len(data):
        raise NotStrippable("JPEG 2000 codestream ends early")
    (marker,) = struct.unpack_from(">H", data, position)
    if marker < 0xFF00:
        raise NotStrippable("JPEG 2000 marker expected")
    return marker


def _segment_end(data: bytes, position: int, limit: int) -> int:
    if position + 4 > limit:
        raise NotStrippable("JPEG 2000 segment runs past its end")
    (length,) = struct.unpack_from(">H", data, position + 2)
    end = position + 2 + length
    if length < 2 or end > limit:
        raise NotStrippable("JPEG 2000 segment runs past its end")
    return end
