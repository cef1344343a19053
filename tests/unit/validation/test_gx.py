"""GX plumbing: an in-memory context with analytics off, one validation per frame."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import pytest

from medimg.config import CHECK_LEVELS, ValidationConfig
from medimg.data.manifest import COLUMNS
from medimg.validation.checks import define_checks
from medimg.validation.frames import FrameInputs, derive_frames, lacks
from medimg.validation.gx import ephemeral_context, exception_message, import_gx, run_checks

CLASSES = ("normal", "pneumonia")


def test_the_context_turns_analytics_off_without_touching_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GX_ANALYTICS_ENABLED", raising=False)
    before = dict(os.environ)

    context = ephemeral_context(import_gx())

    assert context.config.analytics_enabled is False
    assert context.mode == "ephemeral"
    assert dict(os.environ) == before


@pytest.mark.parametrize(
    ("info", "message"),
    [
        (None, None),
        ({"raised_exception": False, "exception_message": None}, None),
        ({"raised_exception": True, "exception_message": " column x missing "}, "column x missing"),
        ({"raised_exception": True}, "unknown error"),
        (
            {
                "m1": {"raised_exception": False},
                "m2": {"raised_exception": True, "exception_message": "bad metric"},
            },
            "bad metric",
        ),
    ],
)
def test_exception_message_reads_either_shape_gx_reports(info: Any, message: str | None) -> None:
    assert exception_message(info) == message


def _manifest() -> pd.DataFrame:
    rows = []
    for k, (split, label) in enumerate(
        (s, c) for s in ("train", "val", "test") for c in CLASSES for _ in range(2)
    ):
        row = dict.fromkeys(COLUMNS, "x")
        row.update(
            image_id=f"img-{k}", format="png", label=label, patient_id=f"p-{k}",
            patient_source="source", split=split, width=256, height=256, channels=1,
            bit_depth=8, colour=False, intensity_std=40.0, blank_fraction=0.0,
            saturated_fraction=0.0, phash=f"{(k * 0x0F0F0F0F0F0F0F0F) % 2**64:016x}",
        )
        rows.append(row)
    return pd.DataFrame(rows).drop(columns=["phash"])


def test_results_map_back_to_checks_with_levels_and_reasons() -> None:
    gx = import_gx()
    manifest = _manifest()
    cfg = ValidationConfig(min_images_per_class_per_split=2, levels={"intensity_sane": "critical"})
    inputs = FrameInputs(CLASSES, cfg, 6, None, quarantined=0)
    frames, unavailable = derive_frames(manifest, inputs)
    checks = define_checks(gx, manifest, list(CLASSES), cfg, frames, 6, None)

    results = run_checks(gx, ephemeral_context(gx), checks, frames, unavailable, cfg.levels)

    assert [r.name for r in results] == list(CHECK_LEVELS)
    by_name = {r.name: r for r in results}
    assert by_name["intensity_sane"].level == "critical" and by_name["intensity_sane"].success
    failed = {r.name for r in results if not r.success}
    assert failed == {
        "columns_present",
        "required_values_present",
        "no_near_duplicate_across_splits",
        "no_near_duplicate_within_split",
    }
    near = by_name["no_near_duplicate_within_split"]
    assert near.observed == {"error": lacks(["phash"])}
    assert near.details == f"could not run: {lacks(['phash'])}"
    assert by_name["patient_in_one_split"].expectation == "expect_column_values_to_be_unique"
