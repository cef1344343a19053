"""Recording what the pipeline produced in DVC, so `dvc repro` and `dvc status` agree with it."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from medimg.errors import WorkspaceError
from medimg.workspace import Workspace

logger = logging.getLogger(__name__)


def run_dvc(root: Path, *args: str) -> str:
    """Run the DVC command line (the one installed beside medimg) in ``root``.

    Its own interface, not its internals. Raises WorkspaceError with DVC's first error line.
    """
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root,
                            capture_output=True, text=True)
    if result.returncode != 0:
        lines = [x.strip() for x in (result.stderr + result.stdout).splitlines() if x.strip()]
        reason = lines[0].removeprefix("ERROR: ") if lines else f"exit code {result.returncode}"
        raise WorkspaceError(f"`dvc {' '.join(args)}` failed in {root}: {reason}")
    return result.stdout


def dvc(ws: Workspace, *args: str) -> str:
    return run_dvc(ws.root, *args)


def is_dvc_repo(ws: Workspace) -> bool:
    return (ws.root / ".dvc").is_dir() and (ws.root / "dvc.yaml").is_file()


def track_raw_data(ws: Workspace) -> None:
    """Version ``data/raw`` with `dvc add` (a no-op when nothing changed).

    Not when it holds DICOM: `dvc add` would copy the identified originals into the DVC cache
    (and a `dvc push` to a remote). The de-identified copies in ``data/store`` and the manifest,
    which the ingest stage's outputs version, are what later stages read instead.
    """
    if not (is_dvc_repo(ws) and ws.raw_dir.is_dir()):
        return
    if _raw_holds_dicom(ws):
        logger.info("%s holds DICOM; versioning its de-identified copies in %s instead",
                    ws.relative(ws.raw_dir), ws.relative(ws.store_dir))
        return
    dvc(ws, "add", "-q", ws.relative(ws.raw_dir))


def _raw_holds_dicom(ws: Workspace) -> bool:
    """True when any file under data/raw carries the DICOM preamble (quarantined ones too)."""
    from medimg.data.images import is_dicom

    for path in ws.raw_dir.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                if is_dicom(handle.read(132)):
                    return True
    return False


def record_dvc_lineage(ws: Workspace) -> bool:
    """Version the raw data and record the stage outputs in dvc.lock (`dvc commit`).

    The stages were run by the same functions `dvc repro` would call, with the same params, so
    afterwards `dvc repro` finds nothing to do and `dvc.lock` holds the data version.
    Returns False (and does nothing) outside a DVC repository.
    """
    if not is_dvc_repo(ws):
        logger.warning("%s is not a DVC repository; no dvc.lock written", ws.root)
        return False
    track_raw_data(ws)
    dvc(ws, "commit", "--force", "--quiet")
    return True
