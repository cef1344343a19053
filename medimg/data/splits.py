"""Per-patient split assignment by a keyed hash: stable under any addition of data."""

from __future__ import annotations

import hashlib
import hmac

SPLIT_ORDER = ("train", "val", "test")


def split_score(patient_id: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by the patient id and the seed alone."""
    digest = hmac.new(str(seed).encode(), patient_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(patient_id: str, seed: int, fractions: dict[str, float]) -> str:
    """The split of every image of ``patient_id``.

    The answer depends on nothing but the patient id, the seed and the fractions, so adding
    images or patients never moves an image that was already assigned.
    """
    score = split_score(patient_id, seed)
    edge = 0.0
    for name in SPLIT_ORDER:
        edge += fractions[name]
        if score < edge:
            return name
    return SPLIT_ORDER[-1]
