"""The Prefect training flow end to end: real Prefect API, real SQLite MLflow store, real DVC."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from conftest import medimg_cli
from mlflow import MlflowClient

from flows.training import training_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness",
                                                                 "clean_mlflow_env")]

REACHABLE = {"gates": {"min_f1": 0.0, "min_recall": 0.0}}
OUT_OF_REACH = {"gates": {"min_f1": 1.0, "min_recall": 1.0}}


def _client(ws) -> MlflowClient:
    uri = f"sqlite:///{ws.mlflow_db}"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_passing_run_is_tracked_registered_and_champion(make_workspace):
    ws = make_workspace(REACHABLE)
    outcome = training_pipeline(str(ws.root))
    assert outcome.ran == ["ingest", "validate", "preprocess", "train", "evaluate", "register"]
    metrics, registered = outcome.evaluation.metrics, outcome.registration

    client = _client(ws)
    run = client.get_run(registered.run_id)
    assert run.info.status == "FINISHED"
    for key in ("test_f1", "test_recall", "test_precision", "test_accuracy", "test_specificity",
                "test_roc_auc"):
        assert key in run.data.metrics
    assert run.data.metrics["test_f1"] == pytest.approx(metrics["f1"])
    assert run.data.params["train.epochs"] == "2"
    epochs = outcome.train.epochs_run
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == epochs
    # what the model trained on, and how fast, is on the run
    speed = client.get_metric_history(run.info.run_id, "images_per_second")
    assert len(speed) == epochs and all(m.value > 0 for m in speed)
    tags = run.data.tags
    assert tags["runtime.device"] == "CPU"
    assert tags["runtime.replicas"] == "1" and tags["runtime.strategy"] == "default"
    assert tags["runtime.precision"] == "float32"  # the tests' params turn it off
    # calibration on validation, before and after, and the uncalibrated test errors beside
    logged = run.data.metrics
    assert logged["calibration_temperature"] > 0
    assert {"calibration_ece_before", "calibration_ece_after", "calibration_brier_before",
            "calibration_brier_after", "test_ece_uncalibrated", "test_brier_uncalibrated",
            "test_ece", "test_brier"} <= set(logged)
    assert tags["runtime.global_batch"] == str(ws.config.train.batch_size)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/roc.png"} <= artifacts
    reports = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    assert "reports/validation.json" in reports
    assert {"plots/pr.png", "plots/reliability.png", "plots/threshold.png",
            "plots/training_curves.png", "plots/gradcam.png", "plots/gradcam_cases.csv"
            } <= artifacts
    # the model card: threshold and why, metrics with intervals, the gate report
    card = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                    artifact_path="model_card.md")).read_text()
    assert "registered as version 1" in card
    assert f"**{metrics['threshold']:.3f}**" in card and "target_recall" in card
    f1_ci = metrics["ci"]["f1"]
    assert f"| F1 | {metrics['f1']:.3f} | {f1_ci['low']:.3f} to " in card
    assert "| min_f1 | f1 |" in card and "| min_recall | recall |" in card
    assert "`plots/gradcam.png`" in card  # where the reviewer sees what the model looks at
    assert "test_f1_ci_low" in run.data.metrics and "test_pr_auc" in run.data.metrics

    # lineage: the data version is the manifest hash DVC recorded
    lock = yaml.safe_load((ws.root / "dvc.lock").read_text())
    manifest_md5 = next(o["md5"] for o in lock["stages"]["ingest"]["outs"])
    assert run.data.tags["data_version"] == manifest_md5
    assert run.data.tags["git_commit"]
    assert run.data.tags["gate.passed"] == "true"

    version = client.get_model_version_by_alias("medimg-classifier", "champion")
    assert str(version.version) == registered.version == "1"
    assert set(version.aliases) == {"champion", "challenger"}
    assert version.run_id == run.info.run_id
    assert "Test F1" in version.description
    # lineage on the version itself: code, data, params, test split, threshold, gate report
    for key in ("git_commit", "data_version", "params_digest", "test_split_hash",
                "decision_rule", "threshold", "threshold_method", "gate_report"):
        assert version.tags.get(key), key
    assert version.tags["decision_rule"] == "threshold"
    assert float(version.tags["threshold"]) == pytest.approx(metrics["threshold"], rel=1e-5)
    assert "min_f1 pass" in version.tags["gate_report"]

    # the registered model predicts from image files, when its loader opts in to reading them
    model = mlflow.pyfunc.load_model("models:/medimg-classifier@champion",
                                     model_config={"allow_paths": True})
    paths = sorted(str(p) for p in ws.raw_dir.rglob("*.png"))[:3]
    out = model.predict(pd.DataFrame({"path": paths}))
    assert list(out.columns) == ["label", "p_normal", "p_pneumonia", "decision_rule",
                                 "threshold"]
    assert set(out["label"]) <= {"normal", "pneumonia"}
    # ... and from base64-encoded bytes, with the same answer
    encoded = [base64.b64encode(Path(p).read_bytes()).decode() for p in paths]
    from_bytes = model.predict(pd.DataFrame({"image": encoded}))
    assert from_bytes["p_pneumonia"].to_numpy() == pytest.approx(out["p_pneumonia"].to_numpy())

    # test predictions are aligned with the manifest's labels, and the metrics follow from them
    from sklearn.metrics import f1_score, recall_score

    predictions = pd.read_csv(ws.reports_dir / "predictions.csv")
    manifest = pd.read_parquet(ws.manifest_path).set_index("image_id")
    test_ids = manifest.index[manifest["split"] == "test"]
    assert sorted(predictions["image_id"]) == sorted(test_ids)
    labels = manifest.loc[predictions["image_id"], "label"].to_numpy()
    assert (predictions["actual"] == labels).all()
    truth, guess = predictions["actual"] == "pneumonia", predictions["predicted"] == "pneumonia"
    assert metrics["f1"] == pytest.approx(f1_score(truth, guess, zero_division=0))
    assert metrics["recall"] == pytest.approx(recall_score(truth, guess, zero_division=0))

    # DVC agrees with what the flow produced: nothing to reproduce but the ingest check
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=ws.root,
                            capture_output=True, text=True, check=True)
    # only ingest is listed: it always runs (DVC does not hash data/raw), finding nothing new
    assert [x.strip() for x in status.stdout.strip().splitlines()] == ["ingest:", "always changed"]

    # with nothing changed, a second run only re-checks ingest: nothing trains or registers
    lock_before = (ws.root / "dvc.lock").read_text()
    again = training_pipeline(str(ws.root))
    assert again.ran == ["ingest"] and again.changed_nothing
    assert again.skipped == ["validate", "preprocess", "train", "evaluate", "register"]
    assert again.train is None and again.registration is None
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert len(client.search_model_versions("name='medimg-classifier'")) == 1
    assert (ws.root / "dvc.lock").read_text() == lock_before

    # a forced run re-runs every stage and becomes the challenger; the champion is re-scored
    second = training_pipeline(str(ws.root), force=True)
    assert second.ran == outcome.ran
    assert second.registration.version == "2"
    assert "challenger" in second.registration.aliases
    checks = {c.name: c for c in second.registration.champion_checks.checks}
    assert set(checks) == {"noninferior_f1", "noninferior_recall"}
    # the same test split as the champion's: the tag says so, and the champion was re-scored
    run_tags = client.get_run(second.registration.run_id).data.tags
    assert run_tags["champion.test_split"] == "same"
    # the champion was re-scored on the test split: each bound is its score minus the margin
    for check in checks.values():
        assert check.bound is not None, check.reason
    promoted = second.registration.champion_checks.passed
    champion = client.get_model_version_by_alias("medimg-classifier", "champion")
    assert str(champion.version) == ("2" if promoted else "1")
    assert "challenger" in client.get_model_version("medimg-classifier", "2").aliases
    if promoted:
        previous = client.get_model_version_by_alias("medimg-classifier", "previous-champion")
        assert str(previous.version) == "1"

    # the registry from the command line: the trail of those moves, then a promotion by hand
    # and its rollback, each audited
    audit = medimg_cli("registry", "audit", "--workspace", str(ws.root), cwd=ws.root)
    assert audit.returncode == 0, audit.stderr
    assert f"champion: none -> v1  by run {registered.run_id}" in audit.stdout
    assert "challenger: v1 -> v2" in audit.stdout
    current, other = ("2", "1") if promoted else ("1", "2")
    moved = medimg_cli("registry", "promote", other, "--reason", "reader study",
                       "--workspace", str(ws.root), cwd=ws.root)
    assert moved.returncode == 0, moved.stderr
    assert f"champion: v{current} -> v{other}" in moved.stdout and "reader study" in moved.stdout
    back = medimg_cli("registry", "rollback", "--reason", "missed nodules", "--workspace",
                      str(ws.root), cwd=ws.root)
    assert back.returncode == 0, back.stderr
    assert f"champion: v{other} -> v{current}" in back.stdout
    champion = client.get_model_version_by_alias("medimg-classifier", "champion")
    assert str(champion.version) == current
    listing = medimg_cli("registry", "list", "--workspace", str(ws.root), cwd=ws.root)
    assert listing.returncode == 0, listing.stderr
    lines = {line.split()[0]: line for line in listing.stdout.splitlines()[1:]}
    assert set(lines) == {"v1", "v2"}
    assert "champion" in lines[f"v{current}"] and "challenger" in lines["v2"]
    trail = medimg_cli("registry", "audit", "--workspace", str(ws.root), cwd=ws.root).stdout
    assert "rollback: missed nodules" in trail and trail.index("reader study") < trail.index(
        "rollback: missed nodules")
    missing = medimg_cli("registry", "promote", "9", "--workspace", str(ws.root), cwd=ws.root)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "error: medimg-classifier has no version 9; see `medimg registry list`"]


def test_failing_gates_register_nothing_and_tag_the_run(make_workspace):
    ws = make_workspace(OUT_OF_REACH)
    outcome = training_pipeline(str(ws.root))
    assert outcome.registration.version is None
    client = _client(ws)
    run = client.get_run(outcome.registration.run_id)
    assert run.data.tags["gate.passed"] == "false"
    assert run.data.tags["gate.min_f1"].startswith("failed: f1 ")
    recall_passed = outcome.evaluation.metrics["recall"] >= 1.0
    assert run.data.tags["gate.min_recall"].startswith("passed" if recall_passed else "failed")
    assert client.search_model_versions("name='medimg-classifier'") == []
    card = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                    artifact_path="model_card.md")).read_text()
    assert "not registered: it failed a gate" in card and "| min_f1 | f1 |" in card
    assert "| FAIL |" in card
