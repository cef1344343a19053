"""The validate stage: the data contract over the workspace's manifest."""

from __future__ import annotations

from medimg.config import Config
from medimg.data.manifest import load_manifest
from medimg.errors import ValidationFailed
from medimg.validation.contract import ValidationReport, validate_manifest
from medimg.workspace import Workspace


def validate_workspace(ws: Workspace, config: Config | None = None,
                       raise_on_failure: bool = True) -> ValidationReport:
    """Run the contract, write ``reports/validation.json`` and Data Docs.

    Raises:
        ValidationFailed: naming each failed expectation, unless ``raise_on_failure`` is False.
    """
    config = config or ws.config
    report = validate_manifest(
        load_manifest(ws.manifest_path),
        list(config.base.class_names),
        config.validation,
        ws.validation_report_path,
        ws.data_docs_dir,
    )
    if raise_on_failure and not report.success:
        failed = "; ".join(f"{c.name}: {c.details}" for c in report.failed)
        raise ValidationFailed(
            f"{len(report.failed)} expectation(s) failed ({failed}); see "
            f"{ws.relative(ws.validation_report_path)}"
        )
    return report
