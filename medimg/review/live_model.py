"""The model the review service answers with: the registry's champion, followed as it moves.

:class:`LiveModel` asks the registry where the ``champion`` alias points at most every
``serve.model_poll_seconds`` and, when it has moved, loads the new version while the old one
keeps answering; requests never wait on a poll that finds nothing new. A fixed ``--model`` URI
(``models:/name/3``, ``runs:/...``, or a local bundle folder) is loaded once and never moves.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medimg.bundle import ModelBundle
from medimg.config import Config
from medimg.errors import WorkspaceError
from medimg.metric_table import HEADLINE_METRICS
from medimg.preflight import ServiceUnavailable
from medimg.settings import Settings
from medimg.workspace import Workspace

CHAMPION = "champion"
log = logging.getLogger("medimg.review")


@dataclass(frozen=True)
class Served:
    """One loaded model version and what the page and API say about it."""

    bundle: ModelBundle
    name: str
    version: str  # the registry version, or "local" for a bundle folder
    alias: str | None
    uri: str
    run_id: str | None = None
    test_metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return list(self.bundle.meta.class_names)

    @property
    def threshold(self) -> float | None:
        return self.bundle.meta.threshold

    @property
    def decision_rule(self) -> str:
        return self.bundle.meta.decision_rule


class LiveModel:
    """The champion (or a fixed model), reloaded when the alias moves; safe across threads."""

    def __init__(
        self,
        ws: Workspace,
        config: Config,
        settings: Settings | None = None,
        model_uri: str | None = None,
        poll_seconds: float | None = None,
    ) -> None:
        self.ws, self.config, self.settings = ws, config, settings
        self.model_uri = model_uri
        self.poll_seconds = (
            config.serve.model_poll_seconds if poll_seconds is None else (poll_seconds)
        )
        self._served: Served | None = None
        self._older: OrderedDict[str, Served] = OrderedDict()  # versions moved away from
        self._checked = -float("inf")
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.config.registry.model_name

    def current(self) -> Served:
        """The model to answer with now.

        Raises:
            ServiceUnavailable: no champion is registered yet, or the registry cannot be
                reached and no model was loaded before.
        """
        served = self._served
        if served is not None and (
            self.model_uri is not None or time.monotonic() - self._checked < self.poll_seconds
        ):
            return served
        # one poll (and one load) at a time; while it runs, the others answer with the model
        # they have, and only a first load makes them wait
        if not self._lock.acquire(blocking=served is None):
            return served  # type: ignore[return-value]
        try:
            if self._served is not None and (
                self.model_uri is not None or time.monotonic() - self._checked < self.poll_seconds
            ):
                return self._served
            try:
                self._served = self._refresh(self._served)
            except ServiceUnavailable:
                if self._served is None:
                    raise
            except Exception as exc:  # a failed download or load: keep the model there is
                if self._served is None:
                    raise ServiceUnavailable(
                        f"the model cannot be loaded ({type(exc).__name__}); see the server log"
                    ) from None
                log.warning(
                    "keeping model version %s: the new one cannot be loaded (%s)",
                    self._served.version,
                    type(exc).__name__,
                )
            self._checked = time.monotonic()
            return self._served
        finally:
            self._lock.release()

    def version(self, version: str) -> Served:
        """The model version ``version`` (a prediction's), loaded again if the champion has
        moved on since it predicted; the last few are kept.

        Raises:
            ServiceUnavailable: that version cannot be loaded any more.
        """
        current = self.current()
        if current.version == version:
            return current
        with self._lock:
            if version in self._older:
                return self._older[version]
        if self.model_uri is not None or not version.isdigit():
            raise ServiceUnavailable(f"model version {version} is not served here any more")
        client = self._client()
        try:
            run_id = client.get_model_version(self.name, version).run_id
        except Exception:
            raise ServiceUnavailable(
                f"model version {version} is not in the registry any more"
            ) from None
        try:
            served = self._load_version(client, version, run_id, None)
        except Exception as exc:
            raise ServiceUnavailable(
                f"model version {version} cannot be loaded ({type(exc).__name__})"
            ) from None
        with self._lock:
            self._older[version] = served
            while len(self._older) > 2:
                self._older.popitem(last=False)
        return served

    def _refresh(self, served: Served | None) -> Served:
        if self.model_uri is not None:
            return self._load_fixed(self.model_uri)
        client = self._client()
        try:
            version = client.get_model_version_by_alias(self.name, CHAMPION)
        except Exception as exc:
            if _is_missing(exc):
                raise ServiceUnavailable(
                    f"no champion: model {self.name!r} has no version with the alias "
                    f"{CHAMPION!r} yet; run `medimg run` (or `medimg promote`) first"
                ) from None
            raise ServiceUnavailable(
                f"the model registry cannot be reached: {str(exc).splitlines()[0][:200]}"
            ) from None
        if served is not None and served.version == str(version.version):
            return served
        if served is not None:
            self._older[served.version] = served
            while len(self._older) > 2:
                self._older.popitem(last=False)
        return self._load_version(client, str(version.version), version.run_id, CHAMPION)

    def _client(self) -> Any:
        from mlflow import MlflowClient

        from medimg.tracking import use_workspace_tracking

        use_workspace_tracking(self.ws, self.config.registry.experiment_name, self.settings)
        return MlflowClient()

    def _load_version(
        self, client: Any, version: str, run_id: str | None, alias: str | None,
        name: str | None = None,
    ) -> Served:
        """Version ``version`` of the registered model ``name`` (the configured one)."""
        name = name or self.name
        uri = f"models:/{name}/{version}"
        return Served(
            bundle=_download(uri),
            name=name,
            version=version,
            alias=alias,
            uri=uri,
            run_id=run_id,
            test_metrics=_test_metrics(client, run_id),
        )

    def _load_fixed(self, uri: str) -> Served:
        path = Path(uri)
        if path.is_dir():
            try:
                bundle = ModelBundle.load(path)
            except WorkspaceError:
                raise ServiceUnavailable(f"no medimg model bundle in {uri}") from None
            return Served(bundle=bundle, name=self.name, version="local", alias=None, uri=uri)
        if not uri.startswith(("models:/", "runs:/")):
            raise ServiceUnavailable(
                f"model {uri!r} is neither a bundle folder nor an MLflow "
                "URI (models:/NAME/VERSION, models:/NAME@ALIAS, runs:/...)"
            )
        client = self._client()
        if uri.startswith("models:/"):
            ref = uri.removeprefix("models:/")
            name, _, rest = ref.partition("@") if "@" in ref else ref.partition("/")
            try:
                mv = (
                    client.get_model_version_by_alias(name, rest)
                    if "@" in ref
                    else client.get_model_version(name, rest)
                )
            except Exception as exc:
                raise ServiceUnavailable(
                    f"model {uri!r} is not in the registry: {str(exc).splitlines()[0][:200]}"
                ) from None
            # the version of the model the URI names, which may not be the configured one
            served = self._load_version(
                client, str(mv.version), mv.run_id, rest if "@" in ref else None, name
            )
            return Served(**{**served.__dict__, "uri": uri})
        run_id = uri.removeprefix("runs:/").split("/")[0]
        return Served(
            bundle=_download(uri),
            name=self.name,
            version=f"run {run_id[:8]}",
            alias=None,
            uri=uri,
            run_id=run_id,
            test_metrics=_test_metrics(client, run_id),
        )


def _download(uri: str) -> ModelBundle:
    """The medimg bundle of the MLflow model at ``uri``, downloaded into a folder that is gone
    once it is loaded."""
    import mlflow

    from medimg.retrain.warm import bundle_path

    with tempfile.TemporaryDirectory(prefix="medimg-serve-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        return ModelBundle.load(local / bundle_path(local / "MLmodel"))


def _test_metrics(client: Any, run_id: str | None) -> dict[str, dict[str, float | None]]:
    """The run's headline test metrics with their bootstrap intervals."""
    if not run_id:
        return {}
    try:
        metrics = client.get_run(run_id).data.metrics
    except Exception:  # the model still answers; the page says the metrics are not known
        return {}
    return {
        m: {
            "value": metrics.get(f"test_{m}"),
            "ci_low": metrics.get(f"test_{m}_ci_low"),
            "ci_high": metrics.get(f"test_{m}_ci_high"),
        }
        for m in HEADLINE_METRICS
        if metrics.get(f"test_{m}") is not None
    }


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") or (
        "not found" in str(exc).lower()
    )
