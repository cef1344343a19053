"""What a team sees of a pipeline run in MLflow, Prefect and DVC: real stores, real harness.

One MLflow run spans the flow and fills while training runs; the splits are its dataset inputs
and the logged model's; the model carries its test metrics, so logged models rank by AUC; a
failed run is FAILED with its stage and reason; Prefect holds a summary artifact under a stable
key and names each task run after its stage; DVC lists each run as an experiment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import mlflow
import pytest
import yaml
from conftest import write_params
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter
from support.prefect_api import artifact, task_runs

from flows.training import artifact_key, training_pipeline
from medimg.data.manifest import load_manifest
from medimg.errors import ConfigError, DataError
from medimg.mlflow_datasets import split_digest
from medimg.mlflow_run import FAILED_STAGE_TAG, FAILURE_TAG

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness",
                                                                 "clean_mlflow_env")]

REACHABLE = {"gates": {"min_f1": 0.0, "min_recall": 0.0}, "train": {"epochs": 3}}


def _client(ws) -> MlflowClient:
    uri = f"sqlite:///{ws.mlflow_db}"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


class _Watcher(threading.Thread):
    """Polls the store from another thread, as the MLflow UI would, noting when an epoch's
    ``val_loss`` is first there while the run is still RUNNING."""

    def __init__(self, uri: str) -> None:
        super().__init__(daemon=True)
        self.uri, self.stop, self.seen_at, self.steps = uri, threading.Event(), None, 0

    def run(self) -> None:
        client = MlflowClient(tracking_uri=self.uri)
        while not self.stop.is_set() and self.seen_at is None:
            try:
                runs = client.search_runs(
                    [e.experiment_id for e in client.search_experiments()])
            except Exception:  # the store is still being created
                runs = []
            for run in runs:
                history = client.get_metric_history(run.info.run_id, "val_loss")
                if history and client.get_run(run.info.run_id).info.status == "RUNNING":
                    self.seen_at, self.steps = time.time(), len(history)
            self.stop.wait(0.2)


def _experiment_files(ws, name: str) -> set[str]:
    """The files git holds in the DVC experiment ``name`` (a commit on a hidden ref)."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
                          cwd=ws.root, capture_output=True, text=True, check=True).stdout.split()
    (ref,) = [r for r in refs if r.endswith(f"/{name}")]
    listed = subprocess.run(["git", "ls-tree", "-r", "--name-only", ref], cwd=ws.root,
                            capture_output=True, text=True, check=True)
    return set(listed.stdout.split())


