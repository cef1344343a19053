"""The deployments, declared in code: the retrain on a schedule and the pipeline on demand.

- ``retrain-<workspace>`` (flow ``medimg-retrain``): on ``retrain.schedule`` of params.yaml
  (nightly at 02:00 by default, in ``retrain.timezone``), overridden by MEDIMG_RETRAIN_CRON or
  ``--cron``.
  Each run checks the triggers and retrains only when they fire. Its schedule has the slug
  ``retrain-<workspace>``; its concurrency limit is one run per workspace with the collision
  strategy ``CANCEL_NEW``: a run due while another is still going is cancelled, not queued, as
  the next one would find the same labels already trained on (the flow's own workspace lock
  refuses a second run the same way where no Prefect server enforces the limit).
- ``training-<workspace>`` (flow ``medimg-training-pipeline``): on demand only, with
  ``prefect deployment run 'medimg-training-pipeline/training-<workspace>'`` or from Prefect's
  UI.

``<workspace>`` is the folder's name and a short hash of its path (:func:`workspace_slug`).

Serve both from this machine (a long-running process; Ctrl-C stops it, the schedules stay
active for the next ``serve``)::

    medimg schedule --workspace /data/medimg        # or: python -m flows.deployments serve ...

or register them with a Prefect server's process work pool, for its workers to run::

    python -m flows.deployments deploy --workspace /data/medimg --work-pool medimg-pool
    prefect worker start --pool medimg-pool
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

from flows.retrain import retrain_flow
from flows.training import training_pipeline
from medimg.config import Config
from medimg.errors import ConfigError
from medimg.settings import read_settings
from medimg.workspace import open_workspace

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINTS = {"training": "flows/training.py:training_pipeline",
               "retrain": "flows/retrain.py:retrain_flow"}
COLLISION_STRATEGY = "CANCEL_NEW"


def workspace_slug(workspace: str | Path) -> str:
    """A schedule slug for a workspace: its folder's name and a short hash of its path."""
    root = Path(workspace).resolve()
    name = re.sub(r"[^a-z0-9-]+", "-", root.name.lower()).strip("-")[:30] or "workspace"
    return f"{name}-{hashlib.sha256(str(root).encode()).hexdigest()[:6]}"


def retrain_cron(config: Config, cron: str | None = None) -> str:
    """The retrain's cron: ``cron`` when given, else MEDIMG_RETRAIN_CRON, else params.yaml."""
    return cron or read_settings().retrain_cron or config.retrain.schedule


def _concurrency():
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    return ConcurrencyLimitConfig(limit=1,
                                  collision_strategy=ConcurrencyLimitStrategy(COLLISION_STRATEGY))


def _cron(expression: str, timezone: str, slug: str):
    """A Prefect cron schedule with its slug; a malformed one is one ConfigError line."""
    from prefect.schedules import Cron

    try:
        return Cron(expression, timezone=timezone, slug=slug)
    except ValueError as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"the schedule {expression!r} ({timezone}) is not a valid cron "
                          f"schedule: {first[-1] if first else exc}") from None


def _schedule(workspace: str, cron: str | None):
    config = open_workspace(workspace).config
    return _cron(retrain_cron(config, cron), config.retrain.timezone,
                 f"retrain-{workspace_slug(workspace)}")


def deployment_name(kind: str, workspace: str | Path) -> str:
    """``retrain-<workspace slug>`` or ``training-<workspace slug>``: one of each per workspace,
    so two workspaces served from one Prefect server never take each other's place."""
    return f"{kind}-{workspace_slug(workspace)}"


def retrain_deployment(workspace: str, cron: str | None = None, name: str | None = None):
    """A runner deployment of the retrain on ``workspace``, on its cron schedule."""
    where = str(Path(workspace).resolve())
    name = name or deployment_name("retrain", where)
    return retrain_flow.to_deployment(
        name=name, parameters={"workspace": where}, schedules=[_schedule(where, cron)],
        concurrency_limit=_concurrency(), tags=["medimg", "retrain"],
        description="retrain when new labels or drift call for it; promote a better challenger")


def training_deployment(workspace: str, cron: str | None = None, name: str | None = None):
    """A runner deployment of the pipeline on ``workspace``: on demand, or on ``cron``."""
    schedules = [_cron(cron, "UTC", f"training-{workspace_slug(workspace)}")] if cron else []
    return training_pipeline.to_deployment(
        name=name or deployment_name("training", workspace),
        parameters={"workspace": str(Path(workspace).resolve())}, schedules=schedules,
        tags=["medimg"], description="ingest, validate, preprocess, train, evaluate, register",
    )


def serve(workspace: str, cron: str | None = None) -> None:
    """Run both deployments from this process until interrupted (``prefect.serve``); the
    schedules are not paused when it stops."""
    from prefect import serve as prefect_serve

    prefect_serve(retrain_deployment(workspace, cron), training_deployment(workspace),
                  pause_on_shutdown=False)


def deploy(workspace: str, work_pool: str, cron: str | None = None) -> list[object]:
    """Register both deployments with a work pool; its workers load the flows from this
    checkout. Returns the deployment ids."""
    where = str(Path(workspace).resolve())
    retrain = retrain_flow.from_source(source=str(ROOT), entrypoint=ENTRYPOINTS["retrain"])
    training = training_pipeline.from_source(source=str(ROOT),
                                             entrypoint=ENTRYPOINTS["training"])
    return [
        retrain.deploy(name=deployment_name("retrain", where), work_pool_name=work_pool,
                       parameters={"workspace": where},
                       schedules=[_schedule(where, cron)], concurrency_limit=_concurrency(),
                       tags=["medimg", "retrain"], build=False, push=False),
        training.deploy(name=deployment_name("training", where), work_pool_name=work_pool,
                        parameters={"workspace": where}, tags=["medimg"], build=False,
                        push=False),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.deployments")
    parser.add_argument("action", choices=["serve", "deploy"])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--cron", default=None,
                        help='the retrain\'s schedule, e.g. "0 2 * * *" (default: params.yaml)')
    parser.add_argument("--work-pool", default=None, help="deploy: the work pool's name")
    args = parser.parse_args(argv)
    if args.action == "serve":
        serve(args.workspace, args.cron)
    elif not args.work_pool:
        parser.error("deploy needs --work-pool")
    else:
        deploy(args.workspace, args.work_pool, args.cron)


if __name__ == "__main__":  # pragma: no cover
    main()
