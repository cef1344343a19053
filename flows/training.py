"""The training pipeline flow: the stages of ``dvc.yaml``, in its order, as Prefect tasks.

``dvc.yaml`` is the only definition of the stages and their dependencies. The flow reads the
order from it, skips every stage DVC reports as up to date, runs the rest through the same
``run_<stage>`` functions the CLI and ``dvc repro`` call, and records each one in ``dvc.lock``.
A second run with nothing changed trains and registers nothing; ``force`` re-runs every stage.

Each tool shows the run in its own view. Prefect: the flow run is named after the workspace and
the data version, each task run after its stage (an up-to-date stage is a "Skipped" task run),
and a markdown artifact with a stable key per workspace holds the data, metrics with intervals,
gate table, decision and the MLflow link. MLflow: one run spans the pipeline run, opened before
the first stage with work to do and ended FAILED (with the stage and reason) or FINISHED.
DVC: a run that did work is saved as an experiment of the same name (``dvc exp show``).

Runs against Prefect's ephemeral local API by default (nothing to start first) and against a
Prefect server when PREFECT_API_URL is set. Orchestration only: the work is in ``medimg``.

medimg's own log records (the ``medimg`` logger) go to the flow run's logs beside Prefect's, so
Prefect's UI and database hold both. A caller in the same process (the CLI) may show the long
steps' progress with :func:`reporting_progress`; a run by a Prefect worker has no reporter and
shows none. The reporter is not a flow parameter: Prefect would try to store it with the run.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from medimg.config import Config
from medimg.console import Counter, EpochReport, ProgressReporter
from medimg.errors import MedimgError, WorkspaceError
from medimg.locks import workspace_lock
from medimg.mlflow_run import PipelineRun, failure_reason, one_line
from medimg.retry import retry_io_only
from medimg.settings import Settings, read_settings
from medimg.tracking import data_version, pipeline_run_name, run_link
from medimg.versioning import (
    commit_stage,
    compile_outside_deps,
    is_dvc_repo,
    pipeline_status,
    save_experiment,
    stage_order,
)
from medimg.workspace import Workspace, open_workspace

if TYPE_CHECKING:
    from medimg.data.stage import IngestSummary
    from medimg.evaluation.stage import EvaluationResult
    from medimg.registry.stage import RegisterResult
    from medimg.training.stage import TrainResult
    from medimg.validation.stage import ValidationReport

# Each task imports its stage where it runs: a run that finds every stage up to date never
# loads TensorFlow (a third of a no-change run's time on a CPU machine).

# the stages medimg runs itself; any other stage in dvc.yaml runs its own cmd
STAGES = ("ingest", "validate", "preprocess", "train", "evaluate", "register")

# Where the stages report progress in this process: set by a caller that shows it (the CLI)
_reporters: list[ProgressReporter] = []


@contextmanager
def reporting_progress(reporter: ProgressReporter) -> Iterator[None]:
    """Flows run in this process while inside report their long steps to ``reporter``."""
    _reporters.append(reporter)
    try:
        yield
    finally:
        _reporters.remove(reporter)


def _counter(description: str) -> Counter | None:
    return _reporters[-1].counter(description) if _reporters else None


def _epochs(description: str) -> EpochReport | None:
    return _reporters[-1].epochs(description) if _reporters else None


def _step(description: str) -> AbstractContextManager[None]:
    return _reporters[-1].step(description) if _reporters else nullcontext()


def _in_a_run(record: logging.LogRecord) -> bool:
    """A record made inside a flow or task run (a thread of a stage's own pool has none)."""
    from prefect.context import FlowRunContext, TaskRunContext

    return bool(getattr(record, "flow_run_id", None) or FlowRunContext.get()
                or TaskRunContext.get())


def _medimg_logs_to_prefect() -> None:
    """Send the ``medimg`` logger's records to the run's logs in Prefect's API, once per process.

    Prefect's own ``PREFECT_LOGGING_EXTRA_LOGGERS=medimg`` does the same; then it is left as is.
    Records made outside a run are not sent (Prefect would warn about each one).
    """
    from prefect.logging.handlers import APILogHandler

    logger = logging.getLogger("medimg")
    if any(isinstance(h, APILogHandler) for h in logger.handlers):
        return
    handler = APILogHandler()
    handler.addFilter(_in_a_run)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


@dataclass
class PipelineResult:
    """What one flow run did: each stage's result, or None where it did not run."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    ingest: IngestSummary | None = None
    validation: ValidationReport | None = None
    counts: dict[str, int] | None = None
    train: TrainResult | None = None
    evaluation: EvaluationResult | None = None
    registration: RegisterResult | None = None
    dvc_locked: bool = False
    name: str = ""  # the run's name in Prefect, MLflow and DVC
    mlflow_run_id: str | None = None  # None: nothing to do, so no MLflow run was opened
    experiment: str | None = None  # the DVC experiment the run was saved as

    @property
    def changed_nothing(self) -> bool:
        """Only ingest (always run, incremental) ran, and DVC found everything else current."""
        return bool(self.skipped) and set(self.ran) <= {"ingest"}


# Retried only on I/O (a network share that dropped the connection), never on a user's error or
# on compute, which would fail the same way again
@task(name="ingest", task_run_name="ingest", retries=1, retry_delay_seconds=2,
      retry_condition_fn=retry_io_only, cache_policy=NO_CACHE)
def ingest(ws: Workspace, config: Config, settings: Settings,
           sources: list[Path]) -> IngestSummary:
    from medimg.data.quarantine import count_codes
    from medimg.data.stage import run_ingest

    summary = run_ingest(ws, config, settings, sources,
                         progress=_counter("analysing images"))
    logger = get_run_logger()
    logger.info("%s; %d rows in the manifest", summary.equation(), summary.manifest_rows)
    if summary.dropped_columns:
        logger.info("label-list columns not kept (not in data.metadata_columns): %s",
                    ", ".join(summary.dropped_columns))
    if summary.quarantined:
        counts = count_codes(summary.quarantined)
        logger.warning("%d file(s) quarantined (%s); see data/quarantine/quarantine.jsonl",
                       len(summary.quarantined),
                       "; ".join(f"{n} {code}" for code, n in counts.most_common()))
    return summary


@task(name="validate", task_run_name="validate", cache_policy=NO_CACHE)
def validate(ws: Workspace, config: Config) -> ValidationReport:
    from medimg.validation.stage import run_validate

    report = run_validate(ws, config)
    for check in report.warnings:
        get_run_logger().warning("data contract warning %s: %s", check.name, check.details)
    return report


@task(name="preprocess", task_run_name="preprocess", cache_policy=NO_CACHE)
def preprocess(ws: Workspace, config: Config) -> dict[str, int]:
    from medimg.preprocessing.stage import run_preprocess

    return run_preprocess(ws, config, progress=_counter("preprocessing images"))


def _to_all(*reports: EpochReport | None) -> EpochReport | None:
    live = [r for r in reports if r is not None]

    def report(epoch: int, total: int, logs) -> None:
        for each in live:
            each(epoch, total, logs)

    return report if live else None


@task(name="train", task_run_name="train", cache_policy=NO_CACHE)
def train(ws: Workspace, config: Config, settings: Settings,
          tracked: PipelineRun | None = None) -> TrainResult:
    from medimg.training.stage import run_train

    # each epoch reaches MLflow as it ends, with system metrics sampled meanwhile
    with tracked.system_metrics() if tracked else nullcontext():
        result = run_train(ws, config, settings, progress=_to_all(
            _epochs("training"), tracked.log_epoch if tracked else None))
    get_run_logger().info("trained %d epochs in %.1fs", result.epochs_run, result.seconds)
    return result


@task(name="evaluate", task_run_name="evaluate", cache_policy=NO_CACHE)
def evaluate(ws: Workspace, config: Config) -> EvaluationResult:
    from medimg.evaluation.stage import run_evaluate

    return run_evaluate(ws, config, progress=_counter("bootstrap resamples"))


# No task-level retries: registering is not idempotent (a retry would log a second run and
# version); MLflow's client already retries its own HTTP requests.
@task(name="register", task_run_name="register", cache_policy=NO_CACHE)
def register(ws: Workspace, config: Config, settings: Settings, run_name: str,
             run_id: str | None = None) -> RegisterResult:
    from medimg.registry.stage import run_register

    result = run_register(ws, config, settings, run_name=run_name,
                          extra_tags={"prefect_flow_run": run_name}, run_id=run_id)
    logger = get_run_logger()
    if result.registered:
        logger.info("registered version %s with aliases %s", result.version, result.aliases)
    else:
        logger.warning("not registered: %s", "; ".join(c.reason for c in result.gates.failed))
    return result


@task(name="skipped", cache_policy=NO_CACHE)
def skipped(stage: str, changes: str) -> Completed:
    """An up-to-date stage, as a task run in the state "Skipped"."""
    return Completed(name="Skipped", message=f"{stage} is up to date{changes}")


@task(name="dvc-stage", cache_policy=NO_CACHE)
def other_stage(ws: Workspace, name: str, cmd: str) -> None:
    """A stage a team added to dvc.yaml: its own command, as ``dvc repro`` would run it."""
    done = subprocess.run(cmd, shell=True, cwd=ws.root, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [x for x in (done.stderr + done.stdout).splitlines() if x.strip()]
        raise WorkspaceError(f"dvc.yaml stage {name!r} (`{cmd}`) failed: "
                             f"{lines[-1] if lines else f'exit code {done.returncode}'}")


def _flow_run_name() -> str:
    """The workspace and its data version before ingest (renamed once ingest has run)."""
    from prefect.runtime import flow_run

    try:
        ws = open_workspace(flow_run.parameters["workspace"])
        return pipeline_run_name(ws.root.name, data_version(ws), time.time())
    except Exception:  # an unreadable workspace fails in the flow, with its own message
        return pipeline_run_name("medimg", "unknown", time.time())


def _rename_flow_run(name: str) -> None:
    """The flow run's new name in Prefect's API; a failure to rename only logs a warning."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not flow_run.get_id():
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.get_id(), name=name)
    except Exception as exc:
        get_run_logger().warning("the flow run keeps its first name: %s", one_line(exc))


