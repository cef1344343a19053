"""No planted identifier leaves ingest, by any path: the whole pipeline, the registry, a served
prediction, and then a scan of every byte medimg wrote and every log record.

Identifiers are planted in each input that can carry one:

- DICOM headers, with the preamble and without it (no preamble, no extension), including a
  nested sequence and a private tag, in folders named after the patient;
- a label list with patient-name, birth-date and MRN columns, and ``patients.csv`` with the same;
- file and folder names holding the patient id;
- PNG text chunks, and JPEG EXIF and comments;
- radiology reports beside the images.

The label list is ingested with the CLI, then the Prefect flow runs on ``data/raw`` (ingest,
contract, training, evaluation, DVC lineage, MLflow, registry). `medimg registry list` and
`medimg registry audit` follow, then the champion behind `mlflow models serve` answers requests
carrying identified DICOM and JPEG bytes. Everything in the workspace but the user's own source
folders and the local map back to them (``data/.private``) is then read, including the DVC
cache, MLflow's database and artifacts, Prefect's database and result storage, the server's log,
console output and log records, with Parquet, SQLite, JSON and zip members decoded, so that a
value stored compressed or escaped is still found.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image, PngImagePlugin
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from support.dicoms import PHI_VALUES, write_dicom
from support.servers import served_champion

from flows.training import training_pipeline
from medimg.data.images import read_image
from tests.conftest import medimg_cli

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("prefect_harness", "clean_mlflow_env"),
]


def _identity(n: int) -> dict[str, str]:
    return {
        "PatientName": f"SURNAME{n:03d}^GIVEN{n:03d}",
        "PatientID": f"MRN-{n:05d}-ZQ",
        "PatientBirthDate": f"19{50 + n % 40:02d}{1 + n % 12:02d}{10 + n % 18:02d}",
        "AccessionNumber": f"ACC-{n:05d}-QQ",
        "PatientAddress": f"{n} Quarry Lane^Springfield{n:03d}",
        "StudyInstanceUID": f"1.2.826.0.1.3680043.8.498.7700{n:03d}.1",
        "SeriesInstanceUID": f"1.2.826.0.1.3680043.8.498.7700{n:03d}.2",
        "RequestingPhysician": f"NESTED{n:03d}^REQUESTER",  # inside a sequence
        "PrivateIdentifier": f"PRIV-{n:05d}-XQ",  # in a private tag
    }


def _values(identity: dict[str, str]) -> set[str]:
    """Every form a planted value may take: as given, and a person name's parts and spellings."""
    found = set(identity.values())
    for key in ("PatientName", "RequestingPhysician"):
        name = identity[key]
        found |= {name.replace("^", " "), name.replace("^", "_"), *name.split("^")}
    return found


def _bare_dicom(path: Path, pixels: np.ndarray, phi: dict[str, str]) -> None:
    """DICOM as some exporters write it: no preamble, no 'DICM', no file meta, no extension."""
    staging = path.with_name(path.name + ".staging")
    write_dicom(staging, pixels, phi=phi, bits_stored=8)
    ds = pydicom.dcmread(staging)
    staging.unlink()
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, True
    write_dataset(out, ds)
    path.write_bytes(out.getvalue())


def _png_with_text(path: Path, pixels: np.ndarray, identity: dict[str, str]) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Patient", identity["PatientName"])
    info.add_itxt("MRN", identity["PatientID"])
    info.add_text("DOB", identity["PatientBirthDate"], zip=True)
    Image.fromarray(pixels).save(path, pnginfo=info)


def _jpeg_with_exif(path: Path, pixels: np.ndarray, identity: dict[str, str]) -> None:
    exif = Image.Exif()
    exif[0x013B] = identity["PatientName"]  # Artist
    exif[0x010E] = f"{identity['PatientID']} {identity['PatientBirthDate']}"  # Description
    Image.fromarray(pixels).save(path, "JPEG", quality=95, exif=exif.tobytes(),
                                 comment=identity["AccessionNumber"].encode())


