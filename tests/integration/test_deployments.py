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


def _read_deployment(name: str):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_deployment_by_name(name)

    return asyncio.run(read())


def test_the_retrain_deployment_has_its_cron_slug_and_a_limit_of_one(make_workspace,
                                                                      monkeypatch):
    from flows.deployments import deployment_name, retrain_deployment, workspace_slug

    ws = make_workspace({"retrain": {"schedule": "15 3 * * *", "timezone": "Europe/Berlin"}},
                        with_data=False)
    retrain_deployment(str(ws.root)).apply()

    name = f"medimg-retrain/{deployment_name('retrain', ws.root)}"
    stored = _read_deployment(name)
    assert stored.parameters == {"workspace": str(ws.root)}
    (schedule,) = stored.schedules
    assert schedule.schedule.cron == "15 3 * * *"
    assert schedule.schedule.timezone == "Europe/Berlin"
    assert schedule.slug == f"retrain-{workspace_slug(ws.root)}" and schedule.active
    assert stored.global_concurrency_limit.limit == 1
    assert stored.concurrency_options.collision_strategy == "CANCEL_NEW"

    # the environment overrides params.yaml, as a team's scheduler sets it
    monkeypatch.setenv("MEDIMG_RETRAIN_CRON", "0 4 * * 6")
    retrain_deployment(str(ws.root)).apply()
    (schedule,) = _read_deployment(name).schedules
    assert schedule.schedule.cron == "0 4 * * 6"


def test_medimg_schedule_serves_both_and_leaves_the_schedule_active(make_workspace):
    """``medimg schedule`` as a user runs it, against a Prefect server; Ctrl-C stops it."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from prefect.settings import PREFECT_API_URL

    from flows.deployments import deployment_name

    ws = make_workspace(with_data=False)
    retrain_name = f"medimg-retrain/{deployment_name('retrain', ws.root)}"
    training_name = f"medimg-training-pipeline/{deployment_name('training', ws.root)}"
    exe = Path(sys.executable).with_name("medimg")
    # as from a user's shell: none of this test process's Prefect or MLflow settings, a Prefect
    # home of its own, the test server's API
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update({"PREFECT_API_URL": PREFECT_API_URL.value(),
                "PREFECT_HOME": str(ws.root.parent / "prefect-home")})
    # Ctrl-C as in a terminal: a child inherits an ignored SIGINT, and Python then installs no
    # KeyboardInterrupt for it; something earlier in a test worker can leave SIGINT ignored
    server = subprocess.Popen([str(exe), "schedule", "--workspace", str(ws.root), "--cron",
                               "0 5 * * *"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 180
        found = None
        while found is None and time.monotonic() < deadline and server.poll() is None:
            try:
                found = (_read_deployment(retrain_name), _read_deployment(training_name))
            except Exception:  # not registered yet
                time.sleep(1)
        if found is None:
            server.kill()
            raise AssertionError("the deployments never appeared; `medimg schedule` printed:\n"
                                 f"{server.communicate()[0][-3000:]}")
        retrain, training = found
        assert [s.schedule.cron for s in retrain.schedules] == ["0 5 * * *"]
        assert training.schedules == []  # the pipeline runs on demand
        assert training.parameters == {"workspace": str(ws.root)}
    finally:
        server.send_signal(signal.SIGINT)
        try:
            output = server.communicate(timeout=120)[0]
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0]
            raise AssertionError("`medimg schedule` did not stop within 120 s of Ctrl-C; it "
                                 f"printed:\n{output[-3000:]}") from None
    assert "serving retrain (0 5 * * *, UTC)" in output
    # pause_on_shutdown=False: the schedule outlives the process that served it
    assert all(s.active for s in _read_deployment(retrain_name).schedules)


def test_a_process_worker_runs_the_deployed_retrain(make_workspace):
    """``deploy`` registers both deployments with a process work pool; a real worker picks up a
    retrain run and runs it from this checkout (an empty workspace: nothing to retrain on)."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    from flows.deployments import deploy, deployment_name

    ws = make_workspace(with_data=False, name="pooled")
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="medimg-test-pool", type="process"),
                                overwrite=True)
    deploy(str(ws.root), "medimg-test-pool")
    name = f"medimg-retrain/{deployment_name('retrain', ws.root)}"
    assert _read_deployment(name).work_pool_name == "medimg-test-pool"
    assert _read_deployment(
        f"medimg-training-pipeline/{deployment_name('training', ws.root)}").schedules == []

    flow_run = run_deployment(name, timeout=0)
    # as from a user's shell: none of this test process's Prefect or MLflow settings, a Prefect
    # home of its own, the test server's API
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update({"PREFECT_API_URL": PREFECT_API_URL.value(),
                "PREFECT_HOME": str(ws.root.parent / "prefect-home")})
    worker = subprocess.run(
        [str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool",
         "medimg-test-pool", "--run-once"], env=env, capture_output=True, text=True,
        timeout=300)
    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
        while not state.is_final() and time.monotonic() < deadline:
            time.sleep(1)
            state = client.read_flow_run(flow_run.id).state
    assert state.is_completed(), (worker.stdout + worker.stderr)[-3000:]
