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

The pixel data is not re-encoded. Encapsulated frames are cleaned of the metadata their own
format can carry:

- JPEG (8- and 12-bit), JPEG Lossless and JPEG-LS frames lose their APPn segments (EXIF, XMP,
  ICC, SPIFF, vendor notes; JFIF and Adobe stay, without thumbnail), their comments, any table
  no scan uses and anything after their end of image, through
  :func:`medimg.data.pixels_only.strip_jpeg`. Of JPEG-LS's own LSE segments only the preset
  coding parameters stay, at their fixed length; a mapping table, whose unused entries could
  hold text, makes the dataset fail. So does any frame that cannot be walked this way: it is
  quarantined rather than stored.
- JPEG 2000 and HTJ2K frames lose their comment (COM) segments, from the main header and from
  tile-part headers (whose lengths are rewritten). A frame wrapped in JP2 boxes, which DICOM
  forbids and whose boxes can carry XML, or a tile-part comment beside a TLM table of tile-part
  lengths, makes the dataset fail.
- RLE frames carry no metadata. Video (MPEG, HEVC) is not looked into: its user data is kept.

Frames of a syntax that no installed pydicom plugin decodes are left as they are: medimg cannot
decode such a dataset, so never stores it (ingest stores only what
:func:`medimg.data.images.decode_deidentified` has read), and it is reported as unsupported,
which names the plugin missing, rather than as not de-identifiable.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import logging
import os
import re
import struct
from collections.abc import Callable, Iterable, Iterator
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
    tag_for_keyword,
)
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, SecondaryCaptureImageStorage

from medimg.data.pixels_only import NotStrippable, strip_jpeg
from medimg.errors import DataError
from medimg.phi import squeeze

logger = logging.getLogger(__name__)

KEY_ENV = "MEDIMG_PSEUDONYM_KEY"
MIN_KEY_LENGTH = 16
_KEY_HOWTO = (
    f'create one with `export {KEY_ENV}=$(python -c "import secrets; '
    f'print(secrets.token_hex(32))")` and keep it the same for every ingest of this workspace '
    "(pseudonyms, and so the splits, depend on it)"
)

# Shifts are always into the past and never zero, so a shifted date is never the real one.
_MAX_SHIFT_DAYS = 3650
# The date-shift HMAC is domain-separated from the pseudonym HMAC: otherwise anyone holding a
# pseudonym (it is in the manifest) could compute the offset and undo the shift.
_DATE_SHIFT_DOMAIN = b"medimg/date-shift/v1\x00"
# UIDs under this root are defined by the standard (SOP classes, transfer syntaxes, coding
# schemes, well-known frames of reference) and cannot identify anyone.
_STANDARD_UID_ROOT = "1.2.840.10008."

