from __future__ import annotations

import io
import logging
import re
import struct
from datetime import date

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
)
from support.dicoms import write_dicom

from medimg.data import deid
from medimg.data.deid import NotDeidentifiable, collect_identifiers, deidentify
from medimg.data.images import UndecodableImage, decode_deidentified, read_dicom
from medimg.data.pseudonyms import pseudonymise, remap_uid
from medimg.phi import Scrubber

KEY = b"unit-test-key-0123456789abcdef"


def _pseudonym(value: str) -> str:
    return pseudonymise(value, KEY)


OTHER_KEY = b"another-key-fedcba9876543210"
ROOT = "1.2.826.0.1.3680043.8.498.7731."

# Distinctive made-up PHI: letters outside the hex alphabet so no pseudonym or new UID can
# contain one of them by chance.
PHI = {
    "PatientName": "ZQFAMILY^QXGIVEN^WQMIDDLE",
    "PatientID": "MRN-ZX-774411",
    "OtherPatientIDs": "OLDMRN-QQ-1234",
    "PatientBirthDate": "19580923",
    "PatientAddress": "77 Wisteria Lanez^Fairviewq",
    "InstitutionName": "Mercy Zyx Hospital",
    "ReferringPhysicianName": "REFDOCZ^ALBERTQ",
    "PerformingPhysicianName": "PERFDOCZ^BEATRIXQ",
    "OperatorsName": "OPERATORZ^CYRILQ",
    "AccessionNumber": "ACCZ-99812",
    "StationName": "STATIONZ-XR4",
    "DeviceSerialNumber": "SERIALZ-55102",
    "StudyID": "STUDYZ-4410",
    "StudyDescription": "CHEST FOR ZQFAMILY",
    "StudyTime": "093012.5",
}
DATES = {"StudyDate": "20210317", "SeriesDate": "20210318", "ContentDate": "20210320"}
ACQUISITION_DATETIME = "20210319101500.5+0100"
UIDS = {
    "StudyInstanceUID": ROOT + "1",
    "SeriesInstanceUID": ROOT + "2",
    "SOPInstanceUID": ROOT + "3",
    "FrameOfReferenceUID": ROOT + "4",
}
REFERENCED_PATIENT_UID = ROOT + "5"
REFERENCED_IMAGE_UID = ROOT + "6"
NESTED = {
    "RequestedProcedureID": "REQZ-PROC-881",
    "ScheduledProcedureStepID": "SPSZ-STEP-442",
    "RequestingPhysician": "REQDOCZ^GRETAQ",
    "EvaluatorName": "EVALZ^DORAQ",
    "PrivateCreator": "ACME HOSPZ",
    "PrivateIdentifier": "PRIVZ-ID-0042",
    "OverlayDescription": "OVERLAYZ QNOTE",
    "OverlayComments": "OVERLAYZ COMMENT QXGIVEN",
    "Preamble": "PREAMBLEZ ZQFAMILY",
    "SourceApplicationEntityTitle": "ZQPACS",
}


def _pixels() -> np.ndarray:
    # A ramp: 12-bit values whose high bytes are all < 0x10, so no text appears in the pixels.
    return (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 3) % 4096


