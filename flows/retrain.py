"""The retrain flow: the feedback loop's turn from new labels to a challenger and a decision.

1. Assess: the registry's champion, the new and corrected labels since its data version
   (manifest against manifest, plus files in data/raw not ingested yet), and drift of the
   images ingested since against its training split. Nothing over ``retrain.min_new_labels``,
   no drift and no ``force``: it does nothing, says why, runs no stage and opens no MLflow run.
2. Version: the feedback log (``data/feedback``) is added to DVC, then the training pipeline runs
   as a subflow: ingest takes in the new files, DVC re-runs only the stages whose inputs changed
   (preprocessing decodes only new images), and the gate, registration and promotion decide.
3. Report: a markdown page (what changed by class and by source, drift, challenger against
   champion, the decision) as a Prefect artifact under a stable key per workspace and as
   ``retrain/summary.md`` with the drift report in the pipeline's MLflow run. With a DVC remote
   configured, the new data version is pushed.

One retrain per workspace at a time: a second one started meanwhile ends Cancelled at once
(``CANCEL_NEW``; the deployment's concurrency limit says the same to a Prefect server). A failed
retrain leaves the champion where it was (only a passing challenger moves it) and says why in
one line. Only I/O is retried: MLflow, the DVC remote, Prefect's API.
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Cancelled

from flows.training import PipelineResult, artifact_key, training_pipeline
from medimg.config import Config
from medimg.errors import MedimgError
from medimg.locks import MANIFEST_LOCK, LockBusy, workspace_lock
from medimg.mlflow_run import one_line
from medimg.retry import retry_io_only
from medimg.settings import Settings, read_settings
from medimg.tracking import data_version
from medimg.training.warm_start import WARM_START_DIR
from medimg.versioning import is_dvc_repo, run_dvc
from medimg.workspace import Workspace, open_workspace

if TYPE_CHECKING:
    from medimg.drift.results import DriftReport
    from medimg.retrain.assess import Assessment
    from medimg.retrain.changes import ChampionState, LabelChanges

FEEDBACK_DIR = Path("data") / "feedback"
REPORT_DIR = Path("reports") / "retrain"


@dataclass
class RetrainResult:
    """What one retrain did and why."""

    retrained: bool
    decision: str  # one line
    triggers: list[str] = field(default_factory=list)
    name: str = ""
    pipeline: PipelineResult | None = None
    promoted: bool = False
    version: str | None = None  # the registered challenger, when there is one
    champion_before: str | None = None
    data_before: str = ""
    data_after: str = ""
    artifact_key: str = ""


def _retrain_run_name() -> str:
    from prefect.runtime import flow_run

    folder = Path(str(flow_run.parameters.get("workspace", "medimg"))).name or "medimg"
    return f"retrain-{folder}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def retrain_artifact_key(ws: Workspace) -> str:
    """The retrain page's Prefect artifact key, the same for every retrain of a workspace."""
    return artifact_key(ws).replace("medimg-pipeline-", "medimg-retrain-", 1)


@task(name="assess", task_run_name="assess", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=3, retry_condition_fn=retry_io_only)
def assess_changes(ws: Workspace, config: Config, settings: Settings,
                   force: bool) -> Assessment:
    from medimg.retrain.assess import assess

    found = assess(ws, config, settings, force=force)
    get_run_logger().info("%s; %s", found.changes.line(),
                          found.why if found.go else "no retrain")
    return found


@task(name="version-feedback", task_run_name="version feedback (dvc add)",
      cache_policy=NO_CACHE, retries=2, retry_delay_seconds=3, retry_condition_fn=retry_io_only)
def version_feedback(ws: Workspace) -> bool:
    """``dvc add data/feedback``: the feedback log and prediction records as a DVC version."""
    if not is_dvc_repo(ws.root) or not (ws.root / FEEDBACK_DIR).is_dir():
        return False
    with workspace_lock(ws.root, MANIFEST_LOCK):  # no reviewer appends while DVC hashes it
        run_dvc(ws.root, "add", "--quiet", str(FEEDBACK_DIR))
    return True


@task(name="warm-start", task_run_name="fetch the champion's weights", cache_policy=NO_CACHE,
      retries=2, retry_delay_seconds=3, retry_condition_fn=retry_io_only)
