"""Alias moves on the registered model: audited, and compare-and-set.

Every move of ``challenger``, ``champion`` or ``previous-champion`` appends one entry to an audit
trail kept with the registered model itself, as registered-model tags ``audit.000001``,
``audit.000002``...: what moved, from which version to which, when, why and by whom or by which
run. The trail is never rewritten; a rollback is one more entry.

Moves happen under a lock on the registry, so a promotion is compare-and-set: it names the
champion it was compared against, and fails with :class:`PromotionConflict` when another
promotion moved the champion first. The lock is the database's own for PostgreSQL
(``pg_advisory_lock``) and a file lock beside the store for SQLite and file stores, taken through
the operating system (``flock`` on POSIX, ``LockFileEx`` on Windows), so a crashed holder's lock
goes with its process; a promoter waits up to :data:`LOCK_WAIT_SECONDS` for it. Against a
remote MLflow server (http/https), whose database no client can reach, the lock is a registered
model named ``<name>.registry-lock``: creating it is atomic on a database-backed server (a second
create is refused as already existing), it lives only while the aliases move, and one left
behind by a crashed process is broken after :data:`STALE_LOCK_SECONDS`. A server on a plain file
store does not make creation atomic; run a team's server on a database.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import hashlib
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from medimg.errors import MedimgError

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
AUDIT_PREFIX = "audit."
LOCK_SUFFIX = ".registry-lock"
STALE_LOCK_SECONDS = 300.0
LOCK_WAIT_SECONDS = STALE_LOCK_SECONDS + 60.0


class PromotionConflict(MedimgError):
    """The champion moved since the caller compared against it."""


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    alias: str
    from_version: str | None
    to_version: str | None
    when: str
    why: str
    by: str

    def line(self) -> str:
        before = f"v{self.from_version}" if self.from_version else "none"
        after = f"v{self.to_version}" if self.to_version else "removed"
        return f"{self.when}  {self.alias}: {before} -> {after}  by {self.by}: {self.why}"


def actor(run_id: str | None = None) -> str:
    """Who moves an alias: the MLflow run, or the user at this host."""
    if run_id:
        return f"run {run_id}"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _lock_path(uri: str, name: str) -> Path | None:
    """The lock file beside a local store, or None for a store no file can stand beside.

    A SQLite URI names its database as SQLAlchemy reads it: ``sqlite:///mlflow.db`` is
    ``mlflow.db`` in the current directory, ``sqlite:////srv/mlflow.db`` is absolute. Either
    spelling of one database gives the same lock.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        from sqlalchemy.engine import make_url

        database = make_url(uri).database
        if not database or database == ":memory:":
            return None
        database_path = Path(database).absolute()
        return database_path.with_name(f"{database_path.name}.{name}{LOCK_SUFFIX}")
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # one letter: a Windows drive
        from mlflow.utils.file_utils import local_file_uri_to_path

        root = Path(local_file_uri_to_path(uri)).absolute()
        return root / f".{name}{LOCK_SUFFIX}"
    return None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an operating-system lock on ``path``; the OS drops it if this process dies."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=LOCK_WAIT_SECONDS)
    try:
        lock.acquire()
    except Timeout as exc:
        raise MedimgError(
            f"the registry lock {path} is still held after {LOCK_WAIT_SECONDS:.0f} s by another "
            "process moving aliases; wait for it to finish (the lock is released when that "
            "process ends)") from exc
    try:
        yield
    finally:
        lock.release()


def _lock_age(lock) -> float:
    """Seconds since the lock was taken: its own tag, else the model's creation time."""
    since = lock.tags.get("medimg.lock_since")
    taken = float(since) if since else (lock.creation_timestamp or 0) / 1000.0
    return time.time() - taken


@contextlib.contextmanager
def _server_lock(client, name: str) -> Iterator[None]:
    """A lock an MLflow server keeps for us: the registered model ``<name>.registry-lock``.

    On a database-backed server its creation is one insert under the unique name constraint, so
    of two creators exactly one succeeds. The holder's token (user, host, process, a random
    part) is in its tags; only the holder deletes it, and a lock older than
    :data:`STALE_LOCK_SECONDS` is broken by the next promoter, who waits up to
    :data:`LOCK_WAIT_SECONDS` (longer than that) before giving up.
    """
    from mlflow.exceptions import MlflowException

    lock = f"{name}{LOCK_SUFFIX}"
    token = f"{actor()} pid {os.getpid()} {uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            client.create_registered_model(
                lock, tags={"medimg.lock_holder": token, "medimg.lock_since": str(time.time())},
                description=f"medimg holds this while it moves the aliases of {name}; it is "
                "deleted when the move ends")
        except MlflowException as exc:
            # a lost race on the insert reads the winner's row back, which may be gone again
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        try:
            held = client.get_registered_model(lock)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            held = None  # released in between: try again
        holder = held.tags.get("medimg.lock_holder", "unknown") if held else ""
        if holder == token:
            break
        if held is not None and _lock_age(held) > STALE_LOCK_SECONDS:
            logger.warning("breaking the registry lock %s left by %s %.0f s ago", lock, holder,
                           _lock_age(held))
            _release(client, lock, holder)
            continue
        if time.monotonic() > deadline:
            age = _lock_age(held) if held is not None else 0.0
            raise MedimgError(
                f"the registry lock {lock} is held by {holder} for {age:.0f} s; wait for it to "
                f"finish, or delete the registered model {lock} if that process is gone")
        time.sleep(0.05 + random.random() * 0.1)
    try:
        yield
    finally:
        _release(client, lock, token)


