"""Identifiers in names: columns that name one, and known values replaced in paths and logs.

A label list brings columns; only those named in ``data.metadata_columns`` are kept, and a name
that marks a direct identifier (HIPAA Safe Harbor's list, and its equivalents elsewhere) is
refused even when it is named there.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

# Each pattern is matched against the column name folded to ``lower_snake_case`` and against
# its words, so ``Patient Name``, ``patientName`` and ``PATIENT-NAME`` all match.
_IDENTIFIER_WORDS = frozenset({
    "name", "names", "surname", "forename", "firstname", "lastname", "givenname", "familyname",
    "fullname", "maidenname", "initials",
    "dob", "birthdate", "birthday", "birth",
    "mrn", "mrns", "ssn", "nhs", "nino", "sin", "passport", "licence", "license",
    "address", "street", "city", "zip", "zipcode", "postcode", "postal",
    "phone", "telephone", "tel", "mobile", "fax",
    "email", "mail",
    "accession", "acc",
    "ip", "url", "iban", "account",
})
_IDENTIFIER_PHRASES = (
    "date_of_birth", "birth_date", "medical_record", "record_number", "social_security",
    "national_id", "national_insurance", "health_card", "health_insurance", "insurance_number",
    "beneficiary", "e_mail", "ip_address", "device_serial", "serial_number", "vehicle",
    "biometric", "fingerprint", "face_photo",
)
# Names that hold a "name" word but identify no person.
_HARMLESS = frozenset({"class_name", "label_name", "file_name", "filename", "view_name",
                       "site_name", "study_name", "series_name", "body_part_name",
                       "protocol_name", "scanner_name", "device_name", "dataset_name"})


def slug(name: str) -> str:
    """``Patient Name`` and ``patientName`` alike as ``patient_name``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip())
    return re.sub(r"[^0-9a-z]+", "_", spaced.casefold()).strip("_")


def is_identifier_column(name: str) -> bool:
    """True when a column's name marks a direct identifier: a name, birth date, record number,
    address, phone, e-mail, accession number, national id and the like."""
    folded = slug(name)
    if folded in _HARMLESS:
        return False
    if any(phrase in folded for phrase in _IDENTIFIER_PHRASES):
        return True
    words = set(folded.split("_"))
    return bool(words & _IDENTIFIER_WORDS) or folded.replace("_", "") in _IDENTIFIER_WORDS


_MIN_SQUEEZED = 4
"""Identifiers with this many letters and digits or more are found whatever the separators;
shorter ones only where they stand as a whole word."""


def _letters(char: str) -> str:
    """One character as compared: decomposed (NFKD, so a composed "Ö" and an "O" followed by a
    combining diaeresis, as macOS writes file names, are alike), case-folded, and only its
    letters and digits (accents and separators drop out)."""
    return "".join(c for c in unicodedata.normalize("NFKD", char).casefold() if c.isalnum())


def squeeze(text: str) -> str:
    """Letters and digits only, decomposed and case-folded: how identifiers are compared."""
    return "".join(_letters(c) for c in text)


class Scrubber:
    """Replaces every known identifier in a text by its pseudonym, in one left-to-right pass.

    Identifiers are compared on their letters and digits only, ignoring case, so "PT-0001" is
    found as "pt0001", "PT_0001" or "pt-00-01", and "19710203" as "1971-02-03"; at each position
    the longest identifier wins, and a pseudonym is never scrubbed again. Identifiers with fewer
    than 4 letters and digits are replaced only where they stand as a whole word, so that a
    patient called "7" does not rewrite every 7 in a path.

    Identifiers met in earlier ingests are known only by keyed digests (``digests``: digest of
    the squeezed value -> pseudonym, with ``digest`` computing one), so nothing stored names
    them. The cost is linear in the text and the number of distinct identifier lengths.
    """

    def __init__(
        self,
        identifiers: set[str] | frozenset[str],
        pseudonym: Callable[[str], str] | None,
        digests: dict[str, str] | None = None,
        digest: Callable[[str], str] | None = None,
    ) -> None:
        self.pseudonym = pseudonym
        self.long: dict[str, str] = {}
        self.short: dict[str, str] = {}
        for identifier in sorted({i.strip() for i in identifiers if i and i.strip()}):
            key = squeeze(identifier)
            if len(key) >= _MIN_SQUEEZED:
                self.long.setdefault(key, identifier)
            elif key:
                self.short.setdefault(identifier.casefold(), identifier)
        self.digests = digests or {}
        self.digest = digest if self.digests else None
        lengths = {len(k) for k in self.long}
        if self.digest is not None:
            lengths |= {int(d.partition(":")[0]) for d in self.digests}
        self.lengths = sorted(lengths, reverse=True)
        self.short_lengths = sorted({len(k) for k in self.short}, reverse=True)

    def __bool__(self) -> bool:
        return self.pseudonym is not None and bool(self.long or self.short or self.digest)

    def __call__(self, text: str) -> str:
        if not self or not text:
            return text
        spans = self._long_spans(text) + self._short_spans(text)
        out: list[str] = []
        end = 0
        for start, stop, replacement in sorted(spans, key=lambda s: (s[0], -s[1])):
            if start < end:
                continue  # overlaps a longer match already taken
            out += [text[end:start], replacement]
            end = stop
        out.append(text[end:])
        return "".join(out)

    def _long_spans(self, text: str) -> list[tuple[int, int, str]]:
        assert self.pseudonym is not None
        chars: list[str] = []
        where: list[int] = []
        for index, char in enumerate(text):
            for folded in _letters(char):
                chars.append(folded)
                where.append(index)
        squeezed = "".join(chars)
        spans = []
        position = 0
        while position < len(squeezed):
            for length in self.lengths:
                piece = squeezed[position:position + length]
                if len(piece) < length:
                    continue
                replacement = None
                if piece in self.long:
                    replacement = self.pseudonym(self.long[piece])
                elif self.digest is not None:
                    replacement = self.digests.get(self.digest(piece))
                if replacement is not None:
                    spans.append((where[position], where[position + length - 1] + 1,
                                  replacement))
                    position += length
                    break
            else:
                position += 1
        return spans

    def _short_spans(self, text: str) -> list[tuple[int, int, str]]:
        assert self.pseudonym is not None
        folded = text.casefold() if len(text.casefold()) == len(text) else text
        spans = []
        for length in self.short_lengths:
            for start in range(len(text) - length + 1):
                found = self.short.get(folded[start:start + length])
                if found is not None and _whole_word(text, start, length):
                    spans.append((start, start + length, self.pseudonym(found)))
        return spans


def _whole_word(text: str, start: int, length: int) -> bool:
    before = text[start - 1] if start else ""
    after = text[start + length] if start + length < len(text) else ""
    return not before.isalnum() and not after.isalnum()