def fetch_warm_start(ws: Workspace, config: Config, settings: Settings,
                     champion: ChampionState | None) -> str:
    """``retrain.warm_start``: the champion's model in models/warm_start for training."""
    from medimg.retrain.warm import fetch_champion_weights

    return "" if fetch_champion_weights(ws, config, settings, champion) is None else (
        f"models:/{config.registry.model_name}/{champion.version}")


@task(name="push", task_run_name="dvc push", cache_policy=NO_CACHE, retries=3,
      retry_delay_seconds=10, retry_condition_fn=retry_io_only)
def push_data(ws: Workspace) -> bool:
    """Push the new data version to the DVC remote, when the workspace has one."""
    if not is_dvc_repo(ws.root) or not run_dvc(ws.root, "remote", "list").strip():
        return False
    run_dvc(ws.root, "push", "--quiet")
    return True


@task(name="record", task_run_name="record in MLflow", cache_policy=NO_CACHE, retries=2,
      retry_delay_seconds=3, retry_condition_fn=retry_io_only)
def record_in_mlflow(ws: Workspace, config: Config, settings: Settings, run_id: str,
                     result: RetrainResult, changes: LabelChanges, files: list[Path]) -> None:
    """The retrain's page, drift report and counts in the pipeline's MLflow run."""
    from mlflow import MlflowClient

    from medimg.tracking import use_workspace_tracking

    use_workspace_tracking(ws, config.registry.experiment_name, settings)
    client = MlflowClient()
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path="retrain")
    client.set_tag(run_id, "medimg.retrain", result.name)
    client.set_tag(run_id, "medimg.retrain.triggers", "; ".join(result.triggers)[:5000])
    client.set_tag(run_id, "medimg.retrain.decision", result.decision[:5000])
    client.set_tag(run_id, "medimg.retrain.data_before", result.data_before or "none")
    feedback = ws.root / "data" / "feedback.dvc"
    if feedback.is_file():  # the feedback log's DVC version (`dvc add data/feedback`)
        import yaml

        outs = (yaml.safe_load(feedback.read_text()) or {}).get("outs") or [{}]
        client.set_tag(run_id, "medimg.retrain.feedback_version", str(outs[0].get("md5", "")))
    now = int(time.time() * 1000)
    for key, value in {"retrain_new_images": len(changes.new_images),
                       "retrain_corrected_labels": len(changes.relabelled)}.items():
        client.log_metric(run_id, key, value, timestamp=now)


def _publish(ws: Workspace, page: str, name: str) -> None:
    from prefect.artifacts import create_markdown_artifact

    try:
        create_markdown_artifact(markdown=page, key=retrain_artifact_key(ws),
                                 description=f"medimg retrain {name}")
    except Exception as exc:  # the page never turns a finished retrain into a failed one
        get_run_logger().warning("could not publish the retrain summary: %s", one_line(exc))


def _decision(pipeline: PipelineResult) -> tuple[str, bool]:
    """The outcome in one line, and whether the challenger became the champion."""
    registration = pipeline.registration
    if registration is None:
        return ("the pipeline was up to date with this data: nothing trained; its last model "
                "was already judged (`medimg runs`)", False)
    if not registration.registered:
        failed = "; ".join(c.reason for c in registration.gates.failed)
        return f"challenger not registered: it failed the gates ({failed})", False
    if "champion" in registration.aliases:
        comparison = registration.comparison
        against = (f"non-inferior to champion v{comparison.champion_version}"
                   if comparison is not None else "the first champion")
        return f"promoted v{registration.version} to champion: {against}", True
    failed = "; ".join(c.reason for c in (registration.champion_checks.failed
                                          if registration.champion_checks else []))
    return (f"registered v{registration.version} as challenger, champion kept: "
            f"{failed or 'not promoted'}"), False


def _write_reports(ws: Workspace, page: str, drift: DriftReport | None) -> list[Path]:
    from medimg.drift.report import write_report

    out = ws.root / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "summary.md"
    summary.write_text(page, encoding="utf-8")
    files = [summary]
    if drift is not None:
        write_report(drift, out / "drift.json", out / "drift.png")
        files += [out / "drift.json", out / "drift.png"]
    return files


