"""`medimg demo` as a newcomer runs it: Prefect's ephemeral API, SQLite MLflow, local DVC."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from medimg.config import parse_config
from medimg.workspace import init_workspace
from tests.conftest import medimg_cli

pytestmark = pytest.mark.integration


def test_demo_runs_everything_and_the_default_gates_register_a_champion(tmp_path):
    # the demo exactly as `make demo` runs it: the shipped params.yaml (every gate at its
    # default, minimum evidence included) and 800 phantoms; about 3 minutes on 2 cores
    ws = init_workspace(tmp_path / "ws")
    shipped = parse_config(yaml.safe_load(ws.params_path.read_text()))
    assert shipped.base.image_size == "auto"
    assert ws.config == shipped.with_image_size(128)  # auto, before anything is ingested
    assert ws.config.gates == parse_config({}).gates
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_"))}
    result = subprocess.run(
        [sys.executable, "-m", "medimg", "demo", "--workspace", str(ws.root)],
        cwd=ws.root, capture_output=True, text=True, timeout=900,
        env={**env, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{env['PATH']}"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for line in ("Test metrics", "recall", "specificity", "min_f1", "min_recall",
                 "min_test_positives", "min_test_negatives",
                 "registered version 1 (aliases: challenger, champion)",
                 f"mlflow ui --backend-store-uri sqlite:///{ws.mlflow_db}"):
        assert line in out, out
    assert len(list(ws.raw_dir.rglob("*.png"))) == 800
    assert ws.mlflow_db.is_file() and ws.metrics_path.is_file()
    # DVC agrees: nothing to reproduce after the demo
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=ws.root,
                            capture_output=True, text=True, check=True)
    # only ingest is listed: it always runs (DVC does not hash data/raw), finding nothing new
    assert [x.strip() for x in status.stdout.strip().splitlines()] == ["ingest:", "always changed"]

    # a second demo reuses the phantoms and refuses data it did not make
    (ws.raw_dir / ".phantoms").unlink()
    again = medimg_cli("demo", "--workspace", str(ws.root), cwd=ws.root)
    assert again.returncode == 1 and "holds data that the demo did not make" in again.stderr
