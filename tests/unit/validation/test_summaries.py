"""Summaries: GX result dictionaries, written here by hand, worded as observed value, details, ids.

The results have the shape GX gives with ``result_format`` COMPLETE; test_contract.py runs the
same summaries on real GX results.
"""

from __future__ import annotations

import pandas as pd

from medimg.validation.report import MAX_LISTED, MAX_NAMED
from medimg.validation.summaries import (
    summarise_columns,
    summarise_in_range,
    summarise_in_set,
    summarise_near_duplicates,
    summarise_one_split,
    summarise_quarantine,
    summarise_row_count,
)

LONG = "0123456789abcdef" * 4  # a hash-long id: details show its first 12 characters


def test_values_outside_a_set_name_their_images_once_in_manifest_order() -> None:
    result = {
        "unexpected_count": 3,
        "unexpected_list": ["cat", "dog", "cat"],
        "unexpected_index_list": [
            {"image_id": LONG, "label": "cat"},
            {"image_id": "b", "label": "dog"},
            {"image_id": LONG, "label": "cat"},
        ],
    }

    observed, details, ids = summarise_in_set("labels", ["normal", "pneumonia"])(result)

    assert observed == {"unexpected_count": 3, "unexpected_values": ["cat", "dog"]}
    assert details == (
        "3 images with labels outside [normal, pneumonia]: ['cat', 'dog']; images 0123456789ab, b"
    )
    assert ids == [LONG, "b"]


def test_a_passing_check_says_what_holds_and_names_no_one() -> None:
    assert summarise_in_range("width", 28, 4096)({"unexpected_count": 0}) == (
        {"unexpected_count": 0, "unexpected_values": []},
        "every width is within [28, 4096]",
        [],
    )
    assert summarise_row_count({"observed_value": 0})[1] == "manifest has no rows"
    assert summarise_row_count({"observed_value": 1})[1] == "manifest has 1 rows"


def test_details_name_at_most_max_named_and_count_the_rest() -> None:
    n = MAX_NAMED + 3
    rows = [{"image_id": f"i{k:03d}"} for k in range(n)]
    result = {"unexpected_count": n, "unexpected_list": [1] * n, "unexpected_index_list": rows}

    _, details, ids = summarise_in_set("channels", [1, 3])(result)

    assert details.startswith(f"{n} images with channels outside [1, 3]: [1]; images i000, ")
    assert details.endswith(f"i{MAX_NAMED - 1:03d} and 3 more")
    assert ids == [f"i{k:03d}" for k in range(n)]


def test_offending_ids_are_listed_up_to_max_listed() -> None:
    n = MAX_LISTED + 5
    rows = [{"image_id": f"i{k:04d}"} for k in range(n)]
    result = {"unexpected_count": n, "unexpected_list": [0] * n, "unexpected_index_list": rows}

    _, _, ids = summarise_in_range("width", 28, 4096)(result)

    assert len(ids) == MAX_LISTED


def test_one_split_lists_each_key_with_its_splits_in_split_order() -> None:
    result = {
        "unexpected_index_list": [
            {"patient_id": "p-2", "split": "test"},
            {"patient_id": "p-2", "split": "train"},
            {"patient_id": "p-1", "split": "val"},
            {"patient_id": "p-1", "split": "train"},
        ]
    }

    observed, details, ids = summarise_one_split("patient_id", "patient")(result)

    assert observed == {
        "offender_count": 2,
        "offenders": {"p-1": ["train", "val"], "p-2": ["train", "test"]},
    }
    assert details == "2 patients are in more than one split: p-1 in train+val, p-2 in train+test"
    assert ids == ["p-1", "p-2"]
    assert summarise_one_split("image_id", "image")({})[1] == "no image is in more than one split"


def test_near_duplicate_pairs_are_named_with_their_distance() -> None:
    pair = {"image_a": "a", "split_a": "train", "image_b": "b", "split_b": "test", "distance": 3}
    result = {"unexpected_count": 1, "unexpected_index_list": [pair]}

    observed, details, ids = summarise_near_duplicates("in different splits", 4)(result)

    assert observed == {"pair_count": 1, "max_distance": 4, "pairs": [pair]}
    assert details == (
        "1 pair of near-duplicate images in different splits (pHash distance <= 4, confirmed by "
        "thumbnails): a (train) ~ b (test) distance 3"
    )
    assert ids == ["a", "b"]


def test_missing_columns_are_listed_sorted() -> None:
    result = {"details": {"mismatched": {"missing": ["width", "phash"]}}}

    assert summarise_columns(result) == (
        {"missing": ["phash", "width"]},
        "manifest lacks columns: ['phash', 'width']",
        [],
    )


def test_quarantine_summary_reads_its_frame_and_survives_an_empty_one() -> None:
    frame = pd.DataFrame(
        {"quarantined": [1], "manifest_rows": [3], "quarantined_fraction": [0.25]}
    )

    observed, details, _ = summarise_quarantine(frame, 0.05)({"unexpected_count": 1})

    assert observed == {
        "quarantined": 1, "manifest_rows": 3, "fraction": 0.25, "max_fraction": 0.05,
    }
    assert details.startswith("1 of 4 files quarantined at ingest (25.0%, above the 5.0% allowed)")
    assert summarise_quarantine(pd.DataFrame(), 0.05)({})[0]["quarantined"] == 0