def _plant(raw: Path, listed: Path, phantoms: Path) -> tuple[set[str], list[Path]]:
    """The phantoms rewritten with identifiers in every input; returns the planted values and
    the identified files a client will send to the served model."""
    patients = pd.read_csv(phantoms / "patients.csv")
    planted = {v for k, v in PHI_VALUES.items() if not k.endswith("Time")}
    table, listing, to_send, sent = [], [], [], set()
    (listed / "imgs").mkdir(parents=True)
    for n, (_patient, group) in enumerate(patients.groupby("patient_id")):
        identity = _identity(n)
        planted |= _values(identity)
        mrn, name = identity["PatientID"], identity["PatientName"].replace("^", "_")
        kind = n % 5
        for k, relative in enumerate(group["path"]):
            label = Path(relative).parts[0]
            stem = Path(relative).stem
            pixels = read_image(phantoms / relative)
            if kind == 0:  # DICOM with its preamble, in a folder named after the patient
                folder = raw / label / name
                folder.mkdir(parents=True, exist_ok=True)
                target = write_dicom(folder / f"{stem}.dcm", pixels, phi=identity, bits_stored=8)
                planted.add(str(pydicom.dcmread(target).SOPInstanceUID))
            elif kind == 1:  # DICOM without preamble or extension, in a folder named by MRN
                folder = raw / label / mrn
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / f"IM{k:04d}"
                _bare_dicom(target, pixels, identity)
                planted.add(str(pydicom.dcmread(target, force=True).SOPInstanceUID))
            elif kind in (2, 3):  # PNG text chunks or JPEG EXIF, named after the patient id
                (raw / label).mkdir(parents=True, exist_ok=True)
                if kind == 2:
                    target = raw / label / f"{mrn}_{stem}.png"
                    _png_with_text(target, pixels, identity)
                else:
                    target = raw / label / f"{mrn}_{stem}.jpg"
                    _jpeg_with_exif(target, pixels, identity)
                table.append({"path": target.relative_to(raw).as_posix(), "patient_id": mrn,
                              "patient_name": identity["PatientName"],
                              "dob": identity["PatientBirthDate"], "mrn": mrn})
            else:  # a label list outside data/raw with identifying columns
                target = listed / "imgs" / f"{mrn}_{stem}.png"
                Image.fromarray(pixels).save(target)
                listing.append({"path": target.relative_to(listed).as_posix(), "label": label,
                                "patient_id": mrn, "patient_name": identity["PatientName"],
                                "date_of_birth": identity["PatientBirthDate"], "mrn": mrn,
                                "view": "PA"})
            if kind in (0, 1, 3) and kind not in sent:  # one identified file of each kind
                sent.add(kind)
                to_send.append(target)
        if kind == 2:  # a report beside the images, named and filled with identifiers
            label = Path(group["path"].iloc[0]).parts[0]
            report = raw / label / f"{mrn}_report.txt"
            report.write_text(f"Chest film of {identity['PatientName']}, born "
                              f"{identity['PatientBirthDate']}, {identity['PatientAddress']}\n")
    pd.DataFrame(table).to_csv(raw / "patients.csv", index=False)
    pd.DataFrame(listing).to_csv(listed / "labels.csv", index=False)
    (listed / f"{_identity(4)['PatientName'].replace('^', '_')}_report.txt").write_text(
        f"Report for {_identity(4)['PatientID']}\n")
    return planted, to_send


def _texts(path: Path) -> list[str]:
    """The file as text, and again decoded from each container format it may be."""
    data = path.read_bytes()
    texts = [data.decode("latin-1")]
    if data[:4] == b"PAR1":
        texts.append(" ".join(map(str, pd.read_parquet(path).to_numpy().ravel())))
    elif data[:16] == b"SQLite format 3\x00":
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            for (table,) in db.execute("select name from sqlite_master where type='table'"):
                texts.append(" ".join(map(str, db.execute(f'select * from "{table}"'))))
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            texts += [archive.read(m).decode("latin-1") for m in archive.namelist()]
    else:
        try:
            texts.append(json.dumps(json.loads(data), ensure_ascii=False))
        except ValueError:
            texts += [json.dumps(json.loads(line), ensure_ascii=False)
                      for line in data.decode("utf-8", "replace").splitlines()
                      if line.startswith("{") and _is_json(line)]
    return texts


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _files(root: Path, skip: tuple[Path, ...]) -> list[Path]:
    return [p for p in root.rglob("*")
            if p.is_file() and not any(p.is_relative_to(s) for s in skip)]


