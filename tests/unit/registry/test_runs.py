"""`medimg runs` and `medimg compare` on a workspace's real SQLite MLflow store, holding runs
logged as the register stage logs them: flat params, lineage tags, test metrics with interval
bounds, the gate's verdict and ``reports/predictions.csv``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from support.manifest import CLASSES, image_id, manifest_frame, manifest_row

from medimg.data.manifest import write_manifest
from medimg.evaluation.bootstrap import bootstrap_intervals
from medimg.evaluation.metrics import compute_metrics
from medimg.evaluation.plots import write_rows
from medimg.metric_table import HEADLINE_METRICS
from medimg.mlflow_run import FAILED_STAGE_TAG, FAILURE_TAG
from medimg.registry.runs import RunNotFound, compare_runs, find_run
from medimg.tracking import use_workspace_tracking
from tests.conftest import medimg_cli, new_workspace

pytestmark = pytest.mark.usefixtures("clean_mlflow_env")

PATIENTS = 20  # in the test split, two images each, one of each class
DATA = "0123456789abcdef0123456789abcdef"
WIDE = {"COLUMNS": "250"}  # a terminal that shows the whole table (a pipe gets 80 columns)


@pytest.fixture
def ws(tmp_path: Path):
    """A workspace whose manifest's test split holds 40 images of 20 patients."""
    ws = new_workspace(tmp_path / "ws", {"evaluate": {"bootstrap_resamples": 200}})
    rows = [manifest_row(f"test-{p}-{c}", "test", CLASSES[c], patient_id=f"patient-{p}")
            for p in range(PATIENTS) for c in range(2)]
    write_manifest(manifest_frame(rows), ws.manifest_path)
    return ws


def _log_run(ws, name: str, *, epochs: int, noise: float, split: str = "split-1",
             gate: str | None = "true", failure: tuple[str, str] | None = None) -> str:
    """A run as the pipeline records it, with predictions of a model as good as ``noise``
    lets it be; returns its id."""
    experiment = use_workspace_tracking(ws, ws.config.registry.experiment_name)
    client = MlflowClient()
    params = {**ws.config.flat(), "train.epochs": epochs}
    tags = {"data_version": DATA, "test_split_hash": split}
    run = client.create_run(experiment, run_name=name, tags=tags)
    run_id = run.info.run_id
    logged_params = [Param(k, str(v)) for k, v in params.items()]
    for start in range(0, len(logged_params), 100):  # MLflow takes at most 100 a call
        client.log_batch(run_id, params=logged_params[start:start + 100])
    if failure is not None:
        client.set_tag(run_id, FAILED_STAGE_TAG, failure[0])
        client.set_tag(run_id, FAILURE_TAG, failure[1])
        client.set_terminated(run_id, "FAILED")
        return run_id
    labels = np.array([c for _ in range(PATIENTS) for c in range(2)])
    p = np.clip(labels + np.random.default_rng(epochs).normal(0, noise, len(labels)), 0.01, 0.99)
    probs = np.stack([1 - p, p], axis=1)
    patients = [f"patient-{i // 2}" for i in range(len(labels))]
    metrics = compute_metrics(labels, probs, list(CLASSES), 0.5)
    ci = bootstrap_intervals(labels, probs, list(CLASSES), 0.5, patients, 100)
    logged = {f"test_{k}": float(metrics[k]) for k in (*HEADLINE_METRICS, "threshold")}
    logged |= {f"test_{k}_ci_{end}": b[end] for k, b in ci.items() for end in ("low", "high")}
    client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in logged.items()],
                     tags=[RunTag("gate.passed", gate)] if gate else [])
    ids = [image_id(f"test-{i // 2}-{i % 2}") for i in range(len(labels))]
    # the evaluate stage's columns, in another order than the other run's rows
    csv = write_rows(ws.root / "out" / run_id / "predictions.csv",
                     ["image_id", "actual", "predicted", "p_normal", "p_pneumonia"],
                     [[i, CLASSES[t], CLASSES[int(q >= 0.5)], f"{1 - q:.6f}", f"{q:.6f}"]
                      for i, t, q in zip(ids, labels, p, strict=True)][::1 if epochs % 2 else -1])
    client.log_artifact(run_id, str(csv), "reports")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _register(ws, run_id: str) -> None:
    client = MlflowClient()
    name = ws.config.registry.model_name
    client.create_registered_model(name)
    run = client.get_run(run_id)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run_id)
    client.set_registered_model_alias(name, "champion", version.version)


def _metric(ws, run_id: str, key: str) -> float:
    use_workspace_tracking(ws, ws.config.registry.experiment_name)
    return MlflowClient().get_run(run_id).data.metrics[key]


def _row(out: str, first_cell: str) -> str:
    """The table line whose first cell starts with ``first_cell``."""
    return next(line for line in out.splitlines() if line.startswith(f"│ {first_cell}"))


