"""Ingest: sources in, manifest rows out; every file accounted for, no identifier written.

The work runs in four passes:

1. **Find** every item of every source (:mod:`medimg.data.sources`) and hash its content. A
   stat cache (size and modification time) spares re-reading files that have not changed, so a
   re-ingest that finds nothing new reads nothing.
2. **Analyse** the items not seen before, in worker processes: decode, check, measure, hash
   perceptually, and de-identify DICOM (:mod:`medimg.data.deid`). Workers write nothing.
3. **Decide** in this process: labels, pseudonymous patient ids, splits (per patient, stratified
   and stable), duplicates and label conflicts, and ``--dedupe``.
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
import io
import json
import logging
import math
import multiprocessing
import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medimg.config import Config
from medimg.data import deid
from medimg.data.hashing import near_duplicates, phash, phash_hex, thumbnail_code
from medimg.data.images import (
    DICOM_SNIFF_BYTES,
    DecodedImage,
    UndecodableImage,
    decode,
    decode_array,
    decode_deidentified,
    image_stats,
    is_dicom,
    read_dicom,
)
from medimg.data.manifest import META_PREFIX, empty_manifest, load_manifest, write_manifest
from medimg.data.pixels_only import pixels_only_copy, png_pixels
from medimg.data.private import KnownIdentifiers, Originals
from medimg.data.quarantine import QuarantineLog, Reject
from medimg.data.sources import (
    SourceFormat,
    SourceItem,
    SourceNotes,
    discover,
    looks_like_image,
    named_split,
)
from medimg.data.splits import (
    LOCK_ORDER,
    SPLIT_ORDER,
    NewPatient,
    as_key,
    assign_splits,
    carve_val_from_train,
)
from medimg.errors import DataError
from medimg.phi import Scrubber, squeeze
from medimg.workspace import Workspace

logger = logging.getLogger(__name__)

_STAT_CACHE = ".ingest_cache.json"
_POOL_MIN_ITEMS = 64
# Real colour: channels more than _COLOUR_SPREAD levels (of 255) apart in at least _COLOUR_SHARE
# of the pixels. JPEG keeps grey stored as RGB within a few levels; a red marker on a radiograph
# covers well under 1% of it.
_COLOUR_SPREAD = 16
_COLOUR_SHARE = 0.01
_COLOUR_SAMPLE = 1 << 20  # pixels looked at, at most (about)
_KEPT_SPLIT = "kept_split"
"""Quarantine-log key of a copy set aside by dedupe: the split its content is kept in."""
_DEDUPE_MESSAGE = re.compile(r" in (train|val|test); dropped from (?:train|val|test) by dedupe$")
_STATS_COLUMNS = (
    "intensity_min",
    "intensity_max",
    "intensity_mean",
    "intensity_std",
    "saturated_fraction",
    "blank_fraction",
)


@dataclass
class IngestSummary:
    """What one ingest did. ``files_in`` always equals the sum of the four outcomes."""

    files_in: int = 0
    ingested: int = 0
    already_present: int = 0
    duplicates: int = 0
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    removed_by_dedupe: list[dict[str, Any]] = field(default_factory=list)
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


@dataclass(frozen=True)
class _Options:
    """What a worker needs; picklable, sent once per worker process."""

    dicom_frame: str
    max_pixels: int
    min_side: int
    min_std: float
    key: bytes | None
    allow_burned_in: bool


@dataclass
class _Analysis:
    """A worker's verdict on one item. Original identifiers stay in memory, never written."""

    reject: Reject | None = None
    fmt: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    store_bytes: bytes | None = None  # the de-identified DICOM; other copies are made on write
    store_suffix: str = ""
    patient: str | None = None
    identifiers: frozenset[str] = frozenset()
    metadata: dict[str, str] = field(default_factory=dict)
    sop_uid: str | None = None


@dataclass
class _Found:
    item: SourceItem
    ref: str
    image_id: str | None = None
    kind: str = "image"  # image, dicom, other
    size: int | None = None
    from_map: bool = False  # the reference was made by an earlier ingest
    source: Path = Path()  # the source (as given, resolved) the item was found in


# --- workers ---------------------------------------------------------------------------------

_WORKER_OPTIONS: _Options | None = None


def _init_worker(options: _Options) -> None:
    global _WORKER_OPTIONS
    _WORKER_OPTIONS = options
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def _analyse_task(task: tuple[Path | None, np.ndarray | None]) -> _Analysis:
    assert _WORKER_OPTIONS is not None
    return analyse(task[0], task[1], _WORKER_OPTIONS)


