"""An image a reviewer sends, taken in as ingest takes a file, and kept as pixels only.

The bytes are sniffed (a PNG named ``.dcm`` is a PNG, a DICOM named ``.png`` is a DICOM), checked
by ingest's own analysis (:func:`medimg.data.analysis.analyse_bytes`): the pixel bound before
decoding, DICOM de-identification and its refusals (burned-in annotation, a header that cannot
be cleaned), the minimum side and blank images. What is kept is a PNG of the decoded pixels with
no metadata at all, named by its own content hash, in ``data/feedback/images/``: no header, no
file name and no client string reaches the disk. When a reviewer labels it, the feedback API
ingests that copy like any new image.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medimg.config import Config
from medimg.data.analysis import AnalysisOptions, analyse_bytes
from medimg.data.pixels_only import png_pixels
from medimg.errors import DataError
from medimg.workspace import Workspace

IMAGES = Path("data") / "feedback" / "images"
"""Where reviewed images are kept, as ``<sha256>.png`` (versioned with the feedback log)."""


class RefusedImage(DataError):
    """An upload that cannot be used; the message says why in one line and names no value from
    the file."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ReviewImage:
    """An accepted image: its decoded pixels and the pixels-only PNG kept for review."""

    image_id: str  # sha256 of ``png``
    pixels: np.ndarray
    png: bytes


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
    analysis, decoded = analyse_bytes(data, options)
    if analysis.reject is not None or decoded is None:
        reject = analysis.reject
        code = reject.code if reject else "undecodable"
        message = " ".join(reject.message.split()) if reject else "the image cannot be decoded"
        raise RefusedImage(code, f"image refused ({code}): {message}")
    png = png_pixels(decoded.pixels)
    return ReviewImage(hashlib.sha256(png).hexdigest(), decoded.pixels, png)


def image_path(ws: Workspace, image_id: str) -> Path:
    """Where the reviewed image ``image_id`` is kept; the id must be a content hash, so no
    client string ever forms a path."""
    if len(image_id) != 64 or any(c not in "0123456789abcdef" for c in image_id):
        raise DataError("an image is named by its sha256 content hash (64 hex digits)")
    return ws.root / IMAGES / f"{image_id}.png"


def keep_image(ws: Workspace, image: ReviewImage) -> Path:
    """Write the image's PNG once (atomically); the same content is the same file."""
    path = image_path(ws, image.image_id)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_bytes(image.png)
    os.replace(staging, path)
    return path
