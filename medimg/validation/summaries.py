"""Human summaries of GX results: each check's observed value, one line of details, and ids.

A summariser is made from what a check knows before GX runs (thresholds, a derived frame's
counts) and turns the GX result dictionary into a :data:`Summary`. Details name at most
``MAX_NAMED`` offenders, ids shortened; the observed value and the ids list at most
``MAX_LISTED``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd

from medimg.data.deid import UNKNOWN
from medimg.data.manifest import COLUMNS
from medimg.validation.frames import dicom_images, split_order
from medimg.validation.report import MAX_LISTED, MAX_NAMED, short_id

Summary = tuple[object, str, list[str]]
"""What a check reports: its observed value, one line of details, and the offending ids."""
Summarise = Callable[[dict[str, Any]], Summary]
"""Turns one GX result dictionary into a :data:`Summary`."""

def _plain(value: Any) -> Any:
    """A JSON-safe scalar: numpy scalars unwrapped, NaN and NA as None, others as text."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _distinct(values: Iterable[Any]) -> list[Any]:
    """Distinct JSON-safe values, sorted so reports are stable."""
    unique = {_plain(v) for v in values}
    return sorted(unique, key=lambda v: (v is None, str(type(v)), str(v)))


def _named(items: Sequence[str], total: int | None = None) -> str:
    """The first ``MAX_NAMED`` items joined, saying how many more there are."""
    total = len(items) if total is None else total
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f" and {total - MAX_NAMED} more" if total > MAX_NAMED else "")


def _images(n: int, verb: str = "") -> str:
    """``1 image has`` / ``2 images have``: a count of images, with a verb that agrees."""
    plural = {"": "", "has": "have", "looks": "look"}[verb]
    return f"1 image {verb}".rstrip() if n == 1 else f"{n} images {plural}".rstrip()


def _naming(ids: Sequence[str], total: int) -> str:
    """``; images a, b and 3 more``: the offending images, ids shortened, for a details line."""
    return f"; images {_named([short_id(i) for i in ids], total)}" if ids else ""


def _index_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for row in result.get("unexpected_index_list") or [] if isinstance(row, dict)]


def _offending_images(result: dict[str, Any]) -> list[str]:
    """Distinct image ids of the unexpected rows, in manifest order, at most ``MAX_LISTED``."""
    ids = (_plain(row.get("image_id")) for row in _index_rows(result))
    return list(dict.fromkeys(str(i) for i in ids if i is not None))[:MAX_LISTED]


def _unexpected(result: dict[str, Any]) -> tuple[int, list[Any]]:
    count = int(result.get("unexpected_count") or 0)
    return count, _distinct(result.get("unexpected_list") or [])[:MAX_NAMED]


def summarise_columns(result: dict[str, Any]) -> Summary:
    mismatched = (result.get("details") or {}).get("mismatched") or {}
    missing = sorted(str(c) for c in mismatched.get("missing") or [])
    observed = {"missing": missing}
    if missing:
        return observed, f"manifest lacks columns: {missing}", []
    return observed, f"all {len(COLUMNS)} manifest columns are present", []


def summarise_row_count(result: dict[str, Any]) -> Summary:
    n = int(result.get("observed_value") or 0)
    details = "manifest has no rows" if n == 0 else f"manifest has {n} rows"
    return {"n_rows": n}, details, []


def summarise_nulls(manifest: pd.DataFrame, null_counts: pd.DataFrame) -> Summarise:
    def summarise(result: dict[str, Any]) -> Summary:
        empty = {str(row["column"]): int(row["n_null"]) for row in _index_rows(result)}
        observed = {"null_counts": empty}
        if not empty:
            return observed, f"all {len(null_counts)} required columns have a value in each row", []
        has_gap = manifest[list(empty)].isna().any(axis=1)
        ids = list(dict.fromkeys(manifest.loc[has_gap, "image_id"].dropna().astype(str)))
        named = ", ".join(f"{c} ({_images(n)})" for c, n in empty.items())
        details = f"required columns with missing values: {named}"
        return observed, details + _naming(ids, len(ids)), ids[:MAX_LISTED]

    return summarise


