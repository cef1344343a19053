"""The quarantine log: typed entries, one line per file ever, and logs of earlier versions."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError

import pytest

from medimg.data.quarantine import (
    QuarantineEntry,
    QuarantineLog,
    Reject,
    count_codes,
    read_quarantine,
)


def test_entries_are_typed_and_logged_once_per_file(tmp_path):
    path = tmp_path / "quarantine" / "quarantine.jsonl"
    log = QuarantineLog(path)
    first = log.add("data/raw/p-1/a.png", "aa" * 32, 10, Reject("blank", "blank: flat"))
    again = log.add("data/raw/p-1/a.png", "aa" * 32, 10, Reject("too_small", "too small"))
    assert again is first and first.code == "blank" and first.message == "blank: flat"
    with pytest.raises(FrozenInstanceError):
        first.code = "other"  # type: ignore[misc]
    log.add("x.npz#train/3", None, None, Reject("duplicate", "copy"), "set aside",
            kept_split="test")
    assert not path.exists()  # nothing is written before flush
    log.flush()
    log.flush()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    # the line format is unchanged: kept_split only where there is one
    assert [list(line) for line in lines] == [
        ["path", "sha256", "size", "code", "message", "at"],
        ["path", "sha256", "size", "code", "message", "at", "kept_split"],
    ]
    entries = read_quarantine(path)
    assert entries == list(log.entries.values())
    assert all(isinstance(e, QuarantineEntry) for e in entries)
    assert entries[1].kept_split == "test" and entries[0].kept_split is None
    assert count_codes(entries) == {"blank": 1, "duplicate": 1}
    # a second log over the same file knows what the first one logged
    assert QuarantineLog(path).reason_for("aa" * 32, "data/raw/p-1/a.png") == first


def test_logs_of_earlier_versions_read_as_entries(tmp_path):
    path = tmp_path / "quarantine.jsonl"
    lines = [
        {"source_ref": "data/raw/a.png", "image_id": "ab" * 32, "reason": "truncated",
         "at": "2024-01-01T00:00:00+00:00"},
        {"path": "data/raw/b.png", "sha256": "cd" * 32, "size": 5, "code": "duplicate",
         "message": "exact duplicate of data/raw/c.png in val; dropped from train by dedupe",
         "at": "2024-01-02T00:00:00+00:00"},
        {"path": "data/raw/d.png", "sha256": "ef" * 32, "size": 5, "code": "duplicate",
         "message": "not a message dedupe wrote", "at": "2024-01-03T00:00:00+00:00"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
    oldest, dedupe, other = read_quarantine(path)
    assert oldest == QuarantineEntry("data/raw/a.png", "ab" * 32, None, "unknown", "truncated",
                                     "2024-01-01T00:00:00+00:00")
    # the split a dedupe kept, named only in the message then, now travels as a field
    assert dedupe.kept_split == "val" and other.kept_split is None
    assert count_codes([oldest, dedupe, other]) == {"unknown": 1, "duplicate": 2}


def test_no_log_is_no_entries(tmp_path):
    assert read_quarantine(tmp_path / "missing.jsonl") == []
    assert QuarantineLog(tmp_path / "missing.jsonl").entries == {}