def _phi_dataset(**overrides: str) -> Dataset:
    """An in-memory DX image carrying PHI at the top level, in sequences and in private tags."""
    values = {**PHI, **DATES, **UIDS, **overrides}
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = values["SOPInstanceUID"]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = NESTED["SourceApplicationEntityTitle"]
    ds.preamble = NESTED["Preamble"].encode().ljust(128, b"\x00")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Modality = "DX"
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    ds.Manufacturer = "ACME Imaging"
    ds.PatientSex = "F"
    ds.PatientAge = "062Y"
    ds.PatientWeight = "71.5"
    ds.BurnedInAnnotation = "NO"
    ds.AcquisitionDateTime = ACQUISITION_DATETIME
    for keyword, value in values.items():
        setattr(ds, keyword, value)

    request = Dataset()
    for keyword in ("RequestedProcedureID", "ScheduledProcedureStepID", "RequestingPhysician"):
        setattr(request, keyword, NESTED[keyword])
    ds.RequestAttributesSequence = Sequence([request])
    patient_ref = Dataset()
    patient_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.1.1"
    patient_ref.ReferencedSOPInstanceUID = REFERENCED_PATIENT_UID
    ds.ReferencedPatientSequence = Sequence([patient_ref])
    image_ref = Dataset()
    image_ref.ReferencedSOPClassUID = DigitalXRayImageStorageForPresentation
    image_ref.ReferencedSOPInstanceUID = REFERENCED_IMAGE_UID
    ds.ReferencedImageSequence = Sequence([image_ref])
    # A person name the table does not list, two sequences deep, beside codes worth keeping.
    modifier = Dataset()
    modifier.CodeValue = "R-102CD"
    modifier.CodingSchemeDesignator = "SRT"
    modifier.CodeMeaning = "Erect"
    modifier.EvaluatorName = NESTED["EvaluatorName"]
    view = Dataset()
    view.CodeValue = "R-10214"
    view.CodingSchemeDesignator = "SRT"
    view.CodeMeaning = "postero-anterior"
    view.ViewModifierCodeSequence = Sequence([modifier])
    ds.ViewCodeSequence = Sequence([view])

    block = ds.private_block(0x0009, NESTED["PrivateCreator"], create=True)
    block.add_new(0x10, "LO", NESTED["PrivateIdentifier"])
    ds.add_new(0x60000010, "US", 32)  # Overlay Rows
    ds.add_new(0x60000011, "US", 32)  # Overlay Columns
    ds.add_new(0x60000022, "LO", NESTED["OverlayDescription"])
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", bytes(128))
    ds.add_new(0x60004000, "LT", NESTED["OverlayComments"])

    ds.set_pixel_data(_pixels(), "MONOCHROME2", 12, generate_instance_uid=False)
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "0"
    return ds


def _saved(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _name_parts(name: str) -> list[str]:
    return [name, *name.split("^")]


def _all_originals() -> list[str]:
    values = [*DATES.values(), *UIDS.values(), REFERENCED_PATIENT_UID, REFERENCED_IMAGE_UID]
    values += [ACQUISITION_DATETIME, ACQUISITION_DATETIME[:8], ACQUISITION_DATETIME[8:14]]
    for source in (PHI, NESTED):
        for value in source.values():
            values += _name_parts(value) if "^" in value else [value]
    return values


def _days(original: str, shifted: str) -> int:
    def parse(text: str) -> date:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))

    return (parse(shifted) - parse(original)).days


def test_no_original_identifier_survives_in_the_saved_file():
    ds = _phi_dataset()
    result = deidentify(ds, KEY)
    saved = _saved(result.dataset).decode("latin-1").lower()
    for value in _all_originals():
        assert value.lower() not in saved, value
    # and the caller is told about the identifying ones, to scrub them from paths
    for value in [PHI["PatientID"], PHI["AccessionNumber"], "ZQFAMILY", "QXGIVEN", "WQMIDDLE",
                  PHI["PatientBirthDate"], UIDS["SOPInstanceUID"], DATES["StudyDate"],
                  NESTED["RequestedProcedureID"], "EVALZ", PHI["InstitutionName"]]:  # fmt: skip
        assert value in result.identifiers, value


def test_saved_file_reads_back_with_its_pixels_and_image_attributes_untouched():
    ds = _phi_dataset()
    pixel_bytes = ds.PixelData
    before = {k: ds[k].value for k in ("Rows", "Columns", "BitsAllocated", "BitsStored",
                                       "HighBit", "PixelRepresentation", "SamplesPerPixel",
                                       "PhotometricInterpretation", "WindowCenter",
                                       "WindowWidth", "RescaleSlope", "RescaleIntercept",
                                       "BurnedInAnnotation", "Modality", "ImageType")}  # fmt: skip
    deidentify(ds, KEY)
    assert ds.PixelData == pixel_bytes
    reread = pydicom.dcmread(io.BytesIO(_saved(ds)))
    np.testing.assert_array_equal(reread.pixel_array, _pixels())
    assert {k: reread[k].value for k in before} == before
    assert reread.SOPClassUID == DigitalXRayImageStorageForPresentation
    # codes that describe the image survive the clean-up of the sequence around them
    assert reread.ViewCodeSequence[0].CodeMeaning == "postero-anterior"
    assert reread.ViewCodeSequence[0].ViewModifierCodeSequence[0].CodeValue == "R-102CD"


