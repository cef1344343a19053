"""Identifiers in names: columns that name one, and known values replaced in paths and logs.

A label list brings columns; only those named in ``data.metadata_columns`` are kept, and a name
that marks a direct identifier (HIPAA Safe Harbor's list, and its equivalents elsewhere) is
refused even when it is named there.
"""

from __future__ import annotations

import re
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


_MIN_SUBSTRING = 3
"""Shorter identifiers are replaced only where they stand as a whole word of a path."""


class Scrubber:
    """Replaces every known identifier in a text by its pseudonym, in one left-to-right pass.

    Matching ignores case and the separators inside an identifier ("PT-0001" is also found as
    "pt0001", "PT_0001" or "pt 0001"), and takes the longest identifier at each position, so a
    pseudonym is never scrubbed again. Identifiers of 3 characters or more are replaced wherever
    they occur ("MRN-770_cxr.png"); shorter ones only as a whole word ("7/cxr.png"), so that a
    patient called "7" does not rewrite every 7 in a path. The cost is linear in the text and the
    number of distinct identifier lengths, not in the number of identifiers.
    """

    def __init__(
        self, identifiers: set[str] | frozenset[str], pseudonym: Callable[[str], str] | None
    ) -> None:
        self.pseudonym = pseudonym
        self.canonical: dict[str, str] = {}
        for identifier in sorted({i.strip() for i in identifiers if i and i.strip()}):
            for variant in _variants(identifier):
                self.canonical.setdefault(variant, identifier)
        self.lengths = sorted({len(k) for k in self.canonical}, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.canonical) and self.pseudonym is not None

    def __call__(self, text: str) -> str:
        if not self or not text:
            return text
        assert self.pseudonym is not None
        folded = text.casefold()
        if len(folded) != len(text):  # casefold changed the length (ß, ligatures): fold by char
            folded = "".join(c.casefold()[:1] or c for c in text)
        out: list[str] = []
        start = position = 0
        while position < len(text):
            for length in self.lengths:
                found = self.canonical.get(folded[position:position + length])
                if found is not None and (length >= _MIN_SUBSTRING or _whole_word(
                        text, position, length)):
                    out.append(text[start:position])
                    out.append(self.pseudonym(found))
                    position += length
                    start = position
                    break
            else:
                position += 1
        out.append(text[start:])
        return "".join(out)


_SEPARATORS = re.compile(r"[\s\-_.^,/]+")


def _variants(identifier: str) -> set[str]:
    """The identifier as it may be written in a file name: its separators dropped or swapped."""
    folded = identifier.casefold()
    parts = [p for p in _SEPARATORS.split(folded) if p]
    variants = {folded}
    if len(parts) > 1:
        variants |= {joiner.join(parts) for joiner in ("", "_", "-", " ", ".")}
    return {v for v in variants if v}


def _whole_word(text: str, start: int, length: int) -> bool:
    before = text[start - 1] if start else ""
    after = text[start + length] if start + length < len(text) else ""
    return not before.isalnum() and not after.isalnum()
