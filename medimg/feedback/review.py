"""Feedback rules: what a reviewer's label does to the manifest, and what waits for adjudication.

- A label equal to the manifest's is recorded as agreement and changes nothing.
- A correction to a train or val image changes its manifest label at once, with provenance
  (``label_source = feedback:<entry id>``, ``label_by``, ``label_at``); the log keeps the
  previous label.
- A correction to a test image never changes the locked test split by itself: it waits until
  :func:`adjudicate` accepts it.
- When reviewers disagree on an image (any split), every entry is kept and the image waits: its
  label does not flip with each new entry. Accepting one entry decides the image; rejecting one
  leaves the others waiting.
- An image file not in the manifest comes in through ingest (:mod:`medimg.feedback.intake`):
  decode checks, DICOM de-identification and ingest's split rules, with the reviewer's label and
  the entry as its provenance. Its entry has no previous label.

Each call reads, checks, appends and relabels under the workspace's feedback lock
(:data:`medimg.feedback.log.LOCK`), so reviewers saving at once lose nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from medimg.config import Config
from medimg.data.manifest import load_manifest, write_manifest
from medimg.data.statcache import hash_file
from medimg.errors import DataError
from medimg.feedback.intake import ingest_image
from medimg.feedback.log import (
    LOCK,
    FeedbackEntry,
    append_entry,
    new_entry_id,
    read_log,
    utc_now,
)
from medimg.feedback.predictions import Prediction, find_prediction
from medimg.locks import workspace_lock
from medimg.settings import Settings
from medimg.workspace import Workspace


@dataclass(frozen=True)
class PendingItem:
    """An image waiting for adjudication, with the entries that wait on it."""

    image_id: str
    split: str
    current_label: str
    entries: list[FeedbackEntry]

    def line(self) -> str:
        labels = ", ".join(f"{e.entry_id} {e.label} by {e.reviewer}" for e in self.entries)
        return f"{self.image_id[:12]} ({self.split}, now {self.current_label}): {labels}"


def add_feedback(ws: Workspace, config: Config, image: str, label: str, reviewer: str,
                 prediction_id: str | None = None, model_version: str | None = None,
                 threshold: float | None = None, note: str | None = None,
                 settings: Settings | None = None) -> FeedbackEntry:
    """Record a reviewer's ``label`` for ``image``: a manifest image id, or an image file's path.

    A file not in the manifest is ingested first (:func:`medimg.feedback.intake.ingest_image`),
    which needs ``settings`` for the pseudonym key. With ``prediction_id`` (a prediction
    recorded for review), the model's name, version and threshold come from that record unless
    given. Everything is checked before the log is written: an unknown class, a missing
    reviewer, an unknown image or prediction, a prediction of another image, or a file ingest
    quarantines raises :class:`DataError` and leaves the log and the manifest as they were.
    """
    reviewer = _reviewer(reviewer)
    if label not in config.base.class_names:
        raise DataError(f"unknown class {label!r}; use one of base.class_names "
                        f"{list(config.base.class_names)}")
    with workspace_lock(ws.root, LOCK):
        manifest = load_manifest(ws.manifest_path)
        image_id, new_file = find_image(ws, manifest, image)
        prediction = _prediction_of(ws, prediction_id, image_id)
        if prediction is not None:
            model_version = model_version or prediction.model_version
            threshold = prediction.threshold if threshold is None else threshold
        if new_file is not None:
            key = settings.key_bytes() if settings is not None else None
            ingest_image(ws, config, new_file, image_id, label, reviewer, key)
            manifest = load_manifest(ws.manifest_path)
        split, current = _split_and_label(manifest, image_id)
        log = read_log(ws)
        agree = None if new_file is not None else label == current
        if _waiting(log, image_id) or _disagrees(log, image_id, label, reviewer):
            status = "pending"
        elif agree:
            status = "agreed"
        else:  # a new image's label is its first, whatever its split
            status = "pending" if split == "test" and new_file is None else "applied"
        entry = FeedbackEntry(
            entry_id=new_entry_id(), kind="label", image_id=image_id, reviewer=reviewer,
            time=utc_now(), label=label, previous_label=None if new_file is not None else current,
            agree=agree, status=status, split=split, prediction_id=prediction_id,
            model_name=prediction.model_name if prediction else None,
            model_version=model_version, threshold=threshold, note=note)
        append_entry(ws, entry)
        if status == "applied":
            _relabel(ws, manifest, entry, by=reviewer)
        return entry


def adjudicate(ws: Workspace, entry_id: str, accept: bool, reviewer: str) -> FeedbackEntry:
    """Decide a pending entry; accepting it sets the image's manifest label to the entry's."""
    reviewer = _reviewer(reviewer)
    with workspace_lock(ws.root, LOCK):
        log = read_log(ws)
        waiting = {e.entry_id: e for item in _pending(log) for e in item}
        target = waiting.get(entry_id)
        if target is None:
            raise DataError(f"no pending feedback entry {entry_id!r}; "
                            "see `medimg feedback pending`")
        manifest = load_manifest(ws.manifest_path)
        _, current = _split_and_label(manifest, target.image_id)
        decision = FeedbackEntry(
            entry_id=new_entry_id(), kind="adjudication", image_id=target.image_id,
            reviewer=reviewer, time=utc_now(), target=entry_id, accept=accept,
            label=target.label if accept else None, previous_label=current)
        append_entry(ws, decision)
        if accept and target.label != current:
            _relabel(ws, manifest, replace(target, time=decision.time), by=reviewer)
        return decision


def pending(ws: Workspace) -> list[PendingItem]:
    """Images waiting for adjudication, in the order their first waiting entry was recorded."""
    with workspace_lock(ws.root, LOCK):  # a line being appended is never read half-written
        log = read_log(ws)
        groups = _pending(log)
        if not groups:
            return []
        manifest = load_manifest(ws.manifest_path)
    items = []
    for entries in groups:
        split, current = _split_and_label(manifest, entries[0].image_id)
        items.append(PendingItem(entries[0].image_id, split, current, entries))
    return items


def find_image(ws: Workspace, manifest: pd.DataFrame, image: str) -> tuple[str, Path | None]:
    """The image ``image`` names, as ``(image id, None)`` when the manifest has it, or
    ``(content hash, path)`` for an image file it does not have yet.

    ``image`` is a manifest image id, or the path of a file: an original (whose content hash is
    its id), the copy the manifest reads, or a new file.
    """
    ids = set(manifest["image_id"])
    if image in ids:
        return image, None
    path = Path(image)
    if not path.is_absolute() and not path.is_file():
        path = ws.root / path
    if not path.is_file():
        # a path may name a patient: only what looks like an image id is echoed back
        named = repr(image) if re.fullmatch(r"[0-9a-f]{64}", image) else "the image"
        raise DataError(f"{named} is neither an image id in the manifest nor an image file; "
                        "give a manifest id or a file's path (whole folders: `medimg ingest`)")
    digest, _, _ = hash_file(path, {})
    if digest in ids:
        return digest, None
    stored = ws.relative(path)
    named = manifest.loc[(manifest["source_path"] == stored)
                         | (manifest["source_ref"] == stored), "image_id"]
    if len(named):
        return str(named.iloc[0]), None
    return digest, path


def _prediction_of(ws: Workspace, prediction_id: str | None, image_id: str) -> Prediction | None:
    """The recorded prediction a label answers, checked to be of the same image."""
    if prediction_id is None:
        return None
    prediction = find_prediction(ws, prediction_id)
    if prediction.image_id != image_id:
        raise DataError(f"prediction {prediction_id!r} is of image {prediction.image_id[:12]}, "
                        "not of this one; pass the image that prediction was made for")
    return prediction


def _reviewer(reviewer: str | None) -> str:
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise DataError("a reviewer is required; pass --reviewer ID")
    return reviewer


def _split_and_label(manifest: pd.DataFrame, image_id: str) -> tuple[str, str]:
    rows = manifest.loc[manifest["image_id"] == image_id]
    # an image kept in several splits is as locked as its most locked copy
    split = "test" if (rows["split"] == "test").any() else str(rows["split"].iloc[0])
    return split, str(rows["label"].iloc[0])


def _relabel(ws: Workspace, manifest: pd.DataFrame, entry: FeedbackEntry, by: str) -> None:
    rows = manifest["image_id"] == entry.image_id
    manifest.loc[rows, "label"] = entry.label
    manifest.loc[rows, "label_source"] = f"feedback:{entry.entry_id}"
    manifest.loc[rows, "label_by"] = by
    manifest.loc[rows, "label_at"] = entry.time
    write_manifest(manifest, ws.manifest_path)


def _since_decision(log: list[FeedbackEntry], image_id: str) -> list[FeedbackEntry]:
    """The image's label entries after its last accepted adjudication, less rejected ones."""
    rejected = {e.target for e in log if e.kind == "adjudication" and not e.accept}
    entries: list[FeedbackEntry] = []
    for e in log:
        if e.image_id != image_id:
            continue
        if e.kind == "adjudication" and e.accept:
            entries = []
        elif e.kind == "label" and e.entry_id not in rejected:
            entries.append(e)
    return entries


def _waiting(log: list[FeedbackEntry], image_id: str) -> bool:
    return any(e.status == "pending" for e in _since_decision(log, image_id))


def _disagrees(log: list[FeedbackEntry], image_id: str, label: str, reviewer: str) -> bool:
    return any(e.reviewer != reviewer and e.label != label
               for e in _since_decision(log, image_id))


def _pending(log: list[FeedbackEntry]) -> list[list[FeedbackEntry]]:
    """Waiting label entries grouped by image; a disagreement waits with every side of it."""
    images = dict.fromkeys(e.image_id for e in log if e.status == "pending")
    groups = []
    for image_id in images:
        since = _since_decision(log, image_id)
        if any(e.status == "pending" for e in since):
            groups.append(since)
    return groups
