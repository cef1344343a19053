"""The one local file that leads from pseudonymised references back to the user's files.

Ingest replaces every identifier it knows in a path by its pseudonym, so the manifest, the
quarantine log and the logs name ``data/raw/p-1f0c.../cxr.png``, never the patient. To find the
original, ``data/.private/originals.json`` maps each reference to the path the file was read
from. That folder ignores itself for git (its own ``.gitignore``) and is listed in
``.dvcignore``; it is never a stage output, so DVC neither caches nor pushes it. It holds the
original paths, which may name patients: keep it on this machine. Beside it,
``identifiers.json`` holds keyed digests of the identifiers ingest has met (no identifier
itself), so that a later ingest still finds them in new file names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from medimg.workspace import Workspace

PRIVATE_DIR = Path("data") / ".private"
ORIGINALS_FILE = "originals.json"


class Originals:
    """``{original path: reference}`` for every file ingest has seen, and the reverse."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.folder = ws.root / PRIVATE_DIR
        self.path = self.folder / ORIGINALS_FILE
        self.by_original: dict[str, str] = {}
        if self.path.is_file():
            try:
                self.by_original = json.loads(self.path.read_text())
            except (json.JSONDecodeError, OSError):
                self.by_original = {}
        self.changed = False

    def ref_for(self, original: str) -> str | None:
        return self.by_original.get(original)

    def originals_of(self, ref: str) -> list[str]:
        return sorted(o for o, r in self.by_original.items() if r == ref)

    def record(self, original: str, ref: str) -> None:
        if self.by_original.get(original) != ref:
            self.by_original[original] = ref
            self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        _write_private(self.ws, self.path, json.dumps(self.by_original, indent=0, sort_keys=True))
        self.changed = False


def _write_private(ws: Workspace, path: Path, text: str) -> None:
    """Write a file of the private folder, which ignores itself for git and is in .dvcignore."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ignore = path.parent / ".gitignore"
    if not ignore.is_file():
        ignore.write_text("# medimg: original paths, which may name patients\n*\n")
    _dvcignore(ws)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _dvcignore(ws: Workspace) -> None:
    line = f"/{PRIVATE_DIR.as_posix()}/"
    target = ws.root / ".dvcignore"
    present = target.read_text().splitlines() if target.is_file() else []
    if line not in present:
        with target.open("a") as handle:
            handle.write(("\n" if present and present[-1] else "") + line + "\n")


IDENTIFIERS_FILE = "identifiers.json"
_DIGEST_DOMAIN = b"medimg/identifier/v1\x00"


class KnownIdentifiers:
    """Keyed digests of every identifier ingest has met, so a later ingest can still find them in
    new file names. Only digests and pseudonyms are kept: the file names no one."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.path = ws.root / PRIVATE_DIR / IDENTIFIERS_FILE
        self.digests: dict[str, str] = {}
        if self.path.is_file():
            try:
                self.digests = json.loads(self.path.read_text())
            except (json.JSONDecodeError, OSError):
                self.digests = {}
        self.changed = False

    @staticmethod
    def digester(key: bytes):
        """``squeezed value -> "<length>:<digest>"``, keyed so that it cannot be reversed."""
        import hashlib
        import hmac

        def digest(squeezed: str) -> str:
            mac = hmac.new(key, _DIGEST_DOMAIN + squeezed.encode("utf-8"), hashlib.sha256)
            return f"{len(squeezed)}:{mac.hexdigest()[:32]}"

        return digest

    def add(self, digest: str, pseudonym: str) -> None:
        if self.digests.get(digest) != pseudonym:
            self.digests[digest] = pseudonym
            self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        _write_private(self.ws, self.path, json.dumps(self.digests, sort_keys=True))
        self.changed = False
