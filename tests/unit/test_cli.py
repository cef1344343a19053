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


def test_one_class_ingests_but_the_contract_fails_in_one_line(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    for i in range(6):
        _png(tmp_path / "src" / "normal" / f"{i}.png", i)
    assert medimg_cli("ingest", str(tmp_path / "src"), cwd=ws.root).returncode == 0
    result = medimg_cli("validate", cwd=ws.root)
    _one_line_error(result, "critical", "class_counts_per_split")
    assert "FAIL" in result.stdout  # the table shows every check
    assert ws.validation_report_path.is_file()


def test_unusable_image_is_quarantined_and_the_contract_names_the_rate(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    for i in range(3):
        _png(tmp_path / "src" / "normal" / f"{i}.png", i)
        _png(tmp_path / "src" / "pneumonia" / f"{i}.png", 10 + i)
    broken = tmp_path / "src" / "pneumonia" / "scan.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 40)
    result = medimg_cli("ingest", str(tmp_path / "src"), cwd=ws.root)
    assert result.returncode == 0
    assert "files in 7 = ingested 6 + already present 0 + quarantined 1" in result.stdout
    assert "quarantine.jsonl" in result.stdout
    assert broken.exists()  # nothing the user gave is deleted
    _one_line_error(medimg_cli("validate", cwd=ws.root), "quarantine_rate")


def test_dicom_without_a_pseudonym_key(make_workspace, tmp_path):
    from support.dicoms import write_dicom

    ws = make_workspace(with_data=False)
    (tmp_path / "src" / "normal").mkdir(parents=True)
    write_dicom(tmp_path / "src" / "normal" / "scan.dcm")
    result = medimg_cli("ingest", str(tmp_path / "src"), cwd=ws.root,
                        env={"MEDIMG_PSEUDONYM_KEY": ""})
    _one_line_error(result, "MEDIMG_PSEUDONYM_KEY")
    assert "MRN" not in result.stderr + result.stdout and not ws.manifest_path.exists()


def test_unknown_source_format(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    result = medimg_cli("ingest", str(tmp_path), "--format", "zip", cwd=ws.root)
    _one_line_error(result, "--format 'zip'", "npz")


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


@pytest.mark.parametrize("command", [("runs",), ("compare", "a", "b"), ("registry", "list")])
def test_commands_that_read_the_record_say_in_one_line_that_mlflow_is_down(make_workspace,
                                                                           command):
    ws = make_workspace(with_data=False)
    result = medimg_cli(*command, cwd=ws.root,
                        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
                             "PREFECT_API_URL": "http://127.0.0.1:9/api"})  # not needed here
    _one_line_error(result, "MLflow tracking server", "http://127.0.0.1:9")


def _commands() -> list[str]:
    """Every command the app registers, sub-commands included (``registry list``)."""
    from medimg.cli import app

    def name(command) -> str:
        return command.name or command.callback.__name__.replace("_", "-")

    found = [name(c) for c in app.registered_commands]
    for group in app.registered_groups:
        found += [f"{group.name} {name(c)}" for c in group.typer_instance.registered_commands]
    return found


def test_the_command_list_holds_every_stage_and_view():
    assert {"init", "ingest", "validate", "preprocess", "train", "evaluate", "register", "run",
            "demo", "runs", "compare", "registry list"} <= set(_commands())


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command, tmp_path):
    result = medimg_cli(*command.split(), "--help", cwd=tmp_path)
    assert result.returncode == 0 and "Usage" in result.stdout


def test_demo_with_too_few_images_is_one_line(make_workspace):
    ws = make_workspace(with_data=False)
    result = medimg_cli("demo", "--n-images", "1", cwd=ws.root)
    _one_line_error(result, "n_images")


def test_the_printed_gate_table_shows_counts_and_each_difference_with_its_interval(monkeypatch):
    import io

    from medimg import cli

    # as wide as a terminal that shows the whole table (a pipe gets 80 columns); into a buffer
    # of its own rather than capsys's stream, which Prefect's handlers may still hold after this
    monkeypatch.setattr(cli.console, "width", 160)
    shown = io.StringIO()
    monkeypatch.setattr(cli.console, "file", shown)
    from flows.training import PipelineResult
    from medimg.evaluation.stage import EvaluationResult
    from medimg.registry.gates import GateCheck, GateReport
    from medimg.registry.stage import RegisterResult

    metrics = {"n": 80, "threshold": None, "decision_rule": "argmax", "f1": 0.9,
               "confusion_matrix": [[1]]}
    gates = GateReport([GateCheck("min_test_positives", "test images of viral", 23.0, 20.0,
                                  True, "23 >= 20")])
    against = GateReport([GateCheck("noninferior_f1", "f1", -0.031, -0.02, False, "below",
                                    interval=[-0.07, 0.01])])
    outcome = PipelineResult(
        ran=["evaluate", "register"],
        evaluation=EvaluationResult(metrics, Path("reports/metrics.json"), []),
        registration=RegisterResult("r1", metrics, gates, version="2", aliases=["challenger"],
                                    champion_checks=against, ui_command="mlflow ui"),
    )
    cli._print_summary(outcome, 1.0)
    out = shown.getvalue()
    assert "Test metrics (n=80, arg-max)" in out
    assert "-0.031 (-0.070 to +0.010)" in out and "> -0.020" in out
    row = next(line for line in out.splitlines() if "min_test_positives" in line)
    assert "23" in row and "20" in row and "23.000" not in row


def test_help_names_the_verbose_option_and_the_log(tmp_path):
    shown = medimg_cli("--help", cwd=tmp_path)
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert "--verbose" in text and "reports/logs/<command>.log" in text
    assert medimg_cli("--verbose", "train", "--help", cwd=tmp_path).returncode == 0


def test_a_failure_keeps_its_one_error_line_and_names_the_log(make_workspace):
    ws = make_workspace(with_data=False)
    # evaluate imports TensorFlow, whose start-up lines go to the log
    result = medimg_cli("evaluate", cwd=ws.root, env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    _one_line_error(result, "medimg train")
    assert len(result.stderr.strip().splitlines()) == 1  # nothing but the error on stderr
    log = ws.root / "reports" / "logs" / "evaluate.log"
    assert "absl::InitializeLog" in log.read_text()
    assert f"library output of this command: {log}" in " ".join(result.stdout.split())
