"""The validate stage: the data contract over the workspace's manifest."""

from __future__ import annotations

import hashlib

from medimg.config import Config
from medimg.data.manifest import load_manifest
from medimg.data.quarantine import read_quarantine
from medimg.errors import ValidationFailed
from medimg.validation.contract import validate_manifest
from medimg.validation.report import ValidationReport
from medimg.workspace import Workspace


def count_quarantined(ws: Workspace) -> int:
    """How many files ingest has quarantined in this workspace; 0 when it has none."""
    return len(read_quarantine(ws.quarantine_log))


def manifest_md5(ws: Workspace) -> str:
    """The md5 of the workspace's manifest file: the data version DVC records for it."""
    return hashlib.md5(ws.manifest_path.read_bytes()).hexdigest()


def run_validate(ws: Workspace, config: Config, raise_on_failure: bool = True) -> ValidationReport:
    """Run the contract, write ``reports/validation.json`` and the Data Docs.

    The Data Docs name the run after the manifest's md5, its data version as DVC records it.

    Both are staged and swapped in only once complete, so a crash part-way leaves the previous
    ones intact. A failing contract still writes its report. Failed warning-level checks are
    logged by the contract and never raise.

    Args:
        ws: The workspace whose manifest, quarantine log and reports folder are used.
        config: The run's configuration (``ws.config`` for the workspace's ``params.yaml``):
            class names, channels, near-duplicate bounds and the ``validation`` section.
        raise_on_failure: Raise when a critical check fails; otherwise return the report.

    Raises:
        ValidationFailed: naming each failed critical check and the report, unless
            ``raise_on_failure`` is False.
    """
    report = validate_manifest(
        load_manifest(ws.manifest_path),
        list(config.base.class_names),
        config.validation,
        ws.validation_report_path,
        ws.data_docs_dir,
        near_duplicate_distance=config.data.near_duplicate_distance,
        near_duplicate_thumbnail_distance=config.data.near_duplicate_thumbnail_distance,
        quarantined=count_quarantined(ws),
        channels=config.base.channels,
        data_version=manifest_md5(ws),
    )
    if raise_on_failure and not report.success:
        failed = report.failed_critical
        names = ", ".join(c.name for c in failed)
        raise ValidationFailed(
            f"{len(failed)} critical data-contract check(s) failed: {names}; see "
            f"{ws.relative(ws.validation_report_path)} for the offending ids"
        )
    return report
