"""Ingest's privacy paths: DICOM known by content, pseudonyms in every stored path, quarantine by
reference, pixels-only copies, and the local map that is the only way back to the originals."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import medimg_cli
from PIL import Image, PngImagePlugin
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from support.dicoms import PHI_VALUES, write_dicom
from support.ingesting import TEST_KEY, ingest

from medimg.data.images import read_image
from medimg.data.manifest import load_manifest
from medimg.data.pixels_only import PIXEL_CHUNKS, png_chunks
from medimg.data.private import Originals
from medimg.data.pseudonyms import PseudonymKeyMissing, pseudonymise

KEY = TEST_KEY


def _noise(seed: int, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)


def _png(path, seed, text: dict[str, str] | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    Image.fromarray(_noise(seed)).save(path, pnginfo=info)
    return path


def _written(ws) -> bytes:
    """Every byte ingest wrote: the data folder but the user's own raw folder and the local map."""
    skip = (ws.raw_dir, ws.root / "data" / ".private")
    return b"".join(
        p.read_bytes() for p in (ws.root / "data").rglob("*")
        if p.is_file() and not any(p.is_relative_to(s) for s in skip)
    )


def _bare_dataset(path, phi: dict[str, str], implicit: bool = True):
    """A DICOM data set with no preamble, no 'DICM' and no file meta, as some exporters write."""
    ds = pydicom.dcmread(write_dicom(path.with_suffix(".tmp"), phi=phi))
    path.with_suffix(".tmp").unlink()
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, implicit
    write_dataset(out, ds)
    path.write_bytes(out.getvalue())
    return path


