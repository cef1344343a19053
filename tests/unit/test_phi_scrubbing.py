"""Identifier columns are recognised by name; known identifiers leave every path they are in."""

from __future__ import annotations

import pytest

from medimg.config import load_config
from medimg.data.pseudonyms import pseudonymise
from medimg.errors import ConfigError
from medimg.phi import Scrubber, is_identifier_column

KEY = b"0123456789abcdef0123456789abcdef"


def _pseudonym(value: str) -> str:
    return pseudonymise(value, KEY)


@pytest.mark.parametrize("column", [
    "patient_name", "Patient Name", "patientName", "PATIENT-NAME", "surname", "first_name",
    "dob", "DOB", "Date of Birth", "birth_date", "mrn", "MRN", "medical_record_number",
    "address", "home_address", "zip", "phone", "Telephone", "email", "e-mail",
    "accession_number", "AccessionNumber", "ssn", "national_id", "nhs_number", "passport",
])
def test_columns_that_name_a_direct_identifier_are_recognised(column):
    assert is_identifier_column(column)


@pytest.mark.parametrize("column", [
    "sex", "age", "site", "view", "view_position", "class_name", "label", "patient_id",
    "study_date", "body_part", "scanner", "cell_type", "modality", "split",
])
def test_ordinary_metadata_columns_are_not(column):
    assert not is_identifier_column(column)


def test_params_that_allow_list_an_identifier_column_fail_at_load_naming_it(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  metadata_columns: [sex, patient_name]\n")
    with pytest.raises(ConfigError, match="'patient_name' names a direct patient identifier"):
        load_config(params)


def test_each_identifier_becomes_its_pseudonym_wherever_it_is_written():
    scrub = Scrubber({"PT-0001", "DOE^JANE", "MRN-770"}, _pseudonym)
    p1, jane, mrn = (pseudonymise(x, KEY) for x in ("PT-0001", "DOE^JANE", "MRN-770"))
    assert scrub("normal/pt0001_img01.png") == f"normal/{p1}_img01.png"
    assert scrub("raw/DOE_JANE/scan.dcm") == f"raw/{jane}/scan.dcm"
    assert scrub("imgs/mrn-770_cxr.png") == f"imgs/{mrn}_cxr.png"
    assert scrub("nothing/here.png") == "nothing/here.png"
    assert scrub(scrub("imgs/MRN-770.png")) == scrub("imgs/MRN-770.png")  # pseudonyms stay


def test_short_identifiers_are_replaced_only_as_whole_words():
    scrub = Scrubber({"7"}, _pseudonym)
    assert scrub("a/7/17/x7.png") == f"a/{pseudonymise('7', KEY)}/17/x7.png"


def test_without_a_key_or_identifiers_nothing_changes():
    assert Scrubber(set(), _pseudonym)("a/b.png") == "a/b.png"
    assert Scrubber({"MRN-770"}, None)("MRN-770.png") == "MRN-770.png"


def test_separators_are_ignored_on_both_sides():
    scrub = Scrubber({"ZQXPID01", "19710203", "DOE^JANE"}, _pseudonym)
    pid, dob, name = (pseudonymise(v, KEY) for v in ("ZQXPID01", "19710203", "DOE^JANE"))
    assert scrub("ZQX-PID01_b.png") == f"{pid}_b.png"
    assert scrub("scan_1971-02-03.png") == f"scan_{dob}.png"
    assert scrub("Jane/DOE JANE/x.png") == f"Jane/{name}/x.png"


def test_identifiers_known_only_by_their_digests_are_found():
    from medimg.data.private import KnownIdentifiers
    from medimg.phi import squeeze

    digest = KnownIdentifiers.digester(KEY)
    digests = {digest(squeeze("MRN-770-QX")): "p-known"}
    scrub = Scrubber(set(), _pseudonym, digests, digest)
    assert scrub("imgs/mrn770qx_cxr.png") == "imgs/p-known_cxr.png"
    assert "770" not in " ".join(digests)


def test_composed_and_decomposed_letters_are_alike():
    import unicodedata

    scrub = Scrubber({"ZQYJÖRGPAT"}, _pseudonym)
    for form in ("NFC", "NFD"):
        path = unicodedata.normalize(form, "x/ZQYJÖRGPAT/n.png")
        assert scrub(path) == f"x/{pseudonymise('ZQYJÖRGPAT', KEY)}/n.png", form
