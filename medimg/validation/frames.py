"""The frames GX validates: the manifest, and small frames pandas derives from it.

Where a rule spans rows (class counts per split, an image or a patient in two splits,
near-duplicate pairs, DICOMs of unknown burned-in text per modality) or combines columns
(intensity), pandas first derives a small frame and GX validates that frame, so the Data Docs
show every rule next to the data it judged. :data:`FRAMES` declares each frame once: the manifest
columns it is built from, the columns that name its rows, and how to build it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from medimg.config import ValidationConfig
from medimg.data.deid import BURNED_IN_STATES, UNKNOWN
from medimg.data.hashing import near_duplicates, parse_phash, phash_hex
from medimg.data.manifest import COLUMNS, LATER_COLUMNS, META_PREFIX
from medimg.validation.report import MAX_NAMED, short_id
from medimg.workspace import SPLITS

OPTIONAL_COLUMNS = ("label_by", "label_at", *LATER_COLUMNS)
"""Manifest columns that may be empty: not every source says who labelled an image, or when, and
images ingested before a column existed have no value in it."""
REQUIRED_COLUMNS = tuple(c for c in COLUMNS if c not in OPTIONAL_COLUMNS)
"""Manifest columns that must have a value in every row."""


@dataclass(frozen=True)
class FrameInputs:
    """What the derived frames are built from besides the manifest.

    Attributes:
        class_names: The allowed labels, as in ``base.class_names``.
        validation: The ``validation`` section of ``params.yaml`` (intensity thresholds).
        near_duplicate_distance: The most pHash bits two near-duplicates differ in.
        near_duplicate_thumbnail_distance: The most two near-duplicates' thumbnails differ by;
            ``None`` lets the hash alone decide.
        quarantined: How many files ingest quarantined.
    """

    class_names: Sequence[str]
    validation: ValidationConfig
    near_duplicate_distance: int
    near_duplicate_thumbnail_distance: float | None
    quarantined: int


Build = Callable[[pd.DataFrame, FrameInputs], pd.DataFrame]


@dataclass(frozen=True)
class DerivedFrame:
    """One frame GX validates as a batch of its own: the manifest, or one derived from it.

    Attributes:
        name: The frame's name; its GX asset, suite and Data Docs page are named after it.
        key_columns: The columns that name an unexpected row in a check's result (those the
            frame has).
        needs: The manifest columns the frame is built from; without one it cannot be derived.
        build: Builds the frame from the manifest and :class:`FrameInputs`.
    """

    name: str
    key_columns: tuple[str, ...]
    needs: tuple[str, ...]
    build: Build


def split_order(split: str) -> tuple[int, str]:
    """Sort key putting splits in the order of ``SPLITS``, unknown splits after, by name."""
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


def lacks(columns: Sequence[str]) -> str:
    """Why something that needs ``columns`` could not run: the manifest lacks them."""
    return f"manifest lacks column(s) {list(columns)}; re-create it with `medimg ingest`"


def derive_frames(
    manifest: pd.DataFrame, inputs: FrameInputs
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """Every frame of :data:`FRAMES` by name, and why any frame could not be derived.

    A frame that cannot be derived (a column it needs is missing, a value it reads is malformed)
    is given to GX with no columns, so its checks fail in the Data Docs too; the reason goes into
    the checks' details.
    """
    frames: dict[str, pd.DataFrame] = {}
    unavailable: dict[str, str] = {}
    for frame in FRAMES.values():
        missing = [c for c in frame.needs if c not in manifest.columns]
        try:
            if missing:
                raise ValueError(lacks(missing))
            frames[frame.name] = frame.build(manifest, inputs)
        except (ValueError, TypeError, KeyError) as exc:
            unavailable[frame.name] = str(exc)
            frames[frame.name] = pd.DataFrame()
    return frames, unavailable


def _null_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per required column: how many rows have no value there."""
    nulls = manifest[list(REQUIRED_COLUMNS)].isna().sum()
    return pd.DataFrame({"column": list(REQUIRED_COLUMNS), "n_null": nulls.to_numpy()})


