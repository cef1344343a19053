"""Feedback on images already in the manifest: validation, provenance, adjudication, the CLI."""

from __future__ import annotations

import json

import pytest

from medimg.data.manifest import load_manifest
from medimg.errors import DataError
from medimg.feedback.log import feedback_log_path, read_log
from medimg.feedback.predictions import new_prediction, record_predictions
from medimg.feedback.review import add_feedback, adjudicate, pending
from medimg.registry.stage import test_split_hash as split_hash
from tests.conftest import medimg_cli


def _image(ws, split: str) -> tuple[str, str, str]:
    """An image of ``split``: its id, its label and another class."""
    manifest = load_manifest(ws.manifest_path)
    row = manifest.loc[manifest["split"] == split].iloc[0]
    other = next(c for c in ws.config.base.class_names if c != row["label"])
    return str(row["image_id"]), str(row["label"]), other


def _label(ws, image_id: str) -> dict:
    manifest = load_manifest(ws.manifest_path)
    return manifest.loc[manifest["image_id"] == image_id].iloc[0].to_dict()


@pytest.mark.parametrize("bad", ["class", "image", "reviewer"])
def test_invalid_feedback_is_one_line_and_writes_nothing(ws, snapshot, bad):
    image_id, _, other = _image(ws, "train")
    add_feedback(ws, ws.config, image_id, other, "dr-a")  # a log exists before the bad entry
    before = snapshot(ws)
    args = {"image": image_id, "label": other, "reviewer": "dr-b"}
    args[{"class": "label", "image": "image", "reviewer": "reviewer"}[bad]] = {
        "class": "cat", "image": "0" * 64, "reviewer": "  "}[bad]
    with pytest.raises(DataError) as caught:
        add_feedback(ws, ws.config, **args)
    message = str(caught.value)
    assert "\n" not in message
    assert {"class": "base.class_names", "image": "medimg ingest",
            "reviewer": "--reviewer"}[bad] in message
    assert snapshot(ws) == before


def test_a_train_correction_relabels_the_manifest_with_provenance(ws):
    image_id, label, other = _image(ws, "train")
    predicted = new_prediction(image_id, [0.3, 0.7], ws.config.base.class_names, "cxr", 3, 0.4)
    record_predictions(ws, [predicted])
    entry = add_feedback(ws, ws.config, image_id, other, "dr-a",
                         prediction_id=predicted.prediction_id, note="consolidation")
    row = _label(ws, image_id)
    assert (row["label"], row["label_source"], row["label_by"], row["label_at"]) == (
        other, f"feedback:{entry.entry_id}", "dr-a", entry.time)
    line = json.loads(feedback_log_path(ws).read_text().splitlines()[-1])
    assert line["previous_label"] == label and line["agree"] is False
    assert (line["prediction_id"], line["model_name"], line["model_version"], line["threshold"]
            ) == (predicted.prediction_id, "cxr", "3", 0.4)
    assert pending(ws) == []


def test_an_image_found_by_path_and_an_agreement_changes_nothing(ws):
    manifest = load_manifest(ws.manifest_path)
    row = manifest.loc[manifest["split"] == "val"].iloc[0]
    before = ws.manifest_path.read_bytes()
    entry = add_feedback(ws, ws.config, str(ws.resolve(row["source_path"])), row["label"], "dr-a")
    assert (entry.image_id, entry.agree, entry.status) == (row["image_id"], True, "agreed")
    assert ws.manifest_path.read_bytes() == before


@pytest.mark.parametrize("accept", [True, False])
def test_a_test_correction_waits_for_adjudication(ws, accept):
    image_id, label, other = _image(ws, "test")
    test_hash = split_hash(load_manifest(ws.manifest_path))
    before = ws.manifest_path.read_bytes()
    entry = add_feedback(ws, ws.config, image_id, other, "dr-a")
    assert entry.status == "pending"
    assert ws.manifest_path.read_bytes() == before
    assert [(p.image_id, [e.entry_id for e in p.entries]) for p in pending(ws)] == [
        (image_id, [entry.entry_id])]
    adjudicate(ws, entry.entry_id, accept, "dr-chief")
    assert pending(ws) == []
    assert _label(ws, image_id)["label"] == (other if accept else label)
    if not accept:
        assert ws.manifest_path.read_bytes() == before
        assert split_hash(load_manifest(ws.manifest_path)) == test_hash


def test_an_accepted_test_correction_changes_the_test_split_hash(ws):
    image_id, _, other = _image(ws, "test")
    test_hash = split_hash(load_manifest(ws.manifest_path))
    entry = add_feedback(ws, ws.config, image_id, other, "dr-a")
    assert split_hash(load_manifest(ws.manifest_path)) == test_hash
    adjudicate(ws, entry.entry_id, True, "dr-chief")
    assert split_hash(load_manifest(ws.manifest_path)) != test_hash


def test_disagreeing_reviewers_are_both_kept_and_the_label_does_not_flip(ws):
    image_id, label, other = _image(ws, "train")
    first = add_feedback(ws, ws.config, image_id, other, "dr-a")
    second = add_feedback(ws, ws.config, image_id, label, "dr-b")
    third = add_feedback(ws, ws.config, image_id, other, "dr-c")
    assert (first.status, second.status, third.status) == ("applied", "pending", "pending")
    assert _label(ws, image_id)["label"] == other  # the first correction, not the latest entry
    assert [e.reviewer for e in read_log(ws)] == ["dr-a", "dr-b", "dr-c"]
    [item] = pending(ws)
    assert [e.entry_id for e in item.entries] == [first.entry_id, second.entry_id,
                                                  third.entry_id]
    adjudicate(ws, second.entry_id, True, "dr-chief")
    assert _label(ws, image_id)["label"] == label and pending(ws) == []
    with pytest.raises(DataError, match="medimg feedback pending"):
        adjudicate(ws, first.entry_id, True, "dr-chief")


def test_the_feedback_commands(ws):
    image_id, label, other = _image(ws, "test")
    predicted = new_prediction(image_id, [0.5, 0.5], ws.config.base.class_names, "cxr", 1, 0.5)
    record_predictions(ws, [predicted])
    added = medimg_cli("feedback", "add", "--image", image_id, "--label", other,
                       "--reviewer", "dr-a", "--prediction-id", predicted.prediction_id,
                       cwd=ws.root)
    assert added.returncode == 0, added.stderr
    assert "pending" in added.stdout
    [entry] = read_log(ws)
    assert (entry.model_version, entry.threshold) == ("1", 0.5)
    listed = medimg_cli("feedback", "pending", cwd=ws.root)
    assert listed.returncode == 0 and entry.entry_id in listed.stdout
    decided = medimg_cli("feedback", "adjudicate", entry.entry_id, "--accept",
                         "--reviewer", "dr-chief", cwd=ws.root)
    assert decided.returncode == 0, decided.stderr
    assert _label(ws, image_id)["label"] == other
    unknown = medimg_cli("feedback", "add", "--image", "nope.png", "--label", label,
                         "--reviewer", "dr-a", cwd=ws.root)
    assert unknown.returncode != 0
    assert unknown.stderr.strip().count("\n") == 0 and "medimg ingest" in unknown.stderr