def test_compressed_pixel_data_survives_deidentification():
    ds = _phi_dataset()
    ds.compress(RLELossless, generate_instance_uid=False)
    encapsulated = ds.PixelData
    deidentify(ds, KEY)
    reread = pydicom.dcmread(io.BytesIO(_saved(ds)))
    assert reread.file_meta.TransferSyntaxUID == RLELossless
    assert reread.PixelData == encapsulated
    np.testing.assert_array_equal(reread.pixel_array, _pixels())


def test_private_tags_overlays_and_nested_person_names_are_gone():
    ds = deidentify(_phi_dataset(), KEY).dataset
    elements = list(ds.iterall())
    assert not [e for e in elements if e.tag.is_private]
    assert not [e for e in elements if e.tag.group & 0xFF00 == 0x6000]
    assert not [e for e in elements if e.VR == "PN" and e.value and e.tag != 0x00100010]
    for keyword in ("RequestAttributesSequence", "ReferencedPatientSequence", "OtherPatientIDs",
                    "PatientAddress", "StudyDescription", "PerformingPhysicianName"):  # fmt: skip
        assert keyword not in ds, keyword
    assert ds.file_meta.get("SourceApplicationEntityTitle") is None
    # the reference sequence stays, pointing at the remapped instance
    reference = ds.ReferencedImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == remap_uid(REFERENCED_IMAGE_UID, KEY)
    assert reference.ReferencedSOPClassUID == DigitalXRayImageStorageForPresentation
    # Type 2 attributes are kept, empty, so the file still conforms
    assert ds.AccessionNumber == "" and ds.ReferringPhysicianName == ""
    assert ds.PatientBirthDate == "" and ds.StudyTime == ""


def test_dates_shift_by_one_offset_per_patient_and_differently_between_patients():
    first = deidentify(_phi_dataset(), KEY).dataset
    offsets = {_days(DATES[k], first[k].value) for k in DATES}
    offsets.add(_days(ACQUISITION_DATETIME, first.AcquisitionDateTime))
    assert len(offsets) == 1
    offset = offsets.pop()
    assert -3650 <= offset <= -1
    assert first.AcquisitionDateTime == first.AcquisitionDateTime[:8]  # the time is dropped
    # a later study of the same patient keeps the interval between the two
    later = deidentify(_phi_dataset(StudyDate="20220101", SOPInstanceUID=ROOT + "9"), KEY)
    assert _days("20220101", later.dataset.StudyDate) == offset
    other = deidentify(_phi_dataset(PatientID="MRN-ZX-000002"), KEY).dataset
    assert _days(DATES["StudyDate"], other.StudyDate) != offset


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")  # the point of the test
def test_unparsable_dates_are_removed_rather_than_kept():
    ds = deidentify(_phi_dataset(SeriesDate="2021", ContentDate="20211399"), KEY).dataset
    assert "SeriesDate" not in ds and "ContentDate" not in ds
    assert "StudyDate" in ds


def test_uids_are_remapped_consistently_validly_and_per_key():
    first = deidentify(_phi_dataset(), KEY).dataset
    same_study = deidentify(_phi_dataset(SOPInstanceUID=ROOT + "8"), KEY).dataset
    other_key = deidentify(_phi_dataset(), OTHER_KEY).dataset
    assert first.StudyInstanceUID == same_study.StudyInstanceUID
    assert first.SeriesInstanceUID == same_study.SeriesInstanceUID
    assert first.SOPInstanceUID != same_study.SOPInstanceUID
    assert first.StudyInstanceUID != other_key.StudyInstanceUID
    assert first.file_meta.MediaStorageSOPInstanceUID == first.SOPInstanceUID
    for keyword in UIDS:
        new = str(first[keyword].value)
        assert new != UIDS[keyword] and new.startswith("2.25.")
        assert len(new) <= 64 and UID(new).is_valid
        assert re.fullmatch(r"(0|[1-9]\d*)(\.(0|[1-9]\d*))+", new)
    assert first.SOPClassUID == DigitalXRayImageStorageForPresentation