def _summarise_unexpected(outside: str, all_inside: str) -> Summarise:
    """A summary of a per-image expectation: how many images fall ``outside``, and which."""

    def summarise(result: dict[str, Any]) -> Summary:
        count, values = _unexpected(result)
        observed = {"unexpected_count": count, "unexpected_values": values}
        if count:
            ids = _offending_images(result)
            details = f"{_images(count)} with {outside}: {values}"
            return observed, details + _naming(ids, count), ids
        return observed, all_inside, []

    return summarise


def summarise_in_set(noun: str, allowed: Sequence[object]) -> Summarise:
    shown = ", ".join(str(a) for a in allowed)
    return _summarise_unexpected(f"{noun} outside [{shown}]", f"all {noun} are in [{shown}]")


def summarise_in_range(column: str, lo: float, hi: float) -> Summarise:
    return _summarise_unexpected(f"{column} outside [{lo}, {hi}]",
                                 f"every {column} is within [{lo}, {hi}]")


def summarise_intensity(min_std: float, max_blank: float) -> Summarise:
    rule = f"intensity_std < {min_std} or blank_fraction > {max_blank}"

    def summarise(result: dict[str, Any]) -> Summary:
        count = int(result.get("unexpected_count") or 0)
        rows = _index_rows(result)
        observed = {"unexpected_count": count, "rule": f"flat or blank when {rule}"}
        if not count:
            return observed, f"no image is flat or blank ({rule})", []
        named = [
            f"{short_id(str(r['image_id']))} (std {_plain(r['intensity_std'])}, "
            f"blank {_plain(r['blank_fraction'])})"
            for r in rows
        ]
        details = f"{_images(count, 'looks')} flat or blank ({rule}): {_named(named, count)}"
        return observed, details, _offending_images(result)

    return summarise


def _by(frame: pd.DataFrame, key: str, value: str, cast: Callable[[Any], Any]) -> dict[str, Any]:
    """``{key: value}`` over a derived frame's rows; empty when the frame could not be derived."""
    if key not in frame.columns or value not in frame.columns:
        return {}
    return {str(k): cast(v) for k, v in zip(frame[key], frame[value], strict=True)}


def _offending_rows(result: dict[str, Any], columns: Sequence[str]) -> list[tuple[str, ...]]:
    return sorted({tuple(str(row[c]) for c in columns) for row in _index_rows(result)})


def summarise_split_counts(split_counts: pd.DataFrame) -> Summarise:
    counts = _by(split_counts, "split", "n_images", int)

    def summarise(result: dict[str, Any]) -> Summary:
        empty = [s for (s,) in _offending_rows(result, ["split"])]
        empty.sort(key=split_order)
        observed = {"counts": counts, "empty": empty}
        if empty:
            return observed, f"splits with no images: {empty}", []
        shown = ", ".join(f"{s}={n}" for s, n in counts.items())
        return observed, f"every split has images: {shown}", []

    return summarise


def summarise_class_counts(class_counts: pd.DataFrame, minimum: int) -> Summarise:
    counts = {
        f"{s}/{c}": int(n)
        for s, c, n in zip(
            class_counts.get("split", []),
            class_counts.get("label", []),
            class_counts.get("n_images", []),
            strict=True,
        )
    }

    def summarise(result: dict[str, Any]) -> Summary:
        short = sorted(
            _offending_rows(result, ["split", "label"]), key=lambda p: (split_order(p[0]), p[1])
        )
        below = [{"split": s, "label": c, "n_images": counts[f"{s}/{c}"]} for s, c in short]
        observed = {"counts": counts, "below_minimum": below}
        if below:
            named = ", ".join(f"{b['split']}/{b['label']}={b['n_images']}" for b in below)
            return observed, f"(split, class) pairs with fewer than {minimum} images: {named}", []
        return observed, f"every class has at least {minimum} images in every split", []

    return summarise


