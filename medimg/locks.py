"""Workspace locks: one writer at a time for the files several processes share.

- ``dvc``: every DVC command in a workspace. Two at once fail on DVC's own repo lock
  ("Unable to acquire lock"), so medimg queues them instead.
- ``manifest``: the manifest, the feedback log and the prediction records: ingest, a label
  from a reviewer and an adjudication each read, decide and write under it.
- ``retrain``: one retrain per workspace; a second one started meanwhile is refused.

The locks are files under ``<workspace>/.medimg/locks/`` (``filelock``: ``flock`` on POSIX, so a
process that dies releases its locks). Each is re-entrant within one thread: a DVC call made
while the same thread already holds the DVC lock does not deadlock.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from medimg.errors import WorkspaceError

LOCK_DIR = Path(".medimg") / "locks"
MANIFEST_LOCK = "manifest"



class LockBusy(WorkspaceError):
    """Another process holds the lock, and the caller chose not to wait longer."""


_guard = threading.Lock()
_locks: dict[Path, FileLock] = {}


def lock_path(root: Path, name: str) -> Path:
    return Path(root).resolve() / LOCK_DIR / f"{name}.lock"


def _lock(root: Path, name: str) -> FileLock:
    path = lock_path(root, name)
    with _guard:
        if path not in _locks:
            path.parent.mkdir(parents=True, exist_ok=True)
            _locks[path] = FileLock(path, thread_local=True)
        return _locks[path]


@contextmanager
def workspace_lock(root: Path, name: str, timeout: float = 600.0,
                   busy: str = "") -> Iterator[None]:
    """Hold the workspace's ``name`` lock; wait up to ``timeout`` seconds (0: do not wait).

    Raises :class:`LockBusy` (with ``busy`` when given) when another process keeps it longer.
    """
    lock = _lock(root, name)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise LockBusy(busy or f"another medimg process holds the workspace's {name} "
                             f"lock ({lock_path(root, name)}); try again when it ends") from None
    try:
        yield
    finally:
        lock.release()


def holding(name: str) -> Callable[[Callable], Callable]:
    """A decorator: the call holds the ``name`` lock of the workspace its first argument is."""

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def locked(ws, *args, **kwargs):
            with workspace_lock(ws.root, name):
                return func(ws, *args, **kwargs)

        return locked

    return decorate
