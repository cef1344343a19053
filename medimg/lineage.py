"""Recording what the pipeline produced in DVC, so `dvc repro` and `dvc status` agree with it."""

from __future__ import annotations

import logging

from medimg.workspace import Workspace, run_dvc

logger = logging.getLogger(__name__)


def dvc(ws: Workspace, *args: str) -> str:
    return run_dvc(ws.root, *args)


def is_dvc_repo(ws: Workspace) -> bool:
    return (ws.root / ".dvc").is_dir() and (ws.root / "dvc.yaml").is_file()


def record_dvc_lineage(ws: Workspace) -> bool:
    """Record the stage outputs in dvc.lock (`dvc commit`).

    The stages were run by the same functions `dvc repro` would call, with the same params, so
    afterwards `dvc repro` finds nothing to do and `dvc.lock` holds the data version.
    ``data/raw`` is never `dvc add`-ed: it is the user's source folder, and its files, names and
    side files (DICOM headers, label lists, reports) may identify patients. What DVC versions is
    ingest's output: the manifest and the store of pixels-only and de-identified copies.
    Returns False (and does nothing) outside a DVC repository.
    """
    if not is_dvc_repo(ws):
        logger.warning("%s is not a DVC repository; no dvc.lock written", ws.root)
        return False
    dvc(ws, "commit", "--force", "--quiet")
    return True
