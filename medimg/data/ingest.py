"""Ingest: turn a folder of class folders into manifest rows, quarantining what cannot be used."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from medimg.config import Config
from medimg.data.images import (
    IMAGE_SUFFIXES,
    UndecodableImage,
    decode_image,
    describe,
    is_dicom,
)
from medimg.data.manifest import empty_manifest, load_manifest, write_manifest
from medimg.data.splits import assign_split
from medimg.errors import DataError
from medimg.workspace import Workspace

logger = logging.getLogger(__name__)

PATIENTS_FILE = "patients.csv"


@dataclass
class IngestSummary:
    files_in: int = 0
    ingested: int = 0
    already_present: int = 0
    duplicates: int = 0
    quarantined: list[dict[str, str]] = field(default_factory=list)
    manifest_rows: int = 0
    per_split: dict[str, int] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        """files in = ingested + already present + quarantined + duplicates, always."""
        return self.files_in == (
            self.ingested + self.already_present + len(self.quarantined) + self.duplicates
        )


def _class_folders(source: Path, class_names: list[str]) -> dict[str, Path]:
    if not source.is_dir():
        raise DataError(f"source {source} is not a directory; pass a folder of class folders")
    folders = {p.name: p for p in sorted(source.iterdir()) if p.is_dir() and not
               p.name.startswith(".")}
    if not folders:
        raise DataError(
            f"source {source} holds no class folders; expected {source}/<class>/<image> "
            f"for classes {', '.join(class_names)}"
        )
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
        raise DataError(
            f"source {source} has folders {unknown} that are not classes {class_names}; "
            "set base.class_names in params.yaml or move the folders"
        )
    present = [name for name in class_names if name in folders]
    if len(present) < 2:
        raise DataError(
            f"source {source} has only one class folder ({', '.join(present)}); a classifier "
            f"needs at least two of {class_names}"
        )
    return folders


def _patient_ids(source: Path) -> dict[str, str]:
    table = source / PATIENTS_FILE
    if not table.is_file():
        return {}
    with table.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "patient_id"} <= set(reader.fieldnames):
            raise DataError(f"{table} must have the columns path and patient_id")
        return {row["path"]: row["patient_id"] for row in reader if row["patient_id"]}


def _quarantine(ws: Workspace, path: Path, data: bytes, reason: str) -> dict[str, str]:
    """Copy a rejected file aside with its reason; the original is never touched."""
    digest = hashlib.sha256(data).hexdigest()
    ws.quarantine_dir.mkdir(parents=True, exist_ok=True)
    target = ws.quarantine_dir / f"{digest[:12]}_{path.name}"
    first_time = not target.exists()
    if first_time:
        shutil.copyfile(path, target)
    entry = {
        "source_path": ws.relative(path),
        "quarantined_as": ws.relative(target),
        "reason": reason,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if first_time:  # a re-ingest finds the same file again; the log keeps one entry per file
        with (ws.quarantine_dir / "quarantine.jsonl").open("a") as log:
            log.write(json.dumps(entry) + "\n")
    logger.warning("quarantined %s: %s", entry["source_path"], reason)
    return entry


def ingest_sources(ws: Workspace, sources: list[Path], config: Config | None = None) -> IngestSummary:
    """Add the images under each folder-of-classes source to the manifest.

    Idempotent: images already in the manifest (same content hash) are left as they are, so their
    split never changes. Files that do not decode, or are too small or too large, are copied to
    ``data/quarantine/`` with a reason and left untouched where they were.

    Raises:
        DataError: for an empty or one-class source, or when more files are quarantined than
            ``data.max_quarantine_fraction`` allows. The manifest is then left as it was.
    """
    config = config or ws.config
    classes = config.base.class_names
    manifest = load_manifest(ws.manifest_path) if ws.manifest_path.exists() else empty_manifest()
    known = set(manifest["image_id"])
    by_path = {row.source_path: row for row in manifest.itertuples(index=False)}
    replaced: set[str] = set()
    added: set[str] = set()
    summary = IngestSummary()
    rows: list[dict[str, object]] = []

    for source in sources:
        source = Path(source).resolve()
        patients = _patient_ids(source)
        for label, folder in _class_folders(source, classes).items():
            files = sorted(p for p in folder.rglob("*") if p.is_file() and not
                           p.name.startswith("."))
            for path in files:
                summary.files_in += 1
                data = path.read_bytes()
                image_id = hashlib.sha256(data).hexdigest()
                if image_id in known:
                    summary.already_present += 1
                    continue
                if image_id in added:
                    summary.duplicates += 1
                    logger.info("%s duplicates an image already ingested; skipped", path)
                    continue
                if path.suffix.lower() not in IMAGE_SUFFIXES and not is_dicom(data):
                    summary.quarantined.append(_quarantine(ws, path, data, "not an image file"))
                    continue
                try:
                    info = describe(decode_image(data))
                except UndecodableImage as exc:
                    summary.quarantined.append(_quarantine(ws, path, data, str(exc)))
                    continue
                if min(info.width, info.height) < config.data.min_side:
                    reason = (f"too small: {info.width}x{info.height}, "
                              f"data.min_side is {config.data.min_side}")
                    summary.quarantined.append(_quarantine(ws, path, data, reason))
                    continue
                if info.width * info.height > config.data.max_pixels:
                    reason = f"too many pixels: {info.width}x{info.height}"
                    summary.quarantined.append(_quarantine(ws, path, data, reason))
                    continue
                added.add(image_id)
                relative_to_source = path.relative_to(source).as_posix()
                patient = patients.get(relative_to_source, image_id)
                split = assign_split(patient, config.base.seed, config.data.split_fractions)
                previous = by_path.get(ws.relative(path))
                if previous is not None:
                    # The file was rewritten in place: its new content replaces the old row and
                    # stays with the same patient and split, so nothing leaks across splits.
                    replaced.add(previous.image_id)
                    patient, split = previous.patient_id, previous.split
                    logger.warning("%s changed since it was ingested; its row is replaced", path)
                rows.append({
                    "image_id": image_id,
                    "source_path": ws.relative(path),
                    "label": label,
                    "patient_id": patient,
                    "split": split,
                    "width": info.width,
                    "height": info.height,
                    "channels": info.channels,
                })
                summary.ingested += 1
    if summary.files_in == 0:
        raise DataError(
            f"no files found under {', '.join(map(str, sources))}; expected <source>/<class>/<image>"
        )
    bound = config.data.max_quarantine_fraction
    fraction = len(summary.quarantined) / summary.files_in
    if summary.quarantined and fraction > bound:
        first = summary.quarantined[0]
        raise DataError(
            f"{len(summary.quarantined)} of {summary.files_in} files could not be used and were "
            f"copied to {ws.relative(ws.quarantine_dir)}/ (e.g. {first['source_path']}: "
            f"{first['reason']}); repair or remove them, or raise data.max_quarantine_fraction "
            f"(now {bound}) in params.yaml"
        )
    if rows:
        manifest = manifest[~manifest["image_id"].isin(replaced)]
        manifest = pd.concat([manifest, pd.DataFrame(rows)], ignore_index=True)
        manifest = manifest.sort_values(["split", "label", "source_path"], kind="stable")
        write_manifest(manifest, ws.manifest_path)
    elif not ws.manifest_path.exists():
        write_manifest(manifest, ws.manifest_path)
    summary.manifest_rows = len(manifest)
    summary.per_split = {k: int(v) for k, v in manifest["split"].value_counts().items()}
    return summary