def test_the_pseudonym_replaces_the_patient_id():
    # what pseudonyms are (deterministic, keyed) is tests/unit/data/test_pseudonyms.py's
    pseudonym = pseudonymise(PHI["PatientID"], KEY)
    result = deidentify(_phi_dataset(), KEY)
    assert result.patient_pseudonym == pseudonym
    assert result.dataset.PatientID == pseudonym == str(result.dataset.PatientName)


def test_a_dataset_without_patient_id_gets_no_pseudonym():
    ds = _phi_dataset()
    del ds.PatientID
    result = deidentify(ds, KEY)
    assert result.patient_pseudonym is None
    assert result.dataset.PatientID == "" and str(result.dataset.PatientName) == ""


def test_deidentification_is_recorded_in_the_dataset():
    ds = deidentify(_phi_dataset(), KEY).dataset
    assert ds.PatientIdentityRemoved == "YES"
    assert "PS3.15" in ds.DeidentificationMethod[0]
    codes = {(i.CodeValue, i.CodingSchemeDesignator) for i in ds.DeidentificationMethodCodeSequence}
    assert codes == {("113100", "DCM"), ("113107", "DCM")}
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_patient_characteristics_are_removed_unless_retained():
    removed = deidentify(_phi_dataset(), KEY)
    assert removed.dataset.PatientSex == ""
    assert "PatientAge" not in removed.dataset and "PatientWeight" not in removed.dataset
    assert removed.metadata == {
        "modality": "DX",
        "view_position": "PA",
        "body_part": "CHEST",
        "photometric": "MONOCHROME2",
        "burned_in_annotation": "no",
    }
    kept = deidentify(_phi_dataset(), KEY, retain_patient_characteristics=True)
    assert kept.dataset.PatientSex == "F" and kept.dataset.PatientAge == "062Y"
    assert kept.dataset.PatientWeight == 71.5
    assert kept.metadata["patient_sex"] == "F" and kept.metadata["patient_age"] == "062Y"
    codes = {i.CodeValue for i in kept.dataset.DeidentificationMethodCodeSequence}
    assert "113108" in codes


@pytest.mark.parametrize(
    ("flag", "expected", "state"),
    [
        ("YES", True, "yes"),
        ("NO", False, "no"),
        (None, False, "unknown"),  # absent says nothing: not the same as NO
        ("", False, "unknown"),
        ("MAYBE", False, "unknown"),
    ],
)
def test_burned_in_annotation_is_reported_and_kept(flag, expected, state):
    ds = _phi_dataset()
    if flag is None:
        del ds.BurnedInAnnotation
    else:
        ds.BurnedInAnnotation = flag
    result = deidentify(ds, KEY)
    assert result.burned_in_annotation is expected
    assert result.metadata["burned_in_annotation"] == state
    assert result.dataset.get("BurnedInAnnotation") == flag


def test_a_dataset_without_modality_or_burned_in_annotation_reports_both_unknown():
    ds = _phi_dataset()
    del ds.Modality
    del ds.BurnedInAnnotation
    metadata = deidentify(ds, KEY).metadata
    assert metadata["modality"] == "unknown"
    assert metadata["burned_in_annotation"] == "unknown"


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_nothing_identifying_reaches_the_logs_or_the_result_repr(caplog):
    ds = _phi_dataset(SeriesDate="2021")  # an unparsable date takes the logging branch
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="medimg")
    result = deidentify(ds, KEY)
    shown = (caplog.text + repr(result)).lower()
    for value in _all_originals():
        assert value.lower() not in shown, value


