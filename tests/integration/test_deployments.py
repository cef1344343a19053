"""The training pipeline's deployment, registered with a real (temporary) Prefect API."""

from __future__ import annotations

import asyncio

import pytest

from flows.deployments import training_deployment

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


def test_a_scheduled_deployment_runs_the_pipeline_on_the_workspace(tmp_path):
    from prefect.client.orchestration import get_client

    deployment = training_deployment(str(tmp_path), cron="0 2 * * 0", name="weekly")
    deployment_id = deployment.apply()

    async def read():
        async with get_client() as client:
            return await client.read_deployment(deployment_id)

    stored = asyncio.run(read())
    assert stored.name == "weekly"
    assert stored.parameters == {"workspace": str(tmp_path.resolve())}
    assert [s.schedule.cron for s in stored.schedules] == ["0 2 * * 0"]
    assert "medimg" in stored.tags