def summarise_class_shares(class_shares: pd.DataFrame, minimum: float) -> Summarise:
    shares = _by(class_shares, "label", "fraction", lambda f: round(float(f), 6))
    counts = _by(class_shares, "label", "n_images", int)

    def summarise(result: dict[str, Any]) -> Summary:
        below = sorted(str(row["label"]) for row in _index_rows(result))
        observed = {"fractions": shares, "counts": counts, "below_minimum": below}
        if below:
            named = ", ".join(f"{c} {shares[c]:.1%} ({counts[c]} images)" for c in below)
            return observed, f"classes below {minimum:.1%} of all images: {named}", []
        shown = ", ".join(f"{c} {f:.1%}" for c, f in shares.items())
        return observed, f"every class is at least {minimum:.1%} of all images: {shown}", []

    return summarise


def summarise_one_split(key: str, noun: str) -> Summarise:
    def summarise(result: dict[str, Any]) -> Summary:
        splits: dict[str, list[str]] = {}
        for value, split in _offending_rows(result, [key, "split"]):
            splits.setdefault(value, []).append(split)
        listed = sorted(splits.items())[:MAX_LISTED]
        offenders = {k: sorted(v, key=split_order) for k, v in listed}
        observed = {"offender_count": len(splits), "offenders": offenders}
        if not splits:
            return observed, f"no {noun} is in more than one split", []
        named = [f"{short_id(k)} in {'+'.join(v)}" for k, v in offenders.items()]
        counted = f"1 {noun} is" if len(splits) == 1 else f"{len(splits)} {noun}s are"
        details = f"{counted} in more than one split: {_named(named, len(splits))}"
        return observed, details, list(offenders)

    return summarise


def summarise_near_duplicates(where: str, max_distance: int) -> Summarise:
    rule = f"pHash distance <= {max_distance}, confirmed by thumbnails"

    def summarise(result: dict[str, Any]) -> Summary:
        pairs = [
            {
                "image_a": str(row["image_a"]),
                "split_a": str(row["split_a"]),
                "image_b": str(row["image_b"]),
                "split_b": str(row["split_b"]),
                "distance": int(row["distance"]),
            }
            for row in _index_rows(result)
        ]
        count = int(result.get("unexpected_count") or 0)
        observed = {"pair_count": count, "max_distance": max_distance, "pairs": pairs[:MAX_LISTED]}
        if not count:
            return observed, f"no two different images {where} are near-duplicates ({rule})", []
        named = [
            f"{short_id(p['image_a'])} ({p['split_a']}) ~ "
            f"{short_id(p['image_b'])} ({p['split_b']}) distance {p['distance']}"
            for p in pairs
        ]
        ids = [i for p in pairs for i in (p["image_a"], p["image_b"])]
        pairs_of = "1 pair" if count == 1 else f"{count} pairs"
        details = f"{pairs_of} of near-duplicate images {where} ({rule}): {_named(named, count)}"
        return observed, details, list(dict.fromkeys(ids))[:MAX_LISTED]

    return summarise


def summarise_own_patients(max_fraction: float) -> Summarise:
    def summarise(result: dict[str, Any]) -> Summary:
        count = int(result.get("unexpected_count") or 0)
        total = int(result.get("element_count") or 0)
        fraction = count / total if total else 0.0
        observed = {
            "own_patient_count": count,
            "own_patient_fraction": round(fraction, 6),
            "max_fraction": max_fraction,
        }
        if not count:
            return observed, "every image has a patient id from its source", []
        ids = _offending_images(result)
        details = (
            f"{_images(count, 'has')} no patient id; each counts as its own patient, so "
            "patient-level leakage cannot be checked for them "
            f"({fraction:.1%} of images; at most {max_fraction:.1%} allowed)"
        )
        return observed, details + _naming(ids, count), ids

    return summarise


