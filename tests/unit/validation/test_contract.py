"""The manifest contract, run through real Great Expectations on small in-memory manifests."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

from medimg.config import ValidationConfig
from medimg.validation.contract import REQUIRED_COLUMNS, ValidationReport, validate_manifest

CLASSES = ["normal", "pneumonia"]
SPLITS = ("train", "val", "test")

# Network activity seen by an audit hook while a test here runs. An audit hook only records; it
# changes nothing for the code under test or for other tests in the session.
_NETWORK_EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname"}
_seen: list[tuple[str, tuple[object, ...]]] = []
_watching = False


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _watching and event in _NETWORK_EVENTS:
        _seen.append((event, args))


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def no_network() -> Iterator[None]:
    """Fail any test during which GX tried to reach the network."""
    global _watching
    _seen.clear()
    _watching = True
    try:
        yield
    finally:
        _watching = False
    assert _seen == [], f"network access attempted: {_seen}"


def _image_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _manifest(per_class: int = 3) -> pd.DataFrame:
    """2 classes x 3 splits x ``per_class`` rows, one patient per image."""
    rows = []
    for split in SPLITS:
        for label in CLASSES:
            for i in range(per_class):
                key = f"{split}-{label}-{i}"
                rows.append(
                    {
                        "image_id": _image_id(key),
                        "source_path": f"raw/{label}/{key}.png",
                        "label": label,
                        "patient_id": f"patient-{key}",
                        "split": split,
                        "width": 256,
                        "height": 224,
                        "channels": 1,
                    }
                )
    return pd.DataFrame(rows)


def _validate(
    tmp_path: Path,
    manifest: pd.DataFrame,
    config: ValidationConfig | None = None,
    docs: bool = False,
) -> ValidationReport:
    return validate_manifest(
        manifest,
        CLASSES,
        config or ValidationConfig(),
        report_path=tmp_path / "reports" / "validation.json",
        data_docs_dir=tmp_path / "reports" / "data_docs" if docs else None,
    )


def _failed(report: ValidationReport) -> set[str]:
    return {c.name for c in report.failed}


def _check(report: ValidationReport, name: str) -> str:
    return next(c.details for c in report.checks if c.name == name)


def test_clean_manifest_passes_and_writes_report_and_data_docs(tmp_path: Path) -> None:
    manifest = _manifest().assign(mean_intensity=0.5)  # extra columns are tolerated

    report = _validate(tmp_path, manifest, docs=True)

    assert report.success, [(c.name, c.details) for c in report.failed]
    assert report.failed == []
    assert report.n_rows == 18
    names = [c.name for c in report.checks]
    assert len(names) == len(set(names))
    assert {"label_in_class_set", "patient_in_one_split", "class_counts_per_split"} <= set(names)
    assert all(c.expectation.startswith("expect_") for c in report.checks)

    written = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert written == report.to_dict()
    assert written["success"] is True and written["failed"] == []

    index = tmp_path / "reports" / "data_docs" / "index.html"
    html = index.read_text()
    assert "medimg_manifest" in html
    assert "medimg_patient_splits" in html
    page = next((index.parent / "validations" / "medimg_manifest").rglob("*.html")).read_text()
    assert "expect_column_values_to_be_in_set" in page or "values must belong to this set" in page


def _unknown_label(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[0, "label"] = "cat"
    return df


def _null_label(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[4, "label"] = None
    return df


def _class_missing_from_val(df: pd.DataFrame) -> pd.DataFrame:
    return df[~((df["split"] == "val") & (df["label"] == "pneumonia"))].reset_index(drop=True)


def _test_split_empty(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["split"] != "test"].reset_index(drop=True)


def _narrow_image(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[2, "width"] = 16
    return df


def _four_channels(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[3, "channels"] = 4
    return df


def _image_in_two_splits(df: pd.DataFrame) -> pd.DataFrame:
    val_row = df.index[df["split"] == "val"][0]
    df.loc[val_row, "image_id"] = _image_id("train-normal-0")
    return df


def _patient_in_two_splits(df: pd.DataFrame) -> pd.DataFrame:
    test_row = df.index[df["split"] == "test"][0]
    df.loc[test_row, "patient_id"] = "patient-train-pneumonia-1"
    return df


@pytest.mark.parametrize(
    ("mutate", "expected_failed", "named"),
    [
        (_unknown_label, {"label_in_class_set"}, "'cat'"),
        (_null_label, {"label_not_null"}, "[4]"),
        (_class_missing_from_val, {"class_counts_per_split"}, "val/pneumonia=0"),
        (_test_split_empty, {"splits_non_empty", "class_counts_per_split"}, "test"),
        (_narrow_image, {"width_in_bounds"}, "[16]"),
        (_four_channels, {"channels_allowed"}, "[4]"),
        (_image_in_two_splits, {"image_id_in_one_split"}, _image_id("train-normal-0")),
        (_patient_in_two_splits, {"patient_in_one_split"}, "patient-train-pneumonia-1"),
    ],
    ids=[
        "unknown_label",
        "null_label",
        "class_missing_from_split",
        "split_empty",
        "width_out_of_bounds",
        "bad_channels",
        "image_in_two_splits",
        "patient_in_two_splits",
    ],
)
def test_each_violation_fails_only_its_check_and_names_the_offender(
    tmp_path: Path,
    mutate: Callable[[pd.DataFrame], pd.DataFrame],
    expected_failed: set[str],
    named: str,
) -> None:
    report = _validate(tmp_path, mutate(_manifest()))

    assert not report.success
    assert _failed(report) == expected_failed
    for name in expected_failed:
        assert named in _check(report, name), _check(report, name)
    written = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert written["success"] is False
    assert set(written["failed"]) == expected_failed


def test_split_details_name_every_split_of_the_leaked_id(tmp_path: Path) -> None:
    report = _validate(tmp_path, _image_in_two_splits(_manifest()))

    check = next(c for c in report.checks if c.name == "image_id_in_one_split")
    assert check.expectation == "expect_column_values_to_be_unique"
    assert check.observed == {
        "offender_count": 1,
        "offenders": {_image_id("train-normal-0"): ["train", "val"]},
    }


def test_class_minimum_comes_from_the_validation_config(tmp_path: Path) -> None:
    report = _validate(tmp_path, _manifest(), ValidationConfig(min_images_per_class_per_split=4))

    assert _failed(report) == {"class_counts_per_split"}
    details = _check(report, "class_counts_per_split")
    assert "fewer than 4 images" in details
    assert "train/normal=3" in details and "test/pneumonia=3" in details


def test_image_side_bounds_come_from_the_validation_config(tmp_path: Path) -> None:
    report = _validate(tmp_path, _manifest(), ValidationConfig(min_side=32, max_side=240))

    assert _failed(report) == {"width_in_bounds"}
    assert "[256]" in _check(report, "width_in_bounds")


def test_empty_manifest_fails_without_crashing(tmp_path: Path) -> None:
    report = _validate(tmp_path, _manifest().iloc[0:0])

    assert not report.success
    assert report.n_rows == 0
    assert _failed(report) == {"manifest_not_empty", "splits_non_empty", "class_counts_per_split"}
    assert "train" in _check(report, "splits_non_empty")


def test_manifest_without_columns_fails_every_column_check(tmp_path: Path) -> None:
    report = _validate(tmp_path, pd.DataFrame(), docs=True)

    assert not report.success
    assert "columns_present" in _failed(report)
    assert "label_in_class_set" in _failed(report)
    assert "'label'" in _check(report, "columns_present")
    assert "does not exist" in _check(report, "width_in_bounds")
    assert (tmp_path / "reports" / "data_docs" / "index.html").is_file()


def test_checks_keep_one_order_whatever_fails(tmp_path: Path) -> None:
    clean = _validate(tmp_path, _manifest())
    broken = _validate(tmp_path, _patient_in_two_splits(_narrow_image(_manifest())))

    assert [c.name for c in clean.checks] == [c.name for c in broken.checks]
    assert [c.name for c in broken.failed] == ["width_in_bounds", "patient_in_one_split"]
    assert [c["name"] for c in broken.to_dict()["checks"]][:2] == [
        "columns_present",
        "manifest_not_empty",
    ]
    assert {f"{col}_not_null" for col in REQUIRED_COLUMNS} <= {c.name for c in clean.checks}


def test_rebuilt_data_docs_hold_only_the_latest_run(tmp_path: Path) -> None:
    _validate(tmp_path, _manifest(), docs=True)
    _validate(tmp_path, _unknown_label(_manifest()), docs=True)

    runs = list(
        (tmp_path / "reports" / "data_docs" / "validations" / "medimg_manifest").rglob("*.html")
    )
    assert len(runs) == 1
    assert "cat" in runs[0].read_text()


def test_refuses_to_overwrite_a_folder_that_is_not_data_docs(tmp_path: Path) -> None:
    docs = tmp_path / "reports" / "data_docs"
    docs.mkdir(parents=True)
    (docs / "notes.txt").write_text("mine")

    with pytest.raises(ValueError, match="holds no Data Docs"):
        _validate(tmp_path, _manifest(), docs=True)
    assert (docs / "notes.txt").read_text() == "mine"


def test_rejects_empty_class_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"base\.class_names"):
        validate_manifest(_manifest(), [], ValidationConfig(), tmp_path / "v.json")
