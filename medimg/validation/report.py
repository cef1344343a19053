"""What the contract reports, and how the report and the Data Docs are written.

:class:`CheckResult` and :class:`ValidationReport` are the contract's results;
:func:`publish` writes ``reports/validation.json`` and the Data Docs beside their targets and
moves both into place only once complete. The limits on how many offenders a check names and
lists are here too, as every summary obeys them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAX_NAMED = 10
"""At most this many offenders are named in a check's one-line details."""
MAX_LISTED = 100
"""At most this many offenders (ids, pairs) are listed in a check's observed value and ids."""
SHORT_ID = 12
"""Details shorten hash-long ids (over 24 characters) to this many, as git does; the report keeps
them whole."""


def short_id(identifier: str) -> str:
    """``identifier`` as details name it: its first ``SHORT_ID`` characters when hash-long."""
    return identifier if len(identifier) <= 2 * SHORT_ID else identifier[:SHORT_ID]


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


# --- Writing the report and the Data Docs: staged, then swapped in. ---


def check_docs_dir(data_docs_dir: Path) -> None:
    """Refuse a Data Docs folder that is a file, or a non-empty folder that holds no Data Docs.

    Raises:
        ValueError: naming the folder and what to pass instead.
    """
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


def publish(
    report: ValidationReport,
    report_path: Path,
    data_docs_dir: Path | None,
    build_docs: Callable[[Path], None],
) -> None:
    """Write the report and the Data Docs beside their targets, then move both into place.

    ``build_docs`` renders the Data Docs site into the (staging) folder it is given; it is not
    called when ``data_docs_dir`` is ``None``.

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
            build_docs(staged_docs)
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
