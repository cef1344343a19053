"""Ingest: sources in, manifest rows out; every file accounted for, no identifier written.

The work runs in four passes:

1. **Find** every item of every source (:mod:`medimg.data.sources`) and hash its content. A
   stat cache (:mod:`medimg.data.statcache`: size and modification time) spares re-reading
   files that have not changed, so a re-ingest that finds nothing new reads nothing.
2. **Analyse** the items not seen before, in worker processes (:mod:`medimg.data.analysis`):
   decode, check, measure, hash perceptually, and de-identify DICOM (:mod:`medimg.data.deid`).
   Workers write nothing.
3. **Decide** in this process: labels, pseudonymous patient ids, splits (per patient, stratified
   and stable: :mod:`medimg.data.placement`), duplicates and label conflicts, and ``--dedupe``.
4. **Write**: pixels-only or de-identified copies into ``data/store/`` (what later stages read),
   quarantined files' references and reasons into ``data/quarantine/``, and the manifest last,
   atomically. Nothing is written before the key check and the decisions are done, so a failure
   leaves the workspace as it was.

Every identifier known at ingest (patient ids from any source, the identifying values of DICOM
headers) is replaced by its pseudonym in every stored reference and log line; the way back to the
original files is the local map of :mod:`medimg.data.private`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medimg.config import Config
from medimg.data.analysis import VALUE_COLUMNS, Analysis, AnalysisOptions, run_analyses
from medimg.data.hashing import near_duplicates
from medimg.data.images import decode, decode_array
from medimg.data.manifest import META_PREFIX, empty_manifest, load_manifest, write_manifest
from medimg.data.pixels_only import pixels_only_copy, png_pixels
from medimg.data.placement import place
from medimg.data.private import KnownIdentifiers, Originals
from medimg.data.pseudonyms import pseudonymise, require_key
from medimg.data.quarantine import DUPLICATE, QuarantineEntry, QuarantineLog, Reject
from medimg.data.sources import SourceFormat, SourceItem, SourceNotes, discover, named_split
from medimg.data.splits import LOCK_ORDER, SPLIT_ORDER
from medimg.data.statcache import StatCache, hash_file, load_stat_cache, save_stat_cache
from medimg.errors import DataError
from medimg.locks import MANIFEST_LOCK, holding
from medimg.phi import Scrubber, squeeze
from medimg.workspace import Workspace

logger = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    """What one ingest did. ``files_in`` always equals the sum of the four outcomes."""

    files_in: int = 0
    ingested: int = 0
    already_present: int = 0
    duplicates: int = 0
    quarantined: list[QuarantineEntry] = field(default_factory=list)
    removed_by_dedupe: list[QuarantineEntry] = field(default_factory=list)
    cross_split_duplicates: int = 0
    own_patient: int = 0
    manifest_rows: int = 0
    per_split: dict[str, int] = field(default_factory=dict)
    dropped_columns: list[str] = field(default_factory=list)
    """Label-list columns not kept, because ``data.metadata_columns`` does not name them."""
    splits_by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    """Each source's files per split it predefines (``assigned``: no split given, so ingest
    assigns one per patient)."""

    @property
    def balanced(self) -> bool:
        """files in = ingested + already present + quarantined + exact duplicates, always."""
        return self.files_in == (
            self.ingested + self.already_present + len(self.quarantined) + self.duplicates
        )

    def equation(self) -> str:
        return (
            f"files in {self.files_in} = ingested {self.ingested} + already present "
            f"{self.already_present} + quarantined {len(self.quarantined)} + exact duplicates "
            f"{self.duplicates}"
        )


@dataclass
class _Found:
    item: SourceItem
    ref: str
    image_id: str | None = None
    kind: str = "image"  # image, dicom, other
    size: int | None = None
    from_map: bool = False  # the reference was made by an earlier ingest
    source: Path = Path()  # the source (as given, resolved) the item was found in


@holding(MANIFEST_LOCK)  # a reviewer's relabel and an ingest never overwrite each other
def ingest_sources(
    ws: Workspace,
    sources: Sequence[Path],
    config: Config,
    *,
    pseudonym_key: bytes | None,
    fmt: SourceFormat = "auto",
    labels: Path | None = None,
    npz_class_names: Sequence[str] | None = None,
    label_by: str = "source",
    dedupe: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> IngestSummary:
    """Add the images of ``sources`` to the workspace manifest.

    Idempotent and append-only: content already in the manifest is left as it is, so its split
    never changes. Files that cannot be used are copied (DICOM: referenced) to
    ``data/quarantine/`` with a reason; originals are never touched.

    Args:
        ws: The workspace.
        sources: Folders, label lists (.csv/.tsv), .npz files, DICOM files or trees. A folder
            named after a split (``Training``, ``test``...) is that split, as it is inside a
            parent folder; the order of the sources changes nothing.
        config: The configuration (the workspace's params.yaml, as the stage reads it).
        pseudonym_key: The key for pseudonyms and date shifts (``Settings.key_bytes()``); needed
            only when something new carries identifiers (DICOM files, patient ids, or new file
            names to check against the identifiers of earlier ingests).
        fmt: ``auto`` detects each source's format.
        labels: A label list for DICOM trees, keyed by path or SOPInstanceUID.
        npz_class_names: Class names for .npz label indices (default ``base.class_names``).
        label_by: Who labelled the data, recorded as label provenance.
        dedupe: Drop the train/val copy of every cross-split duplicate, keeping the copy in the
            most locked split (test, then val); defaults to ``data.dedupe_across_splits``. What
            it sets aside stays aside in later ingests, with or without it.
        progress: Called with (done, total) while items are analysed.

    Raises:
        DataError: a source does not fit its format, or holds no files.
        PseudonymKeyMissing: DICOM files or patient ids arrive without a pseudonym key (or with
            one too short).
    """
    dedupe = config.data.dedupe_across_splits if dedupe is None else dedupe
    manifest = load_manifest(ws.manifest_path) if ws.manifest_path.exists() else empty_manifest()
    summary = IngestSummary()
    quarantine = QuarantineLog(ws.quarantine_log)
    originals = Originals(ws)
    notes = SourceNotes()

    cache = load_stat_cache(ws)
    found = _find(ws, sources, config, fmt, labels, npz_class_names, label_by, cache, notes,
                  originals)
    summary.files_in = len(found)
    if not found:
        raise DataError(f"no files found under {', '.join(map(str, sources))}")
    summary.dropped_columns = sorted(notes.dropped_columns)
    known_refs = dict(zip(manifest["source_ref"], manifest["image_id"], strict=True))
    by_image = {row["image_id"]: row for row in manifest.to_dict("records")}

    def present(entry: _Found) -> bool:
        # A reference is stored scrubbed of identifiers; DICOM is also known by its content.
        return known_refs.get(entry.ref) == entry.image_id or (
            entry.kind == "dicom" and entry.image_id in by_image
        )

    # What is new needs analysing: the first readable item of each content not seen before.
    todo: dict[str, _Found] = {}
    for entry in found:
        if (
            entry.kind != "other"
            and not entry.item.reject_reason
            and entry.image_id not in by_image
            and quarantine.reason_for(entry.image_id, entry.ref) is None
        ):
            todo.setdefault(entry.image_id or "", entry)
    # The key is needed only for what is new: re-ingesting known files works without it. New
    # file names are checked against the identifiers of earlier ingests, which needs it too.
    known_identifiers = KnownIdentifiers(ws)
    unseen = [e for e in found if not present(e) and not e.from_map]
    dicom_new = any(e.kind == "dicom" for e in todo.values())
    key = require_key(
        pseudonym_key,
        required=dicom_new or any(e.item.patient for e in unseen)
        or bool(unseen and known_identifiers.entries),
        reason=(
            "DICOM files carry patient identifiers" if dicom_new
            else "the source gives patient ids" if any(e.item.patient for e in unseen)
            else "earlier ingests met patient identifiers, which new file names are checked for"
        ),
    )
    options = AnalysisOptions(
        dicom_frame=config.data.dicom_frame,
        max_pixels=config.data.max_pixels,
        min_side=config.data.min_side,
        min_std=config.data.min_std,
        key=key,
        allow_burned_in=config.data.allow_burned_in_annotation,
    )
    items = [entry.item for entry in todo.values()]
    analysed = dict(zip(
        todo, run_analyses(items, options, config.data.workers, progress), strict=True
    ))

    # Every identifier known now leaves every reference before anything is logged or written.
    identifiers = {e.item.patient for e in found if e.item.patient}
    for analysis in analysed.values():
        identifiers |= analysis.identifiers
    scrub = _scrubber(identifiers, key, known_identifiers)
    for entry in found:
        if not entry.from_map:
            entry.ref = scrub(entry.ref)
        originals.record(entry.item.ref, entry.ref)
    summary.splits_by_source = _splits_by_source(ws, found, scrub)

    accepted: list[_Found] = []
    for entry in found:
        if entry.item.reject_reason:
            reject = Reject(entry.item.reject_code or "unreadable",
                            scrub(entry.item.reject_reason))
            summary.quarantined.append(_quarantine(quarantine, entry, reject))
        elif entry.kind == "other":
            reject = Reject("not_an_image", "not an image file")
            summary.quarantined.append(_quarantine(quarantine, entry, reject))
        elif (previous := quarantine.reason_for(entry.image_id, entry.ref)) is not None:
            summary.quarantined.append(previous)
        elif present(entry):
            summary.already_present += 1
        else:
            accepted.append(entry)

    rows, rejected = _decide_rows(accepted, analysed, by_image, key, label_by, scrub)
    for entry, reject in rejected:
        summary.quarantined.append(_quarantine(quarantine, entry, reject))

    kept_splits = _kept_splits(quarantine)
    placed = place(manifest, rows, config, kept_splits)
    manifest, new_rows, refused = placed.manifest, placed.added, placed.refused
    summary.duplicates += placed.duplicates
    by_ref = {entry.ref: entry for entry in accepted}
    for row in refused:
        kept = sorted(kept_splits[row["image_id"]], key=SPLIT_ORDER.index)
        reason = (
            f"a copy of an image an earlier dedupe set aside, keeping it in {' and '.join(kept)} "
            f"only; not added to {row['split']}, as that dedupe decided"
        )
        entry = by_ref[row["source_ref"]]
        summary.quarantined.append(
            _set_aside(quarantine, entry.ref, entry.image_id, entry.size, reason, kept[-1])
        )
    if dedupe:
        manifest, new_rows = _dedupe(manifest, new_rows, config, summary, quarantine)
    summary.ingested = len(new_rows)
    summary.own_patient = sum(1 for r in new_rows if r["patient_source"] == "image")
    if not summary.balanced:  # pragma: no cover - a bug, not a user error
        raise AssertionError(f"ingest lost count of files: {summary.equation()}")

    _write_store(ws, new_rows, todo, analysed, config.data.max_pixels)
    quarantine.flush()
    originals.save()
    known_identifiers.save()
    # Both folders are DVC outputs of the ingest stage, so they exist even when empty.
    ws.store_dir.mkdir(parents=True, exist_ok=True)
    ws.quarantine_dir.mkdir(parents=True, exist_ok=True)
    if new_rows or summary.removed_by_dedupe or not ws.manifest_path.exists():
        manifest = _sorted(manifest)
        write_manifest(manifest, ws.manifest_path)
    save_stat_cache(ws, cache)
    summary.manifest_rows = len(manifest)
    summary.per_split = {k: int(v) for k, v in manifest["split"].value_counts().items()}
    summary.cross_split_duplicates = int(
        (manifest.groupby("image_id")["split"].nunique() > 1).sum()
    )
    return summary


def _scrubber(identifiers: set[str], key: bytes | None, known: KnownIdentifiers) -> Scrubber:
    """The scrubber for this ingest: the identifiers met now, and those of earlier ingests by
    their digests; the new ones are remembered (as digests) for the next."""
    if key is None:
        return Scrubber(identifiers, None)
    digest = KnownIdentifiers.digester(key)
    for identifier in identifiers:
        squeezed = squeeze(identifier)
        if len(squeezed) >= 4:
            known.record(digest(squeezed), pseudonymise(identifier, key))
    return Scrubber(identifiers, lambda value: pseudonymise(value, key), known.entries,
                    digest)


def _quarantine(log: QuarantineLog, entry: _Found, reject: Reject) -> QuarantineEntry:
    return log.add(entry.ref, entry.image_id, entry.size, reject)


def _find(
    ws: Workspace,
    sources: Sequence[Path],
    config: Config,
    fmt: SourceFormat,
    labels: Path | None,
    npz_class_names: Sequence[str] | None,
    label_by: str,
    cache: StatCache,
    notes: SourceNotes,
    originals: Originals,
) -> list[_Found]:
    """Every item of every source, with its content hash, kind and size.

    Its reference is the one an earlier ingest gave it, or else its path as found (to be
    scrubbed once every identifier is known).
    """
    found: list[_Found] = []
    # Read in path order, so the order the sources are given in changes nothing.
    roots = sorted({Path(source).resolve() for source in sources})
    for source in roots:
        for item in discover(
            source,
            fmt,
            config.base.class_names,
            labels=labels,
            npz_class_names=npz_class_names,
            label_by=label_by,
            metadata_columns=config.data.metadata_columns,
            notes=notes,
        ):
            earlier = originals.ref_for(item.ref)
            entry = _Found(item=item, ref=earlier or _ref(ws, item), from_map=earlier is not None,
                           source=source)
            if item.array is not None:
                entry.image_id = _array_id(item.array)
                entry.size = int(item.array.nbytes)
            elif item.path is not None:
                entry.image_id, entry.kind, entry.size = hash_file(item.path, cache)
            found.append(entry)
    _join_split_folders(found)
    return found


def _join_split_folders(found: list[_Found]) -> None:
    """Split folders given as sources (``DATA/Training DATA/Testing``) form one source.

    Each knows only its own split; together they have the splits ``DATA`` has, so val is
    carved out of train exactly as when ``DATA`` is given.
    """
    named = {s for s in {e.source for e in found} if s.is_dir() and named_split(s)}
    together = frozenset(
        split for e in found if e.source in named for split in e.item.source_splits
    )
    for entry in found:
        if entry.source in named:
            entry.item = replace(entry.item, source_splits=together)


def _splits_by_source(
    ws: Workspace, found: list[_Found], scrub: Scrubber
) -> dict[str, dict[str, int]]:
    """What each source gave: its files per predefined split (``assigned`` when none)."""
    given: dict[str, Counter[str]] = defaultdict(Counter)
    for entry in found:
        given[scrub(ws.relative(entry.source))][entry.item.split or "assigned"] += 1
    return {
        source: {s: counts[s] for s in (*SPLIT_ORDER, "assigned") if counts[s]}
        for source, counts in given.items()
    }


def _ref(ws: Workspace, item: SourceItem) -> str:
    if item.array is not None:
        archive, _, index = item.ref.partition("#")
        return f"{ws.relative(Path(archive))}#{index}"
    return ws.relative(Path(item.ref)) if "#" not in item.ref else item.ref


def _array_id(array: np.ndarray) -> str:
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _decide_rows(
    accepted: list[_Found],
    analysed: dict[str, Analysis],
    by_image: dict[str, dict[str, Any]],
    key: bytes | None,
    label_by: str,
    scrub: Scrubber,
) -> tuple[list[dict[str, Any]], list[tuple[_Found, Reject]]]:
    """Candidate rows for accepted items, and the items to quarantine with their reasons.

    A label, annotator or metadata cell may hold an identifier too: each goes through ``scrub``.
    """
    now = datetime.now(UTC).isoformat(timespec="seconds")
    rows: list[dict[str, Any]] = []
    rejected: list[tuple[_Found, Reject]] = []
    first_label: dict[str, tuple[str, str]] = {
        image_id: (row["label"], row["source_ref"]) for image_id, row in by_image.items()
    }
    for entry in accepted:
        analysis = analysed.get(entry.image_id or "")
        if analysis is not None and analysis.reject:
            rejected.append((entry, analysis.reject))
            continue
        item = entry.item
        label = item.label
        if label is None and item.label_by_uid and analysis is not None and analysis.sop_uid:
            label = item.label_by_uid.get(analysis.sop_uid) or None
        label = scrub(label) if label is not None else None
        if label is None:
            rejected.append((entry, Reject(
                "unlabelled", "unlabelled: no class folder or label list entry gives its label"
            )))
            continue
        earlier = first_label.setdefault(entry.image_id, (label, entry.ref))
        if earlier[0] != label:
            rejected.append((entry, Reject(
                "label_conflict",
                f"label conflict: the same image is labelled {earlier[0]!r} at {earlier[1]}",
            )))
            continue
        if analysis is not None:
            values = dict(analysis.values)
            fmt, metadata, dicom_patient = analysis.fmt, dict(analysis.metadata), analysis.patient
        else:  # the same content is already in the manifest under another reference
            existing = by_image[entry.image_id]
            values = {k: existing[k] for k in VALUE_COLUMNS}
            fmt, metadata, dicom_patient = existing["format"], {}, None
        if item.patient:
            assert key is not None
            patient, patient_source = pseudonymise(item.patient, key), "source"
        elif dicom_patient:
            patient, patient_source = dicom_patient, "source"
        else:
            patient, patient_source = f"img-{entry.image_id[:16]}", "image"
        metadata = {**item.metadata, **metadata}  # what the DICOM header says wins
        rows.append(
            {
                "image_id": entry.image_id,
                "source_ref": entry.ref,
                "source_path": _readable_path(entry, analysis, by_image),
                "format": fmt,
                "label": label,
                "label_source": scrub(item.label_source),
                "label_by": scrub(item.label_by or label_by),
                "label_at": now,
                "patient_id": patient,
                "patient_source": patient_source,
                "split": item.split,
                "split_source": "predefined" if item.split else "assigned",
                **values,
                **{f"{META_PREFIX}{k}": scrub(str(v)) for k, v in metadata.items()},
                "_source_splits": item.source_splits,
            }
        )
    return rows, rejected


def _store_relpath(image_id: str, suffix: str) -> str:
    return f"data/store/{image_id[:2]}/{image_id}{suffix}"  # Workspace.store_dir, relative


def _readable_path(
    entry: _Found, analysis: Analysis | None, by_image: dict[str, dict[str, Any]]
) -> str:
    """The file later stages decode: the pixels-only or de-identified copy in the store, never
    the user's file (its name and its metadata may identify the patient)."""
    if analysis is not None:
        return _store_relpath(entry.image_id or "", analysis.store_suffix)
    return str(by_image[entry.image_id]["source_path"])  # the same content, ingested before



def _dedupe(
    manifest: pd.DataFrame,
    new_rows: list[dict[str, Any]],
    config: Config,
    summary: IngestSummary,
    quarantine: QuarantineLog,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Drop the less locked copy of every cross-split pair (exact or near); test is kept."""
    frame = manifest.reset_index(drop=True)
    pairs = near_duplicates(
        list(frame["phash"]),
        list(frame["thumbnail"]),
        config.data.near_duplicate_distance,
        config.data.near_duplicate_thumbnail_distance,
    )
    drop: set[int] = set()
    for i, j, distance in pairs:
        a, b = frame.iloc[i], frame.iloc[j]
        if a["split"] == b["split"] or i in drop or j in drop:
            continue
        loser, keeper = (i, b) if LOCK_ORDER[a["split"]] < LOCK_ORDER[b["split"]] else (j, a)
        drop.add(loser)
        row = frame.iloc[loser]
        kind = "exact" if row["image_id"] == keeper["image_id"] else f"near (distance {distance})"
        reason = (
            f"{kind} duplicate of {keeper['source_ref']} in {keeper['split']}; dropped from "
            f"{row['split']} by dedupe"
        )
        summary.removed_by_dedupe.append(_set_aside(
            quarantine, row["source_ref"], row["image_id"], None, reason, keeper["split"]
        ))
    if not drop:
        return manifest, new_rows
    dropped_refs = set(frame.loc[sorted(drop), "source_ref"])
    kept_new = [r for r in new_rows if r["source_ref"] not in dropped_refs]
    # A new file dropped here was counted as ingested; it is quarantined instead.
    for row in new_rows:
        if row["source_ref"] in dropped_refs:
            entry = next(e for e in summary.removed_by_dedupe if e.path == row["source_ref"])
            summary.quarantined.append(entry)
    return frame.drop(index=sorted(drop)), kept_new


def _set_aside(
    quarantine: QuarantineLog,
    ref: str,
    image_id: str | None,
    size: int | None,
    reason: str,
    kept_split: str,
) -> QuarantineEntry:
    """Quarantine a cross-split copy, recording in its log line the split its content stays in.

    The log outlives this run, so the decision holds for every later ingest, whatever its flags.
    """
    return quarantine.add(ref, image_id, size, Reject(DUPLICATE, reason), "set aside",
                          kept_split=kept_split)


def _kept_splits(quarantine: QuarantineLog) -> dict[str, set[str]]:
    """Contents a dedupe set aside, each with the split(s) it is kept in: the only ones it may
    enter again."""
    kept: dict[str, set[str]] = defaultdict(set)
    for entry in quarantine.entries.values():
        if entry.code == DUPLICATE and entry.sha256 and entry.kept_split is not None:
            kept[entry.sha256].add(entry.kept_split)
    return dict(kept)


def _sorted(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest.sort_values(["split", "label", "source_ref"], kind="stable")


def _write_store(
    ws: Workspace,
    rows: list[dict[str, Any]],
    todo: dict[str, _Found],
    analysed: dict[str, Analysis],
    max_pixels: int,
) -> None:
    """The copies later stages read: de-identified DICOM, and every other image pixels-only;
    decoded, where a copy needs it, under the same pixel bound as the analysis."""
    for row in rows:
        entry, analysis = todo.get(row["image_id"]), analysed.get(row["image_id"])
        if entry is None or analysis is None:
            continue
        target = ws.resolve(row["source_path"])
        if target.exists():
            continue
        if analysis.store_bytes is not None:
            data = analysis.store_bytes
        elif entry.item.array is not None:
            data = png_pixels(decode_array(entry.item.array).pixels)
        else:
            assert entry.item.path is not None
            original = entry.item.path.read_bytes()
            data, suffix = pixels_only_copy(
                original, analysis.fmt,
                lambda: decode(original, max_pixels=max_pixels).pixels,  # noqa: B023
            )
            assert target.suffix == suffix, (target, suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)

