"""The ingest stage: settings passed in, never read from the environment here."""

from __future__ import annotations

import pandas as pd
import pytest
from support.ingesting import TEST_KEY

from medimg.data.manifest import load_manifest
from medimg.data.pseudonyms import PseudonymKeyMissing, pseudonymise
from medimg.data.stage import run_ingest
from medimg.settings import PSEUDONYM_KEY_ENV, Settings


def test_the_stage_ingests_data_raw_with_the_key_of_its_settings(make_workspace, monkeypatch):
    ws = make_workspace()
    # whatever the environment says, the key is the one the settings carry
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, "an-environment-key-0123456789")
    summary = run_ingest(ws, ws.config, Settings(pseudonym_key=TEST_KEY.decode()), dedupe=False)
    assert summary.balanced and summary.ingested == summary.files_in > 0
    manifest = load_manifest(ws.manifest_path)
    assert manifest["source_ref"].str.startswith("data/raw/").all()
    patients = pd.read_csv(ws.raw_dir / "patients.csv")["patient_id"]
    assert set(manifest["patient_id"]) == {pseudonymise(p, TEST_KEY) for p in patients}


def test_settings_without_a_key_fail_with_the_variable_to_set(make_workspace, monkeypatch):
    ws = make_workspace()
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, "an-environment-key-0123456789")
    with pytest.raises(PseudonymKeyMissing, match=PSEUDONYM_KEY_ENV):
        run_ingest(ws, ws.config, Settings(pseudonym_key=None), [ws.raw_dir])
    assert not ws.manifest_path.exists()