def artifact_key(ws: Workspace) -> str:
    """The Prefect artifact key of a workspace's pipeline runs, the same for each of its runs:
    its folder's name and a short hash of its path (two folders of one name differ)."""
    import hashlib

    slug = re.sub(r"[^a-z0-9-]+", "-", ws.root.name.lower()).strip("-")[:40] or "workspace"
    where = hashlib.sha256(str(ws.root.resolve()).encode()).hexdigest()[:6]
    return f"medimg-pipeline-{slug}-{where}"


def _publish(ws: Workspace, config: Config, result: PipelineResult, link: str,
             failure: str = "") -> None:
    """The run's summary as a Prefect markdown artifact under the workspace's stable key."""
    from prefect.artifacts import create_markdown_artifact

    from medimg.run_summary import RunFacts, render_summary

    facts = RunFacts(result.name, result.ran, result.skipped,
                     result.ingest.equation() if result.ingest else "", link, failure,
                     result.experiment or "")
    try:
        create_markdown_artifact(markdown=render_summary(ws, config, facts, result.registration),
                                 key=artifact_key(ws),
                                 description=f"medimg pipeline run {result.name}")
    except Exception as exc:  # the summary never turns a finished run into a failed one
        get_run_logger().warning("could not publish the run summary: %s", one_line(exc))


