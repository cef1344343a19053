"""The manifest data contract, checked with Great Expectations.

Every check is a real GX expectation. Where a rule spans rows or combines columns, pandas first
derives a small frame (:mod:`medimg.validation.frames`) and GX validates that frame, so the Data
Docs show every rule next to the data it judged. The checks (:mod:`medimg.validation.checks`),
and their default levels, are those of :data:`medimg.config.CHECK_LEVELS`; a failed ``critical``
check fails the contract, a failed ``warning`` is reported and logged only. GX itself is driven by
:mod:`medimg.validation.gx`, the results worded by :mod:`medimg.validation.summaries` and written
by :mod:`medimg.validation.report`.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import pandas as pd

from medimg.config import ValidationConfig
from medimg.data.hashing import HASH_BLOCK
from medimg.validation.checks import define_checks
from medimg.validation.frames import FrameInputs, derive_frames
from medimg.validation.gx import build_data_docs, ephemeral_context, import_gx, run_checks
from medimg.validation.report import ValidationReport, check_docs_dir, publish

logger = logging.getLogger(__name__)

PHASH_BITS = HASH_BLOCK * HASH_BLOCK
"""Bits in a manifest pHash (64): no two hashes differ in more."""


def validate_manifest(
    manifest: pd.DataFrame,
    class_names: list[str],
    validation: ValidationConfig,
    report_path: Path,
    data_docs_dir: Path | None = None,
    *,
    near_duplicate_distance: int,
    near_duplicate_thumbnail_distance: float | None,
    quarantined: int = 0,
    channels: int | None = None,
    data_version: str | None = None,
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
        data_version: The manifest file's md5, as DVC records it; the Data Docs name the run
            after it (:func:`run_name`).

    Returns:
        Every check, passed or failed, in the order of ``CHECK_LEVELS``. Failing checks do not
        raise; the caller decides whether a failed contract stops the pipeline.

    Raises:
        TypeError: ``manifest`` is not a DataFrame.
        ValueError: ``class_names`` is empty or repeats a name, ``near_duplicate_distance`` is
            outside the ``PHASH_BITS`` of a pHash or ``quarantined`` is negative, ``report_path``
            is a folder, or ``data_docs_dir`` is a file or a non-empty folder that holds no Data
            Docs.
    """
    if not isinstance(manifest, pd.DataFrame):
        raise TypeError(f"manifest must be a pandas DataFrame, got {type(manifest).__name__}")
    if not class_names or len(set(class_names)) != len(class_names):
        raise ValueError(
            f"class_names {class_names!r} must be non-empty and distinct; set base.class_names "
            "in params.yaml"
        )
    if not 0 <= near_duplicate_distance <= PHASH_BITS:
        raise ValueError(
            f"near_duplicate_distance {near_duplicate_distance} must be within "
            f"[0, {PHASH_BITS}] bits; set data.near_duplicate_distance in params.yaml"
        )
    if quarantined < 0:
        raise ValueError(f"quarantined {quarantined} must be a count of files, 0 or more")
    if report_path.is_dir():
        raise ValueError(f"report_path {report_path} is a folder; pass a file path")
    if data_docs_dir is not None:
        check_docs_dir(data_docs_dir)

    gx = import_gx()
    frames, unavailable = derive_frames(
        manifest,
        FrameInputs(
            class_names=class_names,
            validation=validation,
            near_duplicate_distance=near_duplicate_distance,
            near_duplicate_thumbnail_distance=near_duplicate_thumbnail_distance,
            quarantined=quarantined,
        ),
    )
    checks = define_checks(
        gx, manifest, class_names, validation, frames, near_duplicate_distance, channels
    )
    context = ephemeral_context(gx)
    results = run_checks(
        gx, context, checks, frames, unavailable, validation.levels, run_name(data_version)
    )

    report = ValidationReport(
        success=not any(not r.success and r.level == "critical" for r in results),
        checks=results,
        n_rows=len(manifest),
    )
    publish(report, report_path, data_docs_dir, partial(build_data_docs, context))

    passed = sum(r.success for r in results)
    logger.info(
        "manifest contract: %d/%d checks passed on %d rows", passed, len(results), len(manifest)
    )
    for check in report.failed_critical:
        logger.error("critical data-contract check %s failed: %s", check.name, check.details)
    for check in report.warnings:
        logger.warning("data-contract warning %s: %s", check.name, check.details)
    return report


def run_name(data_version: str | None) -> str:
    """The name of the GX run in the Data Docs: ``manifest-<md5>``, or ``manifest-unversioned``.

    The prefix keeps GX from reading the name as a date, which it tries first: an md5 of digits
    only would overflow and stop the Data Docs build.
    """
    return f"manifest-{data_version or 'unversioned'}"
