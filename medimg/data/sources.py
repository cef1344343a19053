"""Where images come from: folders of classes, label lists, MedMNIST ``.npz`` files, DICOM trees.

Each source is read into :class:`SourceItem` records, one per file (or per array entry), before
anything is decoded. Labels, patient ids, predefined splits and metadata columns are taken from
the source's layout; pixels are decoded later, in :mod:`medimg.data.ingest`.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from medimg.data.images import DICOM_SNIFF_BYTES, IMAGE_SUFFIXES, is_dicom
from medimg.errors import DataError
from medimg.phi import is_identifier_column

logger = logging.getLogger(__name__)

SourceFormat = Literal["auto", "folder", "csv", "npz", "dicom"]

PATIENTS_FILE = "patients.csv"
"""Optional ``path,patient_id`` table at the root of a folder source."""

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
_PATH_COLUMNS = ("path", "file", "filename", "file_name", "image", "image_path", "image_index")
_LABEL_COLUMNS = ("label", "class", "class_name", "target", "diagnosis")
_PATIENT_COLUMNS = ("patient_id", "patient", "subject_id", "subject")
_SPLIT_COLUMNS = ("split", "subset", "partition")
_LABELLER_COLUMNS = ("label_by", "labelled_by", "labeled_by", "annotator", "reader")
_UID_COLUMNS = ("sop_instance_uid", "sopinstanceuid")
_LABEL_FILES = (".csv", ".tsv")


@dataclass(frozen=True)
class SourceItem:
    """One image to ingest, as its source describes it.

    Attributes:
        ref: Provenance: the file's path (relative to the workspace when inside it, set by the
            caller), or ``file.npz#train/12`` for an array entry.
        path: The file to read; ``None`` for array entries and for listed files that are missing.
        label: The class name, or ``None`` when the source gives none (the item is quarantined).
        patient: The patient id as the source gives it (pseudonymised at ingest), or ``None``.
        split: A split the source predefines, or ``None``.
        label_source: Where the label came from: ``folder``, ``csv:<name>``, ``npz``...
        label_by: Who labelled it, when the source says.
        metadata: Other columns the source brings, kept for slicing.
        array: The pixels of an array entry.
        sources_splits: The splits this item's source predefines (to carve val out of train when
            a source has train and test only).
        label_by_uid: Labels keyed by SOPInstanceUID, for DICOM trees labelled that way.
        reject_reason: Why a listed file cannot be read (it is then quarantined).
        reject_code: The reason's code (``missing_file``, ``bad_split``, ``not_dicom``).
    """

    ref: str
    path: Path | None
    label: str | None
    patient: str | None = None
    split: str | None = None
    label_source: str = "folder"
    label_by: str = "source"
    metadata: dict[str, str] = field(default_factory=dict)
    array: np.ndarray | None = None
    source_splits: frozenset[str] = frozenset()
    label_by_uid: dict[str, str] | None = None
    reject_reason: str | None = None
    reject_code: str = ""


@dataclass
class SourceNotes:
    """What reading the sources noticed that the ingest summary reports once."""

    dropped_columns: set[str] = field(default_factory=set)
    """Label-list columns not named in ``data.metadata_columns``, so not kept."""


def detect_format(source: Path, labels: Path | None = None) -> SourceFormat:
    """The format of a source path, from what it is and holds."""
    if source.is_file():
        suffix = source.suffix.lower()
        if suffix in _LABEL_FILES:
            return "csv"
        if suffix == ".npz":
            return "npz"
        return "dicom"
    if source.is_dir():
        return "dicom" if labels is not None else "folder"
    raise DataError(f"source {source} does not exist")


def discover(
    source: Path,
    fmt: SourceFormat,
    class_names: Sequence[str],
    *,
    labels: Path | None = None,
    npz_class_names: Sequence[str] | None = None,
    label_by: str = "source",
    metadata_columns: Sequence[str] = (),
    notes: SourceNotes | None = None,
) -> Iterator[SourceItem]:
    """The items of one source, in a stable order.

    Only the label-list columns named in ``metadata_columns`` are kept, as metadata; the names
    of the others are added to ``notes``.

    Raises:
        DataError: the source does not fit its format (unknown class folders, a label list
            without a path or label column, an npz without image arrays...).
    """
    source = Path(source)
    fmt = detect_format(source, labels) if fmt == "auto" else fmt
    if fmt == "folder":
        yield from _folder_items(source, class_names, label_by, dicom_only=False)
    elif fmt == "csv":
        yield from _csv_items(source, class_names, label_by, metadata_columns, notes)
    elif fmt == "npz":
        yield from _npz_items(source, npz_class_names or class_names, label_by)
    elif fmt == "dicom":
        yield from _dicom_items(source, class_names, labels, label_by, notes)
    else:  # pragma: no cover - typer restricts the choice
        raise DataError(f"unknown source format {fmt!r}; use auto, folder, csv, npz or dicom")


def _visible(path: Path) -> bool:
    return not path.name.startswith((".", "__"))


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder``, skipping hidden ones and macOS ``__MACOSX`` debris."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith((".", "__")) for part in p.relative_to(folder).parts)
    )


def _match_class(name: str, class_names: Sequence[str]) -> str | None:
    """A folder name as a class name: exactly, or ignoring case when that is unambiguous."""
    if name in class_names:
        return name
    folded = [c for c in class_names if c.casefold() == name.casefold()]
    return folded[0] if len(folded) == 1 else None


def _class_folders(root: Path, class_names: Sequence[str]) -> dict[str, Path]:
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and _visible(p)]
    matched = {p: _match_class(p.name, class_names) for p in folders}
    unknown = sorted(p.name for p, c in matched.items() if c is None)
    if unknown:
        # The names stay out of the message: a tree organised by patient has folders named
        # after them, and this message reaches logs and the Prefect server.
        raise DataError(
            f"{root} has {len(unknown)} folder(s) that are not classes {list(class_names)} "
            "(not named here, as they may name patients); set base.class_names in params.yaml, "
            "move the folders, or label a tree organised by patient with --labels LIST.csv"
        )
    return {c: p for p, c in matched.items() if c is not None}


def named_split(root: Path) -> str | None:
    """The split a folder is by its own name (``DATA/Testing`` is test), or None.

    A source given as ``DATA/Training DATA/Testing`` is read as ``DATA`` would be: each folder
    is the split it is named after.
    """
    return SPLIT_ALIASES.get(root.name.casefold())


def _split_folders(root: Path) -> dict[str, Path] | None:
    """``{split: folder}`` when every sub-folder of ``root`` is a split folder, else None."""
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and _visible(p)]
    splits = {p: SPLIT_ALIASES.get(p.name.casefold()) for p in folders}
    if not folders or any(s is None for s in splits.values()):
        if any(s is not None for s in splits.values()) and any(s is None for s in splits.values()):
            named = sorted(p.name for p, s in splits.items() if s is not None)
            others = sum(1 for s in splits.values() if s is None)
            raise DataError(
                f"{root} mixes split folders {named} with {others} other folder(s); put every "
                "class folder inside a split folder, or use no split folders at all"
            )
        return None
    if len(set(splits.values())) != len(splits):
        raise DataError(f"{root} has two folders for one split: {sorted(p.name for p in splits)}")
    return {s: p for p, s in splits.items() if s is not None}


def _patient_table(root: Path) -> dict[str, str]:
    table = root / PATIENTS_FILE
    if not table.is_file():
        return {}
    with table.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "patient_id"} <= set(reader.fieldnames):
            raise DataError(f"{table} must have the columns path and patient_id")
        return {row["path"]: row["patient_id"] for row in reader if row["patient_id"]}


def _folder_items(
    root: Path, class_names: Sequence[str], label_by: str, dicom_only: bool
) -> Iterator[SourceItem]:
    if not root.is_dir():
        raise DataError(f"source {root} is not a directory; pass a folder of class folders")
    patients = _patient_table(root)
    splits = _split_folders(root)
    layouts: dict[str | None, Path] = {None: root} if splits is None else dict(splits)
    if splits is None and named_split(root) is not None:
        layouts = {named_split(root): root}
    found_class = False
    for split, folder in layouts.items():
        classes = _class_folders(folder, class_names)
        found_class = found_class or bool(classes)
        class_of = {p: c for c, p in classes.items()}
        for path in files_under(folder):
            if path.parent == root and path.name == PATIENTS_FILE:
                continue
            relative = path.relative_to(root).as_posix()
            top = path.relative_to(folder).parts[0]
            label = class_of.get(folder / top) if len(path.relative_to(folder).parts) > 1 else None
            # A DICOM tree may hold DICOMDIR, reports and the like; the content decides.
            if (
                dicom_only
                and path.suffix.lower() not in ("", ".dcm", ".dicom")
                and not is_dicom(_head(path))
            ):
                yield SourceItem(
                    ref=str(path), path=path, label=None, reject_reason="not a DICOM file",
                    reject_code="not_dicom",
                )
                continue
            yield SourceItem(
                ref=str(path),
                path=path,
                label=label,
                patient=patients.get(relative),
                split=split,
                label_source="folder",
                label_by=label_by,
                source_splits=frozenset(layouts) - {None},
            )
    if not found_class:
        raise DataError(
            f"source {root} holds no class folders; expected {root}/<class>/<image> (or "
            f"{root}/<split>/<class>/<image>) for classes {', '.join(class_names)}"
        )


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(DICOM_SNIFF_BYTES)


def _pick(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    folded = {_slug(c): c for c in columns}
    return next((folded[c] for c in candidates if c in folded), None)


def _slug(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.strip().casefold()).strip("_")


def _read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        rows = [{k: (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
        return list(reader.fieldnames or []), rows


def _class_of(value: str, class_names: Sequence[str]) -> str | None:
    """A label cell as a class name: the name itself (any case), or its index in the classes."""
    if not value:
        return None
    matched = _match_class(value, class_names)
    if matched is not None:
        return matched
    if re.fullmatch(r"\d+(\.0+)?", value) and int(float(value)) < len(class_names):
        return class_names[int(float(value))]
    return value  # an unknown label: ingested as given, and the contract names it


def _kept_columns(
    table: Path,
    columns: Sequence[str],
    used: set[str | None],
    metadata_columns: Sequence[str],
    notes: SourceNotes | None,
) -> list[str]:
    """The label list's columns kept as metadata: those named in ``data.metadata_columns``.

    Raises:
        DataError: a kept column's name marks a direct identifier.
    """
    wanted = {_slug(c) for c in metadata_columns}
    others = [c for c in columns if c not in used]
    kept = [c for c in others if _slug(c) in wanted]
    refused = [c for c in kept if is_identifier_column(c)]
    if refused:
        raise DataError(
            f"{table.name}: column {refused[0]!r} names a direct patient identifier and is never "
            "kept; remove it from data.metadata_columns"
        )
    if notes is not None:
        notes.dropped_columns.update(c for c in others if c not in kept)
    return kept


def _csv_items(
    table: Path,
    class_names: Sequence[str],
    label_by: str,
    metadata_columns: Sequence[str] = (),
    notes: SourceNotes | None = None,
) -> Iterator[SourceItem]:
    columns, rows = _read_table(table)
    path_col = _pick(columns, _PATH_COLUMNS)
    label_col = _pick(columns, _LABEL_COLUMNS)
    if path_col is None or label_col is None:
        raise DataError(
            f"{table} needs a path column ({', '.join(_PATH_COLUMNS)}) and a label column "
            f"({', '.join(_LABEL_COLUMNS)}); it has {columns}"
        )
    patient_col = _pick(columns, _PATIENT_COLUMNS)
    split_col = _pick(columns, _SPLIT_COLUMNS)
    labeller_col = _pick(columns, _LABELLER_COLUMNS)
    used = {path_col, label_col, patient_col, split_col, labeller_col}
    meta_cols = _kept_columns(table, columns, used, metadata_columns, notes)
    base = table.parent
    source_splits = frozenset(
        SPLIT_ALIASES.get(r[split_col].casefold(), r[split_col])
        for r in rows
        if split_col and r[split_col]
    )
    for row in rows:
        relative = row[path_col]
        path = (base / relative) if relative else None
        split_cell = row[split_col] if split_col else ""
        split = SPLIT_ALIASES.get(split_cell.casefold()) if split_cell else None
        missing, code = None, ""
        if path is None:
            missing, code = f"row of {table.name} has no path", "missing_file"
        elif not path.is_file():
            missing, code = f"listed in {table.name} but the file does not exist", "missing_file"
        elif split_cell and split is None:
            missing = f"split {split_cell!r} in {table.name} is not train, val or test"
            code = "bad_split"
        yield SourceItem(
            ref=str(path) if path is not None else f"{table}#row",
            path=path if missing is None else None,
            label=_class_of(row[label_col], class_names),
            patient=(row[patient_col] or None) if patient_col else None,
            split=split,
            label_source=f"csv:{table.name}",
            label_by=(row[labeller_col] if labeller_col and row[labeller_col] else label_by),
            metadata={_slug(c): row[c] for c in meta_cols if row[c] != ""},
            source_splits=source_splits,
            reject_reason=missing,
            reject_code=code,
        )


def _npz_items(archive: Path, class_names: Sequence[str], label_by: str) -> Iterator[SourceItem]:
    try:
        data = np.load(archive, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"{archive} is not a readable .npz file: {exc}") from None
    with data:
        present = [s for s in ("train", "val", "test") if f"{s}_images" in data.files]
        if not present:
            raise DataError(
                f"{archive} holds {sorted(data.files)}; expected MedMNIST-style arrays "
                "train_images/train_labels, val_images/val_labels, test_images/test_labels"
            )
        for split in present:
            images = data[f"{split}_images"]
            if f"{split}_labels" not in data.files:
                raise DataError(f"{archive} has {split}_images but no {split}_labels")
            labels = np.asarray(data[f"{split}_labels"])
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if labels.ndim != 1 or len(labels) != len(images):
                raise DataError(
                    f"{archive}: {split}_labels has shape {data[f'{split}_labels'].shape}; "
                    f"expected ({len(images)},) or ({len(images)}, 1) class indices"
                )
            if images.ndim not in (3, 4):
                raise DataError(
                    f"{archive}: {split}_images has shape {images.shape}; expected (N, H, W) "
                    "or (N, H, W, 3)"
                )
            too_big = labels[(labels < 0) | (labels >= len(class_names))]
            if len(too_big):
                raise DataError(
                    f"{archive}: {split}_labels holds class index {int(too_big[0])} but there are "
                    f"{len(class_names)} classes {list(class_names)}; pass --class-names"
                )
            for index in range(len(images)):
                yield SourceItem(
                    ref=f"{archive}#{split}/{index}",
                    path=None,
                    label=class_names[int(labels[index])],
                    split=split,
                    label_source="npz",
                    label_by=label_by,
                    array=np.ascontiguousarray(images[index]),
                    source_splits=frozenset(present),
                )


def _dicom_items(
    source: Path,
    class_names: Sequence[str],
    labels: Path | None,
    label_by: str,
    notes: SourceNotes | None = None,
) -> Iterator[SourceItem]:
    if labels is None:
        if source.is_file():
            raise DataError(
                f"{source} is a single file; give its label with --labels LIST.csv "
                "(columns path or sop_instance_uid, and label)"
            )
        yield from _folder_items(source, class_names, label_by, dicom_only=True)
        return
    columns, rows = _read_table(labels)
    label_col = _pick(columns, _LABEL_COLUMNS)
    path_col = _pick(columns, _PATH_COLUMNS)
    uid_col = _pick(columns, _UID_COLUMNS)
    if label_col is None or (path_col is None and uid_col is None):
        raise DataError(
            f"{labels} needs a label column and a path or sop_instance_uid column; it has {columns}"
        )
    patient_col = _pick(columns, _PATIENT_COLUMNS)
    _kept_columns(labels, columns, {label_col, path_col, uid_col, patient_col}, (), notes)
    by_path = {r[path_col]: r for r in rows if path_col and r[path_col]}
    by_uid = {
        r[uid_col]: _class_of(r[label_col], class_names) or ""
        for r in rows
        if uid_col and r[uid_col]
    }
    root = source if source.is_dir() else source.parent
    files = files_under(source) if source.is_dir() else [source]
    for path in files:
        if path.resolve() == labels.resolve():
            continue
        row = by_path.get(path.relative_to(root).as_posix())
        if row is None and path_col:
            row = by_path.get(
                str(path.relative_to(labels.parent)) if path.is_relative_to(labels.parent) else ""
            )
        yield SourceItem(
            ref=str(path),
            path=path,
            label=_class_of(row[label_col], class_names) if row else None,
            patient=(row[patient_col] or None) if row and patient_col else None,
            label_source=f"csv:{labels.name}",
            label_by=label_by,
            label_by_uid=by_uid or None,
        )


def looks_like_image(path: Path, head: bytes) -> bool:
    """A file worth decoding: a known image suffix, or the DICOM preamble."""
    return path.suffix.lower() in IMAGE_SUFFIXES or is_dicom(head)
