"""Reviewers saving at once, in real processes: no entry or prediction lost, no relabel
undone."""

from __future__ import annotations

import json
import multiprocessing

from medimg.data.manifest import load_manifest
from medimg.feedback.log import feedback_log_path, read_log
from medimg.feedback.predictions import predictions_path, read_predictions, worklist

PROCESSES = 4
PER_PROCESS = 3


def _review(root: str, corrections: list[tuple[str, str]], reviewer: str, start) -> None:
    """One reviewer's session in its own process: wait for the others, then for each image
    record a model's prediction and answer it."""
    from medimg.feedback.predictions import new_prediction, record_predictions
    from medimg.feedback.review import add_feedback
    from medimg.workspace import open_workspace

    ws = open_workspace(root)
    start.wait(timeout=120)
    for image_id, label in corrections:
        made = new_prediction(image_id, [0.5, 0.5], ws.config.base.class_names, "cxr", 1, 0.5)
        record_predictions(ws, [made])
        add_feedback(ws, ws.config, image_id, label, reviewer, prediction_id=made.prediction_id)


def test_reviewers_in_several_processes_keep_every_entry_and_every_relabel(ws):
    manifest = load_manifest(ws.manifest_path)
    train = manifest.loc[manifest["split"] == "train"].drop_duplicates("image_id")
    classes = list(ws.config.base.class_names)
    wanted = {str(row["image_id"]): next(c for c in classes if c != row["label"])
              for _, row in train.head(PROCESSES * PER_PROCESS).iterrows()}
    items = list(wanted.items())
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    workers = [context.Process(target=_review, args=(
        str(ws.root), items[i::PROCESSES], f"dr-{i}", start)) for i in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [w.exitcode for w in workers] == [0] * PROCESSES

    lines = feedback_log_path(ws).read_text().splitlines()
    assert len(lines) == len(wanted)
    assert all(json.loads(line)["kind"] == "label" for line in lines)  # each line parses
    entries = read_log(ws)
    assert {e.image_id: e.label for e in entries} == wanted
    assert {e.status for e in entries} == {"applied"}
    assert len(predictions_path(ws).read_text().splitlines()) == len(wanted)
    assert {p.prediction_id for p in read_predictions(ws)} == {e.prediction_id for e in entries}
    assert worklist(ws) == []
    after = load_manifest(ws.manifest_path).set_index("image_id")
    for entry in entries:  # every relabel survived the others' manifest writes
        row = after.loc[entry.image_id]
        assert (row["label"], row["label_source"], row["label_by"]) == (
            entry.label, f"feedback:{entry.entry_id}", entry.reviewer)
    untouched = manifest.loc[~manifest["image_id"].isin(list(wanted))]
    assert (after.loc[untouched["image_id"], "label"].to_numpy()
            == untouched["label"].to_numpy()).all()