# --- PS3.15 Table E.1-1, Basic Profile column -------------------------------------------------
# Action codes: D dummy value, Z zero length (or dummy), X remove, K keep, U remap UID
# consistently. Combined codes depend on the IOD's attribute type, which a generic tool cannot
# know; they are resolved in _RESOLVED below.
# Dates, date-times and times are deliberately absent: under the Modified Dates option (its
# column reads "C") the generic pass shifts every DA, and the date of every DT, by the patient's
# offset. Times (TM, and the time of a DT) are emptied: the table allows it for them all (Z or
# X), a classifier has no use for the time of day, and an exact time can single out a study in
# a hospital's logs. The birth date and time and the last menstrual date are listed because
# they are removed, not shifted.
_BASIC_PROFILE: dict[str, str] = {
    # Patient
    "PatientName": "Z",  # replaced by the pseudonym, an allowed dummy (see _OVERRIDES)
    "PatientID": "Z",  # replaced by the pseudonym (see _OVERRIDES)
    "IssuerOfPatientID": "X",
    "PatientBirthDate": "Z",
    "PatientBirthTime": "X",
    "PatientSex": "Z",
    "PatientInsurancePlanCodeSequence": "X",
    "PatientPrimaryLanguageCodeSequence": "X",
    "PatientPrimaryLanguageModifierCodeSequence": "X",
    "OtherPatientIDs": "X",
    "OtherPatientNames": "X",
    "OtherPatientIDsSequence": "X",
    "PatientBirthName": "X",
    "PatientAge": "X",
    "PatientSize": "X",
    "PatientWeight": "X",
    "PatientAddress": "X",
    "InsurancePlanIdentification": "X",
    "PatientMotherBirthName": "X",
    "MilitaryRank": "X",
    "BranchOfService": "X",
    "MedicalRecordLocator": "X",
    "ReferencedPatientPhotoSequence": "X",
    "MedicalAlerts": "X",
    "Allergies": "X",
    "CountryOfResidence": "X",
    "RegionOfResidence": "X",
    "PatientTelephoneNumbers": "X",
    "PatientTelecomInformation": "X",
    "EthnicGroup": "X",
    "Occupation": "X",
    "SmokingStatus": "X",
    "AdditionalPatientHistory": "X",
    "PregnancyStatus": "X",
    "LastMenstrualDate": "X",
    "PatientReligiousPreference": "X",
    "PatientSexNeutered": "X/Z",
    "ResponsiblePerson": "X",
    "ResponsibleOrganization": "X",
    "PatientComments": "X",
    "ReferencedPatientSequence": "X",
    "ReferencedPatientAliasSequence": "X",
    "PatientState": "X",
    "PatientTransportArrangements": "X",
    "SpecialNeeds": "X",
    # Visit and admission
    "AdmissionID": "X",
    "IssuerOfAdmissionID": "X",
    "AdmittingDiagnosesDescription": "X",
    "AdmittingDiagnosesCodeSequence": "X",
    "DischargeDiagnosisDescription": "X",
    "ServiceEpisodeID": "X",
    "IssuerOfServiceEpisodeID": "X",
    "ServiceEpisodeDescription": "X",
    "CurrentPatientLocation": "X",
    "PatientInstitutionResidence": "X",
    "ScheduledPatientInstitutionResidence": "X",
    "VisitComments": "X",
    # Study, request and procedure steps
    "AccessionNumber": "Z",
    "StudyID": "Z",
    "StudyIDIssuer": "X",
    "StudyDescription": "X",
    "StudyComments": "X",
    "SeriesDescription": "X",
    "ReasonForStudy": "X",
    "RequestingPhysician": "X",
    "RequestingService": "X",
    "RequestedProcedureDescription": "X/Z",
    "RequestedContrastAgent": "X",
    "RequestedProcedureID": "X",
    "RequestedProcedureLocation": "X",
    "RequestedProcedureComments": "X",
    "RequestAttributesSequence": "X",
    "ReasonForTheImagingServiceRequest": "X",
    "ImagingServiceRequestComments": "X",
    "PlacerOrderNumberImagingServiceRequest": "Z",
    "FillerOrderNumberImagingServiceRequest": "Z",
    "OrderEnteredBy": "X",
    "OrderEntererLocation": "X",
    "OrderCallbackPhoneNumber": "X",
    "ConfidentialityConstraintOnPatientDataDescription": "X",
    "NamesOfIntendedRecipientsOfResults": "X",
    "IntendedRecipientsOfResultsIdentificationSequence": "X",
    "ScheduledStudyLocation": "X",
    "ScheduledStudyLocationAETitle": "X",
    "ScheduledStationAETitle": "X",
    "ScheduledPerformingPhysicianName": "X",
    "ScheduledPerformingPhysicianIdentificationSequence": "X",
    "ScheduledProcedureStepDescription": "X",
    "ScheduledProcedureStepID": "X",
    "ScheduledStationName": "X",
    "ScheduledProcedureStepLocation": "X",
    "ScheduledStationNameCodeSequence": "X",
    "ScheduledStationGeographicLocationCodeSequence": "X",
    "ScheduledHumanPerformersSequence": "X",
    "PreMedication": "X",
    "PerformedStationAETitle": "X",
    "PerformedStationName": "X",
    "PerformedLocation": "X",
    "PerformedProcedureStepID": "X",
    "PerformedProcedureStepDescription": "X",
    "PerformedStationNameCodeSequence": "X",
    "PerformedStationGeographicLocationCodeSequence": "X",
    "CommentsOnThePerformedProcedureStep": "X",
    "ActualHumanPerformersSequence": "X",
    "HumanPerformerOrganization": "X",
    "HumanPerformerName": "X",
    "ReferencedStudySequence": "X/Z",
    "ReferencedPerformedProcedureStepSequence": "X/Z/D",
    "AcquisitionContextSequence": "X",
    "TimezoneOffsetFromUTC": "X",
    # Institution, people and equipment
    "InstitutionName": "X/Z/D",
    "InstitutionAddress": "X",
    "InstitutionCodeSequence": "X/Z/D",
    "InstitutionalDepartmentName": "X",
    "InstitutionalDepartmentTypeCodeSequence": "X",
    "ReferringPhysicianName": "Z",
    "ReferringPhysicianAddress": "X",
    "ReferringPhysicianTelephoneNumbers": "X",
    "ReferringPhysicianIdentificationSequence": "X",
    "ConsultingPhysicianName": "X",
    "ConsultingPhysicianIdentificationSequence": "X",
    "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X",
    "PerformingPhysicianName": "X",
    "PerformingPhysicianIdentificationSequence": "X",
    "NameOfPhysiciansReadingStudy": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X",
    "OperatorsName": "X/Z/D",
    "OperatorIdentificationSequence": "X/D",
    "PersonName": "D",
    "PersonAddress": "X",
    "PersonTelephoneNumbers": "X",
    "PersonIdentificationCodeSequence": "D",
    "StationName": "X/Z/D",
    "DeviceSerialNumber": "X/Z/D",
    "DeviceDescription": "X",
    "DetectorID": "X/D",
    "PlateID": "X",
    "CassetteID": "X",
    "GantryID": "X",
    "GeneratorID": "X",
    "ModifyingDeviceID": "X",
    "ModifyingDeviceManufacturer": "X",
    "ModifiedImageDescription": "X",
    "ProtocolName": "X/D",
    "AcquisitionDeviceProcessingDescription": "X/D",
    "AcquisitionComments": "X",
    "AcquisitionProtocolDescription": "X",
    "ContributionDescription": "X",
    "ContrastBolusAgent": "Z/D",
    # Image and content comments
    "IdentifyingComments": "X",
    "ImageComments": "X",
    "FrameComments": "X",
    "ImagePresentationComments": "X",
    "DerivationDescription": "X",
    "IconImageSequence": "X",
    "TextString": "X",
    "TextComments": "X",
    "Arbitrary": "X",
    "ContentCreatorName": "Z",
    "ContentCreatorIdentificationCodeSequence": "X",
    "GraphicAnnotationSequence": "D",
    "ContentSequence": "X",
    "VerifyingObserverName": "D",
    "VerifyingObserverSequence": "D",
    "VerifyingObserverIdentificationCodeSequence": "Z",
    "VerifyingOrganization": "X",
    "AuthorObserverSequence": "X",
    "ParticipantSequence": "X",
    "CustodialOrganizationSequence": "X",
    "ReviewerName": "X/Z",
    "TopicTitle": "X",
    "TopicSubject": "X",
    "TopicAuthor": "X",
    "TopicKeywords": "X",
    # Interpretation and results (retired)
    "ResultsIDIssuer": "X",
    "InterpretationRecorder": "X",
    "InterpretationTranscriber": "X",
    "InterpretationText": "X",
    "InterpretationAuthor": "X",
    "InterpretationApproverSequence": "X",
    "PhysicianApprovingInterpretation": "X",
    "InterpretationDiagnosisDescription": "X",
    "ResultsDistributionListSequence": "X",
    "DistributionName": "X",
    "DistributionAddress": "X",
    "InterpretationIDIssuer": "X",
    "Impressions": "X",
    "ResultsComments": "X",
    # Signatures and audit trails: they reference or carry the original values
    "DigitalSignatureUID": "X",
    "DigitalSignaturesSequence": "X",
    "ReferencedDigitalSignatureSequence": "X",
    "ReferencedSOPInstanceMACSequence": "X",
    "MAC": "X",
    "ModifiedAttributesSequence": "X",
    "OriginalAttributesSequence": "X",
    "DataSetTrailingPadding": "X",
    # Identifying UIDs
    "StudyInstanceUID": "U",
    "SeriesInstanceUID": "U",
    "SOPInstanceUID": "U",
    "FrameOfReferenceUID": "U",
    "SynchronizationFrameOfReferenceUID": "U",
    "ReferencedFrameOfReferenceUID": "U",
    "RelatedFrameOfReferenceUID": "U",
    "SourceFrameOfReferenceUID": "U",
    "ReferencedSOPInstanceUID": "U",
    "ReferencedSOPInstanceUIDInFile": "U",
    "IrradiationEventUID": "U",
    "InstanceCreatorUID": "U",
    "AcquisitionUID": "U",
    "PyramidUID": "U",
    "FailedSOPInstanceUIDList": "U",
    "ContextGroupExtensionCreatorUID": "U",
    "TransactionUID": "U",
    "CreatorVersionUID": "U",
    "DeviceUID": "U",
    "ConcatenationUID": "U",
    "DimensionOrganizationUID": "U",
    "PaletteColorLookupTableUID": "U",
    "LargePaletteColorLookupTableUID": "U",
    "DoseReferenceUID": "U",
    "FiducialUID": "U",
    "StorageMediaFileSetUID": "U",
    "TemplateExtensionOrganizationUID": "U",
    "TemplateExtensionCreatorUID": "U",
    "ReferencedGeneralPurposeScheduledProcedureStepTransactionUID": "U",
    "UID": "U",
    "TrackingUID": "U",
    "TrackingID": "X",
    # Sequences that only reference other instances: kept, with their UIDs remapped
    "ReferencedImageSequence": "X/Z/U*",
    "SourceImageSequence": "X/Z/U*",
}

