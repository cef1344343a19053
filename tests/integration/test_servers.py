"""The same `medimg run` against real servers: MLflow on PostgreSQL and a Prefect server.

Both servers run on loopback for the length of the test and are stopped afterwards.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
from support.servers import free_port, running_server

from tests.conftest import medimg_cli

pytestmark = pytest.mark.integration

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def _postgres_database() -> str:
    """A fresh database on the local PostgreSQL; skip (with the reason) when there is none."""
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[postgres]')")
    name = f"medimg_test_{uuid.uuid4().hex[:8]}"
    try:
        conn = psycopg.connect(dbname="postgres", connect_timeout=3, autocommit=True, **PG)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL on {PG['host']}:{PG['port']}: {exc}".splitlines()[0])
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def _drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_run_against_mlflow_on_postgres_and_a_prefect_server(make_workspace, tmp_path):
    import httpx
    from mlflow import MlflowClient

    ws = make_workspace({"gates": {"min_f1": 0.0, "min_recall": 0.0}})
    database = _postgres_database()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    mlflow_port, prefect_port = free_port(), free_port()
    mlflow_uri = f"http://127.0.0.1:{mlflow_port}"
    prefect_api = f"http://127.0.0.1:{prefect_port}/api"
    mlflow_argv = [str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1",
                   "--port", str(mlflow_port), "--workers", "1",
                   "--backend-store-uri", f"postgresql://postgres@127.0.0.1:5432/{database}",
                   "--artifacts-destination", (tmp_path / "artifacts").as_uri()]
    prefect_env = {**env, "PREFECT_HOME": str(tmp_path / "prefect-home"),
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    prefect_argv = [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1",
                    "--port", str(prefect_port)]
    try:
        with running_server(mlflow_argv, f"{mlflow_uri}/health", env,
                            tmp_path / "mlflow.log"), \
             running_server(prefect_argv, f"{prefect_api}/health", prefect_env,
                            tmp_path / "prefect.log"):
            result = medimg_cli("run", cwd=ws.root, env={"MLFLOW_TRACKING_URI": mlflow_uri,
                                                          "PREFECT_API_URL": prefect_api})
            assert result.returncode == 0, result.stderr[-3000:]
            assert "registered version 1" in result.stdout, result.stdout[-4000:]
            assert f"open {mlflow_uri}" in result.stdout

            # the run and the registry live on the server, not in the workspace
            assert not ws.mlflow_db.exists()
            client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
            champion = client.get_model_version_by_alias("medimg-classifier", "champion")
            run = client.get_run(champion.run_id)
            assert "test_f1" in run.data.metrics
            assert any((tmp_path / "artifacts").rglob("MLmodel"))

            # the flow run is recorded by the Prefect server (its REST API)
            flow_run_name = run.data.tags["prefect_flow_run"]
            response = httpx.post(f"{prefect_api}/flow_runs/filter", timeout=30,
                                  json={"flow_runs": {"name": {"any_": [flow_run_name]}}})
            response.raise_for_status()
            [flow_run] = response.json()
            assert flow_run["state_type"] == "COMPLETED"
    finally:
        _drop_database(database)
