"""Ingest as the stage runs it, with the settings given explicitly rather than read from the
environment."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medimg.config import Config
from medimg.data.ingest import IngestSummary
from medimg.data.stage import run_ingest
from medimg.settings import Settings
from medimg.workspace import Workspace

TEST_KEY = b"test-key-0123456789abcdef"
"""The pseudonym key of every test ingest; the same as tests/conftest.py gives the CLI."""


def ingest(
    ws: Workspace,
    sources: Sequence[Path] | None = None,
    *,
    key: bytes | None = TEST_KEY,
    config: Config | None = None,
    **options: Any,
) -> IngestSummary:
    """``run_ingest`` with the workspace's config and ``key`` (None: no key) as the settings."""
    settings = Settings(pseudonym_key=key.decode() if key is not None else None)
    return run_ingest(ws, config or ws.config, settings, sources, **options)
