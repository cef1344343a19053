"""The check table: one real GX expectation per check of CHECK_LEVELS, on a declared frame."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from medimg.config import CHECK_LEVELS, ValidationConfig
from medimg.data.manifest import COLUMNS
from medimg.validation.checks import CHECK_KEY, Check, complement, define_checks
from medimg.validation.frames import FRAMES
from medimg.validation.gx import import_gx

CLASSES = ["normal", "pneumonia"]


def _checks(max_distance: int = 6, channels: int | None = None, **cfg: Any) -> list[Check]:
    frames = {name: pd.DataFrame() for name in FRAMES}
    return define_checks(
        import_gx(), pd.DataFrame(), CLASSES, ValidationConfig(**cfg), frames, max_distance,
        channels,
    )


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_one_check_per_check_level_in_order_each_on_a_declared_frame() -> None:
    checks = _checks()

    assert [c.name for c in checks] == list(CHECK_LEVELS)
    assert {c.frame for c in checks} == set(FRAMES)  # every frame is judged by some check
    for check in checks:
        assert check.expectation.catch_exceptions is True
        assert check.expectation.meta == {CHECK_KEY: check.name}


def test_only_checks_on_the_manifest_name_columns_they_need() -> None:
    for check in _checks():
        if check.frame == "manifest":
            assert set(check.needs) <= set(COLUMNS), check.name
        else:
            assert check.needs == (), f"{check.name}: its frame declares what it needs"


def test_thresholds_come_from_the_config_and_arguments() -> None:
    checks = _by_name(_checks(max_distance=4, channels=1, min_side=32, max_side=512))

    assert checks["width_in_bounds"].expectation.min_value == 32
    assert checks["height_in_bounds"].expectation.max_value == 512
    near = checks["no_near_duplicate_across_splits"].expectation
    assert near.min_value == 5  # at most 4 bits apart is a near-duplicate
    assert checks["colour_matches_channels"].expectation.value_set == [False]
    assert _by_name(_checks(channels=3))["colour_matches_channels"].expectation.value_set == [
        False,
        True,
    ]


@pytest.mark.parametrize(("fraction", "mostly"), [(0.18, 0.82), (0.0, 1.0), (0.1, 0.9)])
def test_complement_is_exact_in_decimal(fraction: float, mostly: float) -> None:
    assert complement(fraction) == mostly
