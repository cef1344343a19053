"""The manifest data contract, checked with Great Expectations.

Every check is a real GX expectation. Where a rule spans rows (class counts per split, an image or
a patient in two splits, near-duplicate pairs, DICOMs of unknown burned-in text per modality) or
combines columns (intensity), pandas first derives a small frame and GX validates that frame, so
the Data Docs show every rule next to the data it judged. The checks, and their default levels,
are those of :data:`medimg.config.CHECK_LEVELS`; a failed ``critical`` check fails the contract, a
failed ``warning`` is reported and logged only.

GX runs in an ephemeral, in-memory context: it writes nothing but the Data Docs we ask for, and is
imported only when :func:`validate_manifest` runs, because importing it takes seconds.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medimg.config import CHECK_LEVELS, ValidationConfig
from medimg.data.deid import BURNED_IN_STATES, UNKNOWN
from medimg.data.hashing import near_duplicates, parse_phash, phash_hex
from medimg.data.manifest import COLUMNS, LATER_COLUMNS, META_PREFIX
from medimg.workspace import SPLITS

if TYPE_CHECKING:
    from great_expectations.data_context import AbstractDataContext
    from great_expectations.expectations.expectation import Expectation

logger = logging.getLogger(__name__)

OPTIONAL_COLUMNS = ("label_by", "label_at", *LATER_COLUMNS)
"""Manifest columns that may be empty: not every source says who labelled an image, or when, and
images ingested before a column existed have no value in it."""
REQUIRED_COLUMNS = tuple(c for c in COLUMNS if c not in OPTIONAL_COLUMNS)
"""Manifest columns that must have a value in every row."""
MAX_NAMED = 10
"""At most this many offenders are named in a check's one-line details."""
MAX_LISTED = 100
"""At most this many offenders (ids, pairs) are listed in a check's observed value and ids."""
SHORT_ID = 12
"""Details shorten hash-long ids (over 24 characters) to this many, as git does; the report keeps
them whole."""

_SITE_NAME = "medimg"
_CHECK_KEY = "medimg_check"

# One GX batch per frame, validated in this order. GX names each unexpected row through the
# frame's index columns (those the frame has).
_FRAME_INDEX_COLUMNS: dict[str, list[str]] = {
    "manifest": ["image_id"],
    "null_counts": ["column"],
    "split_counts": ["split"],
    "class_counts": ["split", "label"],
    "class_shares": ["label", "n_images"],
    "image_intensity": ["image_id", "intensity_std", "blank_fraction"],
    "image_splits": ["split"],
    "near_duplicates": ["image_a", "split_a", "image_b", "split_b"],
    "patient_splits": ["split"],
    "quarantine": ["quarantined", "manifest_rows"],
    "burned_in_annotation": ["modality"],
}
# The manifest columns each derived frame is built from.
_FRAME_NEEDS: dict[str, tuple[str, ...]] = {
    "null_counts": REQUIRED_COLUMNS,
    "split_counts": ("split",),
    "class_counts": ("split", "label"),
    "class_shares": ("label",),
    "image_intensity": ("image_id", "intensity_std", "blank_fraction"),
    "image_splits": ("image_id", "split"),
    "near_duplicates": ("image_id", "split", "phash"),
    "patient_splits": ("patient_id", "split"),
    "quarantine": (),
    "burned_in_annotation": ("image_id", "format"),
}

Summary = tuple[object, str, list[str]]
"""What a check reports: its observed value, one line of details, and the offending ids."""
Summarise = Callable[[dict[str, Any]], Summary]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one contract check.

    Attributes:
        name: Short stable name, one of :data:`medimg.config.CHECK_LEVELS`.
        expectation: The GX expectation type that ran, e.g. ``expect_column_values_to_be_in_set``.
        level: ``critical`` (a failure fails the contract) or ``warning`` (reported only).
        success: Whether the check passed.
        observed: JSON-serialisable observed value (unexpected count and values, counts...).
        details: One human line saying what passed or what is wrong and where.
        offending_ids: The image ids (patient ids for patient checks) that broke the rule, at
            most ``MAX_LISTED``; ``observed`` holds the full count.
    """

    name: str
    expectation: str
    level: str
    success: bool
    observed: object
    details: str
    offending_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ValidationReport:
    """Every contract check on one manifest, in the order of ``CHECK_LEVELS``."""

    success: bool
    checks: list[CheckResult]
    n_rows: int

    @property
    def failed_critical(self) -> list[CheckResult]:
        """The critical checks that did not pass: any one fails the contract."""
        return [c for c in self.checks if not c.success and c.level == "critical"]

    @property
    def failed(self) -> list[CheckResult]:
        """The same as :attr:`failed_critical`; failed warnings are in :attr:`warnings`."""
        return self.failed_critical

    @property
    def warnings(self) -> list[CheckResult]:
        """The warning-level checks that did not pass; they do not fail the contract."""
        return [c for c in self.checks if not c.success and c.level != "critical"]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary: success, n_rows, every check, failed and warning names."""
        return {
            "success": self.success,
            "n_rows": self.n_rows,
            "checks": [asdict(c) for c in self.checks],
            "failed": [c.name for c in self.failed_critical],
            "warnings": [c.name for c in self.warnings],
        }


@dataclass(frozen=True)
class _Check:
    name: str
    frame: str
    expectation: Expectation
    summarise: Summarise
    needs: tuple[str, ...] = ()


