"""Reads of a real Prefect API the flow tests share: a flow run's task runs, an artifact."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId


def task_runs(flow_run_id: str) -> dict[str, tuple[str, float | None, float | None]]:
    """Each task run of the flow run: name -> (state name, start, end) in epoch seconds."""
    from prefect.client.schemas.filters import TaskRunFilter

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[flow_run_id])), task_run_filter=TaskRunFilter())
    return {r.name: (r.state.name, r.start_time and r.start_time.timestamp(),
                     r.end_time and r.end_time.timestamp()) for r in runs}


def artifact(key: str) -> str:
    """The newest version of the artifact ``key``."""
    from prefect.client.schemas.filters import (
        ArtifactCollectionFilter,
        ArtifactCollectionFilterKey,
    )

    with get_client(sync_client=True) as client:
        found = client.read_latest_artifacts(artifact_filter=ArtifactCollectionFilter(
            key=ArtifactCollectionFilterKey(any_=[key])))
    assert len(found) == 1, f"no artifact {key}"
    return str(found[0].data)


