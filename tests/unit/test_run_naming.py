"""One name per pipeline run, fit for Prefect, MLflow, git refs and a shared tracking server."""

from __future__ import annotations

import subprocess

import pytest

from flows.training import artifact_key
from medimg.errors import DataError
from medimg.mlflow_run import one_line
from medimg.tracking import pipeline_run_name
from medimg.versioning import experiment_name
from medimg.workspace import Workspace


def test_a_run_is_named_after_its_workspace_data_version_and_time():
    when = 1796117446.0  # 2026-12-01 09:30:46 UTC
    assert pipeline_run_name("chest xrays", "0b3eb6c4d2e1f00a", when) == \
        "chest-xrays-0b3eb6c4-20261201-093046"
    assert pipeline_run_name("ws", "file-md5:ABCDEF0123456789", when).startswith("ws-abcdef01-")
    assert pipeline_run_name("ws", "unknown", when) == "ws-nodata-20261201-093046"


@pytest.mark.parametrize("text", ["ws-0b3eb6c4-20261201-093046", "a b..c~d^e:f?g*h[i]\\j.lock",
                                  "-leading.", "..", "über"])
def test_experiment_names_are_refs_git_accepts(text, tmp_path):
    name = experiment_name(text)
    assert name
    checked = subprocess.run(["git", "check-ref-format", f"refs/exps/{name}"],
                             capture_output=True)
    assert checked.returncode == 0, name


def test_an_artifact_key_is_stable_per_workspace_and_differs_between_same_named_folders(
        tmp_path):
    first, again = Workspace(tmp_path / "a" / "ws"), Workspace(tmp_path / "a" / "ws")
    other = Workspace(tmp_path / "b" / "ws")
    assert artifact_key(first) == artifact_key(again) != artifact_key(other)
    # Prefect's rule for keys: lower-case letters, digits and dashes
    assert all(c.islower() or c.isdigit() or c == "-" for c in artifact_key(first))
    assert artifact_key(Workspace(tmp_path / "Über Folder!")).startswith("medimg-pipeline-ber-")


def test_a_failure_reason_keeps_medimg_messages_and_drops_library_ones():
    assert one_line(DataError("the train split is empty; add images\nmore")) == \
        "the train split is empty; add images"
    leaked = FileNotFoundError(2, "No such file", "/data/raw/Doe^Jane/1970-01-01.dcm")
    assert one_line(leaked) == "FileNotFoundError (the message is in the run's log)"
    assert "Doe" not in one_line(ValueError("PatientName 'Doe^Jane' is invalid"))