def summarise_quarantine(quarantine: pd.DataFrame, max_fraction: float) -> Summarise:
    row = quarantine.iloc[0] if len(quarantine) else {}
    quarantined = int(row.get("quarantined", 0))
    rows = int(row.get("manifest_rows", 0))
    fraction = float(row.get("quarantined_fraction", 0.0))

    def summarise(result: dict[str, Any]) -> Summary:
        observed = {
            "quarantined": quarantined,
            "manifest_rows": rows,
            "fraction": round(fraction, 6),
            "max_fraction": max_fraction,
        }
        share = f"{quarantined} of {quarantined + rows} files quarantined at ingest ({fraction:.1%}"
        if int(result.get("unexpected_count") or 0):
            details = (
                f"{share}, above the {max_fraction:.1%} allowed); see data/quarantine/"
                "quarantine.jsonl for each file and its reason"
            )
            return observed, details, []
        return observed, f"{share}; at most {max_fraction:.1%} allowed)", []

    return summarise


def summarise_burned_in(manifest: pd.DataFrame, counts: pd.DataFrame) -> Summarise:
    per_modality = _by(counts, "modality", "n_unknown", int)
    total = sum(_by(counts, "modality", "n_images", int).values())

    def summarise(result: dict[str, Any]) -> Summary:
        unknown = {m: per_modality[m] for (m,) in _offending_rows(result, ["modality"])}
        count = sum(unknown.values())
        observed = {"unknown_count": count, "unknown_by_modality": unknown, "dicom_images": total}
        if not total:
            return observed, "no DICOM images, so no Burned In Annotation to check", []
        if not count:
            details = f"every DICOM image states Burned In Annotation YES or NO ({_images(total)})"
            return observed, details, []
        images = dicom_images(manifest)
        ids = images.loc[images["state"] == UNKNOWN, "image_id"].astype(str).to_list()
        have = "1 DICOM image has" if count == 1 else f"{count} DICOM images have"
        details = (
            f"{have} no Burned In Annotation YES or NO, by modality {unknown}: they were not "
            "checked for text burned into the pixels (names, ids, dates); review them, or set "
            "BurnedInAnnotation at the source"
        )
        return observed, details + _naming(ids, count), ids[:MAX_LISTED]

    return summarise


def _colour_counts(manifest: pd.DataFrame) -> tuple[int, int]:
    """Distinct images with real colour, and those whose colour was not recorded.

    A missing or malformed column counts nothing here: the check itself reports it.
    """
    if not {"image_id", "colour"} <= set(manifest.columns):
        return 0, 0
    try:
        recorded = manifest["colour"].astype("boolean")
    except (TypeError, ValueError):
        return 0, 0
    by_image = recorded.groupby(manifest["image_id"], sort=False).first()
    return int(by_image.fillna(False).sum()), int(by_image.isna().sum())


def summarise_colour(manifest: pd.DataFrame, channels: int | None) -> Summarise:
    colour, unrecorded = _colour_counts(manifest)
    in_colour = f"{_images(colour)} in colour"
    unchecked = (
        f"; {_images(unrecorded)} ingested before colour was recorded, so not checked"
        if unrecorded
        else ""
    )

    def summarise(result: dict[str, Any]) -> Summary:
        observed = {"colour_images": colour, "channels": channels, "not_recorded": unrecorded}
        if int(result.get("unexpected_count") or 0):
            ids = _offending_images(result)
            details = (
                f"{_images(colour, 'has')} real colour (RGB channels that differ) but "
                "base.channels is 1, so training sees them grey; set base.channels: 3 in "
                "params.yaml to keep their colour"
            )
            return observed, details + _naming(ids, colour) + unchecked, ids
        if channels is None:
            return observed, f"base.channels not given, so not compared ({in_colour})", []
        if channels == 1:
            details = "no image has real colour (grey stored as RGB is not colour)"
            return observed, details + unchecked, []
        return observed, f"base.channels is {channels}: colour is kept ({in_colour})", []

    return summarise