def test_identifiers_found_in_a_header_leave_a_path_whatever_their_case_and_separators():
    ds = _phi_dataset(PatientName="DOE^JANE", PatientID="MRN123")
    identifiers = deidentify(ds, KEY).identifiers
    assert {"DOE^JANE", "DOE", "JANE", "MRN123"} <= identifiers
    path = "incoming/Doe_Jane/mrn123/DOE-jane-chest.dcm"
    scrubbed = Scrubber(identifiers, _pseudonym)(path)
    assert not re.search("doe|jane|mrn123", scrubbed, re.IGNORECASE)
    name, mrn = (pseudonymise(v, KEY) for v in ("DOE^JANE", "MRN123"))
    assert scrubbed == f"incoming/{name}/{mrn}/{name}-chest.dcm"


def test_longer_identifiers_win_and_short_ones_go_only_as_whole_words():
    scrub = Scrubber({"MRN123", "MRN1234", "JO", ""}, _pseudonym)
    scrubbed = scrub("MRN1234/MRN123/JOHN/JO/x.dcm")
    mrn4, mrn3, jo = (pseudonymise(v, KEY) for v in ("MRN1234", "MRN123", "JO"))
    assert scrubbed == f"{mrn4}/{mrn3}/JOHN/{jo}/x.dcm"
    assert Scrubber(set(), _pseudonym)("nothing here") == "nothing here"


# --- planted values: each carries ZQX, which no pseudonym or remapped UID can contain ----------

PLANTED_NAME = "ZQXDSMITH^ZQXDANNA"
PLANTED_ID = "ZQXPID_4471"


def _planted_dataset(**overrides: str) -> Dataset:
    ds = _phi_dataset(PatientName=PLANTED_NAME, PatientID=PLANTED_ID, **overrides)
    ds.Manufacturer = "ZQXDSMITH medical"
    ds.ManufacturerModelName = PLANTED_ID
    ds.BodyPartExamined = PLANTED_ID
    region = Dataset()
    region.CodeValue = "T-D3000"
    region.CodingSchemeDesignator = "SRT"
    region.CodeMeaning = "ZQXDANNA seq"
    ds.AnatomicRegionSequence = Sequence([region])
    ds.RescaleType = "ZQXDSMITH units"
    ds.WindowCenterWidthExplanation = f"window for {PLANTED_ID}"
    return ds


def _assert_nothing_planted(saved: bytes) -> None:
    assert b"zqx" not in saved.lower()


def _decoded(ds: Dataset) -> np.ndarray:
    """What a later stage sees of the pixels of ``ds``, de-identified with its own copy."""
    return decode_deidentified(deidentify(ds, KEY)).pixels


def test_identifiers_inside_kept_values_are_removed_and_the_pixels_stay():
    ds = _planted_dataset()
    result = deidentify(ds, KEY)
    saved = _saved(result.dataset)
    _assert_nothing_planted(saved)
    out = pydicom.dcmread(io.BytesIO(saved))
    # Type 2 in General Equipment: emptied; the others (Type 3) removed
    assert out.Manufacturer == ""
    assert "ManufacturerModelName" not in out and "BodyPartExamined" not in out
    region = out.AnatomicRegionSequence[0]
    assert region.CodeValue == "T-D3000" and "CodeMeaning" not in region
    # descriptions in the pixel group are emptied; what decodes the pixels is untouched
    assert out.RescaleType == "" and out.WindowCenterWidthExplanation == ""
    assert out.PhotometricInterpretation == "MONOCHROME2" and out.WindowCenter == 2048
    np.testing.assert_array_equal(out.pixel_array, _pixels())
    np.testing.assert_array_equal(decode_deidentified(result).pixels, _decoded(_phi_dataset()))
    # what medimg wrote is still there
    assert out.PatientID == pseudonymise(PLANTED_ID, KEY) == str(out.PatientName)
    assert out.ViewCodeSequence[0].CodeMeaning == "postero-anterior"
    assert "PS3.15" in out.DeidentificationMethod[0]


