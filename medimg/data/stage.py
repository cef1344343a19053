"""The ingest stage: the workspace's sources into its manifest, with the settings passed in.

The CLI and the flow read :class:`medimg.settings.Settings` once and call :func:`run_ingest`;
nothing under :mod:`medimg.data` reads the environment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypedDict, Unpack

from medimg.config import Config
from medimg.data.ingest import IngestSummary, ingest_sources
from medimg.data.sources import SourceFormat
from medimg.settings import Settings
from medimg.workspace import Workspace

__all__ = ["IngestOptions", "IngestSummary", "run_ingest"]


class IngestOptions(TypedDict, total=False):
    """What :func:`run_ingest` forwards to :func:`medimg.data.ingest.ingest_sources`."""

    fmt: SourceFormat
    labels: Path | None
    npz_class_names: Sequence[str] | None
    label_by: str
    dedupe: bool | None
    progress: Callable[[int, int], None] | None


def run_ingest(
    ws: Workspace,
    config: Config,
    settings: Settings,
    sources: Sequence[Path] | None = None,
    **options: Unpack[IngestOptions],
) -> IngestSummary:
    """Ingest ``sources`` (by default the workspace's ``data/raw``) into the manifest.

    Args:
        ws: The workspace.
        config: Its configuration.
        settings: Where the pseudonym key comes from (``MEDIMG_PSEUDONYM_KEY``).
        sources: Folders, label lists, .npz files or DICOM trees; ``[ws.raw_dir]`` when None.
        **options: ``fmt``, ``labels``, ``npz_class_names``, ``label_by``, ``dedupe`` and
            ``progress``, as :func:`medimg.data.ingest.ingest_sources` takes them.

    Raises:
        DataError: a source does not fit its format, or holds no files.
        PseudonymKeyMissing: something new needs the key and the settings have none (or one too
            short).
    """
    chosen = [ws.raw_dir] if sources is None else list(sources)
    return ingest_sources(ws, chosen, config, pseudonym_key=settings.key_bytes(), **options)