# Combined codes, resolved without knowing the IOD. Zero length is valid for Type 2 and Type 3
# attributes, so it is the safe choice where the table allows it; the X/D attributes are Type 3
# in the image IODs, so they are removed; U* keeps a reference sequence and remaps its UIDs.
_RESOLVED: dict[str, str] = {
    "Z/D": "Z",
    "X/Z": "Z",
    "X/D": "X",
    "X/Z/D": "Z",
    "X/Z/U*": "U*",
}

# PatientID: "P" replaces it with its pseudonym, a consistent dummy that keeps one patient's
# images together for patient-level splits. PatientName is emptied wherever it occurs and the
# top-level one is set to the same pseudonym at the end.
_OVERRIDES: dict[str, str] = {"PatientID": "P"}

# The Retain Patient Characteristics Option keeps these (its Table E.1-1 column reads "K").
_PATIENT_CHARACTERISTICS = ("PatientSex", "PatientAge", "PatientSize", "PatientWeight")

# Values worth reporting in DeidResult.identifiers, so the caller can scrub them from paths.
# Every person name, remapped UID and original date is reported as well.
_IDENTIFYING = frozenset(
    {
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "MedicalRecordLocator",
        "AccessionNumber",
        "StudyID",
        "StudyIDIssuer",
        "AdmissionID",
        "IssuerOfAdmissionID",
        "ServiceEpisodeID",
        "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest",
        "RequestedProcedureID",
        "ScheduledProcedureStepID",
        "PerformedProcedureStepID",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "PersonAddress",
        "PersonTelephoneNumbers",
        "ResponsibleOrganization",
        "StationName",
        "ScheduledStationName",
        "PerformedStationName",
        "DeviceSerialNumber",
        "DetectorID",
        "PlateID",
        "CassetteID",
        "GantryID",
        "GeneratorID",
        "TrackingID",
    }
)