def test_runs_lists_each_run_with_data_differing_params_metrics_gate_and_version(ws):
    first = _log_run(ws, "first", epochs=2, noise=0.4)
    _register(ws, first)
    _log_run(ws, "second", epochs=5, noise=0.3, gate="false")
    _log_run(ws, "broken", epochs=5, noise=0.2,
             failure=("train", "DataError: the test split is empty; add images"))

    shown = medimg_cli("runs", "--workspace", str(ws.root), cwd=ws.root, env=WIDE)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert out.index("│ broken") < out.index("│ second") < out.index("│ first")  # newest first
    assert DATA[:8] in out and DATA[:9] not in out
    assert "train.epochs" in out and "train.batch_size" not in out  # only what differs
    first_row = _row(out, "first")
    f1 = _metric(ws, first, "test_f1")
    low, high = _metric(ws, first, "test_f1_ci_low"), _metric(ws, first, "test_f1_ci_high")
    assert f"{f1:.3f}" in first_row and "passed" in first_row and "v1 (champion)" in first_row
    assert f"{low:.3f}-{high:.3f}" in out
    second_row = _row(out, "second")
    assert "failed" in second_row and "FINISHED" in second_row
    broken_row = _row(out, "broken")
    assert "FAILED" in broken_row and "—" in broken_row
    assert "broken failed at train: DataError: the test split is empty" in out

    # from another folder, in a pipe (80 columns): a block of lines per run, nothing cut
    last = medimg_cli("runs", "-n", "2", "--workspace", str(ws.root), cwd=ws.root.parent)
    assert last.returncode == 0, last.stderr
    assert "\nbroken (" in last.stdout and "\nsecond (" in last.stdout
    assert "\nfirst (" not in last.stdout
    assert f"f1 {_metric(ws, first, 'test_f1'):.3f}" not in last.stdout  # first is not listed
    assert "failed at train: DataError: the test split is empty; add images" in last.stdout
    assert all(len(line) <= 80 or "│" not in line for line in last.stdout.splitlines())
    assert "train.epochs" not in last.stdout  # both listed runs trained 5 epochs


def test_compare_on_the_same_test_split_shows_the_paired_difference(ws):
    a = _log_run(ws, "baseline", epochs=2, noise=0.45)
    b = _log_run(ws, "longer", epochs=5, noise=0.2)

    shown = medimg_cli("compare", "baseline", b[:10], "--workspace", str(ws.root), cwd=ws.root,
                       env=WIDE)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    epochs = _row(out, "train.epochs")
    assert "2" in epochs and "5" in epochs
    assert "other param(s) equal" in out and "train.batch_size" not in out
    f1_a, f1_b = _metric(ws, a, "test_f1"), _metric(ws, b, "test_f1")
    row = _row(out, "f1 ")
    low = _metric(ws, a, "test_f1_ci_low")
    assert f"{f1_a:.3f} ({low:.3f} to" in row
    # the same images and decisions as each run's own metrics, hence the same difference
    assert f"{f1_b - f1_a:+.3f} (" in row
    assert "B - A paired on 40 test images of 20 patients, 200 resamples by patient" in out


def test_compare_on_different_test_splits_says_so_and_pairs_nothing(ws):
    _log_run(ws, "old", epochs=2, noise=0.4, split="split-1")
    _log_run(ws, "new", epochs=5, noise=0.2, split="split-2")

    shown = medimg_cli("compare", "old", "new", "--workspace", str(ws.root), cwd=ws.root,
                       env=WIDE)
    assert shown.returncode == 0, shown.stderr
    assert ("no paired difference: the runs were scored on different test splits "
            "(split-1 and split-2)") in shown.stdout
    assert "paired" not in shown.stdout.replace("no paired difference", "")


def test_an_unknown_run_is_a_one_line_error(ws):
    _log_run(ws, "only", epochs=2, noise=0.4)

    shown = medimg_cli("compare", "only", "nosuchrun", "--workspace", str(ws.root), cwd=ws.root)
    assert shown.returncode != 0
    assert "Traceback" not in shown.stdout + shown.stderr
    assert shown.stderr.strip().splitlines() == [
        "error: no run 'nosuchrun' in this workspace's experiment; `medimg runs` lists the "
        "recent ones by name and id"]


def test_a_run_is_found_by_id_name_or_unambiguous_prefix(ws):
    a = _log_run(ws, "twin", epochs=2, noise=0.4)
    b = _log_run(ws, "twin", epochs=3, noise=0.4)
    experiment = use_workspace_tracking(ws, ws.config.registry.experiment_name)
    client = MlflowClient()

    assert find_run(client, experiment, a).info.run_id == a
    assert find_run(client, experiment, b[:12]).info.run_id == b
    with pytest.raises(RunNotFound, match="'twin' is the name of 2 runs"):
        find_run(client, experiment, "twin")


def test_a_run_without_predictions_is_compared_unpaired(ws):
    a = _log_run(ws, "kept", epochs=2, noise=0.4)
    b = _log_run(ws, "lost", epochs=3, noise=0.4)
    experiment = use_workspace_tracking(ws, ws.config.registry.experiment_name)
    client = MlflowClient()
    artifacts = Path(client.get_run(b).info.artifact_uri.removeprefix("file://"))
    (artifacts / "reports" / "predictions.csv").unlink()

    compared = compare_runs(client, experiment, ws, ws.config, a, b)
    assert compared.differences == {}
    assert compared.unpaired == "no paired difference: run lost kept no reports/predictions.csv"
    assert compared.a.metrics["f1"].value == _metric(ws, a, "test_f1")
