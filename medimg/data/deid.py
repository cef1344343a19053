"""De-identification of DICOM datasets, before anything derived from them leaves ingest.

Follows DICOM PS3.15 Annex E: the Basic Application Level Confidentiality Profile (Table E.1-1)
with the Retain Longitudinal Temporal Information with Modified Dates Option, so dates are
shifted by a per-patient offset instead of removed; times and the birth date are emptied.
Patient ids become keyed pseudonyms (HMAC-SHA256) and instance UIDs are remapped with the same
key, so one patient's images, studies and series stay together across files and ingests.

Table E.1-1 cannot anticipate every file, so after it a generic pass cleans whatever is left:
private elements, public elements missing from the data dictionary, person names, dates,
instance UIDs, overlays, curves, free text and retired coded strings. A last residue pass then
removes any remaining text value, kept ones included (manufacturer, body part, code meanings),
that still holds one of the identifying values met on the way (see :func:`collect_identifiers`).

What each attribute gets is tabled in :mod:`medimg.data.ps315`; pseudonyms, date offsets and
remapped UIDs come from :mod:`medimg.data.pseudonyms`. The pixel data is not re-encoded:
encapsulated frames are only cleaned of the metadata their own format can carry
(:mod:`medimg.data.frames`).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pydicom
from pydicom.charset import python_encoding
from pydicom.datadict import (
    dictionary_has_tag,
    dictionary_is_retired,
    keyword_for_tag,
    repeater_has_tag,
)
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, SecondaryCaptureImageStorage

from medimg.data import ps315
from medimg.data.frames import strip_frame_metadata
from medimg.data.pixels_only import NotStrippable
from medimg.data.pseudonyms import check_key, day_offset, pseudonymise, remap_uid
from medimg.errors import DataError
from medimg.phi import squeeze

logger = logging.getLogger(__name__)

# Name components after the middle name are prefixes and suffixes ("DR", "JR"), not identifying.
_NAME_COMPONENTS_REPORTED = 3

# Identifiers with this many letters and digits are looked for inside values, whatever the
# separators (the threshold of medimg.phi's Scrubber); shorter ones only as a whole value, and
# a single character identifies no one.
_MIN_INSIDE = 4
_MIN_WHOLE = 2

UNKNOWN = "unknown"
"""A ``metadata`` value the dataset does not state (no Modality, no Burned In Annotation)."""
BURNED_IN_STATES = ("yes", "no", UNKNOWN)
"""``metadata["burned_in_annotation"]``: Burned In Annotation YES or NO, or anything else."""


class NotDeidentifiable(DataError):
    """A part of the dataset (an encapsulated frame) cannot be cleaned; the file is quarantined."""


@dataclass
class DeidResult:
    """A de-identified dataset and what the caller needs to know about the original.

    ``identifiers`` holds original identifying values: never log or store them.
    ``burned_in_annotation`` is true only when Burned In Annotation says YES; ``metadata``
    (values for slicing: modality, view, body part...) gives its state as ``yes``, ``no`` or
    ``unknown`` under the same key, and the modality as ``unknown`` when the dataset has none.
    A metadata value that holds one of the identifiers is left out (the modality: ``unknown``).
    """

    dataset: Dataset = field(repr=False)
    patient_pseudonym: str | None
    identifiers: frozenset[str] = field(repr=False)
    burned_in_annotation: bool
    metadata: dict[str, str]


@dataclass
class _Context:
    key: bytes
    table: dict[int, str]
    day_offset: int
    identifiers: set[str] = field(default_factory=set)
    # Values medimg wrote (pseudonyms, remapped UIDs, dummies): never matched as residue.
    written: set[str] = field(default_factory=set)


def deidentify(
    ds: Dataset, key: bytes, *, retain_patient_characteristics: bool = False
) -> DeidResult:
    """De-identify ``ds`` in place per PS3.15 Annex E (Basic Profile, Modified Dates Option).

    The pixel values are untouched: encapsulated frames lose the metadata segments of their
    format (:mod:`medimg.data.frames`) without being re-encoded. Burned-in text in the pixels is
    not removed, only reported through ``burned_in_annotation`` and, with an absent or unexpected
    Burned In Annotation reported as ``unknown`` rather than as NO, through ``metadata``. The
    file meta always ends up with the SOP class and instance UIDs a Part-10 file needs.

    Args:
        ds: the dataset, with its ``file_meta`` if it has one.
        key: the pseudonymisation key (see :func:`medimg.data.pseudonyms.require_key`).
        retain_patient_characteristics: keep sex, age, size and weight (Retain Patient
            Characteristics Option) and report sex and age in ``metadata``.

    Returns:
        The result, whose ``dataset`` is ``ds`` itself.

    Raises:
        NotDeidentifiable: an encapsulated frame cannot be cleaned. On this or any other error
            ``ds`` is left as it was, so :func:`collect_identifiers` still finds what it names.
    """
    check_key(key)
    saved = _snapshot(ds)
    try:
        return _deidentify(ds, key, retain_patient_characteristics)
    except Exception:
        _restore(ds, saved)
        raise


def collect_identifiers(ds: Dataset) -> frozenset[str]:
    """The identifying values :func:`deidentify` would report for ``ds``, without changing it.

    For a dataset whose header could be read but which could not be de-identified, so that its
    path can still be scrubbed. Best effort: an element that cannot be read is skipped, and
    nothing is raised.
    """
    found: set[str] = set()
    try:
        _collect_all(ds, found)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            _collect_all(meta, found)
    except Exception:  # best effort: what was found so far is still worth scrubbing
        logger.debug("collecting identifiers stopped early")
    return frozenset(found)


def _deidentify(ds: Dataset, key: bytes, retain_patient_characteristics: bool) -> DeidResult:
    metadata = _slicing_metadata(ds, retain_patient_characteristics)
    # First, as it is the step most likely to refuse a file.
    try:
        strip_frame_metadata(ds)
    except NotStrippable as exc:
        raise NotDeidentifiable(str(exc)) from None
    patient_id = _text(ds.get("PatientID"))
    pseudonym = pseudonymise(patient_id, key) if patient_id else None
    # Without a patient id the offset follows whatever still groups the images best.
    anchor = patient_id or _text(ds.get("PatientName")) or _text(ds.get("StudyInstanceUID"))
    ctx = _Context(
        key=key,
        table=ps315.TABLE_RETAINING if retain_patient_characteristics else ps315.TABLE,
        day_offset=day_offset(anchor, key),
        identifiers=set(collect_identifiers(ds)),
    )

    if getattr(ds, "preamble", None):
        # The 128-byte preamble is free for applications (dual-format TIFF headers, or
        # anything else), so it can carry text of its own.
        ds.preamble = b"\x00" * 128
    _clean_dataset(ds, ctx)
    _clean_file_meta(ds, ctx)
    residue = _Matcher(ctx.identifiers)
    _clean_residue(ds, ctx, residue, top_level=True)
    if getattr(ds, "file_meta", None) is not None:
        _clean_residue(ds.file_meta, ctx, residue, top_level=False)
    _complete_file_meta(ds, ctx)
    _mark_deidentified(ds, pseudonym, retain_patient_characteristics)
    logger.debug("de-identified a dataset; %d identifying values removed", len(ctx.identifiers))
    metadata = _metadata_without(metadata, residue)
    return DeidResult(
        dataset=ds,
        patient_pseudonym=pseudonym,
        identifiers=frozenset(ctx.identifiers),
        burned_in_annotation=metadata["burned_in_annotation"] == "yes",
        metadata=metadata,
    )


# --- internals --------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(value).strip()


def _values(elem: DataElement) -> list[str]:
    value = elem.value
    if value is None or isinstance(value, bytes | bytearray):
        return []
    # Only multi-valued containers are iterated: a PersonName iterates over its characters.
    items = value if isinstance(value, MultiValue | list | tuple) else [value]
    return [text for text in (_text(v) for v in items) if text]


def _slicing_metadata(ds: Dataset, retain_patient_characteristics: bool) -> dict[str, str]:
    wanted = {
        "modality": "Modality",
        "view_position": "ViewPosition",
        "body_part": "BodyPartExamined",
        "photometric": "PhotometricInterpretation",
    }
    if retain_patient_characteristics:
        wanted |= {"patient_sex": "PatientSex", "patient_age": "PatientAge"}
    metadata = {}
    for name, keyword in wanted.items():
        value = _text(ds.get(keyword))
        if value:
            metadata[name] = value
    # Every DICOM gets these two, so images whose burned-in text nobody vouched for can be counted
    # per modality. Only an explicit NO counts as no: an absent attribute says nothing.
    metadata.setdefault("modality", UNKNOWN)
    stated = _text(ds.get("BurnedInAnnotation")).lower()
    metadata["burned_in_annotation"] = stated if stated in BURNED_IN_STATES else UNKNOWN
    return metadata


def _elements(ds: Dataset) -> Iterator[tuple[int, DataElement | None]]:
    """Each element of ``ds`` (not recursive), None for one whose value cannot be decoded."""
    for tag in list(ds.keys()):
        try:
            yield tag, ds[tag]
        except Exception:  # pydicom raises many types for malformed values
            yield tag, None


def _clean_dataset(ds: Dataset, ctx: _Context) -> None:
    # Private elements go first, by tag, so that none is ever decoded (what
    # Dataset.remove_private_tags does, without its failing on an undecodable value).
    tags = list(ds.keys())
    for tag in tags:
        if Tag(tag).is_private:
            _collect_private(ds, tag, ctx.identifiers)
            del ds[tag]
    for tag, elem in _elements(ds):
        if elem is None:
            # A value we cannot read is a value we cannot vouch for.
            logger.debug("removed undecodable element %s", Tag(tag))
            del ds[tag]
            continue
        group = elem.tag.group
        if (
            elem.tag.element == 0  # group lengths: obsolete and wrong once values change
            or group in ps315.REMOVED_GROUPS
            or (group & 0xFF00) in ps315.REMOVED_GROUP_PREFIXES
            # Public but in no edition of the standard pydicom knows (repeating groups
            # included): nothing says what it holds, so it cannot be vouched for.
            or not (dictionary_has_tag(elem.tag) or repeater_has_tag(elem.tag))
        ):
            _remove(ds, elem, ctx)
            continue
        action = ctx.table.get(elem.tag)
        if action is None:
            _clean_generic(ds, elem, ctx)
        else:
            _apply(ds, elem, action, ctx)


def _apply(ds: Dataset, elem: DataElement, action: str, ctx: _Context) -> None:
    if action == "X":
        _remove(ds, elem, ctx)
    elif action == "Z":
        _empty(elem, ctx)
    elif action == "D":
        _dummy(ds, elem, ctx)
    elif action == "U":
        if elem.VR == "UI":
            _remap(elem, ctx)
        else:
            _remove(ds, elem, ctx)
    elif action == "P":
        _collect(elem, ctx)
        values = _values(elem)
        elem.value = pseudonymise(values[0], ctx.key) if values else ""
        ctx.written.add(elem.value)
    elif action == "K":
        if elem.VR == "SQ":
            _clean_items(elem, ctx)
    else:  # "U*": a reference sequence, cleaned like any other
        _clean_generic(ds, elem, ctx)


def _clean_generic(ds: Dataset, elem: DataElement, ctx: _Context) -> None:
    vr = str(elem.VR)
    vrs = set(vr.split(" or "))  # ambiguous VRs such as "OB or OW", "US or SS"
    keyword = keyword_for_tag(elem.tag)
    if vr == "SQ":
        _clean_items(elem, ctx)
    elif vr == "PN":
        _empty(elem, ctx)
    elif vr in ("DA", "DT"):
        if keyword not in ps315.UNSHIFTED_DATES:
            _shift(ds, elem, ctx)
    elif vr == "TM":
        _empty(elem, ctx)
    elif vr == "UI":
        if keyword not in ps315.KEEP_UIDS:
            _remap(elem, ctx)
    elif vr in ps315.TEXT_VRS:
        if keyword not in ps315.KEEP_TEXT:
            _remove(ds, elem, ctx)
    elif vr == "CS" and elem.tag.group not in ps315.BINARY_GROUPS and _is_retired(elem.tag):
        # ACR-NEMA and trial-era codes, some of them identifiers (Source Image IDs, Modified
        # Image ID); those of the pixel group describe its old compression and are kept.
        _remove(ds, elem, ctx)
    elif vrs & ps315.BINARY_VRS and (elem.tag.group not in ps315.BINARY_GROUPS or "UN" in vrs):
        _remove(ds, elem, ctx)
    # CS, AT and the numeric VRs are kept: coded or measured values, not free text.


def _clean_items(elem: DataElement, ctx: _Context) -> None:
    for item in elem.value or []:
        _clean_dataset(item, ctx)


def _remove(ds: Dataset, elem: DataElement, ctx: _Context) -> None:
    _collect(elem, ctx)
    del ds[elem.tag]


def _empty(elem: DataElement, ctx: _Context) -> None:
    _collect(elem, ctx)
    if elem.VR == "SQ":
        elem.value = Sequence()
    elif elem.VR in ps315.TEXT_VRS or elem.VR in ("PN", "CS", "DA", "DT", "TM", "UI", "IS", "DS"):
        elem.value = ""
    else:
        elem.value = None


def _dummy(ds: Dataset, elem: DataElement, ctx: _Context) -> None:
    vr = elem.VR
    if vr == "SQ":
        # Dummy items would need dummy contents; an empty sequence carries nothing.
        _empty(elem, ctx)
    elif vr == "UI":
        _remap(elem, ctx)
    elif vr in ("DA", "DT"):
        _shift(ds, elem, ctx)
    else:
        _collect(elem, ctx)
        if vr in ps315.DUMMIES:
            elem.value = ps315.DUMMIES[vr]
        elif vr in ps315.TEXT_VRS or vr == "CS":
            elem.value = ps315.DUMMY_TEXT
        else:
            del ds[elem.tag]
            return
        ctx.written.add(ps315.DUMMIES.get(vr, ps315.DUMMY_TEXT))


def _remap(elem: DataElement, ctx: _Context) -> None:
    _collect(elem, ctx)
    new = [
        uid if uid.startswith(ps315.STANDARD_UID_ROOT) else remap_uid(uid, ctx.key)
        for uid in _values(elem)
    ]
    ctx.written.update(new)
    elem.value = new[0] if len(new) == 1 else (new or "")


def _shift(ds: Dataset, elem: DataElement, ctx: _Context) -> None:
    _collect(elem, ctx)
    originals = _values(elem)
    if not originals:
        return
    shifted = [_shift_value(v, str(elem.VR), ctx.day_offset) for v in originals]
    if any(s is None for s in shifted):
        logger.debug("removed %s: date cannot be parsed for shifting", elem.tag)
        del ds[elem.tag]
        return
    elem.value = shifted[0] if len(shifted) == 1 else shifted


_DA = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")  # the dotted form is ACR-NEMA's
_DT = re.compile(r"(\d{4})(\d{2})(\d{2})\d{0,6}(?:\.\d{1,6})?(?:[+-]\d{4})?")


def _shift_value(value: str, vr: str, days: int) -> str | None:
    match = (_DA if vr == "DA" else _DT).fullmatch(value.strip())
    if match is None:  # ranges, partial dates (year only) and garbage cannot be shifted exactly
        return None
    try:
        shifted = date(int(match[1]), int(match[2]), int(match[3])) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    # A DT keeps only its date: its time goes like every TM, its UTC offset like Timezone
    # Offset From UTC.
    return f"{shifted.year:04d}{shifted.month:02d}{shifted.day:02d}"


def _collect(elem: DataElement, ctx: _Context) -> None:
    """Record the original identifying values in ``elem`` (recursively) for path scrubbing."""
    _collect_into(elem, ctx.identifiers)


def _collect_into(elem: DataElement, found: set[str]) -> None:
    vr = elem.VR
    if vr == "SQ":
        for item in elem.value or []:
            for _, sub in _elements(item):
                if sub is not None:
                    _collect_into(sub, found)
        return
    values = _values(elem)
    if vr == "PN":
        for value in [*values, *_other_readings(elem)]:
            found.update(_name_parts(value))
    elif vr == "UI":
        found.update(v for v in values if not v.startswith(ps315.STANDARD_UID_ROOT))
    elif vr in ("DA", "DT"):
        found.update(values)
        for value in values:
            found.update(_date_spellings(value))
    elif keyword_for_tag(elem.tag) in ps315.IDENTIFYING:
        found.update(values)


def _collect_private(ds: Dataset, tag: int, found: set[str]) -> None:
    """Names, dates and UIDs in a private element (a vendor may copy the patient's name into
    one), recorded for path scrubbing before it is removed; a value that cannot be read, or an
    element of unknown VR, gives nothing."""
    try:
        elem = ds[tag]
        if elem.VR in ("PN", "SQ", "DA", "DT", "UI"):
            _collect_into(elem, found)
    except Exception:  # a private value pydicom cannot decode names nothing we can use
        return


def _collect_all(ds: Dataset, found: set[str]) -> None:
    """What :func:`_collect` would record for every element that :func:`deidentify` changes."""
    for tag, elem in _elements(ds):
        try:
            if elem is None:
                continue
            if Tag(tag).is_private:
                _collect_private(ds, tag, found)
                continue
            if elem.VR == "SQ":
                for item in elem.value or []:
                    _collect_all(item, found)
            elif keyword_for_tag(tag) not in ps315.UNCHANGED:
                _collect_into(elem, found)
        except Exception:  # one odd element does not hide the others
            continue


def _other_readings(elem: DataElement) -> list[str]:
    """A name's bytes read as UTF-8 and as Latin-1 too: files often carry UTF-8 names without
    saying so (no Specific Character Set), and the file system spells them as written."""
    value = elem.value
    names = value if isinstance(value, MultiValue | list | tuple) else [value]
    readings = []
    for name in names:
        raw = getattr(name, "original_string", None)
        if isinstance(raw, bytes) and any(byte > 0x7F for byte in raw):
            for codec in ("utf-8", "latin-1"):
                text = raw.decode(codec, errors="ignore").strip()
                if text:
                    readings.append(text)
    return readings


def _date_spellings(value: str) -> set[str]:
    """A DA (or the date of a DT) as file names spell it: 19710203 is also 1971-02-03,
    1971.02.03, 03.02.1971, 03/02/1971 and 02/03/1971."""
    match = _DA.match(value.strip())
    if match is None:
        return set()
    y, m, d = match.groups()
    return {f"{y}{m}{d}", f"{y}-{m}-{d}", f"{y}.{m}.{d}", f"{d}.{m}.{y}", f"{d}/{m}/{y}",
            f"{m}/{d}/{y}"}  # fmt: skip


def _name_parts(name: str) -> set[str]:
    """A person name, each of its representations and its name components and words."""
    parts = {name}
    for group in name.split("="):  # alphabetic=ideographic=phonetic
        parts.add(group)
        for component in group.split("^")[:_NAME_COMPONENTS_REPORTED]:
            parts.add(component)
            parts.update(component.split())
    return {p.strip() for p in parts if p.strip()}


def _clean_file_meta(ds: Dataset, ctx: _Context) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    for tag, elem in _elements(meta):
        if elem is None or keyword_for_tag(tag) not in ps315.FILE_META_KEEP:
            # AE titles and presentation addresses name the sending site.
            if elem is not None:
                _collect(elem, ctx)
            del meta[tag]
    if "MediaStorageSOPInstanceUID" in meta:
        # The same UID as the remapped SOP Instance UID, when the two agreed.
        _remap(meta["MediaStorageSOPInstanceUID"], ctx)


def _complete_file_meta(ds: Dataset, ctx: _Context) -> None:
    """Give the file meta what a Part-10 file needs, whatever the original lacked."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = (
        _text(ds.get("SOPClassUID"))
        or _text(meta.get("MediaStorageSOPClassUID"))
        or SecondaryCaptureImageStorage
    )
    meta.MediaStorageSOPInstanceUID = (
        _text(ds.get("SOPInstanceUID"))
        or _text(meta.get("MediaStorageSOPInstanceUID"))
        or remap_uid(f"medimg-pixel-data:{_pixel_digest(ds)}", ctx.key)
    )
    # The file is now written by pydicom, whatever wrote the original.
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]


