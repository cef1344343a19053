"""The feedback tests' workspace, and what a rejected call must leave as it was."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from medimg.feedback.log import feedback_log_path
from medimg.workspace import Workspace


@pytest.fixture
def ws(prepared_workspace) -> Workspace:
    """A workspace of the test's own, ingested from the session's phantoms."""
    return prepared_workspace(through="ingest")


def written(ws: Workspace) -> dict[str, bytes | None]:
    """The bytes of every file feedback writes (None: not there), to compare before and after."""
    files = {"log": feedback_log_path(ws), "manifest": ws.manifest_path}
    return {name: path.read_bytes() if path.exists() else None for name, path in files.items()}


@pytest.fixture
def snapshot() -> Callable[[Workspace], dict[str, bytes | None]]:
    return written
