"""Predictions recorded for review, their uncertainty, and the worklist most uncertain first."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from conftest import medimg_cli

from medimg.data.manifest import load_manifest
from medimg.errors import DataError
from medimg.feedback.predictions import (
    new_prediction,
    predictions_path,
    record_predictions,
    uncertainty,
    worklist,
)
from medimg.feedback.review import add_feedback

THREE = ["normal", "pneumonia", "covid"]


def _ids(ws, n: int) -> list[str]:
    manifest = load_manifest(ws.manifest_path)
    return list(manifest.loc[manifest["split"] == "train", "image_id"].drop_duplicates()[:n])


@pytest.mark.parametrize(("probs", "threshold", "entropy", "distance"), [
    ([0.4, 0.6], 0.5, -(0.4 * math.log(0.4) + 0.6 * math.log(0.6)) / math.log(2), 0.1),
    ([0.9, 0.1], 0.3, -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2), 0.2),
    ([1 / 3, 1 / 3, 1 / 3], None, 1.0, 0.0),  # a uniform guess: most uncertain
    ([0.0, 0.0, 1.0], None, 0.0, 1.0),  # certain
    ([0.5, 0.3, 0.2], None, -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
     / math.log(3), 0.2),
])
def test_uncertainty_is_normalised_entropy_and_the_distance_to_the_decision(
        probs, threshold, entropy, distance):
    measured = uncertainty(probs, threshold)
    assert measured.entropy == pytest.approx(entropy)
    assert measured.distance == pytest.approx(distance)
    assert 0 <= measured.entropy <= 1


def test_a_prediction_is_decided_as_the_model_decides():
    image_id = "a" * 64
    binary = new_prediction(image_id, [0.7, 0.3], ["normal", "pneumonia"], "cxr", 2, 0.25)
    assert (binary.decision_rule, binary.predicted_label, binary.threshold) == (
        "threshold", "pneumonia", 0.25)  # P(pneumonia) 0.3 is over the threshold
    several = new_prediction(image_id, [0.2, 0.3, 0.5], THREE, "cxr3", "1", threshold=0.5)
    assert (several.decision_rule, several.predicted_label, several.threshold) == (
        "argmax", "covid", None)


@pytest.mark.parametrize(("image_id", "probs", "threshold", "says"), [
    ("patient_DOE_JANE.png", [0.5, 0.5], 0.5, "sha256"),
    ("a" * 64, [0.2, 0.3, 0.5], 0.5, "one per class"),
    ("a" * 64, [0.7, 0.7], 0.5, "summing to 1"),
    ("a" * 64, [0.5, 0.5], None, "threshold"),
])
def test_a_bad_prediction_is_refused_in_one_line(image_id, probs, threshold, says):
    with pytest.raises(DataError) as caught:
        new_prediction(image_id, probs, ["normal", "pneumonia"], "cxr", 1, threshold)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_predictions_are_recorded_by_content_hash_with_their_uncertainty(ws):
    [image_id] = _ids(ws, 1)
    made = new_prediction(image_id, [0.45, 0.55], ws.config.base.class_names, "cxr", 4, 0.5)
    record_predictions(ws, [made])
    [line] = [json.loads(t) for t in predictions_path(ws).read_text().splitlines()]
    assert line["prediction_id"] == made.prediction_id and len(made.prediction_id) == 32
    assert line["image_id"] == image_id
    assert datetime.fromisoformat(line["time"]).utcoffset() == timedelta(0)
    assert (line["model_name"], line["model_version"], line["class_names"],
            line["probabilities"], line["decision_rule"], line["threshold"],
            line["predicted_label"]) == ("cxr", "4", ["normal", "pneumonia"], [0.45, 0.55],
                                         "threshold", 0.5, "pneumonia")
    assert line["distance"] == pytest.approx(0.05)
    assert line["entropy"] == pytest.approx(uncertainty([0.45, 0.55], 0.5).entropy)


def test_the_worklist_is_most_uncertain_first(ws):
    ids = _ids(ws, 4)
    made = [
        new_prediction(ids[0], [0.1, 0.2, 0.7], THREE, "m", 1),  # distance 0.5
        new_prediction(ids[1], [0.5, 0.5, 0.0], THREE, "m", 1),  # distance 0, lower entropy
        new_prediction(ids[2], [0.3, 0.35, 0.35], THREE, "m", 1),  # distance 0, higher entropy
        new_prediction(ids[3], [0.2, 0.3, 0.5], THREE, "m", 1),  # distance 0.2
    ]
    record_predictions(ws, made)
    assert [item.prediction.image_id for item in worklist(ws)] == [
        ids[2], ids[1], ids[3], ids[0]]


def test_reviewed_predictions_leave_the_worklist(ws):
    ids = _ids(ws, 4)
    names = ws.config.base.class_names
    answered, same_image, earlier, open_ = (
        new_prediction(i, [0.5, 0.5], names, "cxr", 1, 0.5) for i in ids)
    # a label recorded before a prediction does not review it
    add_feedback(ws, ws.config, ids[2], names[0], "dr-early")
    later = (datetime.now(UTC) + timedelta(seconds=5)).isoformat(timespec="seconds")
    earlier = replace(earlier, time=later)
    record_predictions(ws, [answered, same_image, earlier, open_])
    add_feedback(ws, ws.config, ids[0], names[1], "dr-a", prediction_id=answered.prediction_id)
    add_feedback(ws, ws.config, ids[1], names[0], "dr-b")  # the image, without the prediction id
    waiting = worklist(ws)
    assert {item.prediction.prediction_id for item in waiting} == {
        earlier.prediction_id, open_.prediction_id}
    assert not any(item.reviewed for item in waiting)
    everything = {item.prediction.prediction_id: item.reviewers
                  for item in worklist(ws, include_reviewed=True)}
    assert everything == {answered.prediction_id: ("dr-a",), same_image.prediction_id: ("dr-b",),
                          earlier.prediction_id: (), open_.prediction_id: ()}


def test_a_label_for_a_prediction_takes_its_model_and_refuses_an_unknown_one(ws, snapshot):
    ids = _ids(ws, 2)
    names = ws.config.base.class_names
    made = new_prediction(ids[0], [0.2, 0.8], names, "cxr", 7, 0.35)
    record_predictions(ws, [made])
    entry = add_feedback(ws, ws.config, ids[0], names[1], "dr-a",
                         prediction_id=made.prediction_id)
    assert (entry.model_name, entry.model_version, entry.threshold) == ("cxr", "7", 0.35)
    before = snapshot(ws)
    for image_id, prediction_id, says in ((ids[0], "f" * 32, "worklist"),
                                          (ids[1], made.prediction_id, "not of this one")):
        with pytest.raises(DataError) as caught:
            add_feedback(ws, ws.config, image_id, names[0], "dr-b", prediction_id=prediction_id)
        assert says in str(caught.value) and "\n" not in str(caught.value)
        assert snapshot(ws) == before


def test_the_worklist_command(ws):
    ids = _ids(ws, 3)
    names = ws.config.base.class_names
    made = [new_prediction(i, [1 - p, p], names, "cxr", 2, 0.5)
            for i, p in zip(ids, (0.9, 0.52, 0.7), strict=True)]
    record_predictions(ws, made)
    add_feedback(ws, ws.config, ids[2], names[1], "dr-a", prediction_id=made[2].prediction_id)
    shown = medimg_cli("feedback", "worklist", "--limit", "1", cwd=ws.root)
    assert shown.returncode == 0, shown.stderr
    assert "2 prediction(s) waiting" in shown.stdout
    assert made[1].prediction_id in shown.stdout and made[0].prediction_id not in shown.stdout
    listed = medimg_cli("feedback", "worklist", "--all", cwd=ws.root)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [next(i for i, t in enumerate(lines) if m.prediction_id in t) for m in made] == [3, 1, 2]
    assert "reviewed by dr-a" in lines[2]