def _pixel_digest(ds: Dataset) -> str:
    digest = hashlib.sha256()
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        value = ds.get(keyword)
        if isinstance(value, bytes | bytearray):
            digest.update(value)
    return digest.hexdigest()


def _mark_deidentified(ds: Dataset, pseudonym: str | None, retained: bool) -> None:
    ds.PatientName = pseudonym or ""
    ds.PatientID = pseudonym or ""
    ds.PatientIdentityRemoved = "YES"
    methods = [
        "DICOM PS3.15 Basic Application Level Confidentiality Profile",
        "Retain Longitudinal Temporal Information Modified Dates",
    ]
    codes = [
        ("113100", "Basic Application Confidentiality Profile"),
        ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ]
    if retained:
        methods.append("Retain Patient Characteristics")
        codes.append(("113108", "Retain Patient Characteristics Option"))
    ds.DeidentificationMethod = methods
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    ds.LongitudinalTemporalInformationModified = "MODIFIED"


def _is_retired(tag: int) -> bool:
    try:
        return dictionary_is_retired(tag)
    except KeyError:
        return False


# --- all or nothing ---------------------------------------------------------------------------


@dataclass
class _Snapshot:
    elements: list[DataElement | RawDataElement]
    file_meta: Dataset | None
    preamble: bytes | None