# --- generic pass -----------------------------------------------------------------------------
# UIDs that name a kind of thing (class, syntax, scheme), not an instance, so they are kept.
_KEEP_UIDS = frozenset(
    {
        "SOPClassUID",
        "MediaStorageSOPClassUID",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "ReferencedSOPClassUID",
        "ReferencedSOPClassUIDInFile",
        "ReferencedTransferSyntaxUIDInFile",
        "RelatedGeneralSOPClassUID",
        "OriginalSpecializedSOPClassUID",
        "SOPClassesInStudy",
        "CodingSchemeUID",
        "ContextUID",
        "MappingResourceUID",
        "ManufacturerDeviceClassUID",
    }
)
# Free text that describes the acquisition or a code, never the patient. Everything else in a
# text VR is removed, which mirrors the profile's "clean" conservatively.
_KEEP_TEXT = frozenset(
    {
        "Manufacturer",
        "ManufacturerModelName",
        "RescaleType",
        "WindowCenterWidthExplanation",
        "LUTExplanation",
        "ModalityLUTType",
        "ConvolutionKernel",
        "SequenceName",
        "ImagedNucleus",
        "FilterType",
        "CodeValue",
        "CodingSchemeDesignator",
        "CodingSchemeVersion",
        "CodeMeaning",
        "LongCodeValue",
        "URNCodeValue",
        "MappingResourceName",
    }
)
# Versions of coding resources, not events in a patient's care.
_UNSHIFTED_DATES = frozenset({"ContextGroupVersion", "ContextGroupLocalVersion"})
# UIDs and dates the generic pass leaves as they are, so it reports none of them.
_UNCHANGED = _KEEP_UIDS | _UNSHIFTED_DATES
_TEXT_VRS = frozenset({"AE", "AS", "LO", "LT", "SH", "ST", "UC", "UR", "UT"})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
# Image pixel, LUT and palette data (0028,xxxx) and pixel data (7FE0,xxxx) are the image.
_BINARY_GROUPS = frozenset({0x0028, 0x7FE0})
# Groups removed whole: command (0000), curves (50xx), overlays (60xx, which can carry burned-in
# text), digital signatures (FFFA) and trailing padding (FFFC).
_REMOVED_GROUP_PREFIXES = (0x5000, 0x6000)
_REMOVED_GROUPS = frozenset({0x0000, 0xFFFA, 0xFFFC})
_FILE_META_KEEP = frozenset(
    {
        "FileMetaInformationGroupLength",
        "FileMetaInformationVersion",
        "MediaStorageSOPClassUID",
        "MediaStorageSOPInstanceUID",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "ImplementationVersionName",
    }
)
# Name components after the middle name are prefixes and suffixes ("DR", "JR"), not identifying.
_NAME_COMPONENTS_REPORTED = 3

