"""The feedback log: one JSON object a line in ``data/feedback/feedback.jsonl``, append only.

Every entry is kept, corrections that were overruled included, so a label's history can always
be read back from the log. An append is flushed and fsync'd before the call returns. The
predictions made for review (:mod:`medimg.feedback.predictions`) are kept the same way, beside it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from medimg.errors import DataError
from medimg.locks import MANIFEST_LOCK
from medimg.workspace import Workspace

LOCK = MANIFEST_LOCK
"""The workspace lock (:mod:`medimg.locks`) every read-check-append-relabel sequence holds, so
two reviewers saving at once neither lose an entry nor undo each other's manifest change."""

Kind = Literal["label", "adjudication"]
Status = Literal["agreed", "applied", "pending"]
"""What a label entry did when it was recorded: confirmed the manifest label, changed it, or
waits for adjudication (a test-split correction, or reviewers who disagree)."""


@dataclass(frozen=True)
class FeedbackEntry:
    """One line of the log: a reviewer's label for an image, or an adjudication of one."""

    entry_id: str
    kind: Kind
    image_id: str
    reviewer: str
    time: str  # ISO 8601, UTC
    label: str | None = None
    previous_label: str | None = None  # the manifest label then; None: the entry brought it in
    agree: bool | None = None
    status: Status | None = None
    split: str | None = None
    prediction_id: str | None = None
    model_name: str | None = None  # the model that predicted, with its version
    model_version: str | None = None
    threshold: float | None = None
    note: str | None = None
    target: str | None = None  # adjudication: the label entry it decides
    accept: bool | None = None

    def line(self) -> str:
        """One human-readable line for the terminal."""
        if self.kind == "adjudication":
            verdict = "accepted" if self.accept else "rejected"
            return f"{self.entry_id} {verdict} {self.target} by {self.reviewer}"
        was = "new" if self.previous_label is None else self.previous_label
        what = "agrees" if self.agree else f"{was} -> {self.label}"
        return (f"{self.entry_id} {self.image_id[:12]} ({self.split}) {what} "
                f"by {self.reviewer}: {self.status}")


def feedback_log_path(ws: Workspace) -> Path:
    return ws.root / "data" / "feedback" / "feedback.jsonl"


def new_entry_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_log(ws: Workspace) -> list[FeedbackEntry]:
    """Every entry, oldest first; none when nothing has been recorded yet."""
    return read_records(ws, feedback_log_path(ws), FeedbackEntry, "feedback entry")


def append_entry(ws: Workspace, entry: FeedbackEntry) -> None:
    """Append ``entry`` as one line, on disk before returning."""
    append_records(feedback_log_path(ws), [entry])


Record = TypeVar("Record")


def read_records(ws: Workspace, path: Path, kind: type[Record], what: str) -> list[Record]:
    """The dataclass records of a JSONL file, oldest first; fields it does not know are skipped.

    Raises:
        DataError: a line is not such a record (the file was edited or truncated by hand).
    """
    if not path.is_file():
        return []
    known = {f.name for f in fields(kind)}  # type: ignore[arg-type]
    records = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            raw = json.loads(text)
            records.append(kind(**{k: v for k, v in raw.items() if k in known}))
        except (ValueError, TypeError) as exc:
            raise DataError(f"{ws.relative(path)} line {number} is not a {what} ({exc}); "
                            "restore the file from DVC or git") from None
    return records


def append_records(path: Path, records: Iterable[Any]) -> None:
    """Append each dataclass record as one line (its unset fields left out), on disk before
    returning."""
    lines = [json.dumps({k: v for k, v in asdict(r).items() if v is not None}) + "\n"
             for r in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(lines))
        handle.flush()
        os.fsync(handle.fileno())