def analyse(path: Path | None, array: np.ndarray | None, options: _Options) -> _Analysis:
    """Decode, check, measure and (for DICOM) de-identify one item, writing nothing."""
    try:
        if array is not None:
            decoded = decode_array(array)
            result = _Analysis(fmt="npz", store_suffix=".png")
        else:
            assert path is not None
            data = path.read_bytes()
            if is_dicom(data[:DICOM_SNIFF_BYTES]):
                # pydicom warns about invalid values by quoting them: they may be identifiers
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result, decoded = _analyse_dicom(data, options)
                if result.reject:
                    return result
            else:
                decoded = decode(data, max_pixels=options.max_pixels)
                # the copy itself is made on write; here only its suffix is needed (a JPEG that
                # cannot be stripped exactly becomes a PNG, as every other format does)
                pixels = decoded.pixels
                suffix = ".png"
                if decoded.format == "jpeg":
                    _, suffix = pixels_only_copy(data, decoded.format, lambda: pixels)
                result = _Analysis(fmt=decoded.format, store_suffix=suffix)
    except UndecodableImage as exc:
        return _Analysis(reject=Reject(exc.code, str(exc)))
    except OSError as exc:
        reason = f"cannot read the file: {exc.strerror or exc}"
        return _Analysis(reject=Reject("unreadable", reason))
    assert decoded is not None
    reject = _unusable(decoded, options)
    if reject:
        result.reject = reject
        result.store_bytes = None
        return result
    result.values = {
        "width": decoded.width,
        "height": decoded.height,
        "channels": decoded.channels,
        "bit_depth": decoded.bit_depth,
        "colour": has_colour(decoded.pixels),
        **image_stats(decoded.pixels),
        "phash": phash_hex(phash(decoded.pixels)),
        "thumbnail": thumbnail_code(decoded.pixels),
    }
    return result