@flow(name="medimg-training-pipeline", log_prints=False, flow_run_name=_flow_run_name)
def training_pipeline(workspace: str, sources: list[str] | None = None,
                      force: bool = False, demo: bool = False) -> PipelineResult:
    """The stages of dvc.yaml in order, each skipped when DVC finds it up to date.

    Args:
        workspace: the workspace directory.
        sources: folders to ingest; default ``data/raw`` in the workspace. Other sources run
            every stage and leave ``dvc.lock`` as it was: dvc.yaml declares data/raw.
        force: run every stage, up to date or not.
        demo: phantoms only: without MEDIMG_PSEUDONYM_KEY, pseudonymise with the demo's fixed
            key (never a secret, never in the flow's parameters).
    """
    started = time.time()
    _medimg_logs_to_prefect()
    ws = open_workspace(workspace)
    # one pipeline run per workspace: two would write the same outputs and both register
    with workspace_lock(ws.root, "pipeline", timeout=0,
                        busy=f"another pipeline run of {ws.root} is running; wait for it to "
                             "end (Prefect's UI or `medimg runs` shows it)"):
        return _pipeline(ws, sources, force, demo, started)


def _pipeline(ws: Workspace, sources: list[str] | None, force: bool, demo: bool,
              started: float) -> PipelineResult:
    from prefect.runtime import flow_run

    settings = read_settings()  # the flow is an entry point: the environment is read here, once
    if demo and settings.key_bytes() is None:
        from medimg.demo import DEMO_PSEUDONYM_KEY

        settings = read_settings(pseudonym_key=DEMO_PSEUDONYM_KEY)
    config = ws.config
    logger = get_run_logger()
    paths = [Path(s) for s in sources] if sources else [ws.raw_dir]
    declared = [p.resolve() for p in paths] == [ws.raw_dir.resolve()]
    follow_dvc = declared and is_dvc_repo(ws.root)
    if not declared:
        logger.warning("sources other than data/raw: every stage runs, dvc.lock is left as it was")
    elif not follow_dvc:
        logger.warning("%s is not a DVC repository: every stage runs, no dvc.lock", ws.root)
    order = stage_order(ws.root / "dvc.yaml") if (ws.root / "dvc.yaml").is_file() else None
    steps = [(s.name, s.cmd) for s in order] if order else [(name, "") for name in STAGES]
    result = PipelineResult(dvc_locked=follow_dvc, name=flow_run.get_name() or "medimg-run")
    tracked = PipelineRun(ws, config, settings, result.name, started,
                          tags={"prefect.flow_run_id": str(flow_run.get_id() or "")})
    if follow_dvc:
        compile_outside_deps(ws.root)  # no byte-code cache written later reads as a code change
    status: dict[str, list[str]] | None = None  # DVC's answer for every stage, until one runs
    stage = "start"
    try:
        for stage, cmd in steps:
            if follow_dvc and not force:
                if status is None:  # one `dvc status` for all the stages that follow a run
                    status = pipeline_status(ws.root)
                changes = status.get(stage, [])
                if not changes:
                    logger.info("%s is up to date; skipped", stage)
                    skipped.with_options(name=stage, task_run_name=f"{stage} (up to date)")(
                        stage, "")
                    result.skipped.append(stage)
                    tracked.record_stage(stage, "up to date")
                    continue
                logger.info("%s runs: %s", stage, "; ".join(changes[:3]))
            if stage != "ingest":  # work to do: the MLflow run opens, dated from the start
                result.mlflow_run_id = tracked.open()
            began = time.perf_counter()
            _run_stage(stage, cmd, ws, config, settings, paths, result, tracked)
            if stage == "ingest":  # base.image_size: auto follows the images just ingested
                config = tracked.config = ws.reload_config()
            if follow_dvc:
                commit_stage(ws.root, stage)
            result.ran.append(stage)
            tracked.record_stage(stage, f"ran in {time.perf_counter() - began:.1f} s",
                                 _stage_figures(stage, result))
            status = None  # what this stage wrote may change what DVC says of the next
            if stage == "ingest":
                result.name = tracked.name = pipeline_run_name(ws.root.name, data_version(ws),
                                                               started)
                _rename_flow_run(result.name)
        stage = "finish"
        if follow_dvc and result.mlflow_run_id:
            try:
                result.experiment = save_experiment(ws.root, result.name)
                logger.info("saved as DVC experiment %s", result.experiment)
            except MedimgError as exc:  # the run's results stand; only the experiment is lost
                logger.warning("not saved as a DVC experiment: %s", exc)
    except BaseException as exc:
        tracked.fail(stage, exc)
        link = (run_link(ws, settings, tracked.experiment_id, tracked.run_id)
                if tracked.run_id and tracked.experiment_id else "")
        result.mlflow_run_id = tracked.run_id
        _publish(ws, config, result, link, failure=f"{stage}: {failure_reason(stage, exc)}")
        raise
    link = ""
    if result.mlflow_run_id:
        if result.experiment:
            tracked.note({"dvc_experiment": result.experiment})
        tracked.finish()
        link = run_link(ws, settings, tracked.experiment_id, result.mlflow_run_id)
    _publish(ws, config, result, link)
    if result.changed_nothing:
        logger.info("nothing changed since the last run: nothing trained or registered")
    return result


