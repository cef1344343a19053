"""The manifest contract, run through real Great Expectations on small in-memory manifests.

GX is slow to start, so each crafted manifest is validated once per module and several tests read
the same report.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from support.manifest import CLASSES as MANIFEST_CLASSES
from support.manifest import image_id, manifest_frame, manifest_rows, phash, thumbnail

from medimg.config import CHECK_LEVELS, DataConfig, ValidationConfig
from medimg.validation.contract import validate_manifest
from medimg.validation.report import CheckResult, ValidationReport

CLASSES = list(MANIFEST_CLASSES)  # the contract takes a list
# The near-duplicate bounds have their defaults in medimg.config only.
NEAR_DUPLICATES: dict[str, Any] = {
    "near_duplicate_distance": DataConfig().near_duplicate_distance,
    "near_duplicate_thumbnail_distance": DataConfig().near_duplicate_thumbnail_distance,
}

# Network activity seen by an audit hook while a test here runs. An audit hook only records; it
# changes nothing for the code under test or for other tests in the session.
_NETWORK_EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname"}
_seen: list[tuple[str, tuple[object, ...]]] = []
_watching = False


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _watching and event in _NETWORK_EVENTS:
        _seen.append((event, args))


sys.addaudithook(_audit)


@pytest.fixture(scope="module", autouse=True)
def no_network() -> Iterator[None]:
    """Fail the module if GX tried to reach the network in any of its (shared) runs."""
    global _watching
    _seen.clear()
    _watching = True
    try:
        yield
    finally:
        _watching = False
    assert _seen == [], f"network access attempted: {_seen}"


# --- Manifests ---


def _dicom(modality: str | None, burned_in: str | None) -> dict[str, Any]:
    """Row changes for a DICOM image as ingest records it; None leaves a value unrecorded."""
    return {
        "format": "dicom",
        "meta_modality": modality,
        "meta_burned_in_annotation": burned_in,
    }


@dataclass(frozen=True)
class Run:
    report: ValidationReport
    written: dict[str, Any]
    report_path: Path
    docs: Path


def _run(
    root: Path,
    manifest: pd.DataFrame,
    config: ValidationConfig | None = None,
    docs: bool = False,
    **kwargs: Any,
) -> Run:
    report_path = root / "reports" / "validation.json"
    docs_dir = root / "reports" / "data_docs"
    report = validate_manifest(
        manifest,
        CLASSES,
        config or ValidationConfig(),
        report_path,
        docs_dir if docs else None,
        **{**NEAR_DUPLICATES, **kwargs},
    )
    return Run(report, json.loads(report_path.read_text()), report_path, docs_dir)


def _check(report: ValidationReport, name: str) -> CheckResult:
    return next(c for c in report.checks if c.name == name)


def _failed(report: ValidationReport) -> set[str]:
    return {c.name for c in report.checks if not c.success}


# --- A clean manifest: every check passes. ---


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Run:
    # extra columns are tolerated
    manifest = manifest_frame(manifest_rows().values()).assign(meta_site="a")
    return _run(tmp_path_factory.mktemp("clean"), manifest, docs=True, quarantined=0)


def test_clean_manifest_passes_every_check_in_check_levels_order(clean: Run) -> None:
    report = clean.report

    assert report.success, [(c.name, c.details) for c in report.checks if not c.success]
    assert [c.name for c in report.checks] == list(CHECK_LEVELS)
    assert [c.level for c in report.checks] == list(CHECK_LEVELS.values())
    assert report.failed_critical == [] and report.warnings == [] and report.failed == []
    assert report.n_rows == 18
    assert all(c.expectation.startswith("expect_") for c in report.checks)
    assert all(c.offending_ids == [] for c in report.checks)
    assert (
        "every split has images: train=6, val=6, test=6"
        in _check(report, "splits_non_empty").details
    )


def test_clean_report_json_matches_the_report(clean: Run) -> None:
    written = clean.written

    assert written == clean.report.to_dict()
    assert written["success"] is True and written["failed"] == [] and written["warnings"] == []
    first = written["checks"][0]
    assert set(first) == {
        "name",
        "expectation",
        "level",
        "success",
        "observed",
        "details",
        "offending_ids",
    }


def test_clean_run_writes_data_docs_for_every_frame(clean: Run) -> None:
    index = clean.docs / "index.html"
    html = index.read_text()

    derived = ("null_counts", "class_shares", "near_duplicates", "quarantine")
    for frame in ("manifest", *derived, "burned_in_annotation"):
        assert f"medimg_{frame}" in html
    page = next((clean.docs / "validations" / "medimg_near_duplicates").rglob("*.html"))
    assert "distance" in page.read_text()
    # Built in a staging folder and moved: no staging folder or link into one remains.
    assert sorted(p.name for p in clean.docs.parent.iterdir()) == ["data_docs", "validation.json"]
    assert ".data_docs." not in html


# --- A manifest that breaks every check but the first three, each through its own images. ---


def _broken_manifest() -> pd.DataFrame:
    rows = manifest_rows()
    rows["train-normal-0"]["label"] = "cat"
    rows["train-normal-1"]["source_ref"] = None
    rows["val-normal-0"]["split"] = "holdout"
    rows["val-normal-1"]["width"] = 16
    rows["val-normal-2"]["height"] = 9000
    rows["test-normal-0"]["channels"] = 4
    rows["test-normal-1"]["bit_depth"] = 7
    rows["test-normal-2"]["intensity_std"] = 1.0
    rows["train-pneumonia-0"]["blank_fraction"] = 0.9
    rows["train-pneumonia-1"]["saturated_fraction"] = 0.6
    # The same content in train and test (ingest keeps both rows so the contract can list them).
    dup = {**rows["train-pneumonia-2"], "split": "test", "patient_id": "p-dup", "source_ref": "x"}
    # 3 bits from train-normal-2, in test; 1 bit from test-pneumonia-2, in the same split.
    rows["test-pneumonia-0"]["phash"] = phash("train-normal-2", flip=0b111)
    rows["test-pneumonia-0"]["thumbnail"] = thumbnail("train-normal-2")
    rows["test-pneumonia-1"]["phash"] = phash("test-pneumonia-2", flip=0b1)
    rows["test-pneumonia-1"]["thumbnail"] = thumbnail("test-pneumonia-2")
    # Hashes 1 bit apart across splits, but thumbnails that differ: distinct films, not flagged.
    rows["val-normal-2"]["phash"] = phash("train-pneumonia-1", flip=0b1)
    rows["val-pneumonia-0"]["patient_id"] = "p-train-pneumonia-0"
    rows["val-pneumonia-1"]["patient_source"] = "image"
    rows["val-pneumonia-1"]["patient_id"] = "img-" + image_id("val-pneumonia-1")[:16]
    rows["val-pneumonia-2"].update(channels=3, colour=True)  # made grey by base.channels 1
    return manifest_frame([*rows.values(), dup])


BROKEN_CONFIG = ValidationConfig(min_images_per_class_per_split=3, min_class_fraction=0.45)
WARNINGS = {
    "class_balance",
    "intensity_sane",
    "saturation_in_bounds",
    "no_near_duplicate_within_split",
    "patient_ids_present",
    "colour_matches_channels",
}


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(
        tmp_path_factory.mktemp("broken"),
        _broken_manifest(),
        BROKEN_CONFIG,
        docs=True,
        near_duplicate_distance=4,
        quarantined=5,
        channels=1,
    )


def test_broken_manifest_fails_each_check_it_breaks(broken: Run) -> None:
    report = broken.report

    assert not report.success
    passed = {
        "columns_present",
        "manifest_not_empty",
        "splits_non_empty",
        "burned_in_annotation_known",  # no DICOM images
    }
    assert _failed(report) == set(CHECK_LEVELS) - passed
    assert {c.name for c in report.warnings} == WARNINGS
    assert {c.name for c in report.failed_critical} == set(CHECK_LEVELS) - passed - WARNINGS
    assert report.failed == report.failed_critical
    assert [c.name for c in report.failed_critical][:2] == [
        "required_values_present",
        "label_in_class_set",
    ]


@pytest.mark.parametrize(
    ("name", "offenders", "named"),
    [
        ("required_values_present", ["train-normal-1"], "source_ref (1 image)"),
        ("label_in_class_set", ["train-normal-0"], "'cat'"),
        ("split_in_allowed_set", ["val-normal-0"], "'holdout'"),
        ("width_in_bounds", ["val-normal-1"], "[16]"),
        ("height_in_bounds", ["val-normal-2"], "[9000]"),
        ("channels_allowed", ["test-normal-0"], "[4]"),
        ("bit_depth_allowed", ["test-normal-1"], "[7]"),
        ("intensity_sane", ["train-pneumonia-0", "test-normal-2"], "blank 0.9"),
        ("saturation_in_bounds", ["train-pneumonia-1"], "[0.6]"),
        ("no_exact_duplicate_across_splits", ["train-pneumonia-2"], "is in more than one split: "),
        ("patient_ids_present", ["val-pneumonia-1"], "1 image has no patient id"),
        ("colour_matches_channels", ["val-pneumonia-2"], "set base.channels: 3"),
    ],
)
def test_each_failed_check_names_its_offending_images(
    broken: Run, name: str, offenders: list[str], named: str
) -> None:
    check = _check(broken.report, name)

    assert not check.success
    assert check.offending_ids == [image_id(k) for k in offenders]
    assert named in check.details, check.details
    assert image_id(offenders[0])[:12] in check.details


def test_class_rules_name_the_short_classes(broken: Run) -> None:
    counts = _check(broken.report, "class_counts_per_split")
    balance = _check(broken.report, "class_balance")

    assert "fewer than 3 images: train/normal=2, val/normal=2" in counts.details
    assert balance.observed["below_minimum"] == ["normal"]
    assert balance.observed["counts"] == {"normal": 8, "pneumonia": 10}
    assert "normal 42.1% (8 images)" in balance.details


def test_exact_duplicate_lists_the_image_and_its_splits(broken: Run) -> None:
    check = _check(broken.report, "no_exact_duplicate_across_splits")

    assert check.level == "critical"
    assert check.observed == {
        "offender_count": 1,
        "offenders": {image_id("train-pneumonia-2"): ["train", "test"]},
    }


def test_near_duplicates_are_listed_as_pairs_with_their_distance(broken: Run) -> None:
    across = _check(broken.report, "no_near_duplicate_across_splits")
    within = _check(broken.report, "no_near_duplicate_within_split")

    assert across.level == "critical" and not across.success
    assert across.observed["pairs"] == [
        {
            "image_a": image_id("train-normal-2"),
            "split_a": "train",
            "image_b": image_id("test-pneumonia-0"),
            "split_b": "test",
            "distance": 3,
        }
    ]
    assert across.offending_ids == [image_id("train-normal-2"), image_id("test-pneumonia-0")]
    assert "distance 3" in across.details and "(train) ~" in across.details
    # The exact duplicate (same image id, distance 0) is the exact check's, not listed here.
    assert within.level == "warning" and not within.success
    a, b = sorted([image_id("test-pneumonia-1"), image_id("test-pneumonia-2")])
    assert within.observed["pairs"] == [
        {"image_a": a, "split_a": "test", "image_b": b, "split_b": "test", "distance": 1}
    ]


def test_patient_in_two_splits_is_named(broken: Run) -> None:
    check = _check(broken.report, "patient_in_one_split")

    assert check.offending_ids == ["p-train-pneumonia-0"]
    assert check.observed["offenders"] == {"p-train-pneumonia-0": ["train", "val"]}


def test_own_patient_warning_explains_what_cannot_be_checked(broken: Run) -> None:
    check = _check(broken.report, "patient_ids_present")

    assert check.level == "warning"
    assert check.observed["own_patient_count"] == 1
    assert (
        "each counts as its own patient, so patient-level leakage cannot be checked for them"
        in check.details
    )


def test_quarantine_rate_counts_quarantined_against_all_files(broken: Run) -> None:
    check = _check(broken.report, "quarantine_rate")

    assert not check.success and check.level == "critical"
    assert check.observed == {
        "quarantined": 5,
        "manifest_rows": 19,
        "fraction": round(5 / 24, 6),
        "max_fraction": 0.05,
    }
    assert "5 of 24 files quarantined" in check.details


def test_broken_report_json_gives_each_failure_its_observed_value_and_ids(broken: Run) -> None:
    written = broken.written

    assert written == broken.report.to_dict()
    assert written["success"] is False
    assert set(written["warnings"]) == WARNINGS
    assert set(written["failed"]) == {c.name for c in broken.report.failed_critical}
    by_name = {c["name"]: c for c in written["checks"]}
    near = by_name["no_near_duplicate_across_splits"]
    assert near["success"] is False and near["observed"]["pair_count"] == 1
    assert near["offending_ids"] == [image_id("train-normal-2"), image_id("test-pneumonia-0")]
    assert by_name["patient_in_one_split"]["offending_ids"] == ["p-train-pneumonia-0"]


def test_broken_data_docs_show_the_offending_pair(broken: Run) -> None:
    page = next((broken.docs / "validations" / "medimg_near_duplicates").rglob("*.html"))

    assert image_id("test-pneumonia-0") in page.read_text()


# --- Levels: warnings leave the contract passing; params.yaml can change a level. ---


def _warnings_only_manifest() -> pd.DataFrame:
    rows = manifest_rows()
    rows["val-normal-1"]["phash"] = phash("val-normal-0", flip=0b1011)  # 3 bits, same split
    rows["val-normal-1"]["thumbnail"] = thumbnail("val-normal-0")
    rows["test-normal-0"]["patient_source"] = "image"
    return manifest_frame(rows.values())


@pytest.fixture(scope="module")
def warned(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("warned"), _warnings_only_manifest())


def test_warning_failures_leave_the_contract_passing(warned: Run) -> None:
    report = warned.report

    assert report.success
    assert report.failed_critical == []
    assert [c.name for c in report.warnings] == [
        "no_near_duplicate_within_split",
        "patient_ids_present",
    ]
    assert warned.written["success"] is True
    assert warned.written["failed"] == []
    assert warned.written["warnings"] == ["no_near_duplicate_within_split", "patient_ids_present"]


def test_a_level_override_makes_a_warning_fail_the_contract(tmp_path: Path) -> None:
    config = ValidationConfig(levels={"no_near_duplicate_within_split": "critical"})

    run = _run(tmp_path, _warnings_only_manifest(), config)

    assert not run.report.success
    assert [c.name for c in run.report.failed_critical] == ["no_near_duplicate_within_split"]
    assert run.written["failed"] == ["no_near_duplicate_within_split"]
    assert run.written["warnings"] == ["patient_ids_present"]


def test_thresholds_come_from_the_config_and_arguments(tmp_path: Path) -> None:
    config = ValidationConfig(max_own_patient_fraction=0.1)

    run = _run(tmp_path, _warnings_only_manifest(), config, near_duplicate_distance=2)

    assert _failed(run.report) == set()
    assert "at most 10.0% allowed" in _check(run.report, "patient_ids_present").details
    assert "pHash distance <= 2" in _check(run.report, "no_near_duplicate_within_split").details


# --- Colour in a greyscale run: base.channels 1 makes colour images grey. ---


def _colour_manifest() -> pd.DataFrame:
    rows = manifest_rows()
    for key in ("train-normal-0", "test-pneumonia-1"):
        rows[key].update(channels=3, colour=True)
    rows["val-normal-0"].update(channels=3)  # grey stored as RGB: colour False
    rows["val-normal-1"].update(colour=None)  # ingested before colour was recorded
    return manifest_frame(rows.values())


@pytest.fixture(scope="module")
def coloured(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("colour"), _colour_manifest(), channels=1)


def test_colour_images_in_a_greyscale_run_warn_with_the_fix(coloured: Run) -> None:
    check = _check(coloured.report, "colour_matches_channels")

    assert coloured.report.success and [c.name for c in coloured.report.warnings] == [
        "colour_matches_channels"
    ]
    assert check.level == "warning" and check.expectation == "expect_column_values_to_be_in_set"
    assert sorted(check.offending_ids) == sorted(
        [image_id("train-normal-0"), image_id("test-pneumonia-1")]
    )
    assert check.observed == {"colour_images": 2, "channels": 1, "not_recorded": 1}
    assert check.details.startswith(
        "2 images have real colour (RGB channels that differ) but base.channels is 1, so "
        "training sees them grey; set base.channels: 3 in params.yaml to keep their colour"
    )
    assert check.details.endswith("1 image ingested before colour was recorded, so not checked")


@pytest.mark.parametrize("channels", [3, None])
def test_colour_images_pass_when_colour_is_kept_or_not_compared(
    tmp_path: Path, channels: int | None
) -> None:
    run = _run(tmp_path, _colour_manifest(), channels=channels)

    check = _check(run.report, "colour_matches_channels")
    assert check.success and run.report.warnings == []
    assert "(2 images in colour)" in check.details


def test_a_greyscale_run_of_grey_images_passes_the_colour_check(clean: Run) -> None:
    check = _check(clean.report, "colour_matches_channels")

    assert check.success
    assert check.details == "base.channels not given, so not compared (0 images in colour)"


# --- Burned-in text: DICOM images whose Burned In Annotation is not YES or NO, per modality. ---


def _burned_in_manifest() -> pd.DataFrame:
    rows = manifest_rows()
    rows["train-normal-0"].update(_dicom("CR", "unknown"))
    rows["train-normal-1"].update(_dicom("CR", "unknown"))
    rows["val-normal-0"].update(_dicom("CR", "no"))
    rows["val-normal-1"].update(_dicom("DX", "yes"))  # known, and allowed in by ingest's setting
    rows["test-normal-0"].update(_dicom("unknown", "unknown"))  # no Modality in the file either
    rows["test-normal-1"].update(_dicom(None, None))  # a row from before ingest recorded them
    # Not a DICOM (a label list can bring any column): not counted.
    rows["train-pneumonia-0"]["meta_burned_in_annotation"] = "unknown"
    return manifest_frame(rows.values())


@pytest.fixture(scope="module")
def burned_in(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("burned_in"), _burned_in_manifest(), docs=True)


def test_unknown_burned_in_annotation_warns_with_counts_per_modality(burned_in: Run) -> None:
    check = _check(burned_in.report, "burned_in_annotation_known")

    assert not check.success and check.level == "warning"
    assert check.expectation == "expect_column_values_to_be_between"
    assert check.observed == {
        "unknown_count": 4,
        "unknown_by_modality": {"CR": 2, "unknown": 2},
        "dicom_images": 6,
    }
    assert check.offending_ids == [
        image_id(k) for k in ("train-normal-0", "train-normal-1", "test-normal-0", "test-normal-1")
    ]
    assert "4 DICOM images have no Burned In Annotation YES or NO" in check.details
    assert "{'CR': 2, 'unknown': 2}" in check.details
    assert "not checked for text burned into the pixels" in check.details
    assert "set BurnedInAnnotation at the source" in check.details


def test_unknown_burned_in_annotation_does_not_fail_the_contract(burned_in: Run) -> None:
    assert burned_in.report.success
    assert [c.name for c in burned_in.report.warnings] == ["burned_in_annotation_known"]
    assert burned_in.written["success"] is True
    assert burned_in.written["failed"] == []
    assert burned_in.written["warnings"] == ["burned_in_annotation_known"]


def test_burned_in_data_docs_show_the_unknown_count_per_modality(burned_in: Run) -> None:
    page = next((burned_in.docs / "validations" / "medimg_burned_in_annotation").rglob("*.html"))
    html = page.read_text()

    assert "n_unknown" in html and "CR" in html


def test_dicom_images_all_stating_no_pass_the_burned_in_check(tmp_path: Path) -> None:
    rows = manifest_rows()
    for key in ("train-normal-0", "val-normal-0", "test-normal-0"):
        rows[key].update(_dicom("CR", "no"))
    rows["test-pneumonia-0"].update(_dicom("unknown", "no"))

    run = _run(tmp_path, manifest_frame(rows.values()))

    check = _check(run.report, "burned_in_annotation_known")
    assert check.success, check.details
    assert check.observed == {"unknown_count": 0, "unknown_by_modality": {}, "dicom_images": 4}
    assert check.details == "every DICOM image states Burned In Annotation YES or NO (4 images)"
    assert run.report.warnings == []


def test_a_manifest_without_dicom_columns_passes_the_burned_in_check(clean: Run) -> None:
    check = _check(clean.report, "burned_in_annotation_known")

    assert "meta_burned_in_annotation" not in manifest_frame(manifest_rows().values()).columns
    assert check.success
    assert check.observed == {"unknown_count": 0, "unknown_by_modality": {}, "dicom_images": 0}
    assert check.details.startswith("no DICOM images")


# --- Degenerate manifests fail their checks with a reason, never crash. ---


def test_empty_manifest_fails_without_crashing(tmp_path: Path) -> None:
    run = _run(tmp_path, manifest_frame([]))

    assert not run.report.success
    assert run.report.n_rows == 0
    assert _failed(run.report) == {
        "manifest_not_empty",
        "splits_non_empty",
        "class_counts_per_split",
        "class_balance",
    }
    assert "['train', 'val', 'test']" in _check(run.report, "splits_non_empty").details


def test_missing_columns_fail_the_checks_that_need_them(tmp_path: Path) -> None:
    manifest = manifest_frame(manifest_rows().values()).drop(columns=["phash", "width"])

    run = _run(tmp_path, manifest, docs=True)

    assert _failed(run.report) == {
        "columns_present",
        "required_values_present",
        "width_in_bounds",
        "no_near_duplicate_across_splits",
        "no_near_duplicate_within_split",
    }
    assert _check(run.report, "columns_present").observed == {"missing": ["phash", "width"]}
    near = _check(run.report, "no_near_duplicate_across_splits")
    assert near.details.startswith("could not run: manifest lacks column(s) ['phash']")
    assert "['width']" in _check(run.report, "width_in_bounds").details
    assert (run.docs / "index.html").is_file()


def test_a_frame_with_no_columns_is_reported_not_raised(tmp_path: Path) -> None:
    run = _run(tmp_path, pd.DataFrame())

    assert not run.report.success
    assert "columns_present" in {c.name for c in run.report.failed_critical}
    assert len(run.written["checks"]) == len(CHECK_LEVELS)


def test_malformed_phash_fails_the_near_duplicate_checks_with_the_reason(tmp_path: Path) -> None:
    rows = manifest_rows()
    rows["train-normal-0"]["phash"] = "not-a-hash"

    run = _run(tmp_path, manifest_frame(rows.values()))

    assert _failed(run.report) == {
        "no_near_duplicate_across_splits",
        "no_near_duplicate_within_split",
    }
    details = _check(run.report, "no_near_duplicate_across_splits").details
    assert image_id("train-normal-0")[:12] in details and "not-a-hash" in details


# --- Writing: staged, then swapped in. ---


def test_a_crash_part_way_leaves_the_previous_report_intact(tmp_path: Path) -> None:
    report_path = tmp_path / "reports" / "validation.json"
    report_path.parent.mkdir()
    report_path.write_text('{"previous": true}\n')
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")

    # The Data Docs cannot be staged under a file: the run fails after GX ran, before the swap.
    with pytest.raises(OSError):
        validate_manifest(
            manifest_frame(manifest_rows().values()),
            CLASSES,
            ValidationConfig(),
            report_path,
            blocker / "data_docs",
            **NEAR_DUPLICATES,
        )

    assert report_path.read_text() == '{"previous": true}\n'
    assert [p.name for p in report_path.parent.iterdir()] == ["validation.json"]


def test_a_new_run_replaces_the_previous_data_docs_entirely(clean: Run, tmp_path: Path) -> None:
    docs = tmp_path / "reports" / "data_docs"
    docs.mkdir(parents=True)
    (docs / "index.html").write_text("old site")
    (docs / "stale.html").write_text("old page")

    run = _run(tmp_path, manifest_frame(manifest_rows().values()), docs=True)

    assert run.report.success
    assert "medimg_manifest" in (docs / "index.html").read_text()
    assert not (docs / "stale.html").exists()
    assert sorted(p.name for p in docs.parent.iterdir()) == ["data_docs", "validation.json"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"class_names": []}, r"base\.class_names"),
        ({"near_duplicate_distance": 65}, r"data\.near_duplicate_distance"),
        ({"quarantined": -1}, "count of files"),
    ],
)
def test_rejects_bad_arguments_before_running(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {
        "manifest": manifest_frame([]),
        "class_names": CLASSES,
        "validation": ValidationConfig(),
        "report_path": tmp_path / "v.json",
        **NEAR_DUPLICATES,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        validate_manifest(**args)
    assert not (tmp_path / "v.json").exists()


@pytest.mark.parametrize("missing", sorted(NEAR_DUPLICATES))
def test_the_near_duplicate_bounds_must_be_passed(tmp_path: Path, missing: str) -> None:
    """Their defaults live in medimg.config alone: the contract has none of its own."""
    bounds = {k: v for k, v in NEAR_DUPLICATES.items() if k != missing}

    with pytest.raises(TypeError, match=missing):
        validate_manifest(
            manifest_frame([]), CLASSES, ValidationConfig(), tmp_path / "v.json", **bounds
        )
    assert not (tmp_path / "v.json").exists()


def test_refuses_to_overwrite_a_folder_that_is_not_data_docs(tmp_path: Path) -> None:
    docs = tmp_path / "reports" / "data_docs"
    docs.mkdir(parents=True)
    (docs / "notes.txt").write_text("mine")

    with pytest.raises(ValueError, match="holds no Data Docs"):
        _run(tmp_path, manifest_frame(manifest_rows().values()), docs=True)
    assert (docs / "notes.txt").read_text() == "mine"
