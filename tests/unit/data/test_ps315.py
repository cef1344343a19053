"""The PS3.15 tables de-identification walks by."""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

from medimg.data import ps315


def test_every_table_keyword_is_known_to_pydicom():
    keywords = [*ps315.BASIC_PROFILE, *ps315.KEEP_UIDS, *ps315.KEEP_TEXT, *ps315.IDENTIFYING]
    assert [k for k in keywords if tag_for_keyword(k) is None] == []
    assert set(ps315.BASIC_PROFILE.values()) <= {"D", "Z", "X", "K", "U", *ps315.RESOLVED}


def test_the_resolved_tables_hold_single_actions_and_the_options():
    actions = {"X", "Z", "D", "U", "U*", "K", "P"}
    assert set(ps315.TABLE.values()) <= actions and set(ps315.TABLE_RETAINING.values()) <= actions
    tag = tag_for_keyword
    assert ps315.TABLE[tag("PatientID")] == ps315.TABLE_RETAINING[tag("PatientID")] == "P"
    assert ps315.TABLE[tag("ReferencedImageSequence")] == "U*"
    for keyword in ps315.PATIENT_CHARACTERISTICS:
        assert ps315.TABLE[tag(keyword)] in ("X", "Z")
        assert ps315.TABLE_RETAINING[tag(keyword)] == "K"
    assert {t: a for t, a in ps315.TABLE.items() if ps315.TABLE_RETAINING[t] != a} == {
        tag(k): ps315.TABLE[tag(k)] for k in ps315.PATIENT_CHARACTERISTICS
    }