def validate_manifest(
    manifest: pd.DataFrame,
    class_names: list[str],
    validation: ValidationConfig,
    report_path: Path,
    data_docs_dir: Path | None = None,
    *,
    near_duplicate_distance: int = 6,
    near_duplicate_thumbnail_distance: float | None = 0.08,
    quarantined: int = 0,
    channels: int | None = None,
) -> ValidationReport:
    """Check a manifest against the data contract with Great Expectations.

    The JSON report and the Data Docs are written to staging paths and moved into place only once
    both are complete, so a crash part-way leaves the previous ones as they were. A failing
    contract still writes its report.

    Args:
        manifest: One row per image with the columns of ``medimg.data.manifest.COLUMNS``; extra
            columns are ignored. A missing column fails ``columns_present`` and every check that
            needs it, with the reason; the other checks still run.
        class_names: The allowed labels, as in ``base.class_names``.
        validation: Thresholds and check levels from the ``validation`` section of
            ``params.yaml``.
        report_path: Where to write the JSON report; parent folders are created.
        data_docs_dir: Where to write the GX Data Docs site (``index.html``); ``None`` skips it.
            An existing Data Docs site there is replaced.
        near_duplicate_distance: Images whose pHashes differ in at most this many bits are
            near-duplicate candidates (``data.near_duplicate_distance``).
        near_duplicate_thumbnail_distance: A candidate pair is a near-duplicate when its
            thumbnails differ by at most this (``data.near_duplicate_thumbnail_distance``);
            ``None`` lets the hash alone decide.
        quarantined: How many files ingest quarantined, for ``quarantine_rate``.
        channels: ``base.channels``, the channels training sees: with 1, images with real colour
            fail ``colour_matches_channels``, as they are made grey; ``None`` compares nothing.

    Returns:
        Every check, passed or failed, in the order of ``CHECK_LEVELS``. Failing checks do not
        raise; the caller decides whether a failed contract stops the pipeline.

    Raises:
        TypeError: ``manifest`` is not a DataFrame.
        ValueError: ``class_names`` is empty or repeats a name, ``near_duplicate_distance`` or
            ``quarantined`` is out of range, ``report_path`` is a folder, or ``data_docs_dir`` is a
            file or a non-empty folder that holds no Data Docs.
    """
    if not isinstance(manifest, pd.DataFrame):
        raise TypeError(f"manifest must be a pandas DataFrame, got {type(manifest).__name__}")
    if not class_names or len(set(class_names)) != len(class_names):
        raise ValueError(
            f"class_names {class_names!r} must be non-empty and distinct; set base.class_names "
            "in params.yaml"
        )
    if not 0 <= near_duplicate_distance <= 64:
        raise ValueError(
            f"near_duplicate_distance {near_duplicate_distance} must be within [0, 64] bits; "
            "set data.near_duplicate_distance in params.yaml"
        )
    if quarantined < 0:
        raise ValueError(f"quarantined {quarantined} must be a count of files, 0 or more")
    if report_path.is_dir():
        raise ValueError(f"report_path {report_path} is a folder; pass a file path")
    if data_docs_dir is not None:
        _check_docs_dir(data_docs_dir)

    gx = _import_gx()
    frames, unavailable = _derive_frames(
        manifest, class_names, validation, near_duplicate_distance, quarantined,
        near_duplicate_thumbnail_distance,
    )
    checks = _define_checks(
        gx, manifest, class_names, validation, frames, near_duplicate_distance, channels
    )
    context = _ephemeral_context(gx)
    results = _run_checks(gx, context, checks, frames, unavailable, validation.levels)

    report = ValidationReport(
        success=not any(not r.success and r.level == "critical" for r in results),
        checks=results,
        n_rows=len(manifest),
    )
    _publish(report, report_path, context, data_docs_dir)

    passed = sum(r.success for r in results)
    logger.info(
        "manifest contract: %d/%d checks passed on %d rows", passed, len(results), len(manifest)
    )
    for check in report.failed_critical:
        logger.error("critical data-contract check %s failed: %s", check.name, check.details)
    for check in report.warnings:
        logger.warning("data-contract warning %s: %s", check.name, check.details)
    return report


def _import_gx() -> Any:
    """Import GX with analytics off; the variable must be set before the first import."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    return gx


def _ephemeral_context(gx: Any) -> AbstractDataContext:
    """An in-memory context: stores in memory, no docs sites, no analytics, no progress bars."""
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


# --- Derived frames: what GX judges for rules that span rows or combine columns. ---


def _derive_frames(
    manifest: pd.DataFrame,
    class_names: Sequence[str],
    cfg: ValidationConfig,
    max_distance: int,
    quarantined: int,
    max_thumbnail_distance: float | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The manifest plus each derived frame, and why any frame could not be derived.

    A frame that cannot be derived (a column it needs is missing, a value it reads is malformed)
    is given to GX with no columns, so its checks fail in the Data Docs too; the reason goes into
    the checks' details.
    """
    builders: dict[str, Callable[[], pd.DataFrame]] = {
        "null_counts": lambda: _null_counts(manifest),
        "split_counts": lambda: _split_counts(manifest),
        "class_counts": lambda: _class_counts(manifest, class_names),
        "class_shares": lambda: _class_shares(manifest, class_names),
        "image_intensity": lambda: _image_intensity(manifest, cfg),
        "image_splits": lambda: _distinct_pairs(manifest, "image_id"),
        "near_duplicates": lambda: _near_duplicates(manifest, max_distance,
                                                    max_thumbnail_distance),
        "patient_splits": lambda: _distinct_pairs(manifest, "patient_id"),
        "quarantine": lambda: _quarantine(len(manifest), quarantined),
        "burned_in_annotation": lambda: _burned_in_counts(manifest),
    }
    frames = {"manifest": manifest}
    unavailable: dict[str, str] = {}
    for name, build in builders.items():
        missing = [c for c in _FRAME_NEEDS[name] if c not in manifest.columns]
        try:
            if missing:
                raise ValueError(_lacks(missing))
            frames[name] = build()
        except (ValueError, TypeError, KeyError) as exc:
            unavailable[name] = str(exc)
            frames[name] = pd.DataFrame()
    return frames, unavailable