def _snapshot(ds: Dataset) -> _Snapshot:
    """A copy of everything :func:`deidentify` may change; the pixel data is shared, not copied
    (it is only ever replaced, never changed in place)."""
    elements: list[DataElement | RawDataElement] = []
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        if isinstance(elem, RawDataElement):
            elements.append(elem)  # immutable
        elif Tag(tag).group == 0x7FE0:
            elements.append(copy.copy(elem))
        else:
            elements.append(copy.deepcopy(elem))
    meta = getattr(ds, "file_meta", None)
    return _Snapshot(
        elements, copy.deepcopy(meta) if meta is not None else None, getattr(ds, "preamble", None)
    )


def _restore(ds: Dataset, saved: _Snapshot) -> None:
    for tag in list(ds.keys()):
        del ds[tag]
    for elem in saved.elements:
        ds[elem.tag] = elem
    if saved.file_meta is not None:
        ds.file_meta = saved.file_meta
    elif hasattr(ds, "file_meta"):
        del ds.file_meta
    ds.preamble = saved.preamble


# --- residue pass -----------------------------------------------------------------------------


class _Matcher:
    """Whether a value holds one of the identifiers, compared on letters and digits only."""

    def __init__(self, identifiers: Iterable[str]) -> None:
        squeezed = {squeeze(i) for i in identifiers}
        self.inside = {s for s in squeezed if len(s) >= _MIN_INSIDE}
        self.whole = {s for s in squeezed if _MIN_WHOLE <= len(s) < _MIN_INSIDE}

    def __call__(self, values: list[str]) -> bool:
        if not values:
            return False
        if any(squeeze(v) in self.whole for v in values):
            return True
        joined = squeeze("".join(values))
        return any(identifier in joined for identifier in self.inside)


