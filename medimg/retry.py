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

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
"""HTTP statuses a server may answer differently a moment later."""

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
    code = getattr(exc, "get_http_status_code", None)
    if callable(code):
        try:
            return int(code())
        except (TypeError, ValueError):
            return None
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is an I/O hiccup another try may get past."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | TimeoutError):
            return True
        status = _status(current)
        if status is not None:
            return status in RETRYABLE_STATUS
        if type(current).__module__.split(".")[0] in ("httpx", "httpcore", "requests",
                                                       "urllib3") and not isinstance(
                current, ValueError):
            return "Status" not in type(current).__name__
        if isinstance(current, MedimgError) and _TRANSIENT_TEXT.search(str(current)):
            return True  # a service's answer passed on as one line (DVC's lock, a remote)
        current = current.__cause__ or current.__context__
    return False


def retry_io_only(task, task_run, state) -> bool:
    """A Prefect ``retry_condition_fn``: retry a failed task only on a transient I/O error."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False
