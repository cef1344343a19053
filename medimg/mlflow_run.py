"""The one MLflow run that spans a pipeline run, from its first stage to its last.

The flow opens it before the first stage that has work to do, dated from the flow's start, so
the run's duration is the pipeline's. Every stage logs into it: the data splits as dataset
inputs when it opens, each epoch's loss, metrics, learning rate and images/s as the epoch ends
(the MLflow UI draws the curves while training runs), system metrics while training, and the
register stage's model, test metrics and gate. A run that fails is ended FAILED with the stage
and the one-line reason as tags; one that completes is ended FINISHED.

Everything goes through ``MlflowClient`` with the run's id, never MLflow's active run: Prefect
may run a task in another thread, and the active run is per thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from medimg.config import Config
from medimg.settings import Settings
from medimg.tracking import data_version, git_commit, use_workspace_tracking
from medimg.workspace import Workspace

logger = logging.getLogger(__name__)

FAILED_STAGE_TAG = "medimg.failed_stage"
FAILURE_TAG = "medimg.failure"
SYSTEM_METRICS_SECONDS = 10.0  # MLflow's own default sampling interval


def one_line(exc: BaseException) -> str:
    """The reason a run failed, in one line, fit for a shared tracking server.

    medimg's own errors give their first line: it reads as a reason and its fix, and names no
    patient (their messages are written that way). Any other exception gives only its type: a
    library's message may quote a raw path or a header value, which must not leave ingest.
    """
    from medimg.errors import MedimgError

    if not isinstance(exc, MedimgError):
        return f"{type(exc).__name__} (the message is in the run's log)"
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    return (lines[0] if lines else type(exc).__name__)[:500]


def failure_reason(stage: str, exc: BaseException) -> str:
    """Why ``stage`` failed, as the run's tag and summary record it. Ingest's messages name the
    source paths the user gave, which may name patients, so an ingest failure records only the
    error's type (the terminal, on the user's own machine, shows the message)."""
    if stage == "ingest":
        return f"{type(exc).__name__} in ingest (the message names the sources: see the terminal)"
    return one_line(exc)


@dataclass
class PipelineRun:
    """The MLflow run of one pipeline run, opened on first use.

    Args:
        ws, config, settings: the workspace, its params and where MLflow is.
        name: the run's name (the flow run's: workspace, data version, time).
        started: when the pipeline run started (``time.time()``): the run's start time.
        tags: more tags for the run (the Prefect flow run's id, ...).
    """

    ws: Workspace
    config: Config
    settings: Settings | None
    name: str
    started: float = field(default_factory=time.time)
    tags: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None
    experiment_id: str | None = None
    _epoch_calls: int = 0
    _unreachable: bool = False  # opening failed once: the store is not asked again
    _pending: list[tuple[dict[str, str], dict[str, float]]] = field(default_factory=list)

    def _client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient()

    def open(self) -> str:
        """Create the run (once), with params, lineage tags and the splits as dataset inputs."""
        if self.run_id is not None:
            return self.run_id
        from medimg.data.manifest import load_manifest
        from medimg.mlflow_datasets import log_split_inputs, split_datasets

        try:
            self.experiment_id = use_workspace_tracking(
                self.ws, self.config.registry.experiment_name, self.settings)
            client = self._client()
            version, commit = data_version(self.ws), git_commit(self.ws)
            run = client.create_run(self.experiment_id, start_time=int(self.started * 1000),
                                    run_name=self.name, tags={
                                        "data_version": version, "git_commit": commit,
                                        "params_digest": self.config.digest(), **self.tags})
        except Exception:
            self._unreachable = True
            raise
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, str(v)) for k, v in self.config.flat().items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            client.log_batch(self.run_id, params=params[start:start + 100])
        if self.ws.manifest_path.is_file():
            manifest = load_manifest(self.ws.manifest_path)
            log_split_inputs(client, self.run_id, split_datasets(
                manifest, list(self.config.base.class_names),
                self.ws.relative(self.ws.manifest_path), version, commit))
        logger.info("MLflow run %s (%s) opened", self.name, self.run_id)
        for tags, metrics in self._pending:  # what stages before the opening recorded
            self._log(tags, metrics)
        self._pending.clear()
        return self.run_id

    def _log(self, tags: Mapping[str, str], metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self._client().log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()],
                                 metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])

    def note(self, tags: Mapping[str, str]) -> None:
        """More tags on the opened run, best effort (a warning when the store refuses)."""
        try:
            if self.run_id is not None:
                self._log(tags, {})
        except Exception as exc:
            logger.warning("tags not logged to MLflow: %s", one_line(exc))

    def record_stage(self, stage: str, outcome: str,
                     metrics: Mapping[str, float] | None = None) -> None:
        """The stage's outcome as the tag ``medimg.stage.<stage>`` ("ran in 12.3 s", "up to
        date") and its figures as metrics; kept until the run opens, if it has not yet."""
        tags = {f"medimg.stage.{stage}": outcome}
        if self.run_id is None:
            self._pending.append((tags, dict(metrics or {})))
            return
        try:  # a record of the stage, never a reason to fail it
            self._log(tags, metrics or {})
        except Exception as exc:
            logger.warning("the %s stage's record not logged to MLflow: %s", stage,
                           one_line(exc))

    def log_epoch(self, epoch: int, total: int, logs: Mapping[str, float]) -> None:
        """Each finished epoch's numbers at step ``epoch``, as it ends (an epoch report: the
        first call, before any epoch, says where training starts and logs nothing)."""
        self._epoch_calls += 1
        if self._epoch_calls == 1 or self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        try:  # a tracking hiccup never stops training; register fills in what is missing
            self._client().log_batch(self.run_id, metrics=[
                Metric(key, float(value), now, epoch) for key, value in logs.items()])
        except Exception as exc:
            logger.warning("epoch %d not logged to MLflow yet: %s", epoch, one_line(exc))

    @contextmanager
    def system_metrics(self) -> Iterator[None]:
        """MLflow's system metrics (CPU, memory, disk, network; GPU with ``nvidia-ml-py``)
        while inside, sampled every 10 s, and once when it ends."""
        if self.run_id is None:
            yield
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(self.run_id, sampling_interval=SYSTEM_METRICS_SECONDS)
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()
            try:  # MLflow drops the last, partial interval: a short training would log none
                monitor.collect_metrics()
                monitor.publish_metrics(monitor.aggregate_metrics())
                monitor.mlflow_logger.flush()
            except Exception as exc:
                logger.warning("could not log the last system metrics: %s", one_line(exc))

    def fail(self, stage: str, exc: BaseException) -> None:
        """End the run FAILED (KILLED on an interrupt), tagged with the stage and the reason.

        A failure before the run opened opens it first, so a failed pipeline run leaves its
        trace; an interrupt, or a store that already failed to answer, does not. A store that
        cannot be reached only logs a warning: the stage's own error is the one the user needs.
        """
        interrupted = isinstance(exc, KeyboardInterrupt)
        if self.run_id is None and not interrupted and not self._unreachable:
            try:
                self.open()
            except Exception as problem:
                logger.warning("could not record the failure in MLflow: %s", one_line(problem))
        if self.run_id is None:
            return
        from mlflow.entities import RunTag

        try:
            self._client().log_batch(self.run_id, tags=[
                RunTag(FAILED_STAGE_TAG, stage), RunTag(FAILURE_TAG, failure_reason(stage, exc))])
        except Exception as problem:
            logger.warning("could not tag the MLflow run's failure: %s", one_line(problem))
        try:  # ended whatever the tags did: a run is never left RUNNING
            self._client().set_terminated(self.run_id, "KILLED" if interrupted else "FAILED")
        except Exception as problem:
            logger.warning("could not mark the MLflow run failed: %s", one_line(problem))

    def finish(self) -> None:
        """End the run FINISHED now, if it was opened."""
        if self.run_id is not None:
            try:
                self._client().set_terminated(self.run_id, "FINISHED")
            except Exception as exc:  # the work is done and recorded; only the end time is not
                logger.warning("could not mark the MLflow run finished: %s", one_line(exc))
