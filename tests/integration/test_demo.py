"""`medimg demo` as a newcomer runs it: Prefect's ephemeral API, SQLite MLflow, local DVC."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import medimg_cli

pytestmark = pytest.mark.integration


def test_demo_runs_everything_and_prints_the_summary(make_workspace):
    ws = make_workspace({"gates": {"min_f1": 0.0, "min_recall": 0.0}}, with_data=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "MLFLOW_"))}
    result = subprocess.run(
        [sys.executable, "-m", "medimg", "demo", "--n-images", "160", "--workspace", str(ws.root)],
        cwd=ws.root, capture_output=True, text=True, timeout=900,
        env={**env, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{env['PATH']}"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for line in ("Test metrics", "recall", "specificity", "min_f1", "min_recall",
                 "registered version 1 (aliases: challenger, champion)",
                 f"mlflow ui --backend-store-uri sqlite:///{ws.mlflow_db}"):
        assert line in out, out
    assert len(list(ws.raw_dir.rglob("*.png"))) == 160
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
