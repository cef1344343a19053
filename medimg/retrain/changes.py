"""What changed since the champion was trained: new images, corrected labels, files not ingested.

The champion's data version is the manifest's md5 that registration tagged it with
(``data_version``); DVC keeps that manifest in its cache, so the change is an exact diff of two
manifests: images present now and absent then, and images whose label differs. Files in
``data/raw`` that no ingest has read yet count as new images too (each carries its class from
its folder or table); the retrain ingests them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medimg.data.images import DICOM_SNIFF_BYTES, is_dicom
from medimg.data.manifest import load_manifest
from medimg.data.sources import files_under, looks_like_image
from medimg.data.statcache import is_cached, load_stat_cache
from medimg.workspace import Workspace


@dataclass(frozen=True)
class ChampionState:
    """The model the retrain must beat, and the data it was trained on."""

    version: str
    data_version: str
    run_id: str
    manifest: pd.DataFrame | None  # None: its manifest is not in the DVC cache
    missing_why: str = ""


@dataclass
class LabelChanges:
    """New and corrected labels since the champion's data version."""

    new_images: pd.DataFrame = field(default_factory=pd.DataFrame)  # manifest rows
    relabelled: pd.DataFrame = field(default_factory=pd.DataFrame)  # rows, with ``label_before``
    not_ingested: int = 0  # files in data/raw that no ingest has read yet
    basis: str = ""  # what the counts are measured against, in words

    @property
    def total(self) -> int:
        return len(self.new_images) + len(self.relabelled) + self.not_ingested

    def by_class(self) -> dict[str, dict[str, int]]:
        """``{"new": {class: n}, "corrected": {class (new label): n}}``."""
        return {"new": _count(self.new_images, "label"),
                "corrected": _count(self.relabelled, "label")}

    def by_source(self) -> dict[str, int]:
        """Counts by where the label came from: ``feedback``, ``folder``, ``csv``, ``npz``...,
        and ``not ingested yet``."""
        counts: Counter[str] = Counter()
        for frame in (self.new_images, self.relabelled):
            if len(frame):
                counts.update(frame["label_source"].fillna("unknown").astype(str)
                              .str.split(":").str[0])
        if self.not_ingested:
            counts["not ingested yet"] += self.not_ingested
        return dict(counts.most_common())

    def line(self) -> str:
        parts = [f"{len(self.new_images)} new image(s)", f"{len(self.relabelled)} corrected "
                 "label(s)"]
        if self.not_ingested:
            parts.append(f"{self.not_ingested} file(s) in data/raw not ingested yet")
        return ", ".join(parts) + (f" ({self.basis})" if self.basis else "")


def _count(frame: pd.DataFrame, column: str) -> dict[str, int]:
    if not len(frame):
        return {}
    return {str(k): int(v) for k, v in frame[column].value_counts().sort_index().items()}


def cached_manifest(ws: Workspace, md5: str) -> Path | None:
    """The manifest of data version ``md5`` in the workspace's DVC cache, if it is there."""
    if len(md5) != 32 or not all(c in "0123456789abcdef" for c in md5):
        return None
    for layout in (Path("files") / "md5" / md5[:2] / md5[2:], Path(md5[:2]) / md5[2:]):
        path = ws.root / ".dvc" / "cache" / layout
        if path.is_file():
            return path
    return None


def champion_manifest(ws: Workspace, data_version: str) -> tuple[pd.DataFrame | None, str]:
    """The manifest the champion was trained on, or None and why it cannot be read."""
    path = cached_manifest(ws, data_version)
    if path is None:
        return None, (f"the champion's data version {data_version[:12]} is not in the DVC "
                      "cache (`dvc pull` fetches it)")
    return load_manifest(path), ""


def files_not_ingested(ws: Workspace) -> int:
    """Images (DICOM or image files) under data/raw that the last ingest did not read as they
    are now. Tables and other files are not counted: they carry no image of their own."""
    raw = ws.raw_dir.resolve()
    if not raw.is_dir():
        return 0
    cache = load_stat_cache(ws)
    count = 0
    for path in files_under(raw):
        if is_cached(path, cache):
            continue
        with path.open("rb") as handle:
            head = handle.read(DICOM_SNIFF_BYTES)
        count += is_dicom(head) or looks_like_image(path, head)
    return count


def label_changes(ws: Workspace, champion: ChampionState | None) -> LabelChanges:
    """New and corrected labels in the manifest since ``champion``'s data version.

    With no champion, every image is new. With a champion whose manifest is not in the cache,
    every label set by feedback counts as a correction and no image as new; ``basis`` says so.
    """
    now = load_manifest(ws.manifest_path) if ws.manifest_path.is_file() else None
    changes = LabelChanges(not_ingested=files_not_ingested(ws))
    if now is None:
        changes.basis = "no manifest yet"
        return changes
    rows = now.drop_duplicates("image_id")
    if champion is None:
        changes.new_images, changes.basis = rows, "no champion yet"
        return changes
    if champion.manifest is None:
        fed = rows[rows["label_source"].fillna("").str.startswith("feedback:")]
        changes.relabelled = fed.assign(label_before=pd.NA)
        changes.basis = champion.missing_why + "; counted from feedback labels only"
        return changes
    before = champion.manifest.drop_duplicates("image_id").set_index("image_id")["label"]
    known = rows["image_id"].isin(before.index)
    changes.new_images = rows[~known]
    kept = rows[known]
    was = kept["image_id"].map(before)
    changes.relabelled = kept[kept["label"] != was].assign(label_before=was[kept["label"] != was])
    changes.basis = f"since champion v{champion.version}'s data {champion.data_version[:12]}"
    return changes
