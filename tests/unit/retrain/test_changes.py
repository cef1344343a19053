"""What changed since the champion: an exact diff of its manifest (from the DVC cache) and the
manifest now, plus images in data/raw that no ingest has read."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image
from support.manifest import manifest_frame, manifest_row, manifest_rows

from medimg.data.manifest import write_manifest
from medimg.retrain.changes import (
    ChampionState,
    cached_manifest,
    champion_manifest,
    files_not_ingested,
    label_changes,
)
from medimg.workspace import Workspace


def _workspace(tmp_path) -> Workspace:
    ws = Workspace(tmp_path)
    ws.manifest_path.parent.mkdir(parents=True)
    return ws


def _in_dvc_cache(ws: Workspace, frame) -> str:
    """Put a manifest in the workspace's DVC cache as DVC 3 lays it out; its md5."""
    staged = ws.root / "staged.parquet"
    write_manifest(frame, staged)
    data = staged.read_bytes()
    md5 = hashlib.md5(data).hexdigest()
    path = ws.root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    staged.unlink()
    return md5


def test_new_images_and_corrections_are_counted_by_class_and_source(tmp_path):
    ws = _workspace(tmp_path)
    rows = manifest_rows(per_class=3)
    before = manifest_frame(rows.values())
    md5 = _in_dvc_cache(ws, before)
    loaded, why = champion_manifest(ws, md5)
    assert why == "" and len(loaded) == len(before)

    rows["train-normal-0"] = {**rows["train-normal-0"], "label": "pneumonia",
                              "label_source": "feedback:e1", "label_by": "dr-a"}
    rows["new-1"] = manifest_row("new-1", "train", "pneumonia", label_source="folder")
    rows["new-2"] = manifest_row("new-2", "val", "normal", label_source="feedback:e2")
    write_manifest(manifest_frame(rows.values()), ws.manifest_path)

    changes = label_changes(ws, ChampionState("4", md5, "run", loaded))

    assert changes.total == 3 and changes.not_ingested == 0
    assert list(changes.relabelled["label_before"]) == ["normal"]
    assert changes.by_class() == {"new": {"normal": 1, "pneumonia": 1},
                                  "corrected": {"pneumonia": 1}}
    assert changes.by_source() == {"feedback": 2, "folder": 1}
    assert changes.line() == ("2 new image(s), 1 corrected label(s) (since champion v4's data "
                              f"{md5[:12]})")


def test_without_a_champion_everything_is_new_and_without_its_data_feedback_counts(tmp_path):
    ws = _workspace(tmp_path)
    rows = manifest_rows(per_class=1)
    rows["train-normal-0"]["label_source"] = "feedback:e9"
    write_manifest(manifest_frame(rows.values()), ws.manifest_path)

    assert label_changes(ws, None).total == len(rows)
    assert cached_manifest(ws, "0" * 32) is None
    missing, why = champion_manifest(ws, "0" * 32)
    assert missing is None and "`dvc pull`" in why
    changes = label_changes(ws, ChampionState("2", "0" * 32, "run", None, why))
    assert len(changes.new_images) == 0 and len(changes.relabelled) == 1
    assert "counted from feedback labels only" in changes.basis


def test_images_waiting_in_data_raw_count_but_tables_do_not(tmp_path):
    ws = _workspace(tmp_path)
    folder = ws.raw_dir / "normal"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")
    (ws.raw_dir / "patients.csv").write_text("file,patient\n0.png,a\n")
    assert files_not_ingested(ws) == 3