def has_colour(pixels: np.ndarray) -> bool:
    """Whether decoded pixels have real colour: RGB whose channels differ, in more than a few
    pixels and by more than compression noise. Grey stored as RGB is not colour.
    """
    if pixels.ndim != 3 or pixels.shape[2] < 3:
        return False
    # A strided sample bounds the work on large images; colour images are colour throughout.
    step = max(1, math.isqrt(pixels.shape[0] * pixels.shape[1] // _COLOUR_SAMPLE))
    sample = pixels[::step, ::step, :3]
    spread = sample.max(axis=2).astype(np.int16) - sample.min(axis=2)
    return bool(np.count_nonzero(spread > _COLOUR_SPREAD) >= _COLOUR_SHARE * spread.size)


def _analyse_dicom(data: bytes, options: _Options) -> tuple[_Analysis, DecodedImage | None]:
    if options.key is None:  # the parent checks first; this guards the worker on its own
        raise deid.PseudonymKeyMissing("a DICOM file reached a worker without a pseudonym key")
    try:
        ds = read_dicom(data)
    except UndecodableImage:
        return _Analysis(reject=Reject("dicom_unreadable", "DICOM header cannot be read")), None
    sop_uid = str(ds.get("SOPInstanceUID", "") or "") or None
    try:
        result = deid.deidentify(ds, options.key)
    except Exception:  # any failure here must quarantine, never leak
        # what the header names is still scrubbed from the file's path
        return _Analysis(reject=Reject("deid_failed", "DICOM could not be de-identified"),
                         identifiers=deid.collect_identifiers(ds)), None
    analysis = _Analysis(
        fmt="dicom",
        patient=result.patient_pseudonym,
        identifiers=result.identifiers,
        metadata=result.metadata,
        sop_uid=sop_uid,
    )
    if result.burned_in_annotation and not options.allow_burned_in:
        analysis.reject = Reject(
            "burned_in",
            "DICOM BurnedInAnnotation is YES (identifiers may be in the pixels); set "
            "data.allow_burned_in_annotation to accept such files",
        )
        return analysis, None
    try:
        decoded = decode_deidentified(
            result, dicom_frame=options.dicom_frame, max_pixels=options.max_pixels
        )
    except UndecodableImage as exc:
        analysis.reject = Reject(exc.code, str(exc))
        return analysis, None
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except Exception:  # the message may quote a value
        analysis.reject = Reject("deid_failed", "the de-identified DICOM could not be written")
        return analysis, None
    analysis.store_bytes = buffer.getvalue()
    analysis.store_suffix = ".dcm"
    return analysis, decoded


def _unusable(decoded: DecodedImage, options: _Options) -> Reject | None:
    if min(decoded.width, decoded.height) < options.min_side:
        return Reject(
            "too_small",
            f"too small: {decoded.width}x{decoded.height}, data.min_side is {options.min_side}",
        )
    if decoded.width * decoded.height > options.max_pixels:
        return Reject("too_many_pixels", f"too many pixels: {decoded.width}x{decoded.height}")
    if decoded.source_std8 < options.min_std:
        return Reject(
            "blank",
            f"blank: near-constant image (std {decoded.source_std8:.2f} on a 0-255 scale, "
            f"data.min_std is {options.min_std})",
        )
    return None


# --- the parent ------------------------------------------------------------------------------


def ingest_sources(
    ws: Workspace,
    sources: Sequence[Path],
    config: Config | None = None,
    *,
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
        config: Defaults to the workspace's params.yaml.
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
        PseudonymKeyMissing: DICOM files or patient ids arrive and MEDIMG_PSEUDONYM_KEY is unset.
    """
    config = config or ws.config
    dedupe = config.data.dedupe_across_splits if dedupe is None else dedupe
    manifest = load_manifest(ws.manifest_path) if ws.manifest_path.exists() else empty_manifest()
    summary = IngestSummary()
    quarantine = QuarantineLog(ws.quarantine_log)
    originals = Originals(ws)
    notes = SourceNotes()

    cache = _load_stat_cache(ws)
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
    key = deid.pseudonym_key(
        required=dicom_new or any(e.item.patient for e in unseen)
        or bool(unseen and known_identifiers.entries),
        reason=(
            "DICOM files carry patient identifiers" if dicom_new
            else "the source gives patient ids" if any(e.item.patient for e in unseen)
            else "earlier ingests met patient identifiers, which new file names are checked for"
        ),
    )
    options = _Options(
        dicom_frame=config.data.dicom_frame,
        max_pixels=config.data.max_pixels,
        min_side=config.data.min_side,
        min_std=config.data.min_std,
        key=key,
        allow_burned_in=config.data.allow_burned_in_annotation,
    )
    entries = list(todo.values())
    analysed = dict(zip(
        todo, _run_analyses(entries, options, config.data.workers, progress), strict=True
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
    manifest, new_rows, refused = _place(manifest, rows, config, summary, kept_splits)
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
    _save_stat_cache(ws, cache)
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
            known.record(digest(squeezed), deid.pseudonymise(identifier, key))
    return Scrubber(identifiers, lambda value: deid.pseudonymise(value, key), known.entries,
                    digest)


def _quarantine(log: QuarantineLog, entry: _Found, reject: Reject) -> dict[str, Any]:
    return log.add(entry.ref, entry.image_id, entry.size, reject)


def _find(
    ws: Workspace,
    sources: Sequence[Path],
    config: Config,
    fmt: SourceFormat,
    labels: Path | None,
    npz_class_names: Sequence[str] | None,
    label_by: str,
    cache: dict[str, list[Any]],
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
                entry.image_id, entry.kind, entry.size = _hash_file(item.path, cache)
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


def _hash_file(path: Path, cache: dict[str, list[Any]]) -> tuple[str, str, int]:
    """The file's sha256, its kind (dicom, image, other) and its size, from one stat."""
    stat = path.stat()
    # Keyed by a hash of the path: paths may name patients, and this file stays on disk.
    key = hashlib.sha256(str(path).encode()).hexdigest()[:32]
    hit = cache.get(key)
    if hit and hit[0] == stat.st_size and hit[1] == stat.st_mtime_ns:
        return hit[2], hit[3], stat.st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        head = handle.read(DICOM_SNIFF_BYTES)
        digest.update(head)
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    kind = "dicom" if is_dicom(head) else ("image" if looks_like_image(path, head) else "other")
    cache[key] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest(), kind]
    return digest.hexdigest(), kind, stat.st_size


def _run_analyses(
    todo: list[_Found],
    options: _Options,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> list[_Analysis]:
    tasks = [(f.item.path, f.item.array) for f in todo]  # in the order of ``todo``
    workers = workers or (os.cpu_count() or 1)
    total = len(tasks)
    results: list[_Analysis] = []
    if workers <= 1 or total < _POOL_MIN_ITEMS:
        for task in tasks:
            results.append(analyse(task[0], task[1], options))
            if progress:
                progress(len(results), total)
        return results
    # Spawned, not forked: the parent may hold threads (Prefect, TensorFlow) a fork would copy.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, total),
        mp_context=context,
        initializer=_init_worker,
        initargs=(options,),
    ) as pool:
        chunk = max(1, min(32, total // (workers * 8)))
        for analysis in pool.map(_analyse_task, tasks, chunksize=chunk):
            results.append(analysis)
            if progress:
                progress(len(results), total)
    return results


def _decide_rows(
    accepted: list[_Found],
    analysed: dict[str, _Analysis],
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
            values = {
                k: existing[k]
                for k in (*_geometry(), "colour", *_STATS_COLUMNS, "phash", "thumbnail")
            }
            fmt, metadata, dicom_patient = existing["format"], {}, None
        if item.patient:
            assert key is not None
            patient, patient_source = deid.pseudonymise(item.patient, key), "source"
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


def _geometry() -> tuple[str, ...]:
    return ("width", "height", "channels", "bit_depth")


def _store_relpath(image_id: str, suffix: str) -> str:
    return f"data/store/{image_id[:2]}/{image_id}{suffix}"  # Workspace.store_dir, relative


def _readable_path(
    entry: _Found, analysis: _Analysis | None, by_image: dict[str, dict[str, Any]]
) -> str:
    """The file later stages decode: the pixels-only or de-identified copy in the store, never
    the user's file (its name and its metadata may identify the patient)."""
    if analysis is not None:
        return _store_relpath(entry.image_id or "", analysis.store_suffix)
    return str(by_image[entry.image_id]["source_path"])  # the same content, ingested before


def _place(
    manifest: pd.DataFrame,
    rows: list[dict[str, Any]],
    config: Config,
    summary: IngestSummary,
    kept_splits: dict[str, set[str]],
) -> tuple[pd.DataFrame, list[dict[str, Any]], list[dict[str, Any]]]:
    """Give each candidate row its split, fold exact duplicates, and append to the manifest.

    Returns:
        The manifest, the rows added to it, and the rows refused because an earlier dedupe set
        their content aside from the split they would enter (``kept_splits``).
    """
    replaced = _rewritten_in_place(manifest, rows)
    manifest = manifest[~manifest["source_ref"].isin(replaced)]
    patient_split = _patient_splits(manifest)
    fractions = dict(config.data.split_fractions)
    class_freq = Counter(manifest["label"]) + Counter(r["label"] for r in rows)

    new_patients: dict[str, NewPatient] = {}
    labels_of: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        labels_of[row["patient_id"]].add(row["label"])
    for row in rows:
        if row["split"] is not None:
            continue
        pid = row["patient_id"]
        previous = replaced.get(row["source_ref"])
        if previous is not None:
            row["patient_id"], row["split"] = previous
            continue
        if pid in patient_split:
            row["split"] = patient_split[pid]
            continue
        stratum = min(labels_of[pid], key=lambda label: (class_freq[label], label))
        new_patients.setdefault(pid, NewPatient(pid, stratum, as_key(fractions)))
    existing = _existing_strata(manifest)
    decided = assign_splits(new_patients.values(), existing, config.base.seed)
    for row in rows:
        if row["split"] is None:
            row["split"] = decided[row["patient_id"]]
    _carve_val(rows, fractions, existing, patient_split, config.base.seed, class_freq)

    kept: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    splits_of: dict[str, set[str]] = defaultdict(set)
    for image_id, split in zip(manifest["image_id"], manifest["split"], strict=True):
        splits_of[image_id].add(split)
    for row in rows:
        allowed = kept_splits.get(row["image_id"])
        if allowed is not None and row["split"] not in allowed:
            row.pop("_source_splits", None)
            refused.append(row)
            continue
        if row["split"] in splits_of[row["image_id"]]:
            summary.duplicates += 1
            logger.info(
                "%s is an exact duplicate of an image in %s; skipped",
                row["source_ref"],
                row["split"],
            )
            continue
        splits_of[row["image_id"]].add(row["split"])
        kept.append(row)
    for row in kept:
        row.pop("_source_splits", None)
    if kept:
        manifest = pd.concat([manifest, pd.DataFrame(kept)], ignore_index=True)
    return manifest, kept, refused


def _carve_val(
    rows: list[dict[str, Any]],
    fractions: dict[str, float],
    existing: dict[str, Counter[str]],
    patient_split: dict[str, str],
    seed: int,
    class_freq: Counter[str],
) -> None:
    """Sources with train and test folders but no val: move some train patients to val.

    Only patients new in this ingest are carved, and only from a predefined train split; a
    patient already in the manifest keeps the split they have, so nothing moves.
    """
    candidates: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        splits = row["_source_splits"]
        if row["split"] == "train" and {"train", "test"} <= splits and "val" not in splits:
            known = patient_split.get(row["patient_id"])
            if known == "val":
                row["split"], row["split_source"] = "val", "assigned"
            elif known is None:
                candidates[row["patient_id"]].append(row)
    if not candidates:
        return
    profile = carve_val_from_train(fractions)
    patients = [
        NewPatient(
            pid, min({r["label"] for r in group}, key=lambda x: (class_freq[x], x)), as_key(profile)
        )
        for pid, group in candidates.items()
    ]
    decided = assign_splits(patients, existing, seed)
    for pid, group in candidates.items():
        for row in group:
            row["split"] = decided[pid]
            row["split_source"] = "assigned" if decided[pid] == "val" else "predefined"


def _rewritten_in_place(
    manifest: pd.DataFrame, rows: list[dict[str, Any]]
) -> dict[str, tuple[str, str]]:
    """References whose file changed since ingest: their new content keeps patient and split."""
    current = {
        r: (p, s)
        for r, p, s in zip(
            manifest["source_ref"], manifest["patient_id"], manifest["split"], strict=True
        )
    }
    replaced = {}
    for row in rows:
        if row["source_ref"] in current:
            replaced[row["source_ref"]] = current[row["source_ref"]]
            logger.warning(
                "%s changed since it was ingested; its row is replaced", row["source_ref"]
            )
    return replaced


def _patient_splits(manifest: pd.DataFrame) -> dict[str, str]:
    """Each known patient's split; a patient already in two splits joins the most locked."""
    splits: dict[str, str] = {}
    for pid, split in zip(manifest["patient_id"], manifest["split"], strict=True):
        if pid not in splits or LOCK_ORDER.get(split, 0) > LOCK_ORDER.get(splits[pid], 0):
            splits[pid] = split
    return splits


def _existing_strata(manifest: pd.DataFrame) -> dict[str, Counter[str]]:
    if manifest.empty:
        return {}
    freq = Counter(manifest["label"])
    strata: dict[str, Counter[str]] = defaultdict(Counter)
    for (_pid, split), labels in manifest.groupby(["patient_id", "split"])["label"]:
        stratum = min(set(labels), key=lambda x: (freq[x], x))
        strata[stratum][split] += 1
    return strata


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
            entry = next(
                e for e in summary.removed_by_dedupe if e["path"] == row["source_ref"]
            )
            summary.quarantined.append(entry)
    return frame.drop(index=sorted(drop)), kept_new


def _set_aside(
    quarantine: QuarantineLog,
    ref: str,
    image_id: str | None,
    size: int | None,
    reason: str,
    kept_split: str,
) -> dict[str, Any]:
    """Quarantine a cross-split copy, recording in its log line the split its content stays in.

    The log outlives this run, so the decision holds for every later ingest, whatever its flags.
    """
    entry = quarantine.add(ref, image_id, size, Reject("duplicate", reason), "set aside")
    entry.setdefault(_KEPT_SPLIT, kept_split)
    return entry


def _kept_splits(quarantine: QuarantineLog) -> dict[str, set[str]]:
    """Contents a dedupe set aside, each with the split(s) it is kept in: the only ones it may
    enter again."""
    kept: dict[str, set[str]] = defaultdict(set)
    for entry in quarantine.entries.values():
        if entry["code"] != "duplicate" or not entry.get("sha256"):
            continue
        split = entry.get(_KEPT_SPLIT)
        if split is None:  # a log line written before the kept split was recorded
            match = _DEDUPE_MESSAGE.search(entry.get("message", ""))
            split = match.group(1) if match else None
        if split is not None:
            kept[entry["sha256"]].add(split)
    return dict(kept)


def _sorted(manifest: pd.DataFrame) -> pd.DataFrame:
    return manifest.sort_values(["split", "label", "source_ref"], kind="stable")


def _write_store(
    ws: Workspace,
    rows: list[dict[str, Any]],
    todo: dict[str, _Found],
    analysed: dict[str, _Analysis],
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


# --- stat cache ------------------------------------------------------------------------------


def _stat_cache_path(ws: Workspace) -> Path:
    return ws.root / "data" / _STAT_CACHE


def _load_stat_cache(ws: Workspace) -> dict[str, list[Any]]:
    path = _stat_cache_path(ws)
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, OSError):
        return {}


def _save_stat_cache(ws: Workspace, cache: dict[str, list[Any]]) -> None:
    target = _stat_cache_path(ws)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(cache))
    os.replace(tmp, target)
