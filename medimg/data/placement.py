"""Where new manifest rows go: a split per patient, exact duplicates folded, rows appended.

A patient already in the manifest keeps their split; new patients are shared out per label
stratum by :func:`medimg.data.splits.assign_splits`; a source with train and test folders but no
val has val carved out of its train patients. A file rewritten in place keeps its patient and
split. Nothing here reads or writes a file.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import pandas as pd

from medimg.config import Config
from medimg.data.splits import LOCK_ORDER, NewPatient, as_key, assign_splits, carve_val_from_train

logger = logging.getLogger(__name__)


@dataclass
class Placed:
    """What :func:`place` did with the candidate rows."""

    manifest: pd.DataFrame
    """The manifest with the rows added (and the rows of rewritten files replaced)."""
    added: list[dict[str, Any]]
    refused: list[dict[str, Any]]
    """Rows whose content an earlier dedupe set aside from the split they would enter."""
    duplicates: int
    """Rows not added: their content is in the manifest already, in the same split."""


def place(
    manifest: pd.DataFrame,
    rows: list[dict[str, Any]],
    config: Config,
    kept_splits: dict[str, set[str]],
) -> Placed:
    """Give each candidate row its split, fold exact duplicates, and append to the manifest.

    Args:
        manifest: The manifest as it is.
        rows: Candidate rows; a row whose ``split`` is None gets one here, per patient. Each
            carries ``_source_splits`` (the splits its source predefines), removed from the rows
            added or refused.
        config: For the split fractions and the seed.
        kept_splits: Contents an earlier dedupe set aside, with the only splits they may enter.
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
    duplicates = 0
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
            duplicates += 1
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
    return Placed(manifest, kept, refused, duplicates)


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
