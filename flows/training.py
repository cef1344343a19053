"""The training pipeline flow: the stages of ``dvc.yaml``, in its order, as Prefect tasks.

``dvc.yaml`` is the only definition of the stages and their dependencies. The flow reads the
order from it, skips every stage DVC reports as up to date, runs the rest through the same
``run_<stage>`` functions the CLI and ``dvc repro`` call, and records each one in ``dvc.lock``.
A second run with nothing changed trains and registers nothing; ``force`` re-runs every stage.

Runs against Prefect's ephemeral local API by default (nothing to start first) and against a
Prefect server when PREFECT_API_URL is set. Orchestration only: the work is in ``medimg``.

medimg's own log records (the ``medimg`` logger) go to the flow run's logs beside Prefect's, so
Prefect's UI and database hold both. A caller in the same process (the CLI) may show the long
steps' progress with :func:`reporting_progress`; a run by a Prefect worker has no reporter and
shows none. The reporter is not a flow parameter: Prefect would try to store it with the run.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from medimg.config import Config
from medimg.console import Counter, EpochReport, ProgressReporter
from medimg.errors import MedimgError, WorkspaceError
from medimg.settings import Settings, read_settings
from medimg.versioning import (
    commit_stage,
    compile_outside_deps,
    is_dvc_repo,
    pipeline_status,
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

    @property
    def changed_nothing(self) -> bool:
        """Only ingest (always run, incremental) ran, and DVC found everything else current."""
        return bool(self.skipped) and set(self.ran) <= {"ingest"}


def _transient(task, task_run, state) -> bool:
    """Retry I/O hiccups, never a user-fixable error: that would only repeat the same answer."""
    try:
        state.result()
    except MedimgError:
        return False
    except Exception:
        return True
    return False


@task(name="ingest", retries=1, retry_delay_seconds=2, retry_condition_fn=_transient,
      cache_policy=NO_CACHE)
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


@task(name="validate", cache_policy=NO_CACHE)
def validate(ws: Workspace, config: Config) -> ValidationReport:
    from medimg.validation.stage import run_validate

    report = run_validate(ws, config)
    for check in report.warnings:
        get_run_logger().warning("data contract warning %s: %s", check.name, check.details)
    return report


@task(name="preprocess", cache_policy=NO_CACHE)
def preprocess(ws: Workspace, config: Config) -> dict[str, int]:
    from medimg.preprocessing.stage import run_preprocess

    return run_preprocess(ws, config, progress=_counter("preprocessing images"))


@task(name="train", cache_policy=NO_CACHE)
def train(ws: Workspace, config: Config, settings: Settings) -> TrainResult:
    from medimg.training.stage import run_train

    result = run_train(ws, config, settings, progress=_epochs("training"))
    get_run_logger().info("trained %d epochs in %.1fs", result.epochs_run, result.seconds)
    return result


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(ws: Workspace, config: Config) -> EvaluationResult:
    from medimg.evaluation.stage import run_evaluate

    return run_evaluate(ws, config, progress=_counter("bootstrap resamples"))


# No task-level retries: registering is not idempotent (a retry would log a second run and
# version); MLflow's client already retries its own HTTP requests.
@task(name="register", cache_policy=NO_CACHE)
def register(ws: Workspace, config: Config, settings: Settings, run_name: str) -> RegisterResult:
    from medimg.registry.stage import run_register

    result = run_register(ws, config, settings, run_name=run_name,
                          extra_tags={"prefect_flow_run": run_name})
    logger = get_run_logger()
    if result.registered:
        logger.info("registered version %s with aliases %s", result.version, result.aliases)
    else:
        logger.warning("not registered: %s", "; ".join(c.reason for c in result.gates.failed))
    return result


@task(name="dvc-stage", cache_policy=NO_CACHE)
def other_stage(ws: Workspace, name: str, cmd: str) -> None:
    """A stage a team added to dvc.yaml: its own command, as ``dvc repro`` would run it."""
    done = subprocess.run(cmd, shell=True, cwd=ws.root, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [x for x in (done.stderr + done.stdout).splitlines() if x.strip()]
        raise WorkspaceError(f"dvc.yaml stage {name!r} (`{cmd}`) failed: "
                             f"{lines[-1] if lines else f'exit code {done.returncode}'}")


@flow(name="medimg-training-pipeline", log_prints=False)
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
    from prefect.runtime import flow_run

    _medimg_logs_to_prefect()
    settings = read_settings()  # the flow is an entry point: the environment is read here, once
    if demo and settings.key_bytes() is None:
        from medimg.demo import DEMO_PSEUDONYM_KEY

        settings = read_settings(pseudonym_key=DEMO_PSEUDONYM_KEY)
    ws = open_workspace(workspace)
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
    run_name = flow_run.get_name() or "medimg-run"
    result = PipelineResult(dvc_locked=follow_dvc)
    if follow_dvc:
        compile_outside_deps(ws.root)  # no byte-code cache written later reads as a code change
    status: dict[str, list[str]] | None = None  # DVC's answer for every stage, until one runs
    for name, cmd in steps:
        if follow_dvc and not force:
            if status is None:  # one `dvc status` for all the stages that follow a run
                status = pipeline_status(ws.root)
            changes = status.get(name, [])
            if not changes:
                logger.info("%s is up to date; skipped", name)
                result.skipped.append(name)
                continue
            logger.info("%s runs: %s", name, "; ".join(changes[:3]))
        with _step(name):
            if name == "ingest":
                result.ingest = ingest(ws, config, settings, paths)
            elif name == "validate":
                result.validation = validate(ws, config)
            elif name == "preprocess":
                result.counts = preprocess(ws, config)
            elif name == "train":
                result.train = train(ws, config, settings)
            elif name == "evaluate":
                result.evaluation = evaluate(ws, config)
            elif name == "register":
                result.registration = register(ws, config, settings, run_name)
            else:
                other_stage.with_options(name=name)(ws, name, cmd)
            if follow_dvc:
                commit_stage(ws.root, name)
        result.ran.append(name)
        status = None  # what this stage wrote may change what DVC says of the next
    if result.changed_nothing:
        logger.info("nothing changed since the last run: nothing trained or registered")
    return result
