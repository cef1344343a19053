"""The contract's checks: one GX expectation per check, in the order of ``CHECK_LEVELS``.

Each check names the frame GX judges (:data:`medimg.validation.frames.FRAMES`), the expectation,
and the summariser that words its result. A check on the manifest itself names the manifest
columns it needs; a check on a derived frame needs what its frame needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pandas as pd

from medimg.config import ValidationConfig
from medimg.data.manifest import COLUMNS
from medimg.validation.summaries import (
    Summarise,
    summarise_burned_in,
    summarise_class_counts,
    summarise_class_shares,
    summarise_colour,
    summarise_columns,
    summarise_in_range,
    summarise_in_set,
    summarise_intensity,
    summarise_near_duplicates,
    summarise_nulls,
    summarise_one_split,
    summarise_own_patients,
    summarise_quarantine,
    summarise_row_count,
    summarise_split_counts,
)
from medimg.workspace import SPLITS

if TYPE_CHECKING:
    from great_expectations.expectations.expectation import Expectation

CHECK_KEY = "medimg_check"
"""The key in each expectation's ``meta`` that names its check, to map GX results back."""


@dataclass(frozen=True)
class Check:
    """One contract check.

    Attributes:
        name: Its name in :data:`medimg.config.CHECK_LEVELS`.
        frame: The frame of :data:`medimg.validation.frames.FRAMES` that GX judges.
        expectation: The GX expectation, its ``meta`` naming the check.
        summarise: Words the GX result as observed value, details and offending ids.
        needs: Manifest columns a check on the manifest itself needs; without one it cannot run.
            A check on a derived frame leaves this empty: its frame's ``needs`` apply.
    """

    name: str
    frame: str
    expectation: Expectation
    summarise: Summarise
    needs: tuple[str, ...] = ()


