"""Shared fixtures: small real workspaces, phantoms made in tmp dirs, a real Prefect harness."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# Each test process (xdist worker) gets a Prefect home of its own: the CLI's ephemeral Prefect
# API keeps a SQLite database there, which two workers must not share, nor the user's own.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="medimg-tests-prefect-")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# Ingest pseudonymises patient ids with this key; tests of a missing key unset it.
os.environ.setdefault("MEDIMG_PSEUDONYM_KEY", "test-key-0123456789abcdef")

# A small, fast configuration that still exercises every stage for real.
TINY_PARAMS: dict[str, Any] = {
    "base": {"image_size": 64},
    "data": {"split_fractions": {"train": 0.5, "val": 0.25, "test": 0.25}},
    # float32 without timing it (tests of auto set it), the seed CNN (tests of the residual
    # CNN set it): two epochs on 80 images are too few for batch normalisation's statistics
    "train": {"epochs": 2, "batch_size": 16, "early_stopping_patience": 1,
              "mixed_precision": False},
    "model": {"architecture": "seed_cnn", "dense_units": 32},
    # a tiny split holds about 20 test images of each class, below the default evidence
    # minimums (20 each); tests of those minimums set them back
    "gates": {"min_test_positives": 5, "min_test_negatives": 5},
}
TINY_PHANTOMS = {"n_images": 160, "image_size": 64, "seed": 3}


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "split_fractions":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def write_params(root: Path, overrides: dict[str, Any]) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(merge(params, overrides), sort_keys=False))


@pytest.fixture(scope="session")
def phantom_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """160 tiny phantoms (64x64) of about 40 patients, made once per session."""
    from medimg.data.phantoms import generate_phantoms

    out = tmp_path_factory.mktemp("phantoms") / "raw"
    generate_phantoms(out, **TINY_PHANTOMS)
    return out


def new_workspace(root: Path, overrides: dict[str, Any] | None = None,
                  phantoms: Path | None = None):
    """A real workspace (git + DVC) at ``root`` with the tiny params and ``overrides`` over them,
    and a copy of ``phantoms`` in data/raw when given."""
    from medimg.workspace import init_workspace, open_workspace

    ws = init_workspace(root)
    write_params(ws.root, merge(TINY_PARAMS, overrides or {}))
    if phantoms is not None:
        shutil.copytree(phantoms, ws.raw_dir)
    return open_workspace(ws.root)


@pytest.fixture
def make_workspace(tmp_path: Path, phantom_source: Path):
    """A real workspace (git + DVC) with the tiny params and, optionally, phantoms in data/raw."""

    def make(overrides: dict[str, Any] | None = None, with_data: bool = True, name: str = "ws"):
        return new_workspace(tmp_path / name, overrides, phantom_source if with_data else None)

    return make


@pytest.fixture(scope="session")
def workspace_templates(tmp_path_factory: pytest.TempPathFactory, phantom_source: Path):
    """Workspaces with the tiny params and the session's phantoms, built through each stage once
    per session (per xdist worker), for :func:`prepared_workspace` to copy."""
    from support.workspaces import WorkspaceTemplates

    folder = tmp_path_factory.mktemp("templates")
    return WorkspaceTemplates(folder, lambda root: new_workspace(root, phantoms=phantom_source))


@pytest.fixture
def prepared_workspace(tmp_path: Path, make_workspace, workspace_templates):
    """``make(overrides=None, through="evaluate", name="ws")``: a workspace of the test's own
    (at tmp_path/name), with ``overrides`` over the tiny params and the phantoms, taken through
    the stage ``through`` by the real stage functions (:func:`support.workspaces.prepare`).

    It starts from a copy of the session's template built through the last stage that reads
    none of ``overrides`` (by dvc.yaml's params), or from nothing when ingest reads one, so
    every stage it runs or copies saw the params the workspace has.
    """
    from support.workspaces import copy_workspace, next_stage, prepare, start_after

    from medimg.workspace import open_workspace

    def make(overrides: dict[str, Any] | None = None, through: str = "evaluate",
             name: str = "ws"):
        overrides = overrides or {}
        start = start_after(overrides, through)
        if start is None:
            return prepare(make_workspace(overrides, name=name), through)
        copied = copy_workspace(workspace_templates.through(start), tmp_path / name)
        if overrides:
            write_params(copied.root, overrides)
        ws = open_workspace(copied.root)
        return ws if start == through else prepare(ws, through, start=next_stage(start))

    return make


@pytest.fixture
def trained_workspace(prepared_workspace):
    """A workspace of the test's own that has been ingested, validated, preprocessed, trained
    and evaluated with the tiny params (a copy of one built once per session)."""
    return prepared_workspace()


@pytest.fixture(scope="session")
def prefect_harness():
    """One real, temporary Prefect API for the session's flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def clean_mlflow_env(monkeypatch: pytest.MonkeyPatch):
    """Each test picks its own store: no tracking URI inherited from the shell or another test."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)


def medimg_cli(*args: str, cwd: Path, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    """Run the installed console script as a user would."""
    exe = Path(sys.executable).with_name("medimg")
    # MLflow exports the URIs this test process last used; a user's shell would not have them
    inherited = {k: v for k, v in os.environ.items()
                 if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    full_env = {**inherited, **(env or {})}
    full_env["PATH"] = f"{exe.parent}{os.pathsep}{full_env.get('PATH', '')}"
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True,
                          env=full_env, timeout=600)
