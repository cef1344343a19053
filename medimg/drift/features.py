"""The features drift is measured on, taken from manifest rows.

Numeric: the per-image intensity statistics ingest records, the longest side and the aspect
ratio. Categorical: channels, file format, and the DICOM attributes ingest keeps as ``meta_``
columns. Ingest keeps Modality and PhotometricInterpretation (``medimg.data.deid``) but not
Manufacturer, which is reported as not recorded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NUMERIC = ("intensity_mean", "intensity_std", "intensity_min", "intensity_max",
           "saturated_fraction", "blank_fraction", "longest_side", "aspect_ratio")
"""Numeric features, in report order."""

CATEGORICAL = {
    "channels": "channels",
    "format": "format",
    "modality": "meta_modality",
    "photometric_interpretation": "meta_photometric",
    "manufacturer": "meta_manufacturer",
}
"""Categorical features and the manifest column each is read from."""

ABSENT = "(none)"
"""The category of a row without the attribute (a PNG has no Modality)."""


def numeric_values(rows: pd.DataFrame, name: str) -> np.ndarray:
    """One numeric feature of each row, without the rows that lack it."""
    if name == "longest_side":
        values = np.maximum(rows["width"].to_numpy(float), rows["height"].to_numpy(float))
    elif name == "aspect_ratio":
        values = rows["width"].to_numpy(float) / rows["height"].to_numpy(float)
    else:
        values = pd.to_numeric(rows[name], errors="coerce").to_numpy(float)
    return values[np.isfinite(values)]


def recorded(rows: pd.DataFrame, name: str) -> bool:
    """Whether any row holds the categorical feature ``name``."""
    column = CATEGORICAL[name]
    return column in rows.columns and bool(rows[column].notna().any())


def category_values(rows: pd.DataFrame, name: str) -> list[str]:
    """One categorical feature of each row as text; a row without it is :data:`ABSENT`."""
    column = CATEGORICAL[name]
    if column not in rows.columns:
        return [ABSENT] * len(rows)
    return [ABSENT if pd.isna(v) else str(v) for v in rows[column]]
