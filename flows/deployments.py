"""Deployments of the training pipeline, apart from the flow itself.

Serve it from this machine (a long-running process that runs each scheduled or manual run)::

    python -m flows.deployments serve --workspace /data/medimg --cron "0 2 * * 0"

or register it with a Prefect server's work pool, for its workers to run::

    python -m flows.deployments deploy --workspace /data/medimg --work-pool gpu-pool

Both name the deployment ``medimg-training-pipeline/<name>`` (default ``training``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flows.training import training_pipeline

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/training.py:training_pipeline"


def training_deployment(workspace: str, cron: str | None = None, name: str = "training"):
    """A runner deployment of the pipeline on ``workspace``, on ``cron`` if given."""
    return training_pipeline.to_deployment(
        name=name, parameters={"workspace": str(Path(workspace).resolve())}, cron=cron,
        tags=["medimg"], description="ingest, validate, preprocess, train, evaluate, register",
    )


def serve(workspace: str, cron: str | None = None, name: str = "training") -> None:
    """Run the deployment from this process until interrupted (``prefect.serve``)."""
    from prefect import serve as prefect_serve

    prefect_serve(training_deployment(workspace, cron, name))


def deploy(workspace: str, work_pool: str, cron: str | None = None,
           name: str = "training") -> object:
    """Register the deployment with a work pool; its workers load the flow from this checkout."""
    return training_pipeline.from_source(source=str(ROOT), entrypoint=ENTRYPOINT).deploy(
        name=name, work_pool_name=work_pool,
        parameters={"workspace": str(Path(workspace).resolve())}, cron=cron, tags=["medimg"],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.deployments")
    parser.add_argument("action", choices=["serve", "deploy"])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--cron", default=None, help='e.g. "0 2 * * 0" (Sundays at 02:00)')
    parser.add_argument("--name", default="training")
    parser.add_argument("--work-pool", default=None, help="deploy: the work pool's name")
    args = parser.parse_args(argv)
    if args.action == "serve":
        serve(args.workspace, args.cron, args.name)
    elif not args.work_pool:
        parser.error("deploy needs --work-pool")
    else:
        deploy(args.workspace, args.work_pool, args.cron, args.name)


if __name__ == "__main__":  # pragma: no cover
    main()
