"""The one local file that leads from pseudonymised references back to the user's files.

Ingest replaces every identifier it knows in a path by its pseudonym, so the manifest, the
quarantine log and the logs name ``data/raw/p-1f0c.../cxr.png``, never the patient. To find the
original, ``data/.private/originals.json`` maps each reference to the path the file was read
from. That folder ignores itself for git (its own ``.gitignore``) and is listed in
``.dvcignore``; it is never a stage output, so DVC neither caches nor pushes it. It holds the
original paths, which may name patients: keep it on this machine.
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
        self.folder.mkdir(parents=True, exist_ok=True)
        ignore = self.folder / ".gitignore"
        if not ignore.is_file():
            ignore.write_text("# medimg: original paths, which may name patients\n*\n")
        _dvcignore(self.ws)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.by_original, indent=0, sort_keys=True))
        os.replace(tmp, self.path)
        self.changed = False


def _dvcignore(ws: Workspace) -> None:
    line = f"/{PRIVATE_DIR.as_posix()}/"
    target = ws.root / ".dvcignore"
    present = target.read_text().splitlines() if target.is_file() else []
    if line not in present:
        with target.open("a") as handle:
            handle.write(("\n" if present and present[-1] else "") + line + "\n")
