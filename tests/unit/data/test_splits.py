from __future__ import annotations

import random
from collections import Counter

from medimg.data.splits import (
    NewPatient,
    allocate,
    as_key,
    assign_splits,
    carve_val_from_train,
    split_score,
)

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _patients(n: int, stratum: str, prefix: str) -> list[NewPatient]:
    return [NewPatient(f"{prefix}{i}", stratum, as_key(FRACTIONS)) for i in range(n)]


def test_allocate_shares_new_patients_by_largest_remainder():
    # 7 / 1.5 / 1.5: the half left over goes to the earlier split
    assert allocate(10, {}, FRACTIONS) == {"train": 7, "val": 2, "test": 1}
    assert allocate(0, {}, FRACTIONS) == {"train": 0, "val": 0, "test": 0}


def test_allocate_tops_up_the_splits_that_are_short():
    # 30 patients in all: targets 21 / 4.5 / 4.5; test already has 6, so it takes none
    assert allocate(10, {"train": 14, "val": 0, "test": 6}, FRACTIONS) == {
        "train": 6,
        "val": 4,
        "test": 0,
    }


def test_every_label_stratum_gets_its_share_of_every_split():
    patients = _patients(80, "normal", "n") + _patients(20, "pneumonia", "p")
    splits = assign_splits(patients, {}, seed=42)
    per = Counter((p.stratum, splits[p.patient_id]) for p in patients)
    assert per[("pneumonia", "train")] == 14
    assert per[("pneumonia", "val")] == 3
    assert per[("pneumonia", "test")] == 3
    assert (per[("normal", "train")], per[("normal", "val")], per[("normal", "test")]) == (
        56,
        12,
        12,
    )


def test_assignment_does_not_depend_on_the_order_patients_are_found():
    patients = _patients(50, "normal", "n") + _patients(17, "pneumonia", "p")
    shuffled = patients[:]
    random.Random(0).shuffle(shuffled)
    assert assign_splits(patients, {}, seed=7) == assign_splits(shuffled, {}, seed=7)


def test_a_second_batch_tops_up_towards_the_fractions():
    first = _patients(40, "normal", "a")
    decided = assign_splits(first, {}, seed=1)
    existing = {"normal": Counter(decided.values())}
    second = _patients(60, "normal", "b")
    more = assign_splits(second, existing, seed=1)
    total = Counter(decided.values()) + Counter(more.values())
    assert total == Counter({"train": 70, "val": 15, "test": 15})


def test_seed_changes_which_patient_goes_where_but_not_the_counts():
    patients = _patients(100, "normal", "p")
    a, b = assign_splits(patients, {}, seed=1), assign_splits(patients, {}, seed=2)
    assert a != b
    assert Counter(a.values()) == Counter(b.values())


def test_split_score_is_fixed_by_patient_and_seed():
    assert split_score("PT-1", 42) == split_score("PT-1", 42)
    assert split_score("PT-1", 42) != split_score("PT-1", 43)
    assert 0.0 <= split_score("PT-1", 42) < 1.0


def test_val_carved_from_train_keeps_the_train_to_val_ratio():
    carved = carve_val_from_train(FRACTIONS)
    assert set(carved) == {"train", "val"}
    assert abs(carved["train"] - 0.7 / 0.85) < 1e-12
    assert abs(sum(carved.values()) - 1.0) < 1e-12