def test_one_run_spans_the_flow_and_every_tool_shows_it(make_workspace):
    ws = make_workspace(REACHABLE)
    uri = f"sqlite:///{ws.mlflow_db}"
    watcher = _Watcher(uri)
    watcher.start()
    outcome = training_pipeline(str(ws.root))
    watcher.stop.set()
    watcher.join(5)
    client = _client(ws)
    run = client.get_run(outcome.mlflow_run_id)
    assert outcome.registration.run_id == run.info.run_id  # register logged into the same run
    assert run.info.status == "FINISHED" and run.info.run_name == outcome.name
    assert outcome.name.startswith("ws-") and run.data.tags["data_version"][:8] in outcome.name

    # the run opened before training and ended after registering: its duration is true
    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(run.data.tags["prefect.flow_run_id"])
    assert flow_run.name == outcome.name  # renamed after ingest, to the data version
    tasks = task_runs(str(flow_run.id))
    assert {"ingest", "validate", "preprocess", "train", "evaluate", "register"} <= set(tasks)
    # opened after ingest found work to do, yet dated from the flow's start
    assert flow_run.start_time.timestamp() - 1 <= run.info.start_time / 1000 <= tasks["ingest"][1]
    assert run.info.end_time / 1000 >= tasks["register"][2]
    # per-epoch metrics reached the store while training ran, not at the end
    assert watcher.seen_at is not None and watcher.seen_at <= tasks["train"][2]
    for key in ("loss", "val_loss", "val_auc", "learning_rate", "images_per_second"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == \
            list(range(1, outcome.train.epochs_run + 1)), key
    # every stage logged into it: its outcome as a tag, what it counted as metrics
    for stage in ("ingest", "validate", "preprocess", "train", "evaluate", "register"):
        assert run.data.tags[f"medimg.stage.{stage}"].startswith("ran in "), stage
    assert run.data.metrics["ingest_files_in"] == 160
    assert run.data.metrics["contract_checks_failed"] == 0
    assert run.data.metrics["images_train"] + run.data.metrics["images_val"] + \
        run.data.metrics["images_test"] == len(load_manifest(ws.manifest_path))
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics)
    assert any(k.startswith("system/system_memory_usage") for k in run.data.metrics)

    # the splits are the run's dataset inputs, each with digest, DVC source, schema, profile
    manifest = load_manifest(ws.manifest_path)
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "val", "test"}
    for split, given in inputs.items():
        assert given.dataset.digest == split_digest(manifest, split)
        assert given.dataset.source_type == "dvc"
        source = json.loads(given.dataset.source)
        assert source["path"] == "data/manifest.parquet"
        assert source["data_version"] == run.data.tags["data_version"]
        profile = json.loads(given.dataset.profile)
        assert profile["images"] == int((manifest["split"] == split).sum())
        assert sum(profile["per_class"].values()) == profile["images"]
        assert 0 < profile["patients"] <= profile["images"]
        assert "image_id" in json.loads(given.dataset.schema)["mlflow_colspec"][0]["name"]
        assert {t.key: t.value for t in given.tags}["mlflow.data.context"] == split

    # the logged model carries the test metrics, scored on the test split, and links the splits
    (model,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                           output_format="list")
    assert model.source_run_id == run.info.run_id
    on_model = {m.key: m for m in model.metrics}
    auc = on_model["test_roc_auc"]
    assert auc.value == pytest.approx(outcome.evaluation.metrics["roc_auc"])
    assert (auc.dataset_name, auc.dataset_digest) == ("test", inputs["test"].dataset.digest)
    assert "test_roc_auc_ci_low" in on_model and "test_f1_ci_high" in on_model
    assert on_model["kept_val_loss"].dataset_name == "val"
    assert on_model["kept_train_loss"].dataset_name == "train"
    assert model.tags["gate.passed"] == "true" and "min_f1 pass" in model.tags["gate_report"]
    assert model.params["train.epochs"] == "3"
    assert run.data.tags["registered_version"] == "1"

    # Prefect: the summary artifact under the workspace's key, linking the MLflow run
    summary = artifact(artifact_key(ws))
    assert run.info.run_id in summary and "Registered as version 1" in summary
    assert "| min_f1 | f1 |" in summary and "patient-bootstrap" in summary
    assert "| test |" in summary and outcome.name in summary

    # DVC lists the run as an experiment, with its params and metrics
    assert outcome.experiment == outcome.name
    assert run.data.tags["dvc_experiment"] == outcome.name
    shown = _experiments(ws)
    assert shown[outcome.name]["metrics"]["f1"] == pytest.approx(outcome.evaluation.metrics["f1"])
    assert shown[outcome.name]["params"]["train"]["epochs"] == 3
    # the experiment is a git commit: medimg's files and small reports, never an image
    committed = _experiment_files(ws, outcome.name)
    assert {"params.yaml", "dvc.yaml", "dvc.lock", "reports/metrics.json"} <= committed
    assert not [f for f in committed if f.startswith(("data/", "models/", "mlartifacts/"))]
    assert not [f for f in committed if "gradcam" in f and f.endswith(".png")]
    assert not [f for f in committed if f.endswith((".dcm", ".jpg", ".jpeg", ".npz", ".npy"))]

    # nothing changed: no MLflow run, each stage a Skipped task run, the summary says so
    again = training_pipeline(str(ws.root))
    assert again.changed_nothing and again.mlflow_run_id is None and again.experiment is None
    assert len(client.search_runs([run.info.experiment_id])) == 1
    with get_client(sync_client=True) as prefect:
        (second,) = prefect.read_flow_runs(flow_run_filter=FlowRunFilter(
            name={"any_": [again.name]}))
    tasks = task_runs(str(second.id))
    assert tasks["train (up to date)"][0] == "Skipped"
    assert tasks["register (up to date)"][0] == "Skipped"
    summary = artifact(artifact_key(ws))
    assert "Up to date, skipped: validate, preprocess, train, evaluate, register" in summary
    assert "the last registration: version 1" in summary

    # a second model: logged models rank by test AUC; each run is its own experiment
    first_rate = yaml.safe_load((ws.root / "params.yaml").read_text())["train"]["learning_rate"]
    write_params(ws.root, {"train": {"learning_rate": first_rate * 10}})
    third = training_pipeline(str(ws.root))
    assert third.ran == ["ingest", "train", "evaluate", "register"]
    third_tags = client.get_run(third.mlflow_run_id).data.tags
    assert third_tags["medimg.stage.preprocess"] == "up to date"
    assert third_tags["medimg.stage.train"].startswith("ran in ")
    ranked = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], output_format="list",
        order_by=[{"field_name": "metrics.test_roc_auc", "ascending": False}])
    aucs = [{m.key: m.value for m in lm.metrics}["test_roc_auc"] for lm in ranked]
    assert len(ranked) == 2 and aucs == sorted(aucs, reverse=True)
    assert set(_experiments(ws)) == {outcome.name, third.name}
    # `dvc exp apply` restores the first run's params
    subprocess.run([sys.executable, "-m", "dvc", "exp", "apply", outcome.name], cwd=ws.root,
                   check=True, capture_output=True)
    assert yaml.safe_load((ws.root / "params.yaml").read_text())["train"]["learning_rate"] == \
        first_rate


