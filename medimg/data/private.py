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
IDENTIFIERS_FILE = "identifiers.json"
_DIGEST_DOMAIN = b"medimg/identifier/v1\x00"


class _PrivateMap:
    """A ``{str: str}`` JSON file of the private folder, read once and written when changed."""

    file = ""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.folder = ws.root / PRIVATE_DIR
        self.path = self.folder / self.file
        self.entries: dict[str, str] = {}
        if self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except (json.JSONDecodeError, OSError):
                self.entries = {}
        self.changed = False

    def record(self, key: str, value: str) -> None:
        if self.entries.get(key) != value:
            self.entries[key] = value
            self.changed = True

    def save(self) -> None:
        if self.changed:
            _write_private(self.ws, self.path, json.dumps(self.entries, indent=0, sort_keys=True))
            self.changed = False


class Originals(_PrivateMap):
    """``{original path: reference}`` for every file ingest has seen, and the reverse."""

    file = ORIGINALS_FILE

    def ref_for(self, original: str) -> str | None:
        return self.entries.get(original)

    def originals_of(self, ref: str) -> list[str]:
        if self._by_ref is None:  # built once, when first asked, and after each change
            self._by_ref = {}
            for original, known in sorted(self.entries.items()):
                self._by_ref.setdefault(known, []).append(original)
        return self._by_ref.get(ref, [])

    def record(self, key: str, value: str) -> None:
        super().record(key, value)
        self._by_ref = None

    _by_ref: dict[str, list[str]] | None = None


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



class KnownIdentifiers(_PrivateMap):
    """Keyed digests of every identifier ingest has met, so a later ingest can still find them in
    new file names. Only digests and pseudonyms are kept: the file names no one."""

    file = IDENTIFIERS_FILE

    @staticmethod
    def digester(key: bytes):
        """``squeezed value -> "<length>:<digest>"``, keyed so that it cannot be reversed."""
        import hashlib
        import hmac

        def digest(squeezed: str) -> str:
            mac = hmac.new(key, _DIGEST_DOMAIN + squeezed.encode("utf-8"), hashlib.sha256)
            return f"{len(squeezed)}:{mac.hexdigest()[:32]}"

        return digest