def test_identifiers_are_found_whatever_their_case_and_separators():
    ds = _phi_dataset(PatientName=PLANTED_NAME, PatientID=PLANTED_ID)
    ds.Manufacturer = "zqx-d smith Medical"  # the surname, spelt another way
    ds.ManufacturerModelName = "ZQXPID4471 Mk II"  # the patient id without its hyphen
    ds.StationName = "XR"
    ds.DetectorType = "XR"  # a short identifier counts only as a whole value...
    ds.ImagerPixelSpacing = ["0.1", "0.1"]
    out = deidentify(ds, KEY).dataset
    _assert_nothing_planted(_saved(out))
    assert out.Manufacturer == "" and "ManufacturerModelName" not in out
    assert "DetectorType" not in out
    assert out.ImageType == ["ORIGINAL", "PRIMARY"]  # ...never inside one


def test_values_medimg_wrote_are_never_taken_for_identifiers():
    # identifiers that happen to sit inside the pseudonym and a remapped UID
    pseudonym = pseudonymise(PHI["PatientID"], KEY)
    remapped = remap_uid(UIDS["SOPInstanceUID"], KEY)
    ds = _phi_dataset(AccessionNumber=pseudonym[2:8], StudyID=remapped[5:13])
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientComments = "ISO_IR 100"  # an identifier equal to the character set's term
    result = deidentify(ds, KEY)
    out = pydicom.dcmread(io.BytesIO(_saved(result.dataset)))
    assert out.PatientID == pseudonym
    assert out.SOPInstanceUID == remapped == out.file_meta.MediaStorageSOPInstanceUID
    assert out.SpecificCharacterSet == "ISO_IR 100"
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_metadata_values_that_hold_an_identifier_are_dropped():
    ds = _planted_dataset()
    ds.ViewPosition = "ZQXDANNA"
    metadata = deidentify(ds, KEY).metadata
    assert "body_part" not in metadata and "view_position" not in metadata
    assert metadata == {
        "modality": "DX",
        "photometric": "MONOCHROME2",
        "burned_in_annotation": "no",
    }
    assert "zqx" not in repr(metadata).lower()
    # a modality that matches is reported as unknown, not dropped
    short = _phi_dataset(StationName="DX")
    assert deidentify(short, KEY).metadata["modality"] == "unknown"


def test_unknown_public_elements_are_removed_and_known_repeating_ones_cleaned():
    ds = _phi_dataset()
    ds.add_new(0x0018FFF0, "CS", "ZQXUNKNOWN CS")
    ds.add_new(0x0028FFF0, "OB", b"ZQXUNKNOWN OB")
    ds.add_new(0x7FE0FFF0, "OB", b"ZQXUNKNOWN PX")
    ds.add_new(0x00203100, "CS", "ZQXSOURCEID")  # Source Image IDs (0020,31xx), retired
    ds.add_new(0x00203402, "CS", "ZQXMODIFIEDID")  # Modified Image ID, retired
    ds.add_new(0x00280040, "CS", "RECT")  # Image Format, retired, of the pixel group
    ds.add_new(0x10000010, "US", [1, 2, 3])  # Escape Triplet (1000,xxx0), a repeater
    # read back as a file would be: unknown tags keep their explicit VR
    reread = read_dicom(_saved(ds))
    pixel_bytes = reread.PixelData
    out = deidentify(reread, KEY).dataset
    saved = _saved(out)
    _assert_nothing_planted(saved)
    for tag in (0x0018FFF0, 0x0028FFF0, 0x7FE0FFF0, 0x00203100, 0x00203402):
        assert tag not in out, hex(tag)
    assert out[0x00280040].value == "RECT" and out[0x10000010].value == [1, 2, 3]
    assert out.PixelData == pixel_bytes
    np.testing.assert_array_equal(pydicom.dcmread(io.BytesIO(saved)).pixel_array, _pixels())


def test_identifiers_include_the_spellings_of_dates_file_names_use():
    ds = _phi_dataset(PatientBirthDate="19580923")
    identifiers = deidentify(ds, KEY).identifiers
    for spelling in ("19580923", "1958-09-23", "1958.09.23", "23.09.1958", "23/09/1958",
                     "09/23/1958"):  # fmt: skip
        assert spelling in identifiers, spelling
    assert "2021-03-17" in identifiers and "17.03.2021" in identifiers  # StudyDate
    assert "2021-03-19" in identifiers  # the date of the AcquisitionDateTime
    scrubbed = Scrubber(identifiers, _pseudonym)("in/23.09.1958/09-23-1958_x.dcm")
    assert "1958" not in scrubbed


