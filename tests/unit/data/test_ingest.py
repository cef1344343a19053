from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medimg.data.ingest import ingest_sources
from medimg.data.manifest import COLUMNS, load_manifest
from medimg.errors import DataError


def _png(path: Path, value: int, size: int = 48, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    shape = (size, size) if mode == "L" else (size, size, 3)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path)
    return path


def _two_class_source(root: Path, per_class: int) -> Path:
    """``root/normal`` and ``root/pneumonia`` with ``per_class`` distinct PNGs each."""
    for i in range(per_class):
        _png(root / "normal" / f"n{i}.png", i)
        _png(root / "pneumonia" / f"p{i}.png", 10 + i)
    return root


def test_manifest_has_one_row_per_image_with_every_column(make_workspace, phantom_source):
    ws = make_workspace()
    summary = ingest_sources(ws, [ws.raw_dir])
    manifest = load_manifest(ws.manifest_path)
    files = sorted(p for p in phantom_source.rglob("*.png"))
    assert summary.ingested == len(files) == len(manifest)
    assert list(manifest.columns) == list(COLUMNS)
    row = manifest.iloc[0]
    source = ws.resolve(row["source_path"])
    assert row["image_id"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert row["label"] == source.parent.name
    assert (row["width"], row["height"], row["channels"]) == (64, 64, 1)
    patients = pd.read_csv(phantom_source / "patients.csv")
    truth = dict(zip(patients["path"], patients["patient_id"], strict=True))
    assert row["patient_id"] == truth[Path(row["source_path"]).relative_to("data/raw").as_posix()]
    # all images of a patient share one split
    assert (manifest.groupby("patient_id")["split"].nunique() == 1).all()
    assert summary.balanced


def test_reingest_is_idempotent_and_appending_moves_nothing(make_workspace, tmp_path):
    ws = make_workspace()
    ingest_sources(ws, [ws.raw_dir])
    before = load_manifest(ws.manifest_path).set_index("image_id")["split"]
    again = ingest_sources(ws, [ws.raw_dir])
    assert again.ingested == 0 and again.already_present == len(before)
    extra = tmp_path / "extra"
    for i in range(12):
        _png(extra / ("normal" if i % 2 else "pneumonia") / f"new{i}.png", 1000 + i)
    added = ingest_sources(ws, [extra])
    after = load_manifest(ws.manifest_path).set_index("image_id")["split"]
    assert added.ingested == 12 and len(after) == len(before) + 12
    assert after.loc[before.index].equals(before)


def test_undecodable_image_is_quarantined_and_fails_with_the_fix(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    src = _two_class_source(tmp_path / "src", 3)
    broken = src / "pneumonia" / "broken.png"
    broken.write_bytes(_png(tmp_path / "x.png", 99).read_bytes()[:60])
    with pytest.raises(DataError, match="max_quarantine_fraction") as info:
        ingest_sources(ws, [src])
    assert "broken.png" in str(info.value)
    assert not ws.manifest_path.exists()  # a failed stage writes no half manifest
    assert broken.exists()  # nothing the user gave is deleted
    copies = list(ws.quarantine_dir.glob("*broken.png"))
    assert len(copies) == 1 and copies[0].read_bytes() == broken.read_bytes()
    assert "truncated or corrupt" in (ws.quarantine_dir / "quarantine.jsonl").read_text()


def test_quarantine_within_bound_keeps_going(make_workspace, tmp_path):
    ws = make_workspace({"data": {"max_quarantine_fraction": 0.5}}, with_data=False)
    src = _two_class_source(tmp_path / "src", 3)
    _png(src / "normal" / "tiny.png", 5, size=8)
    (src / "normal" / "notes.txt").write_text("not an image")
    shutil.copyfile(src / "normal" / "n0.png", src / "pneumonia" / "copy.png")
    summary = ingest_sources(ws, [src])
    reasons = sorted(q["reason"].split(":")[0] for q in summary.quarantined)
    assert reasons == ["not an image file", "too small"]
    assert summary.duplicates == 1 and summary.ingested == 6
    assert summary.balanced
    again = ingest_sources(ws, [src])
    assert again.ingested == 0 and again.balanced
    log = (ws.quarantine_dir / "quarantine.jsonl").read_text().splitlines()
    assert len(log) == 2  # one entry per quarantined file, however often it is seen


@pytest.mark.parametrize("layout,message", [
    ({}, "no class folders"),
    ({"normal": 2}, "only one class folder"),
    ({"normal": 1, "cats": 1}, "not classes"),
])
def test_bad_sources_fail_with_a_reason(make_workspace, tmp_path, layout, message):
    ws = make_workspace(with_data=False)
    src = tmp_path / "src"
    src.mkdir()
    for folder, count in layout.items():
        for i in range(count):
            _png(src / folder / f"{i}.png", i)
    with pytest.raises(DataError, match=message):
        ingest_sources(ws, [src])


def test_image_rewritten_in_place_keeps_its_split(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    src = _two_class_source(tmp_path / "src", 4)
    ingest_sources(ws, [src])
    before = load_manifest(ws.manifest_path).set_index("source_path")
    _png(src / "normal" / "n0.png", 500)  # new bytes, same file
    summary = ingest_sources(ws, [src])
    after = load_manifest(ws.manifest_path).set_index("source_path")
    assert summary.ingested == 1 and len(after) == len(before)
    key = ws.relative(src / "normal" / "n0.png")
    assert after.loc[key, "image_id"] != before.loc[key, "image_id"]
    assert after.loc[key, "split"] == before.loc[key, "split"]
    assert after.loc[key, "patient_id"] == before.loc[key, "patient_id"]
