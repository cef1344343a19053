"""A reviewer's image that is not in the manifest yet, ingested as ``medimg ingest`` would.

The file is copied under a neutral name (its content hash, inside a class folder named after the
reviewer's label) and that copy is ingested by :func:`medimg.data.ingest.ingest_sources`, so the
new row gets ingest's decode checks, DICOM de-identification, pixels-only stored copy and split
rules, and nothing of the user's file name reaches the manifest, the quarantine log or a log
line. The user's file is only read. A file ingest cannot use is quarantined by ingest, with its
reason, and :func:`ingest_image` raises.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from medimg.config import Config
from medimg.data.images import IMAGE_SUFFIXES
from medimg.data.ingest import ingest_sources
from medimg.data.manifest import load_manifest
from medimg.errors import DataError
from medimg.workspace import Workspace

STAGING = Path(".medimg") / "feedback-intake"
"""Where the neutral copy waits for ingest (git-ignored; emptied before and after each use)."""


def ingest_image(ws: Workspace, config: Config, path: Path, image_id: str, label: str,
                 reviewer: str, pseudonym_key: bytes | None) -> None:
    """Ingest the file at ``path`` (content hash ``image_id``) with ``label``, by ``reviewer``.

    The caller holds the feedback lock, so the staging folder is this call's alone.

    Raises:
        DataError: ingest quarantined the file (undecodable, too small, blank, not
            de-identifiable...); the message names the reason in one line.
        PseudonymKeyMissing: the file needs the pseudonym key and none was given.
    """
    staging = ws.root / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # what a crashed call left must not come in too
    # a known image suffix helps ingest tell the format; any other suffix could be a name
    suffix = path.suffix.lower() if path.suffix.lower() in IMAGE_SUFFIXES else ""
    neutral = staging / label / f"{image_id}{suffix}"
    neutral.parent.mkdir(parents=True)
    try:
        shutil.copyfile(path, neutral)
        summary = ingest_sources(ws, [staging], config, pseudonym_key=pseudonym_key,
                                 fmt="folder", label_by=reviewer)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if (load_manifest(ws.manifest_path)["image_id"] == image_id).any():
        return
    reasons = [f"{q.code}: {' '.join(q.message.split())}" for q in summary.quarantined]
    why = "; ".join(reasons) or "ingest did not add it"
    raise DataError(f"the image cannot be used and was quarantined ({why}); nothing was "
                    f"recorded; see {ws.relative(ws.quarantine_log)} or `medimg quarantine`")
