"""Checks that the servers a run needs answer, before any work is done."""

from __future__ import annotations

import urllib.error
import urllib.request

from medimg.errors import MedimgError
from medimg.settings import Settings


class ServiceUnavailable(MedimgError):
    """A configured server does not answer."""


def _answers(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, even if not with 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def check_services(settings: Settings, timeout: float = 5.0, prefect: bool = True) -> None:
    """Fail in seconds, not after a whole training run, when a server is down.

    ``prefect=False`` checks MLflow's server alone, for commands that only read the record.

    Raises:
        ServiceUnavailable: naming the server, its address and the fix.
    """
    tracking_uri = settings.mlflow_tracking_uri
    remote = tracking_uri and tracking_uri.startswith(("http://", "https://"))
    if remote and not _answers(tracking_uri.rstrip("/") + "/health", timeout):
        raise ServiceUnavailable(
                f"cannot reach the MLflow tracking server at {tracking_uri}; start it, or unset "
                "MLFLOW_TRACKING_URI to use the workspace's SQLite store"
            )
    prefect_api = settings.prefect_api_url
    if prefect and prefect_api and not _answers(prefect_api.rstrip("/") + "/health", timeout):
        raise ServiceUnavailable(
            f"cannot reach the Prefect API at {prefect_api}; start it (`prefect server start`), "
            "or unset PREFECT_API_URL to use Prefect's ephemeral local API"
        )
