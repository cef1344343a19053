"""Keyed pseudonyms: patient ids, date shifts and UIDs, all from one secret key.

A pseudonym is an HMAC-SHA256 of the original under the workspace's key, so one patient's
images, studies and series stay together across files and ingests while nobody without the key
can go back or guess. The key is a setting (``MEDIMG_PSEUDONYM_KEY``, read once at an entry point
by :mod:`medimg.settings`); what needs it here takes it as an argument.
"""

from __future__ import annotations

import hashlib
import hmac

from medimg.errors import DataError
from medimg.env_names import PSEUDONYM_KEY_ENV

MIN_KEY_LENGTH = 16
KEY_HOWTO = (
    f'create one with `export {PSEUDONYM_KEY_ENV}=$(python -c "import secrets; '
    f'print(secrets.token_hex(32))")` and keep it the same for every ingest of this workspace '
    "(pseudonyms, and so the splits, depend on it)"
)
"""How to make a key, for the end of every message about a missing or unusable one."""

# Shifts are always into the past and never zero, so a shifted date is never the real one.
_MAX_SHIFT_DAYS = 3650
# The date-shift HMAC is domain-separated from the pseudonym HMAC: otherwise anyone holding a
# pseudonym (it is in the manifest) could compute the offset and undo the shift.
_DATE_SHIFT_DOMAIN = b"medimg/date-shift/v1\x00"


class PseudonymKeyMissing(DataError):
    """No usable pseudonymisation key in ``MEDIMG_PSEUDONYM_KEY`` (unset, empty or too short)."""


def require_key(
    key: bytes | None, *, required: bool, reason: str = "DICOM files carry patient ids and names"
) -> bytes | None:
    """Check the pseudonymisation key a caller was given (``Settings.key_bytes()``).

    Args:
        key: the key as UTF-8 bytes, or None when the setting is unset.
        required: raise when the key is absent or blank, instead of returning None.
        reason: what needs the key, for the start of the error message.

    Returns:
        The key, stripped, or None when it is absent and not required.

    Raises:
        PseudonymKeyMissing: the key is required but absent, or given but shorter than 16
            characters.
    """
    value = key.strip() if key else b""
    if not value:
        if required:
            raise PseudonymKeyMissing(
                f"{reason}, so ingest needs a pseudonymisation key in {PSEUDONYM_KEY_ENV}: "
                f"{KEY_HOWTO}"
            )
        return None
    if len(value.decode("utf-8", errors="replace")) < MIN_KEY_LENGTH:
        # The key's length and value stay out of the message: it is a secret.
        raise PseudonymKeyMissing(
            f"{PSEUDONYM_KEY_ENV} is shorter than {MIN_KEY_LENGTH} characters, too short to keep "
            f"pseudonyms from being guessed; {KEY_HOWTO}"
        )
    return value


def check_key(key: bytes) -> None:
    """Refuse a key that is not non-empty bytes (a programming error, not a user's)."""
    if not isinstance(key, bytes) or not key:
        raise ValueError(f"the pseudonym key must be non-empty bytes; set {PSEUDONYM_KEY_ENV}")


def pseudonymise(original: str, key: bytes) -> str:
    """Keyed, deterministic pseudonym: ``"p-"`` and 16 hex characters of HMAC-SHA256."""
    check_key(key)
    digest = hmac.new(key, original.strip().encode("utf-8"), hashlib.sha256).hexdigest()
    return f"p-{digest[:16]}"


def day_offset(anchor: str, key: bytes) -> int:
    """Days (negative, never zero, at most ten years) by which one patient's dates shift."""
    digest = hmac.new(key, _DATE_SHIFT_DOMAIN + anchor.encode("utf-8"), hashlib.sha256).digest()
    return -(1 + int.from_bytes(digest[:8], "big") % _MAX_SHIFT_DAYS)


def remap_uid(uid: str, key: bytes) -> str:
    """A keyed replacement for an instance UID: the same UID always gets the same one."""
    digest = hmac.new(key, uid.strip().rstrip("\x00").encode("ascii", "replace"), hashlib.sha256)
    # 2.25 is the root for UUID-derived UIDs; 128 bits give at most 44 characters.
    return f"2.25.{int.from_bytes(digest.digest()[:16], 'big')}"
