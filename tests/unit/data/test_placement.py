"""Placing new rows: a split per patient, exact duplicates folded, a dedupe's decision kept."""

from __future__ import annotations

import pandas as pd

from medimg.config import parse_config
from medimg.data.manifest import empty_manifest
from medimg.data.placement import place

CONFIG = parse_config({})


def _row(ref: str, image_id: str, patient: str, label: str = "normal",
         split: str | None = None) -> dict:
    return {"image_id": image_id, "source_ref": ref, "label": label, "patient_id": patient,
            "split": split, "split_source": "predefined" if split else "assigned",
            "_source_splits": frozenset({split} if split else ())}


def test_new_rows_get_one_split_per_patient_and_exact_duplicates_fold():
    rows = [
        _row("a/1.png", "img1", "p1"),
        _row("b/1-copy.png", "img1", "p1"),  # the same content, the same patient: one split
        _row("a/2.png", "img2", "p1", "pneumonia"),
        _row("a/3.png", "img3", "p2", "pneumonia"),
    ]
    placed = place(empty_manifest(), rows, CONFIG, {})
    assert placed.duplicates == 1 and placed.refused == []
    assert [r["source_ref"] for r in placed.added] == ["a/1.png", "a/2.png", "a/3.png"]
    assert list(placed.manifest["source_ref"]) == ["a/1.png", "a/2.png", "a/3.png"]
    splits = dict(zip(placed.manifest["source_ref"], placed.manifest["split"], strict=True))
    assert splits["a/1.png"] == splits["a/2.png"] and set(splits.values()) <= {
        "train", "val", "test"}
    assert all("_source_splits" not in r for r in placed.added)


def test_known_patients_keep_their_split_and_a_dedupe_decision_is_kept():
    manifest = pd.concat([empty_manifest(), pd.DataFrame([
        {k: v for k, v in _row("old/1.png", "img0", "p1", split="val").items()
         if k != "_source_splits"},
    ])], ignore_index=True)
    rows = [
        _row("new/1.png", "img5", "p1"),
        _row("new/copy.png", "img9", "p3", split="train"),  # set aside from train before
    ]
    placed = place(manifest, rows, CONFIG, {"img9": {"test"}})
    assert [r["split"] for r in placed.added] == ["val"]
    assert [r["source_ref"] for r in placed.refused] == ["new/copy.png"]
    assert len(placed.manifest) == 2 and placed.duplicates == 0