def _null_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per required column: how many rows have no value there."""
    nulls = manifest[list(REQUIRED_COLUMNS)].isna().sum()
    return pd.DataFrame({"column": list(REQUIRED_COLUMNS), "n_null": nulls.to_numpy()})


def _split_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per split: how many images it holds."""
    per_split = manifest.groupby("split").size().reindex(SPLITS, fill_value=0)
    return pd.DataFrame({"split": list(SPLITS), "n_images": per_split.to_numpy()})


def _class_counts(manifest: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per (split, class): how many images it holds."""
    pairs = pd.MultiIndex.from_product([SPLITS, class_names], names=["split", "label"])
    known = manifest[manifest["split"].isin(SPLITS) & manifest["label"].isin(class_names)]
    return (
        known.groupby(["split", "label"], observed=True)
        .size()
        .reindex(pairs, fill_value=0)
        .rename("n_images")
        .reset_index()
    )


def _class_shares(manifest: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per class: its images and their fraction of all images."""
    counts = manifest["label"].value_counts().reindex(class_names, fill_value=0)
    total = len(manifest)
    fractions = counts / total if total else counts * 0.0
    return pd.DataFrame(
        {
            "label": list(class_names),
            "n_images": counts.to_numpy(),
            "fraction": fractions.astype(float).to_numpy(),
        }
    )


def _image_intensity(manifest: pd.DataFrame, cfg: ValidationConfig) -> pd.DataFrame:
    """One row per image: its contrast and blank area, and whether both are within limits.

    A missing value is not judged here; ``required_values_present`` reports it.
    """
    frame = manifest[["image_id", "intensity_std", "blank_fraction"]].copy()
    std = pd.to_numeric(frame["intensity_std"], errors="raise").astype(float)
    blank = pd.to_numeric(frame["blank_fraction"], errors="raise").astype(float)
    frame["intensity_ok"] = ~((std < cfg.min_intensity_std) | (blank > cfg.max_blank_fraction))
    return frame.reset_index(drop=True)


def _distinct_pairs(manifest: pd.DataFrame, key: str) -> pd.DataFrame:
    """Distinct (key, split) rows: a key is in one split exactly when it is unique here."""
    pairs = manifest[[key, "split"]].dropna().drop_duplicates()
    return pairs.astype(str).sort_values([key, "split"]).reset_index(drop=True)


def _near_duplicates(
    manifest: pd.DataFrame, max_distance: int, max_thumbnail_distance: float | None = None
) -> pd.DataFrame:
    """One row per pair of different images whose pHashes are at most ``max_distance`` apart
    and, when the manifest has thumbnails, whose thumbnails confirm it.

    Rows with the same image id are left out: identical content is the exact-duplicate check's.
    ``splits`` says whether the two images are in the same split or in different ones.
    """
    kept = manifest[["image_id", "split", "phash"]].dropna()
    rows_index = kept.index
    rows = kept.reset_index(drop=True)
    hashes, bad = [], []
    for image_id, text in zip(rows["image_id"], rows["phash"], strict=True):
        try:
            hashes.append(parse_phash(str(text)))
        except ValueError:
            bad.append(f"{_short(str(image_id))} ({text!r})")
    if bad:
        raise ValueError(
            f"{len(bad)} image(s) have a phash that is not 16 hex digits: "
            f"{', '.join(bad[:MAX_NAMED])}; re-create the manifest with `medimg ingest`"
        )
    ids = rows["image_id"].astype(str).to_list()
    splits = rows["split"].astype(str).to_list()
    records = []
    thumbnails = None
    if max_thumbnail_distance is not None and "thumbnail" in manifest.columns:
        thumbnails = [t if isinstance(t, str) else None
                      for t in manifest.loc[rows_index, "thumbnail"].tolist()]
    pairs = near_duplicates([phash_hex(h) for h in hashes], thumbnails, max_distance,
                            max_thumbnail_distance or 0.0)
    for i, j, distance in pairs:
        if ids[i] == ids[j]:
            continue
        a, b = sorted([i, j], key=lambda k: (_split_order(splits[k]), ids[k]))
        same = splits[a] == splits[b]
        records.append((ids[a], splits[a], ids[b], splits[b], int(distance), same))
    records.sort(key=lambda r: (r[4], _split_order(r[1]), _split_order(r[3]), r[0], r[2]))
    frame = pd.DataFrame.from_records(
        records, columns=["image_a", "split_a", "image_b", "split_b", "distance", "same_split"]
    )
    frame["splits"] = frame.pop("same_split").map({True: "same", False: "different"})
    return frame.astype({"distance": "int64", "splits": "object"})


def _quarantine(manifest_rows: int, quarantined: int) -> pd.DataFrame:
    """One row: files quarantined at ingest, images in the manifest, and the quarantined share."""
    total = manifest_rows + quarantined
    return pd.DataFrame(
        {
            "quarantined": [quarantined],
            "manifest_rows": [manifest_rows],
            "quarantined_fraction": [quarantined / total if total else 0.0],
        }
    )


def _dicom_images(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per DICOM image: its id, modality and Burned In Annotation state.

    An image whose rows (exact duplicates share an id) record no state, as in a manifest made
    before ingest recorded it, is ``unknown`` like one whose file did not say YES or NO.
    """
    dicom = manifest[manifest["format"].isin(["dicom"])]  # a missing format is not DICOM
    wanted = {"modality": f"{META_PREFIX}modality", "state": f"{META_PREFIX}burned_in_annotation"}
    columns = {name: dicom[c] if c in dicom.columns else pd.NA for name, c in wanted.items()}
    images = (
        pd.DataFrame({"image_id": dicom["image_id"], **columns}, index=dicom.index)
        .astype("string")
        .groupby("image_id", sort=False)
        .first()  # the first value each column has among an image's rows
        .reset_index()
    )
    images["modality"] = images["modality"].fillna(UNKNOWN)
    known = [s for s in BURNED_IN_STATES if s != UNKNOWN]
    images["state"] = images["state"].where(images["state"].isin(known), UNKNOWN)
    return images


def _burned_in_counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per modality: its DICOM images and how many have an unknown burned-in state."""
    images = _dicom_images(manifest)
    images["unknown"] = images["state"] == UNKNOWN
    counts = images.groupby("modality").agg(
        n_images=("image_id", "size"), n_unknown=("unknown", "sum")
    )
    return counts.reset_index().astype({"modality": "string", "n_images": int, "n_unknown": int})


# --- The checks, in the order of CHECK_LEVELS. ---


def _define_checks(
    gx: Any,
    manifest: pd.DataFrame,
    class_names: Sequence[str],
    cfg: ValidationConfig,
    frames: dict[str, pd.DataFrame],
    max_distance: int,
    base_channels: int | None = None,
) -> list[_Check]:
    """Every check in report order."""
    from great_expectations.expectations.row_conditions import Column

    E = gx.expectations
    lo, hi = cfg.min_side, cfg.max_side
    channels = sorted(cfg.allowed_channels)
    depths = sorted(cfg.allowed_bit_depths)
    apart = max_distance + 1
    checks = [
        _Check(
            "columns_present",
            "manifest",
            E.ExpectTableColumnsToMatchSet(column_set=list(COLUMNS), exact_match=False),
            _summarise_columns,
        ),
        _Check(
            "manifest_not_empty",
            "manifest",
            E.ExpectTableRowCountToBeBetween(min_value=1),
            _summarise_row_count,
        ),
        _Check(
            "required_values_present",
            "null_counts",
            E.ExpectColumnValuesToBeBetween(column="n_null", max_value=0),
            _summarise_nulls(manifest, frames["null_counts"]),
            REQUIRED_COLUMNS,
        ),
        _Check(
            "label_in_class_set",
            "manifest",
            E.ExpectColumnValuesToBeInSet(column="label", value_set=list(class_names)),
            _summarise_in_set("labels", class_names),
            ("label",),
        ),
        _Check(
            "split_in_allowed_set",
            "manifest",
            E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
            _summarise_in_set("splits", SPLITS),
            ("split",),
        ),
        _Check(
            "splits_non_empty",
            "split_counts",
            E.ExpectColumnValuesToBeBetween(column="n_images", min_value=1),
            _summarise_split_counts(frames["split_counts"]),
            ("split",),
        ),
        _Check(
            "class_counts_per_split",
            "class_counts",
            E.ExpectColumnValuesToBeBetween(
                column="n_images", min_value=cfg.min_images_per_class_per_split
            ),
            _summarise_class_counts(frames["class_counts"], cfg.min_images_per_class_per_split),
            ("split", "label"),
        ),
        _Check(
            "class_balance",
            "class_shares",
            E.ExpectColumnValuesToBeBetween(column="fraction", min_value=cfg.min_class_fraction),
            _summarise_class_shares(frames["class_shares"], cfg.min_class_fraction),
            ("label",),
        ),
        _Check(
            "width_in_bounds",
            "manifest",
            E.ExpectColumnValuesToBeBetween(column="width", min_value=lo, max_value=hi),
            _summarise_in_range("width", lo, hi),
            ("width",),
        ),
        _Check(
            "height_in_bounds",
            "manifest",
            E.ExpectColumnValuesToBeBetween(column="height", min_value=lo, max_value=hi),
            _summarise_in_range("height", lo, hi),
            ("height",),
        ),
        _Check(
            "channels_allowed",
            "manifest",
            E.ExpectColumnValuesToBeInSet(column="channels", value_set=channels),
            _summarise_in_set("channels", channels),
            ("channels",),
        ),
        _Check(
            "bit_depth_allowed",
            "manifest",
            E.ExpectColumnValuesToBeInSet(column="bit_depth", value_set=depths),
            _summarise_in_set("bit depths", depths),
            ("bit_depth",),
        ),
        _Check(
            "intensity_sane",
            "image_intensity",
            E.ExpectColumnValuesToBeInSet(column="intensity_ok", value_set=[True]),
            _summarise_intensity(cfg.min_intensity_std, cfg.max_blank_fraction),
            _FRAME_NEEDS["image_intensity"],
        ),
        _Check(
            "saturation_in_bounds",
            "manifest",
            E.ExpectColumnValuesToBeBetween(
                column="saturated_fraction", max_value=cfg.max_saturated_fraction
            ),
            _summarise_in_range("saturated_fraction", 0.0, cfg.max_saturated_fraction),
            ("saturated_fraction",),
        ),
        _Check(
            "no_exact_duplicate_across_splits",
            "image_splits",
            E.ExpectColumnValuesToBeUnique(column="image_id"),
            _summarise_one_split("image_id", "image"),
            _FRAME_NEEDS["image_splits"],
        ),
        _Check(
            "no_near_duplicate_across_splits",
            "near_duplicates",
            E.ExpectColumnValuesToBeBetween(
                column="distance", min_value=apart, row_condition=Column("splits") == "different"
            ),
            _summarise_near_duplicates("in different splits", max_distance),
            _FRAME_NEEDS["near_duplicates"],
        ),
        _Check(
            "no_near_duplicate_within_split",
            "near_duplicates",
            E.ExpectColumnValuesToBeBetween(
                column="distance", min_value=apart, row_condition=Column("splits") == "same"
            ),
            _summarise_near_duplicates("within one split", max_distance),
            _FRAME_NEEDS["near_duplicates"],
        ),
        _Check(
            "patient_in_one_split",
            "patient_splits",
            E.ExpectColumnValuesToBeUnique(column="patient_id"),
            _summarise_one_split("patient_id", "patient"),
            _FRAME_NEEDS["patient_splits"],
        ),
        _Check(
            "patient_ids_present",
            "manifest",
            E.ExpectColumnValuesToNotBeInSet(
                column="patient_source",
                value_set=["image"],
                mostly=_complement(cfg.max_own_patient_fraction),
            ),
            _summarise_own_patients(cfg.max_own_patient_fraction),
            ("patient_source",),
        ),
        _Check(
            "quarantine_rate",
            "quarantine",
            E.ExpectColumnValuesToBeBetween(
                column="quarantined_fraction", max_value=cfg.max_quarantine_fraction
            ),
            _summarise_quarantine(frames["quarantine"], cfg.max_quarantine_fraction),
        ),
        _Check(
            "burned_in_annotation_known",
            "burned_in_annotation",
            E.ExpectColumnValuesToBeBetween(column="n_unknown", max_value=0),
            _summarise_burned_in(manifest, frames["burned_in_annotation"]),
            _FRAME_NEEDS["burned_in_annotation"],
        ),
        _Check(
            "colour_matches_channels",
            "manifest",
            # GX leaves empty values out: images ingested before colour was recorded
            E.ExpectColumnValuesToBeInSet(
                column="colour", value_set=[False] if base_channels == 1 else [False, True]
            ),
            _summarise_colour(manifest, base_channels),
            ("colour",),
        ),
    ]
    for check in checks:
        # A column GX cannot find fails its check instead of aborting the whole suite.
        check.expectation.catch_exceptions = True
        check.expectation.meta = {_CHECK_KEY: check.name}
    return checks


def _complement(fraction: float) -> float:
    """``1 - fraction`` in decimal, so GX's ``mostly`` holds exactly at the bound (0.18 of 50)."""
    return float(Decimal(1) - Decimal(repr(fraction)))


def _run_checks(
    gx: Any,
    context: AbstractDataContext,
    checks: list[_Check],
    frames: dict[str, pd.DataFrame],
    unavailable: dict[str, str],
    levels: dict[str, str],
) -> list[CheckResult]:
    """Run one GX validation definition per frame and map results back to checks by name."""
    source = context.data_sources.add_pandas(name="medimg")
    by_name: dict[str, Any] = {}
    for frame_name, index_columns in _FRAME_INDEX_COLUMNS.items():
        frame = frames[frame_name]
        batch = source.add_dataframe_asset(name=frame_name).add_batch_definition_whole_dataframe(
            name="whole"
        )
        suite = context.suites.add(gx.ExpectationSuite(name=f"medimg_{frame_name}"))
        for check in checks:
            if check.frame == frame_name:
                suite.add_expectation(check.expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"medimg_{frame_name}", data=batch, suite=suite)
        )
        result_format: dict[str, Any] = {"result_format": "COMPLETE"}
        named_by = [c for c in index_columns if c in frame.columns]
        if named_by:
            result_format["unexpected_index_column_names"] = named_by
        suite_result = definition.run(
            batch_parameters={"dataframe": frame}, result_format=result_format
        )
        for result in suite_result.results:
            by_name[result.expectation_config.meta[_CHECK_KEY]] = result

    outcomes = []
    for check in checks:
        result = by_name[check.name]
        missing = [c for c in check.needs if c not in frames["manifest"].columns]
        reason = _lacks(missing) if missing else unavailable.get(check.frame)
        reason = reason or _exception_message(result.exception_info)
        offending: list[str] = []
        if reason is not None:
            observed: object = {"error": reason}
            details = f"could not run: {reason}"
        else:
            observed, details, offending = check.summarise(result.result or {})
        outcomes.append(
            CheckResult(
                name=check.name,
                expectation=result.expectation_config.type,
                level=levels.get(check.name, CHECK_LEVELS[check.name]),
                success=bool(result.success) and reason is None,
                observed=observed,
                details=details,
                offending_ids=offending,
            )
        )
    return outcomes


def _lacks(columns: Sequence[str]) -> str:
    return f"manifest lacks column(s) {list(columns)}; re-create it with `medimg ingest`"


def _exception_message(info: Any) -> str | None:
    """The message of an exception GX caught for one expectation, if any.

    GX reports either one ``{raised_exception, exception_message}`` mapping, or one such mapping
    per metric that failed to compute.
    """
    if not isinstance(info, dict):
        return None
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message") or "unknown error").strip()
    return None


# --- Writing the report and the Data Docs: staged, then swapped in. ---


def _check_docs_dir(data_docs_dir: Path) -> None:
    if data_docs_dir.is_file():
        raise ValueError(f"data_docs_dir {data_docs_dir} is a file; pass a folder")
    if (
        data_docs_dir.is_dir()
        and any(data_docs_dir.iterdir())
        and not (data_docs_dir / "index.html").is_file()
    ):
        raise ValueError(
            f"data_docs_dir {data_docs_dir} is not empty and holds no Data Docs; "
            "pass an empty or new folder"
        )


def _publish(
    report: ValidationReport,
    report_path: Path,
    context: AbstractDataContext,
    data_docs_dir: Path | None,
) -> None:
    """Write the report and the Data Docs beside their targets, then move both into place.

    Until both are complete nothing at ``report_path`` or ``data_docs_dir`` changes, so a crash
    part-way (a full disk, a GX rendering error) leaves the previous report and site intact. Only
    the moves themselves remain: one rename for the report, two for the site (the old one aside,
    the new one in).
    """
    report_path.parent.mkdir(parents=True, exist_ok=True)
    staged_report = report_path.with_name(f".{report_path.name}.{uuid.uuid4().hex[:8]}.tmp")
    staged_docs: Path | None = None
    try:
        if data_docs_dir is not None:
            data_docs_dir.parent.mkdir(parents=True, exist_ok=True)
            staged_docs = Path(
                tempfile.mkdtemp(prefix=f".{data_docs_dir.name}.", dir=data_docs_dir.parent)
            )
            _build_data_docs(context, staged_docs)
        staged_report.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        if data_docs_dir is not None and staged_docs is not None:
            _replace_dir(staged_docs, data_docs_dir)
            staged_docs = None
            logger.info("data docs written to %s", data_docs_dir / "index.html")
        os.replace(staged_report, report_path)
    finally:
        staged_report.unlink(missing_ok=True)
        if staged_docs is not None:
            shutil.rmtree(staged_docs, ignore_errors=True)


def _replace_dir(staged: Path, target: Path) -> None:
    """Move ``staged`` to ``target``, replacing what was there by two renames.

    The whole previous site is replaced, not merged: its index lists every page in the folder,
    so pages from an earlier run would show up as current results.
    """
    previous = None
    if target.exists():
        previous = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, previous)
    os.replace(staged, target)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def _build_data_docs(context: AbstractDataContext, site_dir: Path) -> None:
    """Render this run's suites and results as a static site in ``site_dir``."""
    context.add_data_docs_site(
        site_name=_SITE_NAME,
        site_config={
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(site_dir.resolve()),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    context.build_data_docs(site_names=[_SITE_NAME])


# --- Summaries: turn a GX result dictionary into (observed, details, offending ids). ---


def _plain(value: Any) -> Any:
    """A JSON-safe scalar: numpy scalars unwrapped, NaN and NA as None, others as text."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _distinct(values: Iterable[Any]) -> list[Any]:
    """Distinct JSON-safe values, sorted so reports are stable."""
    unique = {_plain(v) for v in values}
    return sorted(unique, key=lambda v: (v is None, str(type(v)), str(v)))


def _short(identifier: str) -> str:
    return identifier if len(identifier) <= 2 * SHORT_ID else identifier[:SHORT_ID]


def _named(items: Sequence[str], total: int | None = None) -> str:
    """The first ``MAX_NAMED`` items joined, saying how many more there are."""
    total = len(items) if total is None else total
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f" and {total - MAX_NAMED} more" if total > MAX_NAMED else "")


def _images(n: int, verb: str = "") -> str:
    """``1 image has`` / ``2 images have``: a count of images, with a verb that agrees."""
    plural = {"": "", "has": "have", "looks": "look"}[verb]
    return f"1 image {verb}".rstrip() if n == 1 else f"{n} images {plural}".rstrip()


def _naming(ids: Sequence[str], total: int) -> str:
    """``; images a, b and 3 more``: the offending images, ids shortened, for a details line."""
    return f"; images {_named([_short(i) for i in ids], total)}" if ids else ""


def _index_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for row in result.get("unexpected_index_list") or [] if isinstance(row, dict)]


def _offending_images(result: dict[str, Any]) -> list[str]:
    """Distinct image ids of the unexpected rows, in manifest order, at most ``MAX_LISTED``."""
    ids = (_plain(row.get("image_id")) for row in _index_rows(result))
    return list(dict.fromkeys(str(i) for i in ids if i is not None))[:MAX_LISTED]


def _unexpected(result: dict[str, Any]) -> tuple[int, list[Any]]:
    count = int(result.get("unexpected_count") or 0)
    return count, _distinct(result.get("unexpected_list") or [])[:MAX_NAMED]


def _summarise_columns(result: dict[str, Any]) -> Summary:
    mismatched = (result.get("details") or {}).get("mismatched") or {}
    missing = sorted(str(c) for c in mismatched.get("missing") or [])
    observed = {"missing": missing}
    if missing:
        return observed, f"manifest lacks columns: {missing}", []
    return observed, f"all {len(COLUMNS)} manifest columns are present", []


def _summarise_row_count(result: dict[str, Any]) -> Summary:
    n = int(result.get("observed_value") or 0)
    details = "manifest has no rows" if n == 0 else f"manifest has {n} rows"
    return {"n_rows": n}, details, []


def _summarise_nulls(manifest: pd.DataFrame, null_counts: pd.DataFrame) -> Summarise:
    def summarise(result: dict[str, Any]) -> Summary:
        empty = {str(row["column"]): int(row["n_null"]) for row in _index_rows(result)}
        observed = {"null_counts": empty}
        if not empty:
            return observed, f"all {len(null_counts)} required columns have a value in each row", []
        has_gap = manifest[list(empty)].isna().any(axis=1)
        ids = list(dict.fromkeys(manifest.loc[has_gap, "image_id"].dropna().astype(str)))
        named = ", ".join(f"{c} ({_images(n)})" for c, n in empty.items())
        details = f"required columns with missing values: {named}"
        return observed, details + _naming(ids, len(ids)), ids[:MAX_LISTED]

    return summarise


def _summarise_in_set(noun: str, allowed: Sequence[object]) -> Summarise:
    shown = ", ".join(str(a) for a in allowed)

    def summarise(result: dict[str, Any]) -> Summary:
        count, values = _unexpected(result)
        observed = {"unexpected_count": count, "unexpected_values": values}
        if count:
            ids = _offending_images(result)
            details = f"{_images(count)} with {noun} outside [{shown}]: {values}"
            return observed, details + _naming(ids, count), ids
        return observed, f"all {noun} are in [{shown}]", []

    return summarise


def _summarise_in_range(column: str, lo: float, hi: float) -> Summarise:
    def summarise(result: dict[str, Any]) -> Summary:
        count, values = _unexpected(result)
        observed = {"unexpected_count": count, "unexpected_values": values}
        if count:
            ids = _offending_images(result)
            details = f"{_images(count)} with {column} outside [{lo}, {hi}]: {values}"
            return observed, details + _naming(ids, count), ids
        return observed, f"every {column} is within [{lo}, {hi}]", []

    return summarise


def _summarise_intensity(min_std: float, max_blank: float) -> Summarise:
    rule = f"intensity_std < {min_std} or blank_fraction > {max_blank}"

    def summarise(result: dict[str, Any]) -> Summary:
        count = int(result.get("unexpected_count") or 0)
        rows = _index_rows(result)
        observed = {"unexpected_count": count, "rule": f"flat or blank when {rule}"}
        if not count:
            return observed, f"no image is flat or blank ({rule})", []
        named = [
            f"{_short(str(r['image_id']))} (std {_plain(r['intensity_std'])}, "
            f"blank {_plain(r['blank_fraction'])})"
            for r in rows
        ]
        details = f"{_images(count, 'looks')} flat or blank ({rule}): {_named(named, count)}"
        return observed, details, _offending_images(result)

    return summarise


def _by(frame: pd.DataFrame, key: str, value: str, cast: Callable[[Any], Any]) -> dict[str, Any]:
    """``{key: value}`` over a derived frame's rows; empty when the frame could not be derived."""
    if key not in frame.columns or value not in frame.columns:
        return {}
    return {str(k): cast(v) for k, v in zip(frame[key], frame[value], strict=True)}


def _offending_rows(result: dict[str, Any], columns: Sequence[str]) -> list[tuple[str, ...]]:
    return sorted({tuple(str(row[c]) for c in columns) for row in _index_rows(result)})


def _summarise_split_counts(split_counts: pd.DataFrame) -> Summarise:
    counts = _by(split_counts, "split", "n_images", int)

    def summarise(result: dict[str, Any]) -> Summary:
        empty = [s for (s,) in _offending_rows(result, ["split"])]
        empty.sort(key=_split_order)
        observed = {"counts": counts, "empty": empty}
        if empty:
            return observed, f"splits with no images: {empty}", []
        shown = ", ".join(f"{s}={n}" for s, n in counts.items())
        return observed, f"every split has images: {shown}", []

    return summarise


def _summarise_class_counts(class_counts: pd.DataFrame, minimum: int) -> Summarise:
    counts = {
        f"{s}/{c}": int(n)
        for s, c, n in zip(
            class_counts.get("split", []),
            class_counts.get("label", []),
            class_counts.get("n_images", []),
            strict=True,
        )
    }

    def summarise(result: dict[str, Any]) -> Summary:
        short = sorted(
            _offending_rows(result, ["split", "label"]), key=lambda p: (_split_order(p[0]), p[1])
        )
        below = [{"split": s, "label": c, "n_images": counts[f"{s}/{c}"]} for s, c in short]
        observed = {"counts": counts, "below_minimum": below}
        if below:
            named = ", ".join(f"{b['split']}/{b['label']}={b['n_images']}" for b in below)
            return observed, f"(split, class) pairs with fewer than {minimum} images: {named}", []
        return observed, f"every class has at least {minimum} images in every split", []

    return summarise


def _summarise_class_shares(class_shares: pd.DataFrame, minimum: float) -> Summarise:
    shares = _by(class_shares, "label", "fraction", lambda f: round(float(f), 6))
    counts = _by(class_shares, "label", "n_images", int)

    def summarise(result: dict[str, Any]) -> Summary:
        below = sorted(str(row["label"]) for row in _index_rows(result))
        observed = {"fractions": shares, "counts": counts, "below_minimum": below}
        if below:
            named = ", ".join(f"{c} {shares[c]:.1%} ({counts[c]} images)" for c in below)
            return observed, f"classes below {minimum:.1%} of all images: {named}", []
        shown = ", ".join(f"{c} {f:.1%}" for c, f in shares.items())
        return observed, f"every class is at least {minimum:.1%} of all images: {shown}", []

    return summarise


def _summarise_one_split(key: str, noun: str) -> Summarise:
    def summarise(result: dict[str, Any]) -> Summary:
        splits: dict[str, list[str]] = {}
        for value, split in _offending_rows(result, [key, "split"]):
            splits.setdefault(value, []).append(split)
        listed = sorted(splits.items())[:MAX_LISTED]
        offenders = {k: sorted(v, key=_split_order) for k, v in listed}
        observed = {"offender_count": len(splits), "offenders": offenders}
        if not splits:
            return observed, f"no {noun} is in more than one split", []
        named = [f"{_short(k)} in {'+'.join(v)}" for k, v in offenders.items()]
        counted = f"1 {noun} is" if len(splits) == 1 else f"{len(splits)} {noun}s are"
        details = f"{counted} in more than one split: {_named(named, len(splits))}"
        return observed, details, list(offenders)

    return summarise


def _summarise_near_duplicates(where: str, max_distance: int) -> Summarise:
    rule = f"pHash distance <= {max_distance}, confirmed by thumbnails"

    def summarise(result: dict[str, Any]) -> Summary:
        pairs = [
            {
                "image_a": str(row["image_a"]),
                "split_a": str(row["split_a"]),
                "image_b": str(row["image_b"]),
                "split_b": str(row["split_b"]),
                "distance": int(row["distance"]),
            }
            for row in _index_rows(result)
        ]
        count = int(result.get("unexpected_count") or 0)
        observed = {"pair_count": count, "max_distance": max_distance, "pairs": pairs[:MAX_LISTED]}
        if not count:
            return observed, f"no two different images {where} are near-duplicates ({rule})", []
        named = [
            f"{_short(p['image_a'])} ({p['split_a']}) ~ {_short(p['image_b'])} ({p['split_b']}) "
            f"distance {p['distance']}"
            for p in pairs
        ]
        ids = [i for p in pairs for i in (p["image_a"], p["image_b"])]
        pairs_of = "1 pair" if count == 1 else f"{count} pairs"
        details = f"{pairs_of} of near-duplicate images {where} ({rule}): {_named(named, count)}"
        return observed, details, list(dict.fromkeys(ids))[:MAX_LISTED]

    return summarise


def _summarise_own_patients(max_fraction: float) -> Summarise:
    def summarise(result: dict[str, Any]) -> Summary:
        count = int(result.get("unexpected_count") or 0)
        total = int(result.get("element_count") or 0)
        fraction = count / total if total else 0.0
        observed = {
            "own_patient_count": count,
            "own_patient_fraction": round(fraction, 6),
            "max_fraction": max_fraction,
        }
        if not count:
            return observed, "every image has a patient id from its source", []
        ids = _offending_images(result)
        details = (
            f"{_images(count, 'has')} no patient id; each counts as its own patient, so "
            "patient-level leakage cannot be checked for them "
            f"({fraction:.1%} of images; at most {max_fraction:.1%} allowed)"
        )
        return observed, details + _naming(ids, count), ids

    return summarise


def _summarise_quarantine(quarantine: pd.DataFrame, max_fraction: float) -> Summarise:
    row = quarantine.iloc[0] if len(quarantine) else {}
    quarantined = int(row.get("quarantined", 0))
    rows = int(row.get("manifest_rows", 0))
    fraction = float(row.get("quarantined_fraction", 0.0))

    def summarise(result: dict[str, Any]) -> Summary:
        observed = {
            "quarantined": quarantined,
            "manifest_rows": rows,
            "fraction": round(fraction, 6),
            "max_fraction": max_fraction,
        }
        share = f"{quarantined} of {quarantined + rows} files quarantined at ingest ({fraction:.1%}"
        if int(result.get("unexpected_count") or 0):
            details = (
                f"{share}, above the {max_fraction:.1%} allowed); see data/quarantine/"
                "quarantine.jsonl for each file and its reason"
            )
            return observed, details, []
        return observed, f"{share}; at most {max_fraction:.1%} allowed)", []

    return summarise


def _summarise_burned_in(manifest: pd.DataFrame, counts: pd.DataFrame) -> Summarise:
    per_modality = _by(counts, "modality", "n_unknown", int)
    total = sum(_by(counts, "modality", "n_images", int).values())

    def summarise(result: dict[str, Any]) -> Summary:
        unknown = {m: per_modality[m] for (m,) in _offending_rows(result, ["modality"])}
        count = sum(unknown.values())
        observed = {"unknown_count": count, "unknown_by_modality": unknown, "dicom_images": total}
        if not total:
            return observed, "no DICOM images, so no Burned In Annotation to check", []
        if not count:
            details = f"every DICOM image states Burned In Annotation YES or NO ({_images(total)})"
            return observed, details, []
        images = _dicom_images(manifest)
        ids = images.loc[images["state"] == UNKNOWN, "image_id"].astype(str).to_list()
        have = "1 DICOM image has" if count == 1 else f"{count} DICOM images have"
        details = (
            f"{have} no Burned In Annotation YES or NO, by modality {unknown}: they were not "
            "checked for text burned into the pixels (names, ids, dates); review them, or set "
            "BurnedInAnnotation at the source"
        )
        return observed, details + _naming(ids, count), ids[:MAX_LISTED]

    return summarise


def _colour_counts(manifest: pd.DataFrame) -> tuple[int, int]:
    """Distinct images with real colour, and those whose colour was not recorded.

    A missing or malformed column counts nothing here: the check itself reports it.
    """
    if not {"image_id", "colour"} <= set(manifest.columns):
        return 0, 0
    try:
        recorded = manifest["colour"].astype("boolean")
    except (TypeError, ValueError):
        return 0, 0
    by_image = recorded.groupby(manifest["image_id"], sort=False).first()
    return int(by_image.fillna(False).sum()), int(by_image.isna().sum())


def _summarise_colour(manifest: pd.DataFrame, channels: int | None) -> Summarise:
    colour, unrecorded = _colour_counts(manifest)
    in_colour = f"{_images(colour)} in colour"
    unchecked = (
        f"; {_images(unrecorded)} ingested before colour was recorded, so not checked"
        if unrecorded
        else ""
    )

    def summarise(result: dict[str, Any]) -> Summary:
        observed = {"colour_images": colour, "channels": channels, "not_recorded": unrecorded}
        if int(result.get("unexpected_count") or 0):
            ids = _offending_images(result)
            details = (
                f"{_images(colour, 'has')} real colour (RGB channels that differ) but "
                "base.channels is 1, so training sees them grey; set base.channels: 3 in "
                "params.yaml to keep their colour"
            )
            return observed, details + _naming(ids, colour) + unchecked, ids
        if channels is None:
            return observed, f"base.channels not given, so not compared ({in_colour})", []
        if channels == 1:
            details = "no image has real colour (grey stored as RGB is not colour)"
            return observed, details + unchecked, []
        return observed, f"base.channels is {channels}: colour is kept ({in_colour})", []

    return summarise


def _split_order(split: str) -> tuple[int, str]:
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)