def _prefect_files() -> list[Path]:
    """Prefect's database (logs, task results and artifacts) and its local result storage."""
    from prefect.settings import (
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
    )

    database = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split(":///", 1)[1])
    storage = Path(PREFECT_LOCAL_STORAGE_PATH.value())
    found = [p for p in database.parent.glob(database.name + "*") if p.is_file()]
    return found + (_files(storage, ()) if storage.is_dir() else [])


def _serve_and_predict(ws, files: list[Path], log: Path) -> None:
    with served_champion(ws, log) as url:
        rows = [[base64.b64encode(p.read_bytes()).decode()] for p in files]
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": rows}}).encode()
        request = urllib.request.Request(f"{url}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
    assert [r["label"] in ("normal", "pneumonia") for r in answer["predictions"]] == [True] * 3


def test_no_planted_identifier_appears_in_anything_medimg_writes(
    make_workspace, phantom_source, tmp_path, caplog, capfd
):
    ws = make_workspace({"gates": {"min_f1": 0.0, "min_recall": 0.0}}, with_data=False)
    listed = tmp_path / "listed"
    planted, to_send = _plant(ws.raw_dir, listed, phantom_source)
    assert len(planted) > 200 and len(to_send) == 3
    assert {p.suffix for p in to_send} == {".dcm", "", ".jpg"}

    console = []
    first = medimg_cli("ingest", str(listed / "labels.csv"), cwd=ws.root)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "label-list columns not kept: date_of_birth, mrn, patient_name, view" in first.stdout
    console += [first.stdout, first.stderr]
    with caplog.at_level(logging.DEBUG):
        outcome = training_pipeline(str(ws.root))
    assert outcome.registration.version == "1"
    for command in (("registry", "list"), ("registry", "audit")):
        shown = medimg_cli(*command, cwd=ws.root)
        assert shown.returncode == 0 and "champion" in shown.stdout, shown.stderr[-2000:]
        console += [shown.stdout, shown.stderr]
    served_log = tmp_path / "serve.log"
    _serve_and_predict(ws, to_send, served_log)
    captured = capfd.readouterr()
    console += [captured.out, captured.err]

    # every image came in, every report was quarantined by reference, and nothing was copied
    manifest = pd.read_parquet(ws.manifest_path)
    assert set(manifest["format"]) == {"dicom", "png", "jpeg"}
    assert manifest["source_path"].str.startswith("data/store/").all()
    assert not [c for c in manifest.columns if c.startswith("meta_") and "view" not in c
                and c not in ("meta_modality", "meta_view_position", "meta_body_part",
                              "meta_photometric", "meta_burned_in_annotation")]
    log = [json.loads(x) for x in ws.quarantine_log.read_text().splitlines()]
    assert {e["code"] for e in log} == {"not_an_image"}
    assert sorted(p.name for p in ws.quarantine_dir.iterdir()) == ["quarantine.jsonl"]
    assert not (ws.root / "data" / "raw.dvc").exists()

    # Prefect's API logs are shipped in batches; let the last one land
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    time.sleep(3)
    written = _files(ws.root, (ws.raw_dir, ws.root / ".git", ws.root / "data" / ".private"))
    assert any(p.is_relative_to(ws.root / ".dvc" / "cache") for p in written)
    assert ws.mlflow_db in written and any(p.suffix == ".html" for p in written)
    assert any(p.suffix == ".keras" for p in written)
    sources = {str(p.relative_to(ws.root)): _texts(p) for p in written}
    prefect = _prefect_files()
    assert prefect, "the Prefect database was not found"
    sources |= {f"prefect:{p.name}": _texts(p) for p in prefect}
    sources["serve.log"] = [served_log.read_text(errors="replace")]
    sources["console"] = console
    sources["log records"] = [r.getMessage() for r in caplog.records]
    folded = {where: "\n".join(texts).casefold() for where, texts in sources.items()}
    leaks = sorted((value, where) for value in planted for where, text in folded.items()
                   if value.casefold() in text)
    assert not leaks, leaks[:20]
