"""Record a pipeline run in MLflow, apply the gates, register and alias the model that passes."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medimg.config import BaseConfig, Config
from medimg.data.manifest import load_manifest
from medimg.decision import THRESHOLD
from medimg.mlflow_datasets import split_digest
from medimg.registry.aliases import (
    CHALLENGER,
    CHAMPION,
    PromotionConflict,
    actor,
    alias_version,
    promote,
    set_alias,
)
from medimg.registry.champion import Comparison, compare_with_champion
from medimg.registry.gates import GateReport, evaluate_gates
from medimg.registry.model_card import render_model_card
from medimg.registry.requirements import pip_requirements
from medimg.registry.run_record import (
    check_lines,
    kept_epoch_metrics,
    log_datasets,
    log_missing_history,
    log_model_metrics,
    metrics_on_test,
    model_params,
    the_run,
)
from medimg.settings import Settings
from medimg.tracking import data_version, git_commit, ui_command, use_workspace_tracking
from medimg.training.history import HISTORY_FILE, read_history
from medimg.workspace import Workspace

logger = logging.getLogger(__name__)

MODEL_CARD = "model_card.md"


@dataclass
class RegisterResult:
    run_id: str
    metrics: dict[str, object]
    gates: GateReport
    version: str | None = None
    aliases: list[str] = field(default_factory=list)
    champion_checks: GateReport | None = None
    comparison: Comparison | None = None
    ui_command: str = ""

    @property
    def registered(self) -> bool:
        return self.version is not None


def runtime_metrics(facts: dict) -> dict[str, float]:
    """The numbers in ``train_run.json``'s sections as MLflow metrics, ``<section>_<name>``:
    ``calibration_ece_before``, ``calibration_temperature``, ``precision_timings_float32``
    (milliseconds per step)..."""
    return {f"{section}_{name}": float(value)
            for section, values in facts.items() if isinstance(values, dict)
            for name, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool)}


def test_split_hash(manifest: pd.DataFrame) -> str:
    """The test split's image ids with their labels: an adjudicated relabel changes it, and the
    next gate re-scores the champion on the new split. The test dataset's MLflow digest."""
    return split_digest(manifest, "test")