# --- residue pass -----------------------------------------------------------------------------
# Every VR whose value is text, so can hold an identifier the passes above kept.
_RESIDUE_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
     "UR", "UT"}
)  # fmt: skip
# In the image pixel group (0028) only descriptions are checked: the coded and numeric values
# there (photometric interpretation, windows, LUT descriptors) say how to decode the pixels.
_DESCRIPTION_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
# Type 1 and 2 attributes of the modules every image has (Patient, General Study, General
# Series, General Equipment, General Image, SOP Common): emptied, not removed, when they match,
# so the file keeps its structure.
_EMPTIED_NOT_REMOVED = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "StudyID",
        "AccessionNumber",
        "Modality",
        "SeriesInstanceUID",
        "SeriesNumber",
        "Laterality",
        "Manufacturer",
        "InstanceNumber",
        "PatientOrientation",
        "ImageType",
        "SOPClassUID",
        "SOPInstanceUID",
    }
)
# Identifiers with this many letters and digits are looked for inside values, whatever the
# separators (the threshold of medimg.phi's Scrubber); shorter ones only as a whole value, and
# a single character identifies no one.
_MIN_INSIDE = 4
_MIN_WHOLE = 2
# Needed to decode anything at all; standard or private, it names a syntax, not a patient.
_NEVER_CHECKED = frozenset({"TransferSyntaxUID"})
_DUMMIES = {"PN": "ANONYMOUS", "TM": "000000", "IS": "0", "DS": "0", "AS": "000Y"}
_DUMMY_TEXT = "ANONYMIZED"

# --- encapsulated frames ----------------------------------------------------------------------
# Transfer syntaxes whose frames are JPEG-style streams of marker segments: JPEG Baseline,
# Extended, Lossless (and SV1), JPEG-LS, and the retired JPEG processes.
_JPEG_SYNTAXES = frozenset(
    f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 57, 70, 80, 81, *range(52, 57), *range(58, 67))
)
# JPEG 2000 (Part 1 and Part 2 multi-component) and High-Throughput JPEG 2000 codestreams.
_J2K_SYNTAXES = frozenset(f"1.2.840.10008.1.2.4.{n}" for n in (90, 91, 92, 93, 201, 202, 203))
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_SOC, _J2K_SIZ, _J2K_TLM, _J2K_COM = 0xFF4F, 0xFF51, 0xFF55, 0xFF64
_J2K_SOT, _J2K_SOD, _J2K_EOC = 0xFF90, 0xFF93, 0xFFD9


def _resolve_table(retain_patient_characteristics: bool) -> dict[int, str]:
    table: dict[int, str] = {}
    for keyword, code in _BASIC_PROFILE.items():
        tag = tag_for_keyword(keyword)
        if tag is None:  # a keyword this pydicom does not know; the generic pass still applies
            continue
        action = _OVERRIDES.get(keyword, _RESOLVED.get(code, code))
        if retain_patient_characteristics and keyword in _PATIENT_CHARACTERISTICS:
            action = "K"
        table[tag] = action
    return table


