"""Which failures are worth another try: I/O to a service, never compute or a user's error.

Prefect retries a task only when :func:`retry_io_only` says so. Worth retrying: a connection
refused, reset or timed out, an HTTP 408/429/5xx from MLflow, Prefect's API or a DVC remote,
and DVC's "unable to acquire lock". Never: medimg's own errors (a user must fix something, and
the same input gives the same answer), nor any other exception (deterministic compute fails the
same way again).
"""

from __future__ import annotations

import re

from medimg.errors import MedimgError

RETRYABLE_STATUS = {408, 425, 429, 502, 503, 504}
"""HTTP statuses a server may answer differently a moment later (a 500 is a server's error that
its own clients have retried already: MLflow's and Prefect's retry 5xx before they raise)."""

TRANSIENT_MLFLOW_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}

_TRANSIENT_TEXT = re.compile(
    r"connection (refused|reset|aborted)|timed? ?out|temporarily unavailable|"
    r"unable to acquire lock|too many requests|service unavailable|bad gateway|"
    r"max retries exceeded|name or service not known|failed to establish a new connection",
    re.IGNORECASE)


def _status(exc: BaseException) -> int | None:
    for holder in (exc, getattr(exc, "response", None)):
        for name in ("status_code", "status", "http_status_code"):
            value = getattr(holder, name, None)
            if isinstance(value, int):
                return value
    return None


def _transport_error(exc: BaseException) -> bool:
    """A connection or timeout error of the HTTP libraries the services' clients use."""
    try:
        import httpx

        if isinstance(exc, httpx.TransportError):
            return not isinstance(exc, httpx.UnsupportedProtocol)
    except ImportError:  # pragma: no cover - httpx comes with Prefect
        pass
    try:
        import requests

        if isinstance(exc, requests.ConnectionError | requests.Timeout):
            return True
    except ImportError:  # pragma: no cover - requests comes with MLflow
        pass
    return False


def _one(exc: BaseException) -> bool | None:
    """True or False when ``exc`` itself decides; None to look at what caused it."""
    if isinstance(exc, MedimgError):  # a user must fix it, unless it passes on a service's word
        return bool(_TRANSIENT_TEXT.search(str(exc)))
    if isinstance(exc, ConnectionError | TimeoutError) or _transport_error(exc):
        return True
    code = getattr(exc, "error_code", None)
    if type(exc).__name__ == "MlflowException" and isinstance(code, str):
        return code in TRANSIENT_MLFLOW_CODES
    status = _status(exc)
    if status is not None:
        return status in RETRYABLE_STATUS
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is an I/O hiccup another try may get past.

    The causes followed are the ones Python shows: ``raise ... from None`` hides the context.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        decided = _one(current)
        if decided is not None:
            return decided
        current = current.__cause__ or (None if current.__suppress_context__
                                         else current.__context__)
    return False


def retry_io_only(task, task_run, state) -> bool:
    """A Prefect ``retry_condition_fn``: retry a failed task only on a transient I/O error."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False