@flow(name="medimg-retrain", flow_run_name=_retrain_run_name, log_prints=False)
def retrain_flow(workspace: str, force: bool = False) -> RetrainResult:
    """Retrain on the workspace's new labels when they (or drift) call for it.

    Args:
        workspace: the workspace directory.
        force: retrain whatever changed, every stage re-run.
    """
    ws = open_workspace(workspace)
    with ExitStack() as held:
        try:
            held.enter_context(workspace_lock(ws.root, "retrain", timeout=0))
        except LockBusy:
            message = f"another retrain of {ws.root.name} is running; this one did nothing"
            get_run_logger().warning(message)
            return Cancelled(message=message)
        return _retrain(ws, ws.config, read_settings(), force)


def _retrain(ws: Workspace, config: Config, settings: Settings, force: bool) -> RetrainResult:
    from prefect.runtime import flow_run

    from medimg.retrain.summary import RetrainFacts, render_retrain

    logger = get_run_logger()
    name = flow_run.get_name() or "retrain"
    found = assess_changes(ws, config, settings, force)
    champion = found.champion
    result = RetrainResult(False, "", list(found.triggers), name,
                           champion_before=champion.version if champion else None,
                           data_before=champion.data_version if champion else "",
                           artifact_key=retrain_artifact_key(ws))
    if not found.go:
        result.decision = f"no retrain: {found.why}"
        logger.info(result.decision)
        _publish(ws, render_retrain(RetrainFacts(name, result.decision), found, found.changes,
                                    found.drift), name)
        return result
    try:
        version_feedback(ws)
        fetch_warm_start(ws, config, settings, champion)
        result.pipeline = training_pipeline(str(ws.root), force=force)
    except BaseException as exc:
        moved = _champion_now(ws, config, settings)
        kept = ("champion kept" if moved == result.champion_before else
                f"the champion is now v{moved} (was v{result.champion_before})")
        result.decision = f"retrain failed, {kept}: {one_line(exc)}"
        _publish(ws, render_retrain(RetrainFacts(name, result.decision, result.data_before),
                                    found, found.changes, found.drift), name)
        if isinstance(exc, MedimgError):
            raise type(exc)(result.decision) from None
        raise
    finally:
        shutil.rmtree(ws.root / WARM_START_DIR, ignore_errors=True)
    _conclude(ws, config, settings, found, result)
    return result


def _champion_now(ws: Workspace, config: Config, settings: Settings) -> str | None:
    from medimg.retrain.assess import champion_version

    try:
        return champion_version(ws, config, settings)
    except Exception:  # the registry cannot be read: say what was known before
        return None


def _conclude(ws: Workspace, config: Config, settings: Settings, found: Assessment,
              result: RetrainResult) -> None:
    """The decision, the page, the MLflow record and the push, after the pipeline finished.
    The pipeline's outcome stands: a failure here is a warning, never a failed retrain."""
    from medimg.retrain.assess import measure_drift, remember_retrain
    from medimg.retrain.changes import label_changes
    from medimg.retrain.summary import RetrainFacts, render_retrain

    logger = get_run_logger()
    pipeline = result.pipeline
    result.retrained = "train" in pipeline.ran
    result.decision, result.promoted = _decision(pipeline)
    if pipeline.registration is not None:
        result.version = pipeline.registration.version
    result.data_after = data_version(ws)
    remember_retrain(ws, result.decision)
    changes, drift = found.changes, found.drift
    try:
        # measured again: ingest has taken in the files that waited in data/raw
        changes = label_changes(ws, found.champion)
        drift = measure_drift(ws, config, found.champion, settings)
        link = ""
        if pipeline.mlflow_run_id:
            from medimg.tracking import run_link, use_workspace_tracking

            experiment = use_workspace_tracking(ws, config.registry.experiment_name, settings)
            link = run_link(ws, settings, experiment, pipeline.mlflow_run_id)
        page = render_retrain(RetrainFacts(result.name, result.decision, result.data_before,
                                           result.data_after, link, pipeline.name),
                              found, changes, drift, pipeline.registration)
        files = _write_reports(ws, page, drift)
        _publish(ws, page, result.name)
        if pipeline.mlflow_run_id:
            record_in_mlflow(ws, config, settings, pipeline.mlflow_run_id, result, changes,
                             files)
        push_data(ws)
    except Exception as exc:
        logger.warning("the retrain's outcome stands, but its report is incomplete: %s",
                       one_line(exc))
    logger.info(result.decision)
