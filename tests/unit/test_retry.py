"""Only I/O is retried: a refused connection or a 503 is tried again, compute and user errors
never are. Real Prefect tasks in a real (temporary) Prefect API."""

from __future__ import annotations

import httpx
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE
from prefect import flow, task

from medimg.errors import DataError, WorkspaceError
from medimg.retry import is_transient, retry_io_only


class _Status(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


@pytest.mark.parametrize("error", [
    ConnectionRefusedError("[Errno 111] Connection refused"),
    TimeoutError("read timed out"),
    _Status(503), _Status(429),
    MlflowException("the server is overloaded", error_code=TEMPORARILY_UNAVAILABLE),
    httpx.ConnectError("All connection attempts failed"),
    WorkspaceError("`dvc push` failed in /ws: Unable to acquire lock"),
])
def test_io_hiccups_are_worth_another_try(error):
    assert is_transient(error)


@pytest.mark.parametrize("error", [
    ValueError("shapes (3,) and (4,) not aligned"),
    ZeroDivisionError(),
    FileNotFoundError("params.yaml"),
    DataError("unknown class 'pneumonai'"),
    _Status(404), _Status(400), _Status(500),
    httpx.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://' protocol."),
    MlflowException("Registered Model with name=x not found",
                    error_code=RESOURCE_DOES_NOT_EXIST),
])
def test_compute_and_user_errors_are_not(error):
    assert not is_transient(error)


def test_a_wrapped_connection_error_is_found_through_its_cause():
    try:
        try:
            raise ConnectionResetError("reset by peer")
        except ConnectionResetError as exc:
            raise RuntimeError("MLflow request failed") from exc
    except RuntimeError as outer:
        assert is_transient(outer)


@pytest.fixture
def prefect(prefect_harness):
    """A real Prefect API, for the tests that run a flow."""


def _attempts(error: Exception) -> tuple[int, str]:
    calls: list[int] = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_io_only)
    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return "ok"

    @flow
    def run() -> str:
        return flaky()

    state = run(return_state=True)
    return len(calls), state.name


def test_prefect_retries_a_refused_connection_and_succeeds(prefect):
    assert _attempts(ConnectionRefusedError("refused")) == (2, "Completed")


def test_prefect_does_not_retry_compute_or_user_errors(prefect):
    assert _attempts(ValueError("bad shape")) == (1, "Failed")
    assert _attempts(DataError("unknown class")) == (1, "Failed")


def test_a_user_error_raised_while_handling_a_timeout_is_still_the_users():
    from medimg.locks import LockBusy

    try:
        try:
            raise TimeoutError("lock wait")
        except TimeoutError:
            raise LockBusy("another retrain is running") from None
    except LockBusy as busy:
        assert not is_transient(busy)
