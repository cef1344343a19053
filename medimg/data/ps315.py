"""DICOM PS3.15 Annex E, as tables: what de-identification does to each attribute.

:mod:`medimg.data.deid` walks a dataset and looks each element up here. Three sets of tables:

- Table E.1-1's Basic Profile column (the action per attribute), with the combined codes
  resolved and medimg's overrides, as :data:`TABLE` (and :data:`TABLE_RETAINING` under the Retain
  Patient Characteristics Option);
- for the generic pass over what the table does not list: the UIDs, text and dates kept, the
  value representations and groups removed, and the file meta kept;
- for the residue pass: the value representations checked for identifiers left behind, the
  attributes emptied rather than removed, and the dummy values medimg writes.

Keywords are pydicom's; a keyword the installed pydicom does not know is left out of
:data:`TABLE` (the generic pass still applies to its tag).
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

# UIDs under this root are defined by the standard (SOP classes, transfer syntaxes, coding
# schemes, well-known frames of reference) and cannot identify anyone.
STANDARD_UID_ROOT = "1.2.840.10008."

# --- PS3.15 Table E.1-1, Basic Profile column -------------------------------------------------
# Action codes: D dummy value, Z zero length (or dummy), X remove, K keep, U remap UID
# consistently. Combined codes depend on the IOD's attribute type, which a generic tool cannot
# know; they are resolved in RESOLVED below.
# Dates, date-times and times are deliberately absent: under the Modified Dates option (its
# column reads "C") the generic pass shifts every DA, and the date of every DT, by the patient's
# offset. Times (TM, and the time of a DT) are emptied: the table allows it for them all (Z or
# X), a classifier has no use for the time of day, and an exact time can single out a study in
# a hospital's logs. The birth date and time and the last menstrual date are listed because
# they are removed, not shifted.
BASIC_PROFILE: dict[str, str] = {
    # Patient
    "PatientName": "Z",  # replaced by the pseudonym, an allowed dummy (see OVERRIDES)
    "PatientID": "Z",  # replaced by the pseudonym (see OVERRIDES)
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
RESOLVED: dict[str, str] = {
    "Z/D": "Z",
    "X/Z": "Z",
    "X/D": "X",
    "X/Z/D": "Z",
    "X/Z/U*": "U*",
}

# PatientID: "P" replaces it with its pseudonym, a consistent dummy that keeps one patient's
# images together for patient-level splits. PatientName is emptied wherever it occurs and the
# top-level one is set to the same pseudonym at the end.
OVERRIDES: dict[str, str] = {"PatientID": "P"}

# The Retain Patient Characteristics Option keeps these (its Table E.1-1 column reads "K").
PATIENT_CHARACTERISTICS = ("PatientSex", "PatientAge", "PatientSize", "PatientWeight")

# Values worth reporting in DeidResult.identifiers, so the caller can scrub them from paths.
# Every person name, remapped UID and original date is reported as well.
IDENTIFYING = frozenset(
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
KEEP_UIDS = frozenset(
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
KEEP_TEXT = frozenset(
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
UNSHIFTED_DATES = frozenset({"ContextGroupVersion", "ContextGroupLocalVersion"})
# UIDs and dates the generic pass leaves as they are, so it reports none of them.
UNCHANGED = KEEP_UIDS | UNSHIFTED_DATES
TEXT_VRS = frozenset({"AE", "AS", "LO", "LT", "SH", "ST", "UC", "UR", "UT"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
# Image pixel, LUT and palette data (0028,xxxx) and pixel data (7FE0,xxxx) are the image.
BINARY_GROUPS = frozenset({0x0028, 0x7FE0})
# Groups removed whole: command (0000), curves (50xx), overlays (60xx, which can carry burned-in
# text), digital signatures (FFFA) and trailing padding (FFFC).
REMOVED_GROUP_PREFIXES = (0x5000, 0x6000)
REMOVED_GROUPS = frozenset({0x0000, 0xFFFA, 0xFFFC})
FILE_META_KEEP = frozenset(
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

# --- residue pass -----------------------------------------------------------------------------
# Every VR whose value is text, so can hold an identifier the passes above kept.
RESIDUE_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
     "UR", "UT"}
)  # fmt: skip
# In the image pixel group (0028) only descriptions are checked: the coded and numeric values
# there (photometric interpretation, windows, LUT descriptors) say how to decode the pixels.
DESCRIPTION_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
# Type 1 and 2 attributes of the modules every image has (Patient, General Study, General
# Series, General Equipment, General Image, SOP Common): emptied, not removed, when they match,
# so the file keeps its structure.
EMPTIED_NOT_REMOVED = frozenset(
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
# Needed to decode anything at all; standard or private, it names a syntax, not a patient.
NEVER_CHECKED = frozenset({"TransferSyntaxUID"})
DUMMIES = {"PN": "ANONYMOUS", "TM": "000000", "IS": "0", "DS": "0", "AS": "000Y"}
DUMMY_TEXT = "ANONYMIZED"


def _resolve_table(retain_patient_characteristics: bool) -> dict[int, str]:
    table: dict[int, str] = {}
    for keyword, code in BASIC_PROFILE.items():
        tag = tag_for_keyword(keyword)
        if tag is None:  # a keyword this pydicom does not know; the generic pass still applies
            continue
        action = OVERRIDES.get(keyword, RESOLVED.get(code, code))
        if retain_patient_characteristics and keyword in PATIENT_CHARACTERISTICS:
            action = "K"
        table[tag] = action
    return table


TABLE = _resolve_table(retain_patient_characteristics=False)
"""Action per tag: X remove, Z empty, D dummy, U remap a UID, U* clean a reference sequence,
K keep, P the pseudonym."""
TABLE_RETAINING = _resolve_table(retain_patient_characteristics=True)
""":data:`TABLE` under the Retain Patient Characteristics Option."""
