"""``data/quarantine/quarantine.jsonl``: every file ingest could not use, by reference.

Nothing is copied: the originals stay where the user put them, and each line gives the file's
pseudonymised path, its sha256 and size, a reason code and a message. ``medimg quarantine
--originals`` finds each original through the local map (:mod:`medimg.data.private`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reject:
    """Why a file is quarantined: a stable code to count by and a message to read."""

    code: str
    message: str


class QuarantineLog:
    """One line per quarantined file, ever; a file quarantined before is not logged again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[tuple[str | None, str], dict[str, Any]] = {}
        self.pending: list[dict[str, Any]] = []
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    entry = _current(json.loads(line))
                    self.entries[(entry["sha256"], entry["path"])] = entry

    def reason_for(self, sha256: str | None, path: str) -> dict[str, Any] | None:
        return self.entries.get((sha256, path))

    def add(self, path: str, sha256: str | None, size: int | None, reject: Reject,
            verb: str = "quarantined") -> dict[str, Any]:
        """Record a file (``path`` already pseudonymised); returns its entry."""
        known = self.reason_for(sha256, path)
        if known is not None:
            return known
        entry = {
            "path": path,
            "sha256": sha256,
            "size": size,
            "code": reject.code,
            "message": reject.message,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
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
                log.write(json.dumps(entry) + "\n")
        self.pending = []


def read_quarantine(path: Path) -> list[dict[str, Any]]:
    """Every entry of a quarantine log, oldest first; none when there is no log."""
    if not path.is_file():
        return []
    return [_current(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def count_codes(entries: list[dict[str, Any]]) -> Counter[str]:
    return Counter(entry["code"] for entry in entries)


def _current(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as this version writes it (older logs had source_ref, image_id and reason)."""
    if "code" in entry:
        return entry
    return {
        "path": entry.get("source_ref", ""),
        "sha256": entry.get("image_id"),
        "size": None,
        "code": "unknown",
        "message": entry.get("reason", ""),
        "at": entry.get("at", ""),
    }
