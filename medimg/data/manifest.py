"""The manifest: one row per image, the single source of truth for every later stage."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from medimg.errors import WorkspaceError

COLUMNS = {
    "image_id": "string",  # sha256 of the file's bytes
    "source_path": "string",  # relative to the workspace when inside it
    "label": "string",
    "patient_id": "string",
    "split": "string",
    "width": "int64",
    "height": "int64",
    "channels": "int64",
}


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in COLUMNS.items()})


def load_manifest(path: Path) -> pd.DataFrame:
    """Read the manifest, or fail saying which command makes it."""
    if not path.is_file():
        raise WorkspaceError(f"{path} does not exist; run `medimg ingest SRC` first")
    frame = pd.read_parquet(path)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise WorkspaceError(f"{path} lacks columns {missing}; re-create it with `medimg ingest`")
    return frame.astype(COLUMNS)


def write_manifest(frame: pd.DataFrame, path: Path) -> None:
    """Write atomically: a failure part-way leaves the previous manifest intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.astype(COLUMNS).reset_index(drop=True).to_parquet(tmp, index=False)
    os.replace(tmp, path)
