"""Who may write: reviewers from a configured user list, by bearer token (API) or session (page).

The user list is a YAML file (``MEDIMG_USERS_FILE``, else ``.medimg/users.yaml`` in the
workspace, which git ignores) of reviewer ids and the sha256 of each one's token; the token
itself is shown once, by ``medimg users add``, and never stored. A page session is a cookie
signed with HMAC-SHA256 (``MEDIMG_SESSION_SECRET``, else a random key kept in
``.medimg/session.key``), ``HttpOnly`` and ``SameSite=Strict``, that carries the reviewer, its
expiry and the CSRF token every form posts back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from medimg.errors import ConfigError, DataError
from medimg.workspace import Workspace

SESSION_COOKIE = "medimg_session"
LOGIN_COOKIE = "medimg_login"  # the CSRF token of the login form, before there is a session
_REVIEWER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def users_path(ws: Workspace, configured: str | None = None) -> Path:
    return Path(configured) if configured else ws.root / ".medimg" / "users.yaml"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Users:
    """Reviewer ids and their token digests."""

    digests: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> Users:
        """The user list; an absent file is an empty list (nobody may write).

        Raises:
            ConfigError: the file is not a list of ``{id, token_sha256}``.
        """
        if not path.is_file():
            return cls({})
        try:
            raw = yaml.safe_load(path.read_text()) or {}
            users = {str(u["id"]): str(u["token_sha256"]) for u in raw.get("users", [])}
        except (yaml.YAMLError, TypeError, KeyError, AttributeError):
            raise ConfigError(
                f"{path} is not a medimg user list (users: [{{id, "
                "token_sha256}}]); recreate it with `medimg users add`"
            ) from None
        return cls(users)

    def reviewer_for(self, reviewer: str, token: str) -> str | None:
        """``reviewer`` when ``token`` is theirs, else None (compared in constant time)."""
        expected = self.digests.get(reviewer)
        return reviewer if expected and _equal(expected, _digest(token)) else None

    def by_token(self, token: str) -> str | None:
        """The reviewer whose token this is, or None."""
        digest = _digest(token)
        found = None
        for reviewer, expected in self.digests.items():
            if _equal(expected, digest):
                found = reviewer
        return found


def add_user(path: Path, reviewer: str) -> str:
    """Add (or give a new token to) ``reviewer``; returns the token, which is stored nowhere.

    Raises:
        DataError: the id is not 1-64 letters, digits, ``.``, ``_``, ``@`` or ``-``.
    """
    if not _REVIEWER_ID.fullmatch(reviewer):
        raise DataError(
            f"reviewer id {reviewer!r} must be 1-64 letters, digits, '.', '_', '@' "
            "or '-', starting with a letter or digit"
        )
    users = dict(Users.load(path).digests)
    token = secrets.token_urlsafe(32)
    users[reviewer] = _digest(token)
    _save(path, users)
    return token


def remove_user(path: Path, reviewer: str) -> bool:
    """Remove ``reviewer``; False when there was no such reviewer."""
    users = dict(Users.load(path).digests)
    if users.pop(reviewer, None) is None:
        return False
    _save(path, users)
    return True


def _save(path: Path, users: dict[str, str]) -> None:
    """Write the user list (reviewer id to token digest), sorted by id, readable by its owner
    only."""
    listed = [{"id": k, "token_sha256": v} for k, v in sorted(users.items())]
    _write_private(path, yaml.safe_dump({"users": listed}).encode())


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(staging, path)


def session_secret(ws: Workspace, configured: str | None = None) -> bytes:
    """The key sessions are signed with: the configured one, or one kept in the workspace."""
    if configured:
        return configured.encode("utf-8")
    path = ws.root / ".medimg" / "session.key"
    if not path.is_file():
        _write_private(path, secrets.token_hex(32).encode())
    return path.read_bytes().strip()


@dataclass(frozen=True)
class Session:
    reviewer: str
    csrf: str
    expires: float
    token: str = ""  # the first characters of the token digest logged in with


class Sessions:
    """Signed session cookies: nothing is kept server-side."""

    def __init__(self, secret: bytes, hours: float) -> None:
        self.secret, self.seconds = secret, hours * 3600

    def issue(self, reviewer: str, token_digest: str = "") -> tuple[str, Session]:
        """A cookie for ``reviewer``, bound to the token they logged in with: a new token
        (``medimg users add`` again) ends the sessions of the old one."""
        session = Session(
            reviewer, secrets.token_urlsafe(24), time.time() + self.seconds, token_digest[:16]
        )
        body = base64.urlsafe_b64encode(
            json.dumps(
                {"r": session.reviewer, "c": session.csrf, "e": session.expires, "t": session.token}
            ).encode()
        )
        return f"{body.decode()}.{self._sign(body)}", session

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, or None when it is absent, forged or expired."""
        if not cookie or "." not in cookie:
            return None
        body, _, signature = cookie.rpartition(".")
        if not _equal(self._sign(body.encode("utf-8", "replace")), signature):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body.encode("utf-8", "replace")))
            session = Session(
                str(data["r"]), str(data["c"]), float(data["e"]), str(data.get("t", ""))
            )
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > time.time() else None

    def _sign(self, body: bytes) -> str:
        return hmac.new(self.secret, body, hashlib.sha256).hexdigest()


def same_token(expected: str | None, given: str | None) -> bool:
    """A CSRF check: both present and equal, compared in constant time."""
    return bool(expected) and bool(given) and _equal(str(expected), str(given))


def _equal(a: str, b: str) -> bool:
    """Constant-time equality of any two strings (compare_digest refuses non-ASCII text)."""
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))
