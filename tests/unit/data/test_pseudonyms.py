"""Keyed pseudonyms, date offsets and remapped UIDs, and the checks on the key they come from."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest
from pydicom.uid import UID

from medimg.data.pseudonyms import (
    MIN_KEY_LENGTH,
    PseudonymKeyMissing,
    day_offset,
    pseudonymise,
    remap_uid,
    require_key,
)
from medimg.errors import DataError
from medimg.settings import PSEUDONYM_KEY_ENV, Settings

KEY = b"unit-test-key-0123456789abcdef"
OTHER_KEY = b"another-key-fedcba9876543210"


def test_pseudonyms_are_deterministic_and_keyed():
    pseudonym = pseudonymise("MRN-ZX-774411", KEY)
    assert re.fullmatch(r"p-[0-9a-f]{16}", pseudonym)
    assert pseudonymise("  MRN-ZX-774411 ", KEY) == pseudonym
    assert pseudonymise("MRN-ZX-774411", OTHER_KEY) != pseudonym


def test_a_key_that_is_not_bytes_is_a_programming_error():
    for key in (b"", "a-string-key-0123456789"):
        with pytest.raises(ValueError, match=PSEUDONYM_KEY_ENV):
            pseudonymise("MRN-1", key)  # type: ignore[arg-type]


def test_date_offsets_go_into_the_past_by_up_to_ten_years_and_not_by_the_pseudonym():
    offsets = {day_offset(f"MRN-{i}", KEY) for i in range(200)}
    assert all(-3650 <= d <= -1 for d in offsets) and len(offsets) > 150
    assert day_offset("MRN-1", KEY) == day_offset("MRN-1", KEY) != day_offset("MRN-1", OTHER_KEY)
    # domain-separated: the pseudonym's own HMAC, which the manifest shows, does not give it
    plain = hmac.new(KEY, b"MRN-1", hashlib.sha256).digest()
    assert day_offset("MRN-1", KEY) != -(1 + int.from_bytes(plain[:8], "big") % 3650)


def test_remapped_uids_are_valid_consistent_and_keyed():
    uid = "1.2.826.0.1.3680043.8.498.7731.3"
    new = remap_uid(uid, KEY)
    assert new.startswith("2.25.") and len(new) <= 64 and UID(new).is_valid
    assert remap_uid(f" {uid}\x00", KEY) == new
    assert remap_uid(uid, OTHER_KEY) != new


def test_missing_key_names_the_variable_and_how_to_make_one():
    assert require_key(None, required=False) is None
    with pytest.raises(PseudonymKeyMissing) as excinfo:
        require_key(None, required=True, reason="DICOM files carry patient ids")
    message = str(excinfo.value)
    assert isinstance(excinfo.value, DataError)
    assert "\n" not in message
    assert message.startswith("DICOM files carry patient ids")
    assert PSEUDONYM_KEY_ENV in message and "secrets.token_hex(32)" in message
    assert "every ingest" in message
    with pytest.raises(PseudonymKeyMissing):
        require_key(b"   ", required=True)
    # a blank setting is no key at all
    with pytest.raises(PseudonymKeyMissing):
        require_key(Settings(pseudonym_key="   ").key_bytes(), required=True)


def test_short_key_is_rejected_without_echoing_it():
    with pytest.raises(PseudonymKeyMissing) as excinfo:
        require_key(b"short-k3y", required=False)
    message = str(excinfo.value)
    assert "16 characters" in message and PSEUDONYM_KEY_ENV in message
    assert "short-k3y" not in message and "\n" not in message
    assert require_key(b"0123456789abcdef", required=True) == b"0123456789abcdef"
    assert require_key(b" 0123456789abcdef\n", required=True) == b"0123456789abcdef"


def test_the_key_is_counted_in_characters_not_bytes():
    short = "é" * (MIN_KEY_LENGTH - 1)  # 30 bytes of UTF-8, 15 characters
    with pytest.raises(PseudonymKeyMissing, match="16 characters"):
        require_key(short.encode(), required=False)
    assert require_key(("é" * MIN_KEY_LENGTH).encode(), required=True)