def _experiments(ws) -> dict[str, dict]:
    """``dvc exp show --json``: each experiment's name -> its params.yaml and metrics.json."""
    shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=ws.root,
                           capture_output=True, text=True, check=True)
    found = {}
    for baseline in json.loads(shown.stdout):
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev["data"]
                found[rev["name"]] = {
                    "params": data["params"]["params.yaml"]["data"],
                    "metrics": data["metrics"]["reports/metrics.json"]["data"]}
    return found


def test_a_failed_run_is_failed_in_mlflow_with_its_stage_and_reason(make_workspace):
    ws = make_workspace({"model": {"architecture": "resnet50", "weights": "missing.weights.h5"}})
    with pytest.raises(ConfigError):
        training_pipeline(str(ws.root))
    client = _client(ws)
    experiment = client.get_experiment_by_name(ws.config.registry.experiment_name)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags[FAILED_STAGE_TAG] == "train"
    assert run.data.tags[FAILURE_TAG].startswith("model.weights = 'missing.weights.h5': no such")
    assert "\n" not in run.data.tags[FAILURE_TAG]
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"train", "val", "test"}
    summary = artifact(artifact_key(ws))
    assert "**Failed** at train: model.weights" in summary


def test_a_failed_ingest_leaves_a_failed_run_without_the_raw_message(make_workspace, tmp_path):
    ws = make_workspace(with_data=False)
    # a source folder named after a patient, holding no class folders: ingest's error names it
    (tmp_path / "Doe^Jane").mkdir()
    with pytest.raises(DataError, match="Doe"):  # the user's own terminal sees the path
        training_pipeline(str(ws.root), sources=[str(tmp_path / "Doe^Jane")])
    client = _client(ws)
    experiment = client.get_experiment_by_name(ws.config.registry.experiment_name)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED" and run.data.tags[FAILED_STAGE_TAG] == "ingest"
    assert run.data.tags[FAILURE_TAG].startswith("DataError in ingest")
    summary = artifact(artifact_key(ws))
    assert "**Failed** at ingest: DataError" in summary
    recorded = json.dumps(run.data.tags) + json.dumps(run.data.params) + summary
    assert "Doe" not in recorded and "Jane" not in recorded