_TABLE = _resolve_table(retain_patient_characteristics=False)
_TABLE_RETAINING = _resolve_table(retain_patient_characteristics=True)


UNKNOWN = "unknown"
"""A ``metadata`` value the dataset does not state (no Modality, no Burned In Annotation)."""
BURNED_IN_STATES = ("yes", "no", UNKNOWN)
"""``metadata["burned_in_annotation"]``: Burned In Annotation YES or NO, or anything else."""


class PseudonymKeyMissing(DataError):
    """No usable pseudonymisation key in ``MEDIMG_PSEUDONYM_KEY`` (unset, empty or too short)."""


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


def pseudonym_key(
    *, required: bool, reason: str = "DICOM files carry patient ids and names"
) -> bytes | None:
    """Read the pseudonymisation key from ``MEDIMG_PSEUDONYM_KEY``.

    Args:
        required: raise when the variable is unset or empty, instead of returning None.
        reason: what needs the key, for the start of the error message.

    Returns:
        The key as UTF-8 bytes, or None when it is absent and not required.

    Raises:
        PseudonymKeyMissing: the key is required but absent, or set but shorter than 16 characters.
    """
    value = os.environ.get(KEY_ENV, "").strip()
    if not value:
        if required:
            raise PseudonymKeyMissing(
                f"{reason}, so ingest needs a pseudonymisation key in {KEY_ENV}: {_KEY_HOWTO}"
            )
        return None
    if len(value) < MIN_KEY_LENGTH:
        # The key's length and value stay out of the message: it is a secret.
        raise PseudonymKeyMissing(
            f"{KEY_ENV} is shorter than {MIN_KEY_LENGTH} characters, too short to keep "
            f"pseudonyms from being guessed; {_KEY_HOWTO}"
        )
    return value.encode("utf-8")


def pseudonymise(original: str, key: bytes) -> str:
    """Keyed, deterministic pseudonym: ``"p-"`` and 16 hex characters of HMAC-SHA256."""
    _check_key(key)
    digest = hmac.new(key, original.strip().encode("utf-8"), hashlib.sha256).hexdigest()
    return f"p-{digest[:16]}"


