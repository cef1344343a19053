from __future__ import annotations

from collections import Counter

from medimg.data.splits import assign_split

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def test_split_depends_only_on_patient_and_seed():
    first = {f"PT-{i}": assign_split(f"PT-{i}", 42, FRACTIONS) for i in range(500)}
    # adding many more patients, in another order, moves nobody
    more = [f"PT-{i}" for i in range(2000)][::-1]
    again = {p: assign_split(p, 42, FRACTIONS) for p in more}
    assert all(again[p] == s for p, s in first.items())


def test_fractions_are_respected_roughly():
    counts = Counter(assign_split(f"patient-{i}", 7, FRACTIONS) for i in range(20_000))
    assert abs(counts["train"] / 20_000 - 0.7) < 0.02
    assert abs(counts["val"] / 20_000 - 0.15) < 0.02
    assert abs(counts["test"] / 20_000 - 0.15) < 0.02


def test_seed_changes_the_assignment():
    a = [assign_split(f"p{i}", 1, FRACTIONS) for i in range(200)]
    b = [assign_split(f"p{i}", 2, FRACTIONS) for i in range(200)]
    assert a != b
