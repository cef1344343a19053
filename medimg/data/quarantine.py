"""``data/quarantine/quarantine.jsonl``: every file ingest could not use, by reference.

Nothing is copied: the originals stay where the user put them, and each line gives the file's
pseudonymised path, its sha256 and size, a reason code and a message. ``medimg quarantine
--originals`` finds each original through the local map (:mod:`medimg.data.private`).

This module is the one reader and writer of the log: everything else gets
:class:`QuarantineEntry` objects, whose ``code`` is to count and branch on and whose ``message``
is only to read.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DUPLICATE = "duplicate"
"""The code of a cross-split copy a dedupe set aside (its entry names the split kept)."""
# How ingest's dedupe worded the kept split before entries recorded it (``kept_split``).
_LEGACY_DEDUPE_MESSAGE = re.compile(
    r" in (train|val|test); dropped from (?:train|val|test) by dedupe$"
)


@dataclass(frozen=True)
class Reject:
    """Why a file is quarantined: a stable code to count by and a message to read."""

    code: str
    message: str


@dataclass(frozen=True)
class QuarantineEntry:
    """One line of the log: a file ingest could not use, and why."""

    path: str
    """The file's reference, pseudonymised (``data/raw/p-1f0c.../cxr.png``, ``x.npz#train/3``)."""
    sha256: str | None
    size: int | None
    code: str
    message: str
    at: str
    """When it was first quarantined, ISO 8601 UTC to the second."""
    kept_split: str | None = None
    """For a copy a dedupe set aside (code ``duplicate``): the split its content is kept in, the
    only one it may enter again."""

    def to_json(self) -> dict[str, Any]:
        """The entry as its log line holds it; ``kept_split`` only where there is one."""
        line = asdict(self)
        if self.kept_split is None:
            del line["kept_split"]
        return line

    @classmethod
    def from_json(cls, line: dict[str, Any]) -> QuarantineEntry:
        """An entry as this version writes it, from a line of any version.

        The first logs had ``source_ref``, ``image_id`` and ``reason``; their code is
        ``unknown``. Dedupe lines written before ``kept_split`` was recorded name the kept
        split in their message only, which is read once, here.
        """
        if "code" not in line:
            return cls(path=line.get("source_ref", ""), sha256=line.get("image_id"), size=None,
                       code="unknown", message=line.get("reason", ""), at=line.get("at", ""))
        kept_split = line.get("kept_split")
        if kept_split is None and line["code"] == DUPLICATE:
            match = _LEGACY_DEDUPE_MESSAGE.search(line.get("message", ""))
            kept_split = match.group(1) if match else None
        return cls(path=line["path"], sha256=line.get("sha256"), size=line.get("size"),
                   code=line["code"], message=line.get("message", ""), at=line.get("at", ""),
                   kept_split=kept_split)


class QuarantineLog:
    """One line per quarantined file, ever; a file quarantined before is not logged again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[tuple[str | None, str], QuarantineEntry] = {}
        self.pending: list[QuarantineEntry] = []
        for entry in read_quarantine(path):
            self.entries[(entry.sha256, entry.path)] = entry

    def reason_for(self, sha256: str | None, path: str) -> QuarantineEntry | None:
        return self.entries.get((sha256, path))

    def add(self, path: str, sha256: str | None, size: int | None, reject: Reject,
            verb: str = "quarantined", *, kept_split: str | None = None) -> QuarantineEntry:
        """Record a file (``path`` already pseudonymised); returns its entry, or the one it had.

        Args:
            kept_split: For a copy a dedupe sets aside, the split its content stays in.
        """
        known = self.reason_for(sha256, path)
        if known is not None:
            return known
        entry = QuarantineEntry(
            path=path,
            sha256=sha256,
            size=size,
            code=reject.code,
            message=reject.message,
            at=datetime.now(UTC).isoformat(timespec="seconds"),
            kept_split=kept_split,
        )
        self.entries[(sha256, path)] = entry
        self.pending.append(entry)
        logger.warning("%s %s: %s", verb, path, reject.message)
        return entry

    def flush(self) -> None:
        if not self.pending:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as log:
            for entry in self.pending:
                log.write(json.dumps(entry.to_json()) + "\n")
        self.pending = []


def read_quarantine(path: Path) -> list[QuarantineEntry]:
    """Every entry of a quarantine log, oldest first; none when there is no log."""
    if not path.is_file():
        return []
    return [QuarantineEntry.from_json(json.loads(line))
            for line in path.read_text().splitlines() if line.strip()]


def count_codes(entries: Iterable[QuarantineEntry]) -> Counter[str]:
    """How many entries have each reason code."""
    return Counter(entry.code for entry in entries)