def define_checks(
    gx: Any,
    manifest: pd.DataFrame,
    class_names: Sequence[str],
    cfg: ValidationConfig,
    frames: dict[str, pd.DataFrame],
    max_distance: int,
    base_channels: int | None,
) -> list[Check]:
    """Every check in report order.

    Args:
        gx: The imported ``great_expectations`` module.
        manifest: The manifest under check.
        class_names: The allowed labels.
        cfg: The ``validation`` section of ``params.yaml``.
        frames: Every frame of ``FRAMES`` by name, as :func:`derive_frames` gives them.
        max_distance: The most pHash bits two near-duplicates differ in.
        base_channels: ``base.channels``; ``None`` compares colour with nothing.
    """
    from great_expectations.expectations.row_conditions import Column

    E = gx.expectations
    lo, hi = cfg.min_side, cfg.max_side
    channels = sorted(cfg.allowed_channels)
    depths = sorted(cfg.allowed_bit_depths)
    apart = max_distance + 1
    checks = [
        Check(
            "columns_present",
            "manifest",
            E.ExpectTableColumnsToMatchSet(column_set=list(COLUMNS), exact_match=False),
            summarise_columns,
        ),
        Check(
            "manifest_not_empty",
            "manifest",
            E.ExpectTableRowCountToBeBetween(min_value=1),
            summarise_row_count,
        ),
        Check(
            "required_values_present",
            "null_counts",
            E.ExpectColumnValuesToBeBetween(column="n_null", max_value=0),
            summarise_nulls(manifest, frames["null_counts"]),
        ),
        Check(
            "label_in_class_set",
            "manifest",
            E.ExpectColumnValuesToBeInSet(column="label", value_set=list(class_names)),
            summarise_in_set("labels", class_names),
            ("label",),
        ),
        Check(
            "split_in_allowed_set",
            "manifest",
            E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
            summarise_in_set("splits", SPLITS),
            ("split",),
        ),
        Check(
            "splits_non_empty",
            "split_counts",
            E.ExpectColumnValuesToBeBetween(column="n_images", min_value=1),
            summarise_split_counts(frames["split_counts"]),
        ),
        Check(
            "class_counts_per_split",
            "class_counts",
            E.ExpectColumnValuesToBeBetween(
                column="n_images", min_value=cfg.min_images_per_class_per_split
            ),
            summarise_class_counts(frames["class_counts"], cfg.min_images_per_class_per_split),
        ),
        Check(
            "class_balance",
            "class_shares",
            E.ExpectColumnValuesToBeBetween(column="fraction", min_value=cfg.min_class_fraction),
            summarise_class_shares(frames["class_shares"], cfg.min_class_fraction),
        ),
        Check(
            "width_in_bounds",
            "manifest",
            E.ExpectColumnValuesToBeBetween(column="width", min_value=lo, max_value=hi),
            summarise_in_range("width", lo, hi),
            ("width",),
        ),
        Check(
            "height_in_bounds",
            "manifest",
            E.ExpectColumnValuesToBeBetween(column="height", min_value=lo, max_value=hi),
            summarise_in_range("height", lo, hi),
            ("height",),
        ),
        Check(
            "channels_allowed",
            "manifest",
            E.ExpectColumnValuesToBeInSet(column="channels", value_set=channels),
            summarise_in_set("channels", channels),
            ("channels",),
        ),
        Check(
            "bit_depth_allowed",
            "manifest",
            E.ExpectColumnValuesToBeInSet(column="bit_depth", value_set=depths),
            summarise_in_set("bit depths", depths),
            ("bit_depth",),
        ),
        Check(
            "intensity_sane",
            "image_intensity",
            E.ExpectColumnValuesToBeInSet(column="intensity_ok", value_set=[True]),
            summarise_intensity(cfg.min_intensity_std, cfg.max_blank_fraction),
        ),
        Check(
            "saturation_in_bounds",
            "manifest",
            E.ExpectColumnValuesToBeBetween(
                column="saturated_fraction", max_value=cfg.max_saturated_fraction
            ),
            summarise_in_range("saturated_fraction", 0.0, cfg.max_saturated_fraction),
            ("saturated_fraction",),
        ),
        Check(
            "no_exact_duplicate_across_splits",
            "image_splits",
            E.ExpectColumnValuesToBeUnique(column="image_id"),
            summarise_one_split("image_id", "image"),
        ),
        Check(
            "no_near_duplicate_across_splits",
            "near_duplicates",
            E.ExpectColumnValuesToBeBetween(
                column="distance", min_value=apart, row_condition=Column("splits") == "different"
            ),
            summarise_near_duplicates("in different splits", max_distance),
        ),
        Check(
            "no_near_duplicate_within_split",
            "near_duplicates",
            E.ExpectColumnValuesToBeBetween(
                column="distance", min_value=apart, row_condition=Column("splits") == "same"
            ),
            summarise_near_duplicates("within one split", max_distance),
        ),
        Check(
            "patient_in_one_split",
            "patient_splits",
            E.ExpectColumnValuesToBeUnique(column="patient_id"),
            summarise_one_split("patient_id", "patient"),
        ),
        Check(
            "patient_ids_present",
            "manifest",
            E.ExpectColumnValuesToNotBeInSet(
                column="patient_source",
                value_set=["image"],
                mostly=complement(cfg.max_own_patient_fraction),
            ),
            summarise_own_patients(cfg.max_own_patient_fraction),
            ("patient_source",),
        ),
        Check(
            "quarantine_rate",
            "quarantine",
            E.ExpectColumnValuesToBeBetween(
                column="quarantined_fraction", max_value=cfg.max_quarantine_fraction
            ),
            summarise_quarantine(frames["quarantine"], cfg.max_quarantine_fraction),
        ),
        Check(
            "burned_in_annotation_known",
            "burned_in_annotation",
            E.ExpectColumnValuesToBeBetween(column="n_unknown", max_value=0),
            summarise_burned_in(manifest, frames["burned_in_annotation"]),
        ),
        Check(
            "colour_matches_channels",
            "manifest",
            # GX leaves empty values out: images ingested before colour was recorded
            E.ExpectColumnValuesToBeInSet(
                column="colour", value_set=[False] if base_channels == 1 else [False, True]
            ),
            summarise_colour(manifest, base_channels),
            ("colour",),
        ),
    ]
    for check in checks:
        # A column GX cannot find fails its check instead of aborting the whole suite.
        check.expectation.catch_exceptions = True
        check.expectation.meta = {CHECK_KEY: check.name}
    return checks


def complement(fraction: float) -> float:
    """``1 - fraction`` in decimal, so GX's ``mostly`` holds exactly at the bound (0.18 of 50)."""
    return float(Decimal(1) - Decimal(repr(fraction)))