def run_register(ws: Workspace, config: Config, settings: Settings | None = None,
                 run_name: str | None = None,
                 extra_tags: dict[str, str] | None = None,
                 run_id: str | None = None) -> RegisterResult:
    """Record the pipeline run in MLflow, then the gate and the registry.

    Logs into the run ``run_id`` (the flow's, which spans every stage) or, without one, into a
    new run named ``run_name``: params (params.yaml flattened), the splits as dataset inputs,
    the per-epoch training metrics the run lacks, plots, the validation report and the model (a
    pyfunc with signature), with its test metrics and intervals on the logged model itself.
    Registers a new version only when every absolute gate passes; otherwise tags the run and
    the model with each failed gate and registers nothing.
    """
    import mlflow
    from mlflow import MlflowClient

    from medimg.serving import pyfunc

    metrics = json.loads(ws.require(ws.metrics_path, "evaluate").read_text())
    use_workspace_tracking(ws, config.registry.experiment_name, settings)
    client = MlflowClient()
    name = config.registry.model_name
    manifest = load_manifest(ws.manifest_path)
    test = manifest[manifest["split"] == "test"]
    split_hash = test_split_hash(manifest)
    lineage = {
        "git_commit": git_commit(ws),
        "data_version": data_version(ws),
        "params_digest": config.digest(),
        "test_split_hash": split_hash,
        **(extra_tags or {}),
    }
    with the_run(run_id, run_name) as run:
        mlflow.log_params(config.flat())
        mlflow.set_tags(lineage)
        runtime = ws.reports_dir / "train_run.json"
        facts = json.loads(runtime.read_text()) if runtime.is_file() else {}
        # device, replicas, precision, XLA: what the model trained on
        mlflow.set_tags({f"runtime.{k}": str(v) for k, v in facts.items()
                         if v not in ("", None) and not isinstance(v, dict)})
        # what training measured in passing (calibration on validation, precision timings)
        mlflow.log_metrics(runtime_metrics(facts))
        history = read_history(ws.reports_dir / HISTORY_FILE)
        log_missing_history(client, run.info.run_id, history)
        datasets = log_datasets(client, run.info.run_id, ws, config, manifest, lineage)
        for path in [ws.metrics_path, ws.validation_report_path,
                     ws.reports_dir / HISTORY_FILE, ws.reports_dir / "train_run.json",
                     ws.reports_dir / "predictions.csv"]:
            if path.is_file():
                mlflow.log_artifact(str(path), artifact_path="reports")
        if ws.plots_dir.is_dir():
            mlflow.log_artifacts(str(ws.plots_dir), artifact_path="plots")
        model_info = mlflow.pyfunc.log_model(
            name="model",
            python_model=Path(pyfunc.__file__).with_name("mlflow_model.py"),
            artifacts={pyfunc.BUNDLE_ARTIFACT: str(ws.model_dir)},
            signature=pyfunc.signature_for(list(config.base.class_names)),
            input_example=_input_example(config.base),
            model_config=pyfunc.MODEL_CONFIG,
            # the model carries its own code, so it loads where medimg is not installed
            code_paths=[str(Path(pyfunc.__file__).resolve().parents[1])],
            pip_requirements=pip_requirements(),
            params=model_params(config),
        )
        model_id = model_info.model_id
        log_model_metrics(run.info.run_id, model_id, metrics_on_test(metrics),
                          datasets.get("test"))
        for values, dataset in kept_epoch_metrics(history, facts, datasets):
            log_model_metrics(run.info.run_id, model_id, values, dataset)
        report = evaluate_gates(metrics, config.gates)
        result = RegisterResult(run.info.run_id, metrics, report,
                                ui_command=ui_command(ws, settings))
        mlflow.set_tag("gate.passed", str(report.passed).lower())
        _tag_checks(report)
        client.set_logged_model_tags(model_id, {"gate.passed": str(report.passed).lower(),
                                                "gate_report": check_lines(report)})
        validation = (json.loads(ws.validation_report_path.read_text())
                      if ws.validation_report_path.is_file() else None)
        card = {"config": config, "metrics": metrics, "lineage": lineage,
                "manifest": manifest, "run_id": run.info.run_id, "validation": validation}
        if not report.passed:
            mlflow.log_dict(report.to_dict(), "reports/gate_report.json")
            mlflow.log_text(render_model_card(gates=report, **card), MODEL_CARD)
            logger.warning("gates failed: %s", "; ".join(c.reason for c in report.failed))
            _write_registration(ws, result, promoted=False)
            return result

        version = mlflow.register_model(model_info.model_uri, name, tags={
            **lineage, **_decision_tags(metrics),
            "gate_report": check_lines(report)})
        result.version = str(version.version)
        mlflow.set_tag("registered_version", result.version)
        client.update_model_version(name, version.version, description=_description(
            metrics, lineage, report))
        by = actor(run.info.run_id)
        set_alias(client, name, CHALLENGER, result.version, "passed the absolute gates", by)
        champion = alias_version(client, name, CHAMPION)
        split_changed = False
        if champion is None:
            comparison = None
            promoted = True
        else:
            # the very version, scored on this run's test split (a split changed since it was
            # gated makes its old scores incomparable); promotion is compare-and-set on it
            champion_split = client.get_model_version(name, champion).tags.get(
                "test_split_hash", "unknown")
            split_changed = champion_split not in (split_hash, "unknown")
            compared = compare_with_champion(ws, config, model_info.model_uri,
                                             f"models:/{name}/{champion}", champion, test)
            comparison = compared.gates
            result.comparison = compared
            promoted = comparison.passed
            mlflow.set_tag("champion.test_split", "unknown" if champion_split == "unknown"
                           else "changed" if split_changed else "same")
            if split_changed:
                logger.info("the test split changed since v%s was gated (%s, now %s): the "
                            "champion is re-scored on the new one", champion, champion_split,
                            split_hash)
            mlflow.log_dict({**compared.to_dict(), "test_split_hash": split_hash,
                             "champion_test_split_hash": champion_split,
                             "test_split_changed": split_changed,
                             "confidence": config.evaluate.confidence,
                             "resamples": config.evaluate.bootstrap_resamples,
                             "unit": "patient"}, "reports/champion_comparison.json")
            _log_comparison(compared)
            _tag_checks(comparison)
            client.set_model_version_tag(name, result.version, "champion_comparison",
                                         check_lines(comparison))
            client.set_logged_model_tags(model_id, {"champion_comparison":
                                                    check_lines(comparison)})
        result.champion_checks = comparison
        promote_failed = ""
        if promoted:
            why = ("the first model to pass the gates" if champion is None else
                   f"non-inferior to v{champion} re-scored on "
                   + ("the new test split" if split_changed else "the same test split"))
            try:
                promote(client, name, result.version, why, by, expected_champion=champion)
            except PromotionConflict as exc:  # another run promoted first: stay challenger
                logger.warning("%s", exc)
                promote_failed, promoted = str(exc), False
        mlflow.log_dict({**report.to_dict(), "registered_version": result.version,
                         "promoted": promoted, "promotion_conflict": promote_failed},
                        "reports/gate_report.json")
        result.aliases = sorted(client.get_model_version(name, version.version).aliases)
        mlflow.log_text(render_model_card(gates=report, champion_checks=comparison,
                                          comparison=result.comparison,
                                          version=result.version, **card), MODEL_CARD)
    _write_registration(ws, result, promoted)
    return result