def _split_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per split: how many images it holds."""
    per_split = manifest.groupby("split").size().reindex(SPLITS, fill_value=0)
    return pd.DataFrame({"split": list(SPLITS), "n_images": per_split.to_numpy()})


def _class_counts(manifest: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per (split, class): how many images it holds."""
    pairs = pd.MultiIndex.from_product([SPLITS, class_names], names=["split", "label"])
    known = manifest[manifest["split"].isin(SPLITS) & manifest["label"].isin(class_names)]
    return (
        known.groupby(["split", "label"], observed=True)
        .size()
        .reindex(pairs, fill_value=0)
        .rename("n_images")
        .reset_index()
    )


def _class_shares(manifest: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per class: its images and their fraction of all images."""
    counts = manifest["label"].value_counts().reindex(class_names, fill_value=0)
    total = len(manifest)
    fractions = counts / total if total else counts * 0.0
    return pd.DataFrame(
        {
            "label": list(class_names),
            "n_images": counts.to_numpy(),
            "fraction": fractions.astype(float).to_numpy(),
        }
    )


def _image_intensity(manifest: pd.DataFrame, cfg: ValidationConfig) -> pd.DataFrame:
    """One row per image: its contrast and blank area, and whether both are within limits.

    A missing value is not judged here; ``required_values_present`` reports it.
    """
    frame = manifest[["image_id", "intensity_std", "blank_fraction"]].copy()
    std = pd.to_numeric(frame["intensity_std"], errors="raise").astype(float)
    blank = pd.to_numeric(frame["blank_fraction"], errors="raise").astype(float)
    frame["intensity_ok"] = ~((std < cfg.min_intensity_std) | (blank > cfg.max_blank_fraction))
    return frame.reset_index(drop=True)


def _distinct_pairs(manifest: pd.DataFrame, key: str) -> pd.DataFrame:
    """Distinct (key, split) rows: a key is in one split exactly when it is unique here."""
    pairs = manifest[[key, "split"]].dropna().drop_duplicates()
    return pairs.astype(str).sort_values([key, "split"]).reset_index(drop=True)


def _near_duplicates(
    manifest: pd.DataFrame, max_distance: int, max_thumbnail_distance: float | None
) -> pd.DataFrame:
    """One row per pair of different images whose pHashes are at most ``max_distance`` apart
    and, when the manifest has thumbnails, whose thumbnails confirm it.

    Rows with the same image id are left out: identical content is the exact-duplicate check's.
    ``splits`` says whether the two images are in the same split or in different ones.
    """
    kept = manifest[["image_id", "split", "phash"]].dropna()
    rows_index = kept.index
    rows = kept.reset_index(drop=True)
    hashes, bad = [], []
    for image_id, text in zip(rows["image_id"], rows["phash"], strict=True):
        try:
            hashes.append(parse_phash(str(text)))
        except ValueError:
            bad.append(f"{short_id(str(image_id))} ({text!r})")
    if bad:
        raise ValueError(
            f"{len(bad)} image(s) have a phash that is not 16 hex digits: "
            f"{', '.join(bad[:MAX_NAMED])}; re-create the manifest with `medimg ingest`"
        )
    ids = rows["image_id"].astype(str).to_list()
    splits = rows["split"].astype(str).to_list()
    records = []
    thumbnails = None
    if max_thumbnail_distance is not None and "thumbnail" in manifest.columns:
        thumbnails = [t if isinstance(t, str) else None
                      for t in manifest.loc[rows_index, "thumbnail"].tolist()]
    pairs = near_duplicates([phash_hex(h) for h in hashes], thumbnails, max_distance,
                            max_thumbnail_distance or 0.0)
    for i, j, distance in pairs:
        if ids[i] == ids[j]:
            continue
        a, b = sorted([i, j], key=lambda k: (split_order(splits[k]), ids[k]))
        same = splits[a] == splits[b]
        records.append((ids[a], splits[a], ids[b], splits[b], int(distance), same))
    records.sort(key=lambda r: (r[4], split_order(r[1]), split_order(r[3]), r[0], r[2]))
    frame = pd.DataFrame.from_records(
        records, columns=["image_a", "split_a", "image_b", "split_b", "distance", "same_split"]
    )
    frame["splits"] = frame.pop("same_split").map({True: "same", False: "different"})
    return frame.astype({"distance": "int64", "splits": "object"})


def _quarantine(manifest_rows: int, quarantined: int) -> pd.DataFrame:
    """One row: files quarantined at ingest, images in the manifest, and the quarantined share."""
    total = manifest_rows + quarantined
    return pd.DataFrame(
        {
            "quarantined": [quarantined],
            "manifest_rows": [manifest_rows],
            "quarantined_fraction": [quarantined / total if total else 0.0],
        }
    )


def dicom_images(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per DICOM image: its id, modality and Burned In Annotation state.

    An image whose rows (exact duplicates share an id) record no state, as in a manifest made
    before ingest recorded it, is ``unknown`` like one whose file did not say YES or NO.
    """
    dicom = manifest[manifest["format"].isin(["dicom"])]  # a missing format is not DICOM
    wanted = {"modality": f"{META_PREFIX}modality", "state": f"{META_PREFIX}burned_in_annotation"}
    columns = {name: dicom[c] if c in dicom.columns else pd.NA for name, c in wanted.items()}
    images = (
        pd.DataFrame({"image_id": dicom["image_id"], **columns}, index=dicom.index)
        .astype("string")
        .groupby("image_id", sort=False)
        .first()  # the first value each column has among an image's rows
        .reset_index()
    )
    images["modality"] = images["modality"].fillna(UNKNOWN)
    known = [s for s in BURNED_IN_STATES if s != UNKNOWN]
    images["state"] = images["state"].where(images["state"].isin(known), UNKNOWN)
    return images


def _burned_in_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per modality: its DICOM images and how many have an unknown burned-in state."""
    images = dicom_images(manifest)
    images["unknown"] = images["state"] == UNKNOWN
    counts = images.groupby("modality").agg(
        n_images=("image_id", "size"), n_unknown=("unknown", "sum")
    )
    return counts.reset_index().astype({"modality": "string", "n_images": int, "n_unknown": int})


FRAMES: dict[str, DerivedFrame] = {
    frame.name: frame
    for frame in (
        DerivedFrame(
            "manifest",
            key_columns=("image_id",),
            needs=(),
            build=lambda manifest, _: manifest,
        ),
        DerivedFrame(
            "null_counts",
            key_columns=("column",),
            needs=REQUIRED_COLUMNS,
            build=lambda manifest, _: _null_counts(manifest),
        ),
        DerivedFrame(
            "split_counts",
            key_columns=("split",),
            needs=("split",),
            build=lambda manifest, _: _split_counts(manifest),
        ),
        DerivedFrame(
            "class_counts",
            key_columns=("split", "label"),
            needs=("split", "label"),
            build=lambda manifest, inputs: _class_counts(manifest, inputs.class_names),
        ),
        DerivedFrame(
            "class_shares",
            key_columns=("label", "n_images"),
            needs=("label",),
            build=lambda manifest, inputs: _class_shares(manifest, inputs.class_names),
        ),
        DerivedFrame(
            "image_intensity",
            key_columns=("image_id", "intensity_std", "blank_fraction"),
            needs=("image_id", "intensity_std", "blank_fraction"),
            build=lambda manifest, inputs: _image_intensity(manifest, inputs.validation),
        ),
        DerivedFrame(
            "image_splits",
            key_columns=("split",),
            needs=("image_id", "split"),
            build=lambda manifest, _: _distinct_pairs(manifest, "image_id"),
        ),
        DerivedFrame(
            "near_duplicates",
            key_columns=("image_a", "split_a", "image_b", "split_b"),
            needs=("image_id", "split", "phash"),
            build=lambda manifest, inputs: _near_duplicates(
                manifest,
                inputs.near_duplicate_distance,
                inputs.near_duplicate_thumbnail_distance,
            ),
        ),
        DerivedFrame(
            "patient_splits",
            key_columns=("split",),
            needs=("patient_id", "split"),
            build=lambda manifest, _: _distinct_pairs(manifest, "patient_id"),
        ),
        DerivedFrame(
            "quarantine",
            key_columns=("quarantined", "manifest_rows"),
            needs=(),
            build=lambda manifest, inputs: _quarantine(len(manifest), inputs.quarantined),
        ),
        DerivedFrame(
            "burned_in_annotation",
            key_columns=("modality",),
            needs=("image_id", "format"),
            build=lambda manifest, _: _burned_in_counts(manifest),
        ),
    )
}
"""Every frame GX validates, each declared once, in the order GX validates them: one GX batch
per frame."""