def deidentify(
    ds: Dataset, key: bytes, *, retain_patient_characteristics: bool = False
) -> DeidResult:
    """De-identify ``ds`` in place per PS3.15 Annex E (Basic Profile, Modified Dates Option).

    The pixel values are untouched: encapsulated frames lose the metadata segments of their
    format (see the module docstring) without being re-encoded. Burned-in text in the pixels is
    not removed, only reported through ``burned_in_annotation`` and, with an absent or unexpected
    Burned In Annotation reported as ``unknown`` rather than as NO, through ``metadata``. The
    file meta always ends up with the SOP class and instance UIDs a Part-10 file needs.

    Args:
        ds: the dataset, with its ``file_meta`` if it has one.
        key: the pseudonymisation key (see :func:`pseudonym_key`).
        retain_patient_characteristics: keep sex, age, size and weight (Retain Patient
            Characteristics Option) and report sex and age in ``metadata``.

    Returns:
        The result, whose ``dataset`` is ``ds`` itself.

    Raises:
        NotDeidentifiable: an encapsulated frame cannot be cleaned. On this or any other error
            ``ds`` is left as it was, so :func:`collect_identifiers` still finds what it names.
    """
    _check_key(key)
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
    _strip_frame_metadata(ds)
    patient_id = _text(ds.get("PatientID"))
    pseudonym = pseudonymise(patient_id, key) if patient_id else None
    # Without a patient id the offset follows whatever still groups the images best.
    anchor = patient_id or _text(ds.get("PatientName")) or _text(ds.get("StudyInstanceUID"))
    ctx = _Context(
        key=key,
        table=_TABLE_RETAINING if retain_patient_characteristics else _TABLE,
        day_offset=_day_offset(anchor, key),
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


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or not key:
        raise ValueError(f"the pseudonym key must be non-empty bytes; set {KEY_ENV}")


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


def _day_offset(anchor: str, key: bytes) -> int:
    digest = hmac.new(key, _DATE_SHIFT_DOMAIN + anchor.encode("utf-8"), hashlib.sha256).digest()
    return -(1 + int.from_bytes(digest[:8], "big") % _MAX_SHIFT_DAYS)


def _remap_uid(uid: str, key: bytes) -> str:
    digest = hmac.new(key, uid.strip().rstrip("\x00").encode("ascii", "replace"), hashlib.sha256)
    # 2.25 is the root for UUID-derived UIDs; 128 bits give at most 44 characters.
    return f"2.25.{int.from_bytes(digest.digest()[:16], 'big')}"


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
            or group in _REMOVED_GROUPS
            or (group & 0xFF00) in _REMOVED_GROUP_PREFIXES
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
        if keyword not in _UNSHIFTED_DATES:
            _shift(ds, elem, ctx)
    elif vr == "TM":
        _empty(elem, ctx)
    elif vr == "UI":
        if keyword not in _KEEP_UIDS:
            _remap(elem, ctx)
    elif vr in _TEXT_VRS:
        if keyword not in _KEEP_TEXT:
            _remove(ds, elem, ctx)
    elif vr == "CS" and elem.tag.group not in _BINARY_GROUPS and _is_retired(elem.tag):
        # ACR-NEMA and trial-era codes, some of them identifiers (Source Image IDs, Modified
        # Image ID); those of the pixel group describe its old compression and are kept.
        _remove(ds, elem, ctx)
    elif vrs & _BINARY_VRS and (elem.tag.group not in _BINARY_GROUPS or "UN" in vrs):
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
    elif elem.VR in _TEXT_VRS or elem.VR in ("PN", "CS", "DA", "DT", "TM", "UI", "IS", "DS"):
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
        if vr in _DUMMIES:
            elem.value = _DUMMIES[vr]
        elif vr in _TEXT_VRS or vr == "CS":
            elem.value = _DUMMY_TEXT
        else:
            del ds[elem.tag]
            return
        ctx.written.add(_DUMMIES.get(vr, _DUMMY_TEXT))


def _remap(elem: DataElement, ctx: _Context) -> None:
    _collect(elem, ctx)
    new = [
        uid if uid.startswith(_STANDARD_UID_ROOT) else _remap_uid(uid, ctx.key)
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
        found.update(v for v in values if not v.startswith(_STANDARD_UID_ROOT))
    elif vr in ("DA", "DT"):
        found.update(values)
        for value in values:
            found.update(_date_spellings(value))
    elif keyword_for_tag(elem.tag) in _IDENTIFYING:
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
            elif keyword_for_tag(tag) not in _UNCHANGED:
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
        if elem is None or keyword_for_tag(tag) not in _FILE_META_KEEP:
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
        or _remap_uid(f"medimg-pixel-data:{_pixel_digest(ds)}", ctx.key)
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
        if vr not in _RESIDUE_VRS or (group == 0x0028 and vr not in _DESCRIPTION_VRS):
            continue
        keyword = keyword_for_tag(elem.tag)
        values = _residue_values(elem, keyword, ctx)
        if not matches(values):
            continue
        logger.debug("removed %s: it holds an identifying value", elem.tag)
        if group == 0x0028 or (top_level and keyword in _EMPTIED_NOT_REMOVED):
            elem.value = ""
        else:
            del ds[tag]


def _residue_values(elem: DataElement, keyword: str, ctx: _Context) -> list[str]:
    """The values of ``elem`` that could name someone: those medimg did not write, less the
    standard UIDs and the terms of the character set."""
    if keyword in _NEVER_CHECKED:
        return []
    if isinstance(elem.value, bytes | bytearray):
        values = [elem.value.decode("latin-1")]
    else:
        values = _values(elem)
    if keyword == "SpecificCharacterSet" and all(v in python_encoding for v in values):
        return []  # the defined terms of a character set, which decoding needs
    if elem.VR == "UI":
        values = [v for v in values if not v.startswith(_STANDARD_UID_ROOT)]
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


# --- encapsulated frames ----------------------------------------------------------------------


def _strip_frame_metadata(ds: Dataset) -> None:
    """Rewrite each encapsulated frame without the metadata segments of its format."""
    syntax = _text(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None))
    strip: Callable[[bytes], bytes]
    if syntax in _JPEG_SYNTAXES:
        strip = strip_jpeg
    elif syntax in _J2K_SYNTAXES:
        strip = _strip_j2k
    else:
        return
    if "PixelData" not in ds or not _decodable(syntax):
        return
    data = ds.PixelData
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        expected = int(ds.get("NumberOfFrames") or 1)
        frames = list(generate_frames(data, number_of_frames=expected, extended_offsets=extended))
    except Exception:
        raise NotDeidentifiable("the encapsulated pixel data cannot be split into frames") from None
    if len(frames) != expected:
        raise NotDeidentifiable(
            f"the encapsulated pixel data holds {len(frames)} frames, not {expected}"
        )
    try:
        stripped = [strip(frame) for frame in frames]
    except Exception as exc:  # NotStrippable, or a parser error on a malformed frame
        reason = str(exc) if isinstance(exc, NotStrippable) else type(exc).__name__
        raise NotDeidentifiable(
            f"a frame of the pixel data cannot be cleaned of its metadata segments ({reason})"
        ) from None
    if stripped == frames:
        return
    if extended is not None:
        data, offsets, lengths = encapsulate_extended(stripped)
        ds.ExtendedOffsetTable = offsets
        ds.ExtendedOffsetTableLengths = lengths
    else:
        data = encapsulate(stripped)
    ds.PixelData = data
    ds["PixelData"].is_undefined_length = True


def _decodable(syntax: str) -> bool:
    try:
        return bool(get_decoder(syntax).is_available)
    except NotImplementedError:
        return False


def _strip_j2k(data: bytes) -> bytes:
    """A JPEG 2000 codestream without its comment (COM) segments.

    Raises:
        NotStrippable: JP2 boxes instead of a bare codestream, a structure this walk does not
            follow, or a tile-part comment whose removal would need the TLM table rewritten.
    """
    if data.startswith(_JP2_SIGNATURE):
        raise NotStrippable("JPEG 2000 frame in JP2 boxes")
    if struct.pack(">H", _J2K_COM) not in data:
        return data  # no comment anywhere: nothing to walk for
    if _marker(data, 0) != _J2K_SOC or _marker(data, 2) != _J2K_SIZ:
        raise NotStrippable("not a JPEG 2000 codestream")
    out = [data[:2]]
    position, has_tlm = 2, False
    while (marker := _marker(data, position)) != _J2K_SOT:  # main header
        end = _segment_end(data, position, len(data))
        has_tlm |= marker == _J2K_TLM
        if marker != _J2K_COM:
            out.append(data[position:end])
        position = end
    while _marker(data, position) == _J2K_SOT:
        if position + 12 > len(data) or struct.unpack_from(">H", data, position + 2)[0] != 10:
            raise NotStrippable("JPEG 2000 SOT segment of unexpected length")
        (length,) = struct.unpack_from(">I", data, position + 6)
        end = position + length if length else data.rfind(struct.pack(">H", _J2K_EOC))
        if end < position + 12 or end > len(data):
            raise NotStrippable("JPEG 2000 tile-part runs past the frame")
        header, removed, cursor = [], 0, position + 12
        while _marker(data, cursor) != _J2K_SOD:  # tile-part header
            segment_end = _segment_end(data, cursor, end)
            if _marker(data, cursor) == _J2K_COM:
                removed += segment_end - cursor
            else:
                header.append(data[cursor:segment_end])
            cursor = segment_end
        if removed and has_tlm:
            raise NotStrippable("JPEG 2000 tile-part comment beside a TLM table")
        sot = bytearray(data[position : position + 12])
        if length:
            struct.pack_into(">I", sot, 6, length - removed)
        out += [bytes(sot), *header, data[cursor:end]]
        position = end
    if _marker(data, position) != _J2K_EOC:
        raise NotStrippable("JPEG 2000 codestream without EOC")
    out.append(data[position : position + 2])
    return b"".join(out)


def _marker(data: bytes, position: int) -> int:
    if position + 2 > len(data):
        raise NotStrippable("JPEG 2000 codestream ends early")
    (marker,) = struct.unpack_from(">H", data, position)
    if marker < 0xFF00:
        raise NotStrippable("JPEG 2000 marker expected")
    return marker


def _segment_end(data: bytes, position: int, limit: int) -> int:
    if position + 4 > limit:
        raise NotStrippable("JPEG 2000 segment runs past its end")
    (length,) = struct.unpack_from(">H", data, position + 2)
    end = position + 2 + length
    if length < 2 or end > limit:
        raise NotStrippable("JPEG 2000 segment runs past its end")
    return end