def test_collect_identifiers_reports_what_deidentify_would_and_changes_nothing():
    ds = _phi_dataset()
    before = _saved(ds)
    collected = collect_identifiers(ds)
    assert _saved(ds) == before
    assert collected == deidentify(ds, KEY).identifiers
    assert {PHI["PatientID"], "ZQFAMILY", "1958-09-23", UIDS["StudyInstanceUID"]} <= collected
    assert collect_identifiers(Dataset()) == frozenset()


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def _exif(orientation: int | None = None) -> bytes:
    """An APP1 EXIF segment with a text tag (ImageDescription) and maybe an Orientation."""
    text = b"ZQXEXIF DOE JANE\x00"
    entries = [(0x010E, 2, len(text), 8 + 2 + 12 * 2 + 4)]
    if orientation is not None:
        entries.append((0x0112, 3, 1, orientation))
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHII", tag, kind, count, value)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd.ljust(2 + 12 * 2, b"\x00") + b"\x00" * 4
    return _jpeg_segment(0xFFE1, b"Exif\x00\x00" + tiff + text)


def _jpeg_file(tmp_path, name: str, segments: tuple[bytes, ...] = (), frames: int = 1) -> bytes:
    path = write_dicom(tmp_path / name, bits_stored=8, frames=frames, phi={"PatientID": PLANTED_ID},
                       transfer_syntax=JPEGBaseline8Bit, frame_segments=segments)  # fmt: skip
    return path.read_bytes()


def test_jpeg_frames_lose_their_comments_and_exif_and_keep_their_pixels(tmp_path):
    comment = _jpeg_segment(0xFFFE, b"ZQXCOMMENT " + PLANTED_ID.encode())
    data = _jpeg_file(tmp_path, "planted.dcm", (comment, _exif()), frames=2)
    assert b"ZQXCOMMENT" in data and b"ZQXEXIF" in data
    clean = read_dicom(_jpeg_file(tmp_path, "clean.dcm", frames=2))
    result = deidentify(read_dicom(data), KEY)
    saved = _saved(result.dataset)
    _assert_nothing_planted(saved)
    out = pydicom.dcmread(io.BytesIO(saved))
    assert out.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    # no re-encoding: the same pixels, frame by frame, and the same picture downstream
    np.testing.assert_array_equal(out.pixel_array, clean.pixel_array)
    np.testing.assert_array_equal(decode_deidentified(result).pixels, _decoded(clean))
    frames = list(generate_frames(out.PixelData, number_of_frames=2))
    assert all(f.startswith(b"\xff\xd8") and f.rstrip(b"\x00").endswith(b"\xff\xd9")
               for f in frames)  # fmt: skip


def test_a_jpeg_frame_that_cannot_be_stripped_fails_and_leaves_the_dataset_as_it_was(tmp_path):
    # an EXIF orientation would turn the picture if dropped: the stripper refuses it
    data = _jpeg_file(tmp_path, "turned.dcm", (_exif(orientation=6),))
    ds = read_dicom(data)
    before = _saved(ds)
    with pytest.raises(NotDeidentifiable, match="frame"):
        deidentify(ds, KEY)
    assert _saved(ds) == before
    # so what the header names can still be scrubbed from the file's path
    identifiers = collect_identifiers(ds)
    assert {PLANTED_ID, "DOE", "JANE", "1961-07-04", "04.07.1961"} <= identifiers


def test_jpeg_pixel_data_that_is_not_a_jpeg_stream_fails(tmp_path):
    ds = read_dicom(_jpeg_file(tmp_path, "broken.dcm"))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([b"ZQX not a JPEG" + frame[2:]])
    with pytest.raises(NotDeidentifiable):
        deidentify(ds, KEY)


