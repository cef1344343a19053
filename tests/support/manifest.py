"""Manifest rows for tests: every column the manifest has, for made-up images named by a key.

A row is valid for the data contract as it stands (a clean 18-row manifest passes every check);
a test changes what it needs with ``manifest_row(key, ..., width=16)`` or by editing the dicts of
:func:`manifest_rows`. :func:`manifest_frame` gives the dtypes :func:`load_manifest` gives.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from medimg.data.manifest import COLUMNS, META_PREFIX

CLASSES = ("normal", "pneumonia")
SPLITS = ("train", "val", "test")


def image_id(key: str) -> str:
    """The made-up image's id: a sha256 (64 hex digits), as ingest records a content hash."""
    return hashlib.sha256(key.encode()).hexdigest()


def phash(key: str, flip: int = 0) -> str:
    """A 64-bit hash as 16 hex digits; ``flip`` XORs bits into it (bin(flip).count('1') apart)."""
    return f"{int(image_id(key)[:16], 16) ^ flip:016x}"


def thumbnail(key: str) -> str:
    """A 16 x 16 thumbnail (base64) of made-up pixels fixed by ``key``."""
    seed = int(image_id(key)[:8], 16)
    pixels = np.random.default_rng(seed).integers(0, 255, 256, dtype=np.uint8)
    return base64.b64encode(pixels.tobytes()).decode()


def manifest_row(
    key: str = "image-0", split: str = "train", label: str = "normal", **overrides: Any
) -> dict[str, Any]:
    """A valid manifest row for a made-up 256 x 224 greyscale PNG named ``key``, of its own
    patient ``p-<key>``.

    Raises:
        TypeError: an override names neither a manifest column nor a ``meta_`` column (a typo
            would otherwise be dropped by :func:`manifest_frame` without a word).
    """
    unknown = sorted(k for k in overrides if k not in COLUMNS and not k.startswith(META_PREFIX))
    if unknown:
        raise TypeError(f"not manifest columns: {unknown}; the manifest has {list(COLUMNS)}")
    row = {
        "image_id": image_id(key),
        "source_ref": f"{label}/{key}.png",
        "source_path": f"data/raw/{label}/{key}.png",
        "format": "png",
        "label": label,
        "label_source": "folder",
        "label_by": "source",
        "label_at": "2024-05-01T12:00:00+00:00",
        "patient_id": f"p-{key}",
        "patient_source": "source",
        "split": split,
        "split_source": "assigned",
        "width": 256,
        "height": 224,
        "channels": 1,
        "bit_depth": 8,
        "colour": False,
        "intensity_min": 0,
        "intensity_max": 255,
        "intensity_mean": 120.0,
        "intensity_std": 40.0,
        "saturated_fraction": 0.01,
        "blank_fraction": 0.02,
        "phash": phash(key),
        "thumbnail": thumbnail(key),
    }
    return {**row, **overrides}


def manifest_rows(
    per_class: int = 3, classes: Iterable[str] = CLASSES, splits: Iterable[str] = SPLITS
) -> dict[str, dict[str, Any]]:
    """``per_class`` images of each class in each split, keyed ``split-label-i``, one patient
    each; the default is 2 classes x 3 splits x 3 = 18 rows."""
    return {
        f"{split}-{label}-{i}": manifest_row(f"{split}-{label}-{i}", split, label)
        for split in splits
        for label in classes
        for i in range(per_class)
    }


def manifest_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """A manifest with the columns and dtypes ``load_manifest`` gives; a ``meta_`` key in any
    row becomes a (string) column, empty in the rows without it."""
    rows = list(rows)
    meta = sorted({k for row in rows for k in row if k.startswith(META_PREFIX)})
    types = {**COLUMNS, **dict.fromkeys(meta, "string")}
    return pd.DataFrame(rows, columns=list(types)).astype(types)
