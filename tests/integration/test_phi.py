"""No original identifier leaves ingest: a whole pipeline run on identified DICOM, then a scan.

The phantoms are written as DICOM files carrying realistic PHI (names, MRNs, birth dates,
institution, physicians, accession numbers, UIDs, a private tag), in folders named after the
patients. The full Prefect flow then ingests, validates, trains, evaluates, records DVC lineage and
logs to MLflow. Every file the pipeline wrote (everything in the workspace outside ``data/raw``
and git's own folder, including the DVC cache, the MLflow database and artifacts, reports, Data
Docs, the manifest and the de-identified store) and every log line is then searched for every
original identifier.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from support.dicoms import PHI_VALUES, write_dicom

from flows.training import training_pipeline
from medimg.data.images import read_image

pytestmark = [
    pytest.mark.integration,
    pytest.mark.usefixtures("prefect_harness", "clean_mlflow_env"),
]


def _identified_dicom_source(raw: Path, phantoms: Path) -> set[str]:
    """Phantoms rewritten as identified DICOM under ``raw``; returns every original identifier."""
    patients = pd.read_csv(phantoms / "patients.csv")
    identifiers = {v for k, v in PHI_VALUES.items() if not k.endswith("Time")}
    for n, (_patient, group) in enumerate(patients.groupby("patient_id")):
        phi = {
            "PatientName": f"SURNAME{n:03d}^GIVEN{n:03d}",
            "PatientID": f"MRN-{n:05d}-ZQ",
            "AccessionNumber": f"ACC-{n:05d}-QQ",
            "StudyInstanceUID": f"1.2.826.0.1.3680043.8.498.7700{n:03d}.1",
            "SeriesInstanceUID": f"1.2.826.0.1.3680043.8.498.7700{n:03d}.2",
        }
        identifiers |= set(phi.values()) | {phi["PatientName"].replace("^", " ")}
        for relative in group["path"]:
            label = Path(relative).parts[0]
            folder = raw / label / phi["PatientName"].replace("^", "_")
            folder.mkdir(parents=True, exist_ok=True)
            pixels = read_image(phantoms / relative)
            target = write_dicom(
                folder / (Path(relative).stem + ".dcm"), pixels, phi=phi, bits_stored=8
            )
            identifiers.add(str(pydicom.dcmread(target).SOPInstanceUID))
            identifiers.add(folder.name)
    return identifiers


def _written_files(root: Path) -> list[Path]:
    skip = {root / "data" / "raw", root / ".git"}
    return [
        p for p in root.rglob("*") if p.is_file() and not any(p.is_relative_to(s) for s in skip)
    ]


def test_no_original_identifier_appears_in_anything_the_pipeline_writes(
    make_workspace, phantom_source, caplog
):
    ws = make_workspace({"gates": {"min_f1": 0.0, "min_recall": 0.0}}, with_data=False)
    identifiers = _identified_dicom_source(ws.raw_dir, phantom_source)
    assert len(identifiers) > 100

    with caplog.at_level(logging.DEBUG):
        outcome = training_pipeline(str(ws.root))
    assert outcome["version"] == "1"
    assert outcome["ingest"]["ingested"] == sum(1 for _ in ws.raw_dir.rglob("*.dcm"))

    manifest = pd.read_parquet(ws.manifest_path)
    assert set(manifest["format"]) == {"dicom"}
    assert manifest["source_path"].str.startswith("data/store/").all()
    # DICOM in data/raw is not copied into the DVC cache: its de-identified copies are versioned
    assert not (ws.root / "data" / "raw.dvc").exists()

    files = _written_files(ws.root)
    assert any(p.is_relative_to(ws.root / ".dvc" / "cache") for p in files)
    assert ws.mlflow_db in files and any(p.suffix == ".html" for p in files)
    texts = {p: p.read_bytes().decode("latin-1").casefold() for p in files}
    # Parquet and SQLite may store text compressed or split; read them as tables too
    texts[ws.manifest_path] += " ".join(manifest.astype(str).to_numpy().ravel()).casefold()
    with sqlite3.connect(ws.mlflow_db) as db:
        for (table,) in db.execute("select name from sqlite_master where type='table'"):
            rows = db.execute(f"select * from {table}").fetchall()
            texts[ws.mlflow_db] += " ".join(map(str, rows)).casefold()
    logs = "\n".join(r.getMessage() for r in caplog.records).casefold()

    leaks = sorted(
        (value, str(path.relative_to(ws.root)))
        for value in identifiers
        for path, text in [*texts.items(), (Path("log"), logs)]
        if value.casefold() in text
    )
    assert not leaks, leaks[:10]
