"""The model card states only what was checked, and names the decision rule truthfully."""

from __future__ import annotations

import pandas as pd
import pytest

from medimg.config import parse_config
from medimg.registry.gates import GateReport
from medimg.registry.model_card import render_model_card

BINARY = {"f1": 0.9, "recall": 0.92, "threshold": 0.31, "decision_rule": "threshold", "n": 40,
          "operating_point": {"method": "target_recall", "reason": "recall 0.90 on validation",
                              "recall": 0.91, "precision": 0.8, "specificity": 0.7}}


def _manifest(sources: list[str]) -> pd.DataFrame:
    n = len(sources)
    return pd.DataFrame({
        "image_id": [f"{i:04d}" for i in range(n)],
        "split": (["train", "val", "test"] * n)[:n],
        "label": (["normal", "pneumonia"] * n)[:n],
        "patient_id": [f"p{i // 2}" if s == "source" else f"img-{i:04d}"
                       for i, s in enumerate(sources)],
        "patient_source": sources,
    })


CHECKED = {"checks": [{"name": "patient_in_one_split", "success": True}]}


def _card(manifest: pd.DataFrame, metrics: dict, params: dict | None = None,
          validation: dict | None = CHECKED) -> str:
    return render_model_card(config=parse_config(params or {}), metrics=metrics,
                             lineage={}, manifest=manifest, gates=GateReport([]),
                             validation=validation)


@pytest.mark.parametrize(("sources", "says", "never"), [
    (["source"] * 6, "never split across train, validation and test", "could not be checked"),
    (["image"] * 6, "Patient separation could not be checked: none of the 6 images",
     "never split"),
    (["source"] * 4 + ["image"] * 2, "2 of 6 images had no patient id", None),
])
def test_the_patient_statement_says_only_what_the_ids_allowed_checking(sources, says, never):
    card = _card(_manifest(sources), BINARY)
    assert says in card
    if never:
        assert never not in card


def test_patients_are_claimed_separated_only_when_the_contract_checked_it():
    manifest = _manifest(["source"] * 6)
    failed = {"checks": [{"name": "patient_in_one_split", "success": False}]}
    card = _card(manifest, BINARY, validation=failed)
    assert "Patients are NOT kept to one split" in card and "never split" not in card
    card = _card(manifest, BINARY, validation=None)
    assert "was not verified" in card and "never split" not in card


def test_two_classes_show_the_threshold_and_how_it_was_chosen():
    card = _card(_manifest(["source"] * 6), BINARY)
    assert "Decision threshold **0.310** on the probability of `pneumonia`" in card
    assert "`target_recall`" in card


def test_several_classes_say_arg_max_and_show_no_threshold():
    three = {"base": {"class_names": ["normal", "bacterial", "viral"]}}
    metrics = {**BINARY, "threshold": None, "decision_rule": "argmax", "operating_point": {}}
    card = _card(_manifest(["source"] * 6), metrics, three)
    assert "**Arg-max**" in card and "no threshold is used" in card
    assert "Decision threshold" not in card and "0.310" not in card
