"""The training pipeline flow: the DVC stages as Prefect tasks, then tracking and the gate.

Runs against Prefect's ephemeral local API by default (nothing to start first) and against a
Prefect server when PREFECT_API_URL is set.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, get_run_logger, task

from medimg.data.ingest import ingest_sources
from medimg.data.quarantine import count_codes
from medimg.errors import MedimgError
from medimg.evaluation.stage import evaluate_workspace
from medimg.lineage import record_dvc_lineage
from medimg.preprocessing.stage import preprocess_workspace
from medimg.registry.publish import publish_run
from medimg.training.train import train_workspace
from medimg.validation.stage import validate_workspace
from medimg.workspace import open_workspace


def _transient(task, task_run, state) -> bool:
    """Retry I/O hiccups, never a user-fixable error: that would only repeat the same answer."""
    try:
        state.result()
    except MedimgError:
        return False
    except Exception:
        return True
    return False


@task(name="ingest", retries=1, retry_delay_seconds=2, retry_condition_fn=_transient)
def ingest(root: str, sources: list[str]) -> dict:
    summary = ingest_sources(open_workspace(root), [Path(s) for s in sources])
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
    return asdict(summary)


@task(name="validate")
def validate(root: str) -> dict:
    report = validate_workspace(open_workspace(root))
    for check in report.warnings:
        get_run_logger().warning("data contract warning %s: %s", check.name, check.details)
    return report.to_dict()


@task(name="preprocess")
def preprocess(root: str) -> dict[str, int]:
    return preprocess_workspace(open_workspace(root))


@task(name="train")
def train(root: str) -> dict:
    result = train_workspace(open_workspace(root))
    get_run_logger().info("trained %d epochs in %.1fs", result.epochs_run, result.seconds)
    return {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "kept_epoch": result.kept_epoch, "seconds": result.seconds}


@task(name="evaluate")
def evaluate(root: str) -> dict:
    return evaluate_workspace(open_workspace(root)).metrics


@task(name="record-lineage", retries=1, retry_delay_seconds=2, retry_condition_fn=_transient)
def record_lineage(root: str) -> bool:
    return record_dvc_lineage(open_workspace(root))


# No task-level retries: registering is not idempotent (a retry would log a second run and
# version); MLflow's client already retries its own HTTP requests.
@task(name="track-and-register")
def track_and_register(root: str, flow_run_name: str) -> dict:
    result = publish_run(open_workspace(root), run_name=flow_run_name,
                         extra_tags={"prefect_flow_run": flow_run_name})
    logger = get_run_logger()
    if result.registered:
        logger.info("registered version %s with aliases %s", result.version, result.aliases)
    else:
        logger.warning("not registered: %s", "; ".join(c.reason for c in result.gates.failed))
    return {
        "run_id": result.run_id,
        "gates": result.gates.to_dict(),
        "champion_checks": result.champion_checks.to_dict() if result.champion_checks else None,
        "version": result.version,
        "aliases": result.aliases,
        "ui_command": result.ui_command,
    }


@flow(name="medimg-training-pipeline", log_prints=False)
def training_pipeline(workspace: str, sources: list[str] | None = None) -> dict:
    """ingest -> validate -> preprocess -> train -> evaluate -> DVC lineage -> MLflow + gate.

    Args:
        workspace: the workspace directory.
        sources: folders to ingest; default ``data/raw`` in the workspace.
    """
    from prefect.runtime import flow_run

    ws = open_workspace(workspace)
    root = str(ws.root)
    sources = sources or [str(ws.raw_dir)]
    # dvc.yaml's ingest stage reads data/raw; record lineage only when that is what ran
    as_dvc_declares = [Path(s).resolve() for s in sources] == [ws.raw_dir.resolve()]
    ingested = ingest(root, sources)
    validation = validate(root)
    counts = preprocess(root)
    training = train(root)
    metrics = evaluate(root)
    if as_dvc_declares:
        locked = record_lineage(root)
    else:
        locked = False
        get_run_logger().warning("sources other than data/raw: dvc.lock left as it was")
    published = track_and_register(root, flow_run.get_name() or "medimg-run")
    return {"ingest": ingested, "validation": validation, "counts": counts, "train": training,
            "metrics": metrics, "dvc_locked": locked, **published}