def test_dicom_is_recognised_by_content_whatever_its_name_and_preamble(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    src = tmp_path / "src"
    for i in range(3):
        _png(src / "normal" / f"n{i}.png", i)
    (src / "pneumonia" / "ROE_RICHARD").mkdir(parents=True)
    roe = {"PatientID": "MRN-2-ROE", "PatientName": "ROE^RICHARD"}
    write_dicom(src / "pneumonia" / "ROE_RICHARD" / "IM0001", phi=roe, preamble=False)
    _bare_dataset(src / "pneumonia" / "ROE_RICHARD" / "scan.png", roe)  # DICOM named .png
    _bare_dataset(src / "pneumonia" / "report", {"PatientID": "MRN-3-ZED"}, implicit=False)
    summary = ingest(ws, [src])
    assert summary.ingested == 6 and summary.balanced
    manifest = load_manifest(ws.manifest_path)
    dicoms = manifest[manifest["label"] == "pneumonia"]
    assert set(dicoms["format"]) == {"dicom"} and len(dicoms) == 3
    assert dicoms["source_path"].str.endswith(".dcm").all()
    assert not dicoms["source_ref"].str.contains("ROE").any()
    written = _written(ws)
    for value in [*PHI_VALUES.values(), "MRN-2-ROE", "ROE^RICHARD", "RICHARD", "MRN-3-ZED"]:
        assert value.encode() not in written, value
    for stored in dicoms["source_path"]:
        ds = pydicom.dcmread(ws.resolve(stored))
        assert ds.PatientIdentityRemoved == "YES" and ds.file_meta.TransferSyntaxUID


def test_a_bare_dicom_needs_the_key_like_any_dicom(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    src = tmp_path / "src"
    for i in range(2):
        _png(src / "normal" / f"n{i}.png", i)
    (src / "pneumonia").mkdir()
    _bare_dataset(src / "pneumonia" / "IM1", {})
    with pytest.raises(PseudonymKeyMissing, match="DICOM files carry patient identifiers"):
        ingest(ws, [src], key=None)
    assert not ws.manifest_path.exists() and not ws.store_dir.exists()


def _label_list_source(tmp_path):
    src = tmp_path / "list"
    rows = []
    for i in range(6):
        patient = f"MRN-{770 + i % 3}"
        name = f"imgs/{patient}_cxr{i}.png"
        _png(src / name, 50 + i, text={"Patient": f"DOE^JANE{i}", "MRN": patient})
        rows.append({"path": name, "label": i % 2, "patient_id": patient})
    (src / "MRN-770_report.txt").write_text("Radiology report for DOE^JANE0, MRN-770\n")
    pd.DataFrame(rows).to_csv(src / "labels.csv", index=False)
    return src


def test_patient_ids_in_paths_become_pseudonyms_and_only_the_local_map_leads_back(
    make_workspace, tmp_path
):
    ws = make_workspace(with_data=False)
    src = _label_list_source(tmp_path)
    summary = ingest(ws, [src / "labels.csv"])
    assert summary.ingested == 6 and summary.balanced
    manifest = load_manifest(ws.manifest_path)
    for _, row in manifest.iterrows():
        assert "MRN" not in row["source_ref"] and row["patient_id"] in row["source_ref"]
        [original] = Originals(ws).originals_of(row["source_ref"])
        assert hashlib.sha256(Path(original).read_bytes()).hexdigest() == row["image_id"]
    written = _written(ws)
    for value in ("MRN-77", "DOE^JANE"):
        assert value.encode() not in written, value
    # the map is ignored by git (its folder's own .gitignore) and listed in .dvcignore
    private = ws.root / "data" / ".private" / "originals.json"
    assert "MRN-770" in private.read_text()
    ignored = subprocess.run(["git", "check-ignore", "-q", str(private)], cwd=ws.root)
    assert ignored.returncode == 0
    assert "/data/.private/" in (ws.root / ".dvcignore").read_text().splitlines()
    # a re-ingest recognises every file by its pseudonymised reference
    again = ingest(ws, [src / "labels.csv"])
    assert again.already_present == 6 and again.ingested == 0


def test_non_image_files_are_quarantined_by_reference_under_their_pseudonymised_names(
    make_workspace, tmp_path
):
    ws = make_workspace(with_data=False)
    src = _label_list_source(tmp_path)
    folders = tmp_path / "folders"
    for i in range(3):
        _png(folders / "normal" / f"n{i}.png", 100 + i)
        _png(folders / "pneumonia" / f"p{i}.png", 200 + i)
    original = folders / "normal" / "MRN-770_report.txt"
    original.write_text("Radiology report: DOE^JANE0, MRN-770\n")
    # the label list names the patient, so the report in another source is scrubbed too
    summary = ingest(ws, [src / "labels.csv", folders])
    report = next(e for e in summary.quarantined if e.path.endswith("_report.txt"))
    assert report.code == "not_an_image"
    assert report.path.endswith(f"{pseudonymise('MRN-770', KEY)}_report.txt")
    assert report.sha256 == hashlib.sha256(original.read_bytes()).hexdigest()
    assert report.size == original.stat().st_size
    assert [p.name for p in ws.quarantine_dir.iterdir()] == ["quarantine.jsonl"]
    logged = ws.quarantine_log.read_text()
    assert "MRN-770" not in logged and "DOE^JANE" not in logged
    assert {json.loads(x)["code"] for x in logged.splitlines()} == {"not_an_image"}

    listed = medimg_cli("quarantine", cwd=ws.root)
    assert listed.returncode == 0 and "not_an_image" in listed.stdout
    assert "MRN-770" not in listed.stdout + listed.stderr
    found = medimg_cli("quarantine", "--originals", cwd=ws.root)
    assert found.returncode == 0 and "MRN-770_report.txt" in found.stdout.replace("\n", "")


def test_stored_images_carry_pixels_only(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    src = tmp_path / "src"
    for i in range(3):
        _png(src / "normal" / f"n{i}.png", i, text={"Patient": "DOE^JANE", "DOB": "19610704"})
        exif = Image.Exif()
        exif[0x010E] = "DOE^JANE MRN-770"
        buffer = io.BytesIO()
        Image.fromarray(np.stack([_noise(10 + i)] * 3, axis=-1)).save(
            buffer, "JPEG", exif=exif.tobytes(), comment=b"MRN-770")
        (src / "pneumonia").mkdir(exist_ok=True)
        (src / "pneumonia" / f"p{i}.jpg").write_bytes(buffer.getvalue())
    ingest(ws, [src])
    manifest = load_manifest(ws.manifest_path)
    assert manifest["source_path"].str.startswith("data/store/").all()
    for _, row in manifest.iterrows():
        stored = ws.resolve(row["source_path"]).read_bytes()
        assert b"DOE^JANE" not in stored and b"MRN-770" not in stored and b"19610704" not in stored
        if row["format"] == "png":
            assert set(png_chunks(stored)) <= PIXEL_CHUNKS
        [original] = Originals(ws).originals_of(row["source_ref"])
        np.testing.assert_array_equal(read_image(ws.resolve(row["source_path"])),
                                      read_image(original))


def test_a_later_ingest_still_finds_earlier_identifiers_in_new_file_names(
    make_workspace, tmp_path
):
    ws = make_workspace(with_data=False)
    src = tmp_path / "src"
    for i in range(3):
        _png(src / "normal" / f"n{i}.png", i)
    (src / "pneumonia").mkdir()
    smith = {"PatientID": "MRN-55-SMITH", "PatientName": "SMITHSON^ANNA",
             "PatientBirthDate": "19710203"}
    write_dicom(src / "pneumonia" / "scan.dcm", phi=smith)
    ingest(ws, [src])
    # a follow-up arrives later, named after the patient and her birth date in another spelling
    _png(src / "pneumonia" / "Smithson_Anna_1971-02-03_followup.png", 99)
    second = ingest(ws, [src])
    assert second.ingested == 1 and second.already_present == 4
    refs = " ".join(load_manifest(ws.manifest_path)["source_ref"])
    assert "smithson" not in refs.casefold() and "1971" not in refs
    assert f"{pseudonymise('SMITHSON^ANNA', KEY)}" in refs
    # what lets it find them holds keyed digests, never the identifiers themselves
    known = (ws.root / "data" / ".private" / "identifiers.json").read_text()
    for value in (*smith.values(), "SMITHSON", "smithsonanna", "19710203"):
        assert value.casefold() not in known.casefold()


def test_label_annotator_metadata_and_list_name_cells_are_scrubbed_too(make_workspace, tmp_path):
    ws = make_workspace({"data": {"metadata_columns": ["site"]}}, with_data=False)
    src = tmp_path / "list"
    rows = []
    for i in range(6):
        _png(src / f"{i}.png", 300 + i)
        rows.append({"path": f"{i}.png", "label": i % 2, "patient_id": f"ZQXPID{i:02d}",
                     "site": "north", "annotator": "dr-who"})
    rows[1]["label"] = "ZQXPID01"  # an identifier typed into the label column
    rows[2]["site"] = "ZQXPID02"
    rows[3]["annotator"] = "ZQXPID03"
    listed = src / "ZQXPID04.csv"  # a list named after a patient
    pd.DataFrame(rows).to_csv(listed, index=False)
    ingest(ws, [listed])
    manifest = load_manifest(ws.manifest_path)
    cells = " ".join(map(str, manifest.to_numpy().ravel()))
    assert "ZQXPID" not in cells
    assert pseudonymise("ZQXPID01", KEY) in set(manifest["label"])  # still an unknown label
    assert f"csv:{pseudonymise('ZQXPID04', KEY)}.csv" in set(manifest["label_source"])
