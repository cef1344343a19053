"""Per-patient split assignment: stratified by label, stable under any addition of data.

A patient's split is decided once, the first time any of their images is ingested, and never
changes afterwards. New patients are shared out so that each label stratum tops up every split
towards its target fraction (largest remainder on the deficits); which new patient goes where is
decided by a keyed hash of the patient id, so the result depends on the data alone, not on the
order in which files were found.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SPLIT_ORDER = ("train", "val", "test")
LOCK_ORDER = {"train": 0, "val": 1, "test": 2}
"""How locked a split is: the test split most. A conflict keeps the most locked copy."""


def split_score(patient_id: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by the patient id and the seed alone."""
    digest = hmac.new(str(seed).encode(), patient_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def allocate(
    n_new: int, existing: Mapping[str, int], fractions: Mapping[str, float]
) -> dict[str, int]:
    """How many of ``n_new`` patients each split takes so that every split nears its fraction.

    Existing counts are never reduced; the new patients fill the splits' deficits against the
    targets for the grown total, shared by largest remainder (ties go to the earlier split).
    """
    names = [s for s in SPLIT_ORDER if fractions.get(s, 0.0) > 0]
    total = sum(existing.get(s, 0) for s in names) + n_new
    deficits = {s: max(0.0, fractions[s] * total - existing.get(s, 0)) for s in names}
    weight = sum(deficits.values())
    if n_new == 0:
        return dict.fromkeys(names, 0)
    if weight <= 0:
        deficits, weight = {s: fractions[s] for s in names}, sum(fractions[s] for s in names)
    shares = {s: n_new * deficits[s] / weight for s in names}
    counts = {s: math.floor(shares[s]) for s in names}
    leftover = n_new - sum(counts.values())
    by_remainder = sorted(names, key=lambda s: (-(shares[s] - counts[s]), SPLIT_ORDER.index(s)))
    for s in by_remainder[:leftover]:
        counts[s] += 1
    return counts


@dataclass(frozen=True)
class NewPatient:
    """A patient seen for the first time, with what the split decision needs.

    Attributes:
        patient_id: The pseudonymous id.
        stratum: The label the patient is stratified by (their rarest label).
        fractions: Target fractions for this patient's group: the configured ones, or, when a
            source predefines train and test but no val, val carved out of train.
    """

    patient_id: str
    stratum: str
    fractions: tuple[tuple[str, float], ...]


def assign_splits(
    new: Iterable[NewPatient],
    existing: Mapping[str, Counter[str]],
    seed: int,
) -> dict[str, str]:
    """Splits for patients seen for the first time.

    Args:
        new: The new patients.
        existing: Patients already assigned, counted per split for each stratum, so a new batch
            tops up the splits instead of ignoring what is there.
        seed: ``base.seed``; keys the hash that orders patients within a group.

    Returns:
        Patient id to split, for every new patient.
    """
    groups: dict[tuple[str, tuple[tuple[str, float], ...]], list[str]] = {}
    for patient in new:
        groups.setdefault((patient.stratum, patient.fractions), []).append(patient.patient_id)
    decided: dict[str, str] = {}
    for key, patients in groups.items():
        fractions = dict(key[1])
        counts = allocate(len(patients), existing.get(key[0], Counter()), fractions)
        ordered = sorted(set(patients), key=lambda p: (split_score(p, seed), p))
        start = 0
        for split in SPLIT_ORDER:
            take = counts.get(split, 0)
            for patient_id in ordered[start : start + take]:
                decided[patient_id] = split
            start += take
    return decided


def carve_val_from_train(fractions: Mapping[str, float]) -> dict[str, float]:
    """Fractions for patients a source puts in train when it has no val split of its own."""
    kept = fractions["train"] + fractions["val"]
    return {"train": fractions["train"] / kept, "val": fractions["val"] / kept}


def as_key(fractions: Mapping[str, float]) -> tuple[tuple[str, float], ...]:
    return tuple((s, round(float(fractions[s]), 9)) for s in SPLIT_ORDER if s in fractions)
