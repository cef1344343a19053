"""An image a reviewer sends, taken in as ingest takes a file, and kept as pixels only.

The bytes are sniffed (a PNG named ``.dcm`` is a PNG, a DICOM named ``.png`` is a DICOM), checked
by ingest's own analysis (:func:`medimg.data.analysis.analyse_bytes`): the pixel bound before
decoding, DICOM de-identification and its refusals (burned-in annotation, a header that cannot
be cleaned), the minimum side and blank images. What is kept is ingest's pixels-only copy (a PNG
or JPEG stripped of every metadata chunk, else a PNG of the decoded pixels, as for DICOM), named
by its own content hash, in ``data/feedback/images/``: no header, no file name and no client
string reaches the disk. When a reviewer labels it, the feedback API
ingests that copy like any new image.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medimg.config import Config
from medimg.data.analysis import AnalysisOptions, analyse_bytes
from medimg.data.images import DICOM_SNIFF_BYTES, is_dicom
from medimg.data.pixels_only import pixels_only_copy
from medimg.errors import DataError
from medimg.feedback.predictions import CONTENT_HASH
from medimg.workspace import Workspace

IMAGES = Path("data") / "feedback" / "images"
"""Where reviewed images are kept, as ``<sha256>.png`` or ``.jpg`` (versioned with the feedback
log)."""
SUFFIXES = (".png", ".jpg")
# refusals whose message medimg writes from numbers and fixed text only, never from the file
_OWN_MESSAGES = frozenset(
    {
        "burned_in",
        "deid_failed",
        "dicom_unreadable",
        "too_small",
        "too_many_pixels",
        "blank",
        "undecodable",
    }
)


class RefusedImage(DataError):
    """An upload that cannot be used; the message says why in one line and names no value from
    the file."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ReviewImage:
    """An accepted image: its decoded pixels and the pixels-only copy kept for review."""

    image_id: str  # sha256 of ``data``
    pixels: np.ndarray
    data: bytes  # the pixels-only copy
    suffix: str  # ".png" or ".jpg"


def accept_image(data: bytes, config: Config) -> ReviewImage:
    """Check, de-identify and decode an image file's bytes, as ingest would.

    Raises:
        RefusedImage: the bytes are no image medimg reads, too many pixels (checked before
            decoding), a DICOM that cannot be de-identified or has burned-in annotation, too
            small or blank. The message is one line and quotes nothing from the file.
    """
    if not data:
        raise RefusedImage("empty", "the upload is empty; send a PNG, JPEG, BMP, TIFF or DICOM")
    options = AnalysisOptions(
        dicom_frame=config.data.dicom_frame,
        max_pixels=config.data.max_pixels,
        min_side=config.data.min_side,
        min_std=config.data.min_std,
        # nothing derived from the key is kept: only the pixels are, so a fresh key will do
        key=secrets.token_bytes(32),
        allow_burned_in=config.data.allow_burned_in_annotation,
    )
    analysis, decoded = analyse_bytes(data, options, measure=False)
    if analysis.reject is not None or decoded is None:
        reject = analysis.reject
        code = reject.code if reject else "undecodable"
        message = " ".join(reject.message.split()) if reject else "the image cannot be decoded"
        if is_dicom(data[:DICOM_SNIFF_BYTES]) and code not in _OWN_MESSAGES:
            # a decoder's message may quote a header value, which may name the patient
            message = "the DICOM's pixel data cannot be decoded"
        raise RefusedImage(code, f"image refused ({code}): {message}")
    pixels = decoded.pixels
    kept, suffix = pixels_only_copy(data, analysis.fmt, lambda: pixels)
    return ReviewImage(hashlib.sha256(kept).hexdigest(), pixels, kept, suffix)


def image_path(ws: Workspace, image_id: str) -> Path | None:
    """The kept copy of the reviewed image ``image_id``, None when none is kept. The id must be
    a content hash, so no client string ever forms a path."""
    _check_id(image_id)
    for suffix in SUFFIXES:
        path = ws.root / IMAGES / f"{image_id}{suffix}"
        if path.is_file():
            return path
    return None


def keep_image(ws: Workspace, image: ReviewImage) -> Path:
    """Write the image's copy once (atomically); the same content is the same file."""
    _check_id(image.image_id)
    path = image_path(ws, image.image_id)
    if path is not None:
        return path
    path = ws.root / IMAGES / f"{image.image_id}{image.suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own per call: two uploads of one image may be kept at once
    handle, staging = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(image.data)
        os.replace(staging, path)  # the same bytes either way: the last rename wins
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path


def _check_id(image_id: str) -> None:
    if not CONTENT_HASH.fullmatch(image_id):
        raise DataError("an image is named by its sha256 content hash (64 hex digits)")
