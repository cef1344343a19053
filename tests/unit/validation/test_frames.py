"""The frames GX validates: each declared once, derived by pandas alone, no GX needed here."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from medimg.config import ValidationConfig
from medimg.data.manifest import COLUMNS
from medimg.validation.frames import (
    FRAMES,
    REQUIRED_COLUMNS,
    FrameInputs,
    derive_frames,
    dicom_images,
    lacks,
    split_order,
)

CLASSES = ("normal", "pneumonia")
INPUTS = FrameInputs(
    class_names=CLASSES,
    validation=ValidationConfig(),
    near_duplicate_distance=2,
    near_duplicate_thumbnail_distance=None,  # the hash alone decides
    quarantined=1,
)


def _row(image_id: str, split: str, label: str, phash: str, **changes: Any) -> dict[str, Any]:
    row = dict.fromkeys(COLUMNS, "x")
    row.update(
        image_id=image_id,
        format="png",
        label=label,
        patient_id=f"p-{image_id}",
        split=split,
        intensity_std=40.0,
        blank_fraction=0.02,
        phash=phash,
    )
    return {**row, **changes}


def _manifest(*rows: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


# 3 bits from each other: a near-duplicate at distance 3, not at 2.
CLEAN = _manifest(
    _row("a", "train", "normal", "0000000000000000"),
    _row("b", "test", "normal", "0000000000000003"),  # 2 bits from a, in another split
    _row("c", "train", "pneumonia", "00000000000000ff"),
    _row("d", "train", "pneumonia", "00000000000000fe"),  # 1 bit from c, in the same split
    _row("e", "val", "pneumonia", "ffffffffffffffff"),
)


def test_every_frame_is_declared_once_under_its_own_name_in_validation_order() -> None:
    assert [(name, frame.name) for name, frame in FRAMES.items()] == [
        (name, name)
        for name in (
            "manifest",
            "null_counts",
            "split_counts",
            "class_counts",
            "class_shares",
            "image_intensity",
            "image_splits",
            "near_duplicates",
            "patient_splits",
            "quarantine",
            "burned_in_annotation",
        )
    ]
    assert all(set(f.needs) <= set(COLUMNS) for f in FRAMES.values())
    assert FRAMES["null_counts"].needs == REQUIRED_COLUMNS
    assert FRAMES["near_duplicates"].key_columns == ("image_a", "split_a", "image_b", "split_b")


def test_a_clean_manifest_derives_every_frame() -> None:
    frames, unavailable = derive_frames(CLEAN, INPUTS)

    assert unavailable == {}
    assert list(frames) == list(FRAMES)
    assert frames["manifest"] is CLEAN
    for name, frame in FRAMES.items():
        present = [c for c in frame.key_columns if c in frames[name].columns]
        assert present, f"{name} has none of its key columns {frame.key_columns}"


def test_counts_cover_every_split_and_class_even_when_empty() -> None:
    frames, _ = derive_frames(CLEAN, INPUTS)

    splits = frames["split_counts"]
    assert dict(zip(splits["split"], splits["n_images"], strict=True)) == {
        "train": 3, "val": 1, "test": 1,
    }
    counts = frames["class_counts"].set_index(["split", "label"])["n_images"].to_dict()
    assert counts[("val", "normal")] == 0 and counts[("train", "pneumonia")] == 2
    assert len(counts) == 6
    shares = frames["class_shares"].set_index("label")["fraction"].to_dict()
    assert shares == {"normal": 0.4, "pneumonia": 0.6}


def test_near_duplicate_pairs_are_ordered_by_distance_and_split() -> None:
    frames, _ = derive_frames(CLEAN, INPUTS)

    pairs = frames["near_duplicates"].to_dict("records")
    assert pairs == [
        {"image_a": "c", "split_a": "train", "image_b": "d", "split_b": "train", "distance": 1,
         "splits": "same"},
        {"image_a": "a", "split_a": "train", "image_b": "b", "split_b": "test", "distance": 2,
         "splits": "different"},
    ]


def test_rows_of_one_image_are_not_near_duplicates_of_each_other() -> None:
    twice = _manifest(*CLEAN.to_dict("records"), {**CLEAN.iloc[4].to_dict(), "split": "test"})

    frames, _ = derive_frames(twice, INPUTS)

    assert "e" not in set(frames["near_duplicates"]["image_a"]) | set(
        frames["near_duplicates"]["image_b"]
    )
    image_splits = frames["image_splits"]
    assert image_splits[image_splits["image_id"] == "e"]["split"].to_list() == ["test", "val"]


def test_quarantine_share_counts_quarantined_against_all_files() -> None:
    frames, _ = derive_frames(CLEAN, INPUTS)

    assert frames["quarantine"].to_dict("records") == [
        {"quarantined": 1, "manifest_rows": 5, "quarantined_fraction": 1 / 6}
    ]


def test_a_missing_column_leaves_only_the_frames_that_need_it_empty() -> None:
    frames, unavailable = derive_frames(CLEAN.drop(columns=["phash"]), INPUTS)

    assert unavailable == {
        "null_counts": lacks(["phash"]),
        "near_duplicates": lacks(["phash"]),
    }
    assert frames["near_duplicates"].empty and frames["near_duplicates"].columns.empty
    assert not frames["split_counts"].empty


def test_a_malformed_phash_makes_the_near_duplicates_unavailable_with_the_reason() -> None:
    broken = CLEAN.assign(phash=["0" * 16, "nope", *CLEAN["phash"][2:]])

    frames, unavailable = derive_frames(broken, INPUTS)

    assert list(unavailable) == ["near_duplicates"]
    assert "1 image(s) have a phash that is not 16 hex digits: b ('nope')" in (
        unavailable["near_duplicates"]
    )
    assert frames["near_duplicates"].empty


def test_intensity_is_judged_against_the_validation_thresholds() -> None:
    dim = CLEAN.assign(intensity_std=[40.0, 0.5, 40.0, 40.0, 40.0])

    frames, _ = derive_frames(dim, INPUTS)

    assert frames["image_intensity"]["intensity_ok"].to_list() == [True, False, True, True, True]


@pytest.mark.parametrize(
    ("state", "expected"), [("yes", "yes"), ("no", "no"), ("maybe", "unknown"), (None, "unknown")]
)
def test_dicom_images_without_a_known_burned_in_state_are_unknown(
    state: str | None, expected: str
) -> None:
    manifest = CLEAN.assign(
        format=["dicom", "png", "dicom", "dicom", "png"],
        meta_modality=["CR", None, None, "CR", "CR"],
        meta_burned_in_annotation=[state, "unknown", "no", "no", "unknown"],
    )

    images = dicom_images(manifest)

    assert images["image_id"].to_list() == ["a", "c", "d"]
    assert images["modality"].to_list() == ["CR", "unknown", "CR"]
    assert images["state"].to_list() == [expected, "no", "no"]
    frames, _ = derive_frames(manifest, INPUTS)
    counts = frames["burned_in_annotation"].set_index("modality").to_dict("index")
    assert counts == {
        "CR": {"n_images": 2, "n_unknown": int(expected == "unknown")},
        "unknown": {"n_images": 1, "n_unknown": 0},
    }


def test_splits_sort_in_split_order_and_unknown_ones_after() -> None:
    assert sorted(["test", "holdout", "train", "val", "extra"], key=split_order) == [
        "train", "val", "test", "extra", "holdout",
    ]