def _clean_residue(ds: Dataset, ctx: _Context, matches: _Matcher, *, top_level: bool) -> None:
    """Remove the text values that still hold an identifier, wherever they are."""
    for tag, elem in _elements(ds):
        if elem is None:
            del ds[tag]
            continue
        group, vr = elem.tag.group, str(elem.VR)
        if group == 0x7FE0:
            continue
        if vr == "SQ":
            for item in elem.value or []:
                _clean_residue(item, ctx, matches, top_level=False)
            continue
        if vr not in ps315.RESIDUE_VRS or (group == 0x0028 and vr not in ps315.DESCRIPTION_VRS):
            continue
        keyword = keyword_for_tag(elem.tag)
        values = _residue_values(elem, keyword, ctx)
        if not matches(values):
            continue
        logger.debug("removed %s: it holds an identifying value", elem.tag)
        if group == 0x0028 or (top_level and keyword in ps315.EMPTIED_NOT_REMOVED):
            elem.value = ""
        else:
            del ds[tag]


def _residue_values(elem: DataElement, keyword: str, ctx: _Context) -> list[str]:
    """The values of ``elem`` that could name someone: those medimg did not write, less the
    standard UIDs and the terms of the character set."""
    if keyword in ps315.NEVER_CHECKED:
        return []
    if isinstance(elem.value, bytes | bytearray):
        values = [elem.value.decode("latin-1")]
    else:
        values = _values(elem)
    if keyword == "SpecificCharacterSet" and all(v in python_encoding for v in values):
        return []  # the defined terms of a character set, which decoding needs
    if elem.VR == "UI":
        values = [v for v in values if not v.startswith(ps315.STANDARD_UID_ROOT)]
    return [v for v in values if v not in ctx.written]


def _metadata_without(metadata: dict[str, str], matches: _Matcher) -> dict[str, str]:
    """``metadata`` less its values that hold an identifier; the modality becomes unknown."""
    kept = {}
    for name, value in metadata.items():
        if name == "burned_in_annotation" or not matches([value]):
            kept[name] = value
        elif name == "modality":
            kept[name] = UNKNOWN
    return kept


