"""Feedback on an image file the manifest does not have: it comes in through ingest."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from conftest import medimg_cli
from PIL import Image
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEGBaseline8Bit
from support.dicoms import PHI_VALUES, write_dicom

from medimg.data.images import read_image
from medimg.data.manifest import load_manifest
from medimg.data.quarantine import read_quarantine
from medimg.errors import DataError
from medimg.feedback.log import read_log
from medimg.feedback.review import add_feedback
from medimg.settings import read_settings

# a file name as a scanner export or a colleague might give it: it names the patient
NAME = "DOE_JANE_MRN-4471-0099"


def _png(path, seed: int = 7):
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    return path


def _undecodable(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not the rest of a PNG" * 20)
    return path


def _burned_in(path):
    return write_dicom(path, burned_in="DOE JANE")


def _not_deidentifiable(path):
    """A JPEG DICOM whose frame is not a JPEG stream: the de-identifier cannot strip it."""
    write_dicom(path, bits_stored=8, transfer_syntax=JPEGBaseline8Bit)
    ds = pydicom.dcmread(path)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([b"ZQX not a JPEG" + frame[2:]])
    ds.save_as(path)
    return path


def _everything_written(ws) -> bytes:
    """Every file medimg keeps in the workspace, the user's raw folder aside."""
    return b"".join(p.read_bytes() for p in sorted(ws.root.rglob("*")) if p.is_file()
                    and "raw" not in p.parts and ".git" not in p.parts
                    and ".dvc" not in p.parts)


def test_a_new_png_is_ingested_with_the_feedback_as_its_provenance(ws, tmp_path):
    original = _png(tmp_path / "inbox" / f"{NAME}.png")
    before = original.read_bytes()
    rows_before = len(load_manifest(ws.manifest_path))
    label = ws.config.base.class_names[-1]
    entry = add_feedback(ws, ws.config, str(original), label, "dr-a",
                         settings=read_settings())
    assert (entry.status, entry.previous_label) == ("applied", None)
    assert "new -> " in entry.line()
    manifest = load_manifest(ws.manifest_path)
    assert len(manifest) == rows_before + 1
    row = manifest.loc[manifest["image_id"] == entry.image_id].iloc[0]
    assert (row["label"], row["label_source"], row["label_by"], row["label_at"]) == (
        label, f"feedback:{entry.entry_id}", "dr-a", entry.time)
    assert row["split"] in ("train", "val", "test") and row["split"] == entry.split
    stored = ws.resolve(row["source_path"])
    assert stored.is_relative_to(ws.store_dir)
    np.testing.assert_array_equal(read_image(stored), read_image(original))
    assert original.read_bytes() == before  # the user's file is only read
    assert not (ws.root / ".medimg" / "feedback-intake").exists()
    assert b"DOE" not in _everything_written(ws)
    # the same file again is the manifest's image now: a second reviewer agrees
    again = add_feedback(ws, ws.config, str(original), label, "dr-b")
    assert (again.image_id, again.agree, again.status) == (entry.image_id, True, "agreed")


@pytest.mark.parametrize(("make", "code"), [
    (_undecodable, None),
    (_burned_in, "burned_in"),
    (_not_deidentifiable, "deid_failed"),
], ids=["undecodable", "burned-in", "not-deidentifiable"])
def test_a_file_ingest_would_quarantine_is_quarantined_and_nothing_is_recorded(
        ws, snapshot, tmp_path, make, code):
    image_id, label = (str(v) for v in load_manifest(ws.manifest_path).iloc[0][
        ["image_id", "label"]])
    add_feedback(ws, ws.config, image_id, label, "dr-a")  # a log exists before
    before = snapshot(ws)
    original = make(tmp_path / f"{NAME}.dcm")
    kept = original.read_bytes()
    with pytest.raises(DataError) as caught:
        add_feedback(ws, ws.config, str(original), label, "dr-b", settings=read_settings())
    message = str(caught.value)
    assert "\n" not in message and "quarantined" in message and NAME not in message
    [quarantined] = read_quarantine(ws.quarantine_log)
    assert f"({quarantined.code}: " in message
    if code is not None:
        assert quarantined.code == code
    assert snapshot(ws) == before
    assert original.read_bytes() == kept
    written = _everything_written(ws)
    for value in (NAME, PHI_VALUES["PatientName"], PHI_VALUES["PatientID"]):
        assert value.encode() not in written, value


def test_feedback_add_ingests_a_new_file_from_the_command_line(ws, tmp_path):
    original = _png(tmp_path / f"{NAME}.png", seed=11)
    label = ws.config.base.class_names[0]
    added = medimg_cli("feedback", "add", "--image", str(original), "--label", label,
                       "--reviewer", "dr-a", cwd=ws.root)
    assert added.returncode == 0, added.stderr
    [entry] = read_log(ws)
    assert f"new -> {label}" in added.stdout and entry.previous_label is None
    line = json.loads((ws.root / "data" / "feedback" / "feedback.jsonl").read_text())
    assert NAME not in json.dumps(line)
    manifest = load_manifest(ws.manifest_path)
    assert manifest.loc[manifest["image_id"] == entry.image_id, "label_source"].tolist() == [
        f"feedback:{entry.entry_id}"]
    assert original.exists()