def _stage_figures(stage: str, result: PipelineResult) -> dict[str, float]:
    """What a stage counted, as run metrics: files in and their fates, contract checks,
    images per split."""
    if stage == "ingest" and result.ingest:
        found = result.ingest
        return {"ingest_files_in": found.files_in, "ingest_ingested": found.ingested,
                "ingest_already_present": found.already_present,
                "ingest_duplicates": found.duplicates,
                "ingest_quarantined": len(found.quarantined)}
    if stage == "validate" and result.validation:
        report = result.validation
        return {"contract_checks": len(report.checks),
                "contract_checks_failed": len(report.failed_critical),
                "contract_warnings": len(report.warnings)}
    if stage == "preprocess" and result.counts:
        return {f"images_{split}": n for split, n in result.counts.items()}
    return {}


def _run_stage(stage: str, cmd: str, ws: Workspace, config: Config, settings: Settings,
               paths: list[Path], result: PipelineResult, tracked: PipelineRun) -> None:
    """One stage as its Prefect task (named after it), its outcome kept in ``result``."""
    with _step(stage):
        if stage == "ingest":
            result.ingest = ingest(ws, config, settings, paths)
        elif stage == "validate":
            result.validation = validate(ws, config)
        elif stage == "preprocess":
            result.counts = preprocess(ws, config)
        elif stage == "train":
            result.train = train(ws, config, settings, tracked)
        elif stage == "evaluate":
            result.evaluation = evaluate(ws, config)
        elif stage == "register":
            result.registration = register(ws, config, settings, result.name, tracked.run_id)
        else:
            other_stage.with_options(name=stage, task_run_name=stage)(ws, stage, cmd)
