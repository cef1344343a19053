"""`dvc repro` runs the same stages; a second repro with nothing changed runs only ingest,
which finds nothing new and changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

STAGES = ("ingest", "validate", "preprocess", "train", "evaluate")


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True,
                          text=True, env=env, timeout=900)


def test_repro_twice_second_reruns_nothing(make_workspace, tmp_path):
    ws = make_workspace()
    first = _dvc(ws.root, "repro")
    assert first.returncode == 0, first.stderr + first.stdout
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first.stdout

    # ingest always runs (data/raw is not hashed by DVC: its names may name patients); with
    # nothing new it changes no output, so every later stage is skipped
    second = _dvc(ws.root, "repro")
    assert second.returncode == 0, second.stderr
    assert "Running stage 'ingest'" in second.stdout
    for stage in STAGES[1:]:
        assert f"Running stage '{stage}'" not in second.stdout
        assert f"Stage '{stage}' didn't change, skipping" in second.stdout
    lock = yaml.safe_load((ws.root / "dvc.lock").read_text())
    hashed = [d["path"] for stage in lock["stages"].values() for d in stage.get("deps", [])]
    assert hashed and not [p for p in hashed if p.startswith("data/raw")]

    metrics = _dvc(ws.root, "metrics", "show", "--json")
    assert metrics.returncode == 0, metrics.stderr
    shown = json.loads(metrics.stdout)
    values = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]
    assert 0.0 <= values["f1"] <= 1.0 and "recall" in values

    plots = _dvc(ws.root, "plots", "show", "--out", str(tmp_path / "plots"))
    assert plots.returncode == 0, plots.stderr
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "ROC (test split)" in html and "Confusion matrix (test split)" in html

    # a changed param re-runs only the stages that read it
    params = ws.params_path.read_text().replace("dropout: 0.5", "dropout: 0.4")
    ws.params_path.write_text(params)
    third = _dvc(ws.root, "repro")
    assert third.returncode == 0, third.stderr
    assert "Running stage 'train'" in third.stdout
    assert "Running stage 'preprocess'" not in third.stdout
