"""Bad input gets one line naming the problem and the fix, a non-zero exit, and no traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import medimg_cli, write_params


def _one_line_error(result, *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(path)


def test_directory_that_is_not_a_workspace(tmp_path):
    result = medimg_cli("validate", "--workspace", str(tmp_path), cwd=tmp_path)
    _one_line_error(result, "not a medimg workspace", "medimg init")


def test_misspelt_key_in_params(make_workspace):
    ws = make_workspace(with_data=False)
    write_params(ws.root, {"train": {"epoch": 3}})
    result = medimg_cli("train", cwd=ws.root)
    _one_line_error(result, "train.epoch", "epochs")


def test_negative_epochs(make_workspace):
    ws = make_workspace(with_data=False)
    write_params(ws.root, {"train": {"epochs": -2}})
    result = medimg_cli("run", cwd=ws.root)
    _one_line_error(result, "train.epochs = -2")


def test_empty_source_folder(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    (tmp_path / "empty").mkdir()
    result = medimg_cli("ingest", str(tmp_path / "empty"), cwd=ws.root)
    _one_line_error(result, "no class folders")


def test_source_with_one_class(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    for i in range(3):
        _png(tmp_path / "src" / "normal" / f"{i}.png", i)
    result = medimg_cli("ingest", str(tmp_path / "src"), cwd=ws.root)
    _one_line_error(result, "only one class folder", "normal")


def test_image_that_does_not_decode_keeps_the_previous_manifest(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    for i in range(3):
        _png(tmp_path / "good" / "normal" / f"{i}.png", i)
        _png(tmp_path / "good" / "pneumonia" / f"{i}.png", 10 + i)
    assert medimg_cli("ingest", str(tmp_path / "good"), cwd=ws.root).returncode == 0
    before = ws.manifest_path.read_bytes()
    _png(tmp_path / "bad" / "normal" / "ok.png", 99)
    (tmp_path / "bad" / "pneumonia").mkdir(parents=True)
    (tmp_path / "bad" / "pneumonia" / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)
    result = medimg_cli("ingest", str(tmp_path / "bad"), cwd=ws.root)
    _one_line_error(result, "scan.png", "max_quarantine_fraction")
    assert ws.manifest_path.read_bytes() == before
    assert (tmp_path / "bad" / "pneumonia" / "scan.png").exists()


def test_stage_run_out_of_order_names_the_missing_stage(make_workspace):
    ws = make_workspace(with_data=False)
    result = medimg_cli("preprocess", cwd=ws.root)
    _one_line_error(result, "medimg ingest")


@pytest.mark.parametrize("variable,fragment", [
    ("MLFLOW_TRACKING_URI", "MLflow tracking server"),
    ("PREFECT_API_URL", "Prefect API"),
])
def test_server_that_is_down_fails_before_any_work(make_workspace, variable, fragment):
    ws = make_workspace()
    # a loopback port with nothing listening
    result = medimg_cli("run", cwd=ws.root, env={variable: "http://127.0.0.1:9/api"})
    _one_line_error(result, fragment, "http://127.0.0.1:9/api")
    assert not ws.manifest_path.exists()


@pytest.mark.parametrize("command", ["init", "synth", "ingest", "validate", "preprocess",
                                     "train", "evaluate", "run", "demo"])
def test_every_command_has_help(command, tmp_path):
    result = medimg_cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0 and "Usage" in result.stdout


def test_demo_with_too_few_images_is_one_line(make_workspace):
    ws = make_workspace(with_data=False)
    result = medimg_cli("demo", "--n-images", "1", cwd=ws.root)
    _one_line_error(result, "n_images")