@pytest.mark.skipif(
    get_decoder(HTJ2KLossless).is_available, reason="only without an HTJ2K plugin installed"
)
def test_frames_no_installed_plugin_decodes_are_left_to_be_refused_as_unsupported(tmp_path):
    ds = read_dicom(_jpeg_file(tmp_path, "htj2k.dcm"))
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless  # not an HTJ2K stream: no walk could read it
    result = deidentify(ds, KEY)
    with pytest.raises(UndecodableImage) as caught:
        decode_deidentified(result)
    assert caught.value.code == "unsupported"


def test_a_dataset_without_sop_class_or_instance_can_still_be_written_as_part_10():
    ds = _phi_dataset()
    del ds.SOPClassUID
    del ds.file_meta.MediaStorageSOPClassUID
    out = deidentify(ds, KEY).dataset
    reread = pydicom.dcmread(io.BytesIO(_saved(out)))
    assert reread.file_meta.MediaStorageSOPClassUID == SecondaryCaptureImageStorage
    assert reread.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    np.testing.assert_array_equal(reread.pixel_array, _pixels())

    uids = []
    for _ in range(2):
        ds = _phi_dataset()
        del ds.SOPInstanceUID
        del ds.file_meta.MediaStorageSOPInstanceUID
        reread = pydicom.dcmread(io.BytesIO(_saved(deidentify(ds, KEY).dataset)))
        uids.append(str(reread.file_meta.MediaStorageSOPInstanceUID))
    assert uids[0] == uids[1] and UID(uids[0]).is_valid and uids[0].startswith("2.25.")
    assert reread.file_meta.MediaStorageSOPClassUID == DigitalXRayImageStorageForPresentation

    bare = _phi_dataset()
    del bare.file_meta
    del bare.SOPClassUID
    meta = deidentify(bare, KEY).dataset.file_meta
    assert meta.MediaStorageSOPClassUID == SecondaryCaptureImageStorage
    assert meta.MediaStorageSOPInstanceUID == bare.SOPInstanceUID


def test_any_failure_leaves_the_dataset_as_it_was(monkeypatch):
    ds = _phi_dataset()
    before = _saved(ds)

    def fail(*args: object) -> None:
        raise RuntimeError("late failure")

    # after every element has been cleaned, just before the dataset is marked
    monkeypatch.setattr(deid, "_mark_deidentified", fail)
    with pytest.raises(RuntimeError):
        deidentify(ds, KEY)
    assert _saved(ds) == before
    assert ds.preamble.startswith(NESTED["Preamble"].encode())
    assert {PHI["PatientID"], "ZQFAMILY", NESTED["EvaluatorName"]} <= collect_identifiers(ds)


def test_a_name_in_a_private_sequence_is_collected_for_path_scrubbing():
    from pydicom.sequence import Sequence

    def with_private_name() -> Dataset:
        ds = _phi_dataset()
        item = Dataset()
        item.PatientName = "ZQYPRIVSEQ^NAME"
        block = ds.private_block(0x0029, "ZQY VENDOR 1.0", create=True)
        block.add_new(0x10, "SQ", Sequence([item]))
        return ds

    assert "ZQYPRIVSEQ" in collect_identifiers(with_private_name())  # before any change too
    result = deidentify(with_private_name(), KEY)
    assert "ZQYPRIVSEQ" in result.identifiers
    scrubbed = Scrubber(result.identifiers, _pseudonym)("ZQYPRIVSEQ_NAME_2.dcm")
    assert "zqyprivseq" not in scrubbed.casefold() and scrubbed.endswith("_2.dcm")


def test_a_utf8_name_without_a_character_set_is_collected_as_the_file_system_spells_it():
    from pydicom.valuerep import PersonName

    ds = _phi_dataset()
    del ds.SpecificCharacterSet  # the default repertoire, as many exporters leave it
    ds.PatientName = PersonName("ZQYBÄCKER^ANN".encode(), encodings=["iso8859"])
    assert "ZQYBÄCKER" not in str(ds.PatientName)  # pydicom reads the bytes another way
    result = deidentify(ds, KEY)
    assert "ZQYBÄCKER" in result.identifiers
    scrub = Scrubber(result.identifiers, _pseudonym)
    assert "zqyb" not in scrub("dcm/pneumonia/ZQYBÄCKER/4.dcm").casefold()