def _write_registration(ws: Workspace, result: RegisterResult, promoted: bool) -> None:
    """``reports/registration.json``, the register stage's output in dvc.lock."""
    record = {"run_id": result.run_id, "gate_passed": result.gates.passed,
              "version": result.version, "aliases": result.aliases, "promoted": promoted}
    ws.registration_path.parent.mkdir(parents=True, exist_ok=True)
    staging = ws.registration_path.with_suffix(".tmp")
    staging.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(staging, ws.registration_path)


def _tag_checks(report: GateReport) -> None:
    """Each check as the run tag ``gate.<name>``: passed or failed, with value and bound."""
    import mlflow

    mlflow.set_tags({f"gate.{c.name}": ("passed: " if c.passed else "failed: ") + c.reason
                     for c in report.checks})


def _decision_tags(metrics: dict[str, object]) -> dict[str, str]:
    """The version's decision rule: the threshold and how it was chosen for two classes,
    ``argmax`` (and no threshold, since none is used) for more."""
    rule = str(metrics.get("decision_rule", THRESHOLD))
    if rule != THRESHOLD:
        return {"decision_rule": rule}
    point = metrics.get("operating_point") or {}
    return {"decision_rule": rule, "threshold": f"{float(metrics['threshold']):.6g}",
            "threshold_method": str(point.get("method", "fixed"))}


def _log_comparison(compared: Comparison) -> None:
    """The champion's metrics and each paired difference with its interval, as run metrics:
    ``champion_f1``, ``vs_champion_f1``, ``vs_champion_f1_ci_low`` ..."""
    import mlflow

    values: dict[str, float] = {}
    for metric, d in compared.differences.items():
        for key, value in ((f"champion_{metric}", d.get("champion")),
                           (f"vs_champion_{metric}", d.get("difference")),
                           (f"vs_champion_{metric}_ci_low", d.get("low")),
                           (f"vs_champion_{metric}_ci_high", d.get("high"))):
            if isinstance(value, int | float):
                values[key] = float(value)
    if values:
        mlflow.log_metrics(values)


def _input_example(base: BaseConfig) -> pd.DataFrame:
    """A request as a client sends it (base64 file bytes) holding a synthetic phantom at the
    workspace's image size and channels: MLflow stores the example with the model, so it must
    carry no patient's image, and a prediction on it still checks the logged model end to end."""
    import base64

    from medimg.data.phantoms import phantom_png

    # the phantoms' smallest size is 32; the model's preprocessing resizes any film anyway
    png = phantom_png(max(32, int(base.image_size)), base.channels, seed=base.seed)
    return pd.DataFrame({"image": [base64.b64encode(png).decode("ascii")]})


def _description(metrics: dict[str, object], lineage: dict[str, str], report: GateReport) -> str:
    gates = ", ".join(c.reason for c in report.checks)
    rule = (f"at threshold {metrics['threshold']:.4g}" if metrics.get("threshold") is not None
            else "deciding by arg-max")
    return (
        f"Test F1 {metrics['f1']:.3f}, recall {metrics['recall']:.3f}, "
        f"specificity {metrics['specificity']:.3f}, ROC-AUC {metrics['roc_auc']:.3f} "
        f"on {metrics['n']} test images {rule}. "
        f"Gates: {gates}. Data version {lineage['data_version']}, "
        f"commit {lineage['git_commit']}."
    )
