"""The manifest: one row per image, the single source of truth for every later stage."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pandas as pd

from medimg.errors import WorkspaceError

COLUMNS = {
    # identity and provenance
    "image_id": "string",  # sha256 of the source content (file bytes, or the npz array)
    "source_ref": "string",  # where it came from: relative path, or "file.npz#train/12"
    "source_path": "string",  # the file later stages read (the original, or a de-identified copy)
    "format": "string",  # png, jpeg, tiff, bmp, dicom, npz
    "label": "string",
    "label_source": "string",  # folder, csv:<file>, npz, ...
    "label_by": "string",  # who labelled it
    "label_at": "string",  # when (ISO 8601, UTC)
    "patient_id": "string",  # pseudonymous (keyed HMAC), or img-<id> when the source has none
    "patient_source": "string",  # "source" or "image" (no patient id: the image is its own)
    "split": "string",
    "split_source": "string",  # "predefined" (given by the source) or "assigned"
    # geometry
    "width": "int64",
    "height": "int64",
    "channels": "int64",
    "bit_depth": "int64",
    # real colour: RGB whose channels differ (grey stored as RGB is not colour); empty when the
    # image was ingested before ingest recorded it
    "colour": "boolean",
    # intensity, on the decoded 8-bit image
    "intensity_min": "int64",
    "intensity_max": "int64",
    "intensity_mean": "float64",
    "intensity_std": "float64",
    "saturated_fraction": "float64",
    "blank_fraction": "float64",
    # near-duplicate search: 64-bit perceptual hash (16 hex digits), confirmed by a 16 x 16
    # thumbnail (base64)
    "phash": "string",
    "thumbnail": "string",
}
LATER_COLUMNS = ("colour",)
"""Columns added after the first manifests were written: an older manifest reads with them
empty (not recorded), so it stays usable without ingesting again."""
META_PREFIX = "meta_"
"""Any other column a source brings (sex, age, site, view...) is kept as ``meta_<name>``."""


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in COLUMNS.items()})


def meta_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(META_PREFIX)]


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    unrecorded = {c: pd.NA for c in LATER_COLUMNS if c not in frame.columns}
    frame = frame.assign(**unrecorded) if unrecorded else frame
    extra = {c: "string" for c in meta_columns(frame)}
    ordered = [*COLUMNS, *sorted(extra)]
    return frame[ordered].astype({**COLUMNS, **extra})


def load_manifest(path: Path) -> pd.DataFrame:
    """Read the manifest, or fail saying which command makes it."""
    if not path.is_file():
        raise WorkspaceError(f"{path} does not exist; run `medimg ingest SRC` first")
    frame = pd.read_parquet(path)
    missing = [c for c in COLUMNS if c not in frame.columns and c not in LATER_COLUMNS]
    if missing:
        raise WorkspaceError(f"{path} lacks columns {missing}; re-create it with `medimg ingest`")
    return _typed(frame)


def write_manifest(frame: pd.DataFrame, path: Path) -> None:
    """Write atomically: a failure part-way leaves the previous manifest intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    _typed(frame).reset_index(drop=True).to_parquet(tmp, index=False)
    os.replace(tmp, path)