def _release(client, lock: str, holder: str) -> None:
    """Delete the lock if ``holder`` still holds it; a lock another process took is left."""
    from mlflow.exceptions import MlflowException

    try:
        if client.get_registered_model(lock).tags.get("medimg.lock_holder") == holder:
            client.delete_registered_model(lock)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            logger.warning("could not release the registry lock %s (%s); delete that "
                           "registered model if no medimg process is moving aliases", lock, exc)


@contextlib.contextmanager
def registry_lock(client, name: str) -> Iterator[None]:
    """Hold the registry's lock for ``name``: one alias mover at a time."""
    uri = _uri(client)
    parsed = urlparse(uri)
    if parsed.scheme.startswith("postgresql"):
        import psycopg

        dsn = uri.replace("postgresql+psycopg://", "postgresql://").replace(
            "postgresql+psycopg2://", "postgresql://")
        key = int.from_bytes(hashlib.sha256(f"medimg:{name}".encode()).digest()[:8], "big",
                             signed=True)
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                yield
            finally:
                connection.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return
    if parsed.scheme in ("http", "https"):
        with _server_lock(client, name):
            yield
        return
    path = _lock_path(uri, name)
    if path is None:
        logger.warning("the registry at %s cannot be locked from here; promotions are compared "
                       "but not serialised", parsed.scheme)
        yield
        return
    with _file_lock(path):
        yield


def alias_version(client, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:  # MLflow raises when the alias is not set
        return None


def audit_trail(client, name: str) -> list[AuditEntry]:
    """The registered model's audit entries, oldest first."""
    tags = client.get_registered_model(name).tags
    entries = []
    for key, value in tags.items():
        if key.startswith(AUDIT_PREFIX):
            record = json.loads(value)
            entries.append(AuditEntry(seq=int(key.removeprefix(AUDIT_PREFIX)), **record))
    return sorted(entries, key=lambda e: e.seq)


def _append(client, name: str, alias: str, before: str | None, after: str | None, why: str,
            by: str) -> AuditEntry:
    trail = audit_trail(client, name)
    seq = (trail[-1].seq if trail else 0) + 1
    entry = AuditEntry(seq=seq, alias=alias, from_version=before, to_version=after,
                       when=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), why=why,
                       by=by)
    record = {k: v for k, v in entry.__dict__.items() if k != "seq"}
    client.set_registered_model_tag(name, f"{AUDIT_PREFIX}{seq:06d}", json.dumps(record))
    return entry


def _move(client, name: str, alias: str, version: str | None, why: str, by: str
          ) -> AuditEntry | None:
    """Set (or with None, delete) ``alias`` and audit it; no entry when nothing changes."""
    before = alias_version(client, name, alias)
    if before == version:
        return None
    if version is None:
        client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, version)
    return _append(client, name, alias, before, version, why, by)


def _uri(client) -> str:
    return str(client._registry_uri)


def set_alias(client, name: str, alias: str, version: str, why: str, by: str
              ) -> AuditEntry | None:
    """Point ``alias`` at ``version`` under the lock, audited."""
    with registry_lock(client, name):
        return _move(client, name, alias, version, why, by)


def promote(client, name: str, version: str, why: str, by: str,
            expected_champion: str | None) -> list[AuditEntry]:
    """Make ``version`` the champion, if the champion is still ``expected_champion``.

    The outgoing champion keeps ``previous-champion``.

    Raises:
        PromotionConflict: when the champion is no longer ``expected_champion``.
    """
    version = str(version)
    with registry_lock(client, name):
        current = alias_version(client, name, CHAMPION)
        if current != (str(expected_champion) if expected_champion is not None else None):
            raise PromotionConflict(
                f"the champion of {name} is now {_v(current)}, not {_v(expected_champion)} as "
                f"compared; v{version} was not promoted (compare it against {_v(current)})")
        moves = []
        if current is not None and current != version:
            moves.append(_move(client, name, PREVIOUS, current, f"replaced by v{version}", by))
        moves.append(_move(client, name, CHAMPION, version, why, by))
        return [m for m in moves if m is not None]


def rollback(client, name: str, why: str, by: str) -> list[AuditEntry]:
    """Move the champion back to the previous champion; the rolled-back version keeps no
    alias but its challenger one, and ``previous-champion`` is cleared.

    Raises:
        MedimgError: when there is no previous champion to go back to.
    """
    with registry_lock(client, name):
        previous = alias_version(client, name, PREVIOUS)
        current = alias_version(client, name, CHAMPION)
        if previous is None:
            raise MedimgError(f"{name} has no previous champion to roll back to "
                              f"(champion is {_v(current)}); promote a version instead")
        moves = [_move(client, name, CHAMPION, previous, f"rollback: {why}", by),
                 _move(client, name, PREVIOUS, None, f"rollback to v{previous}", by)]
        return [m for m in moves if m is not None]


def _v(version: str | None) -> str:
    return f"v{version}" if version else "none"
