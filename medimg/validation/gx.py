"""Great Expectations plumbing: an in-memory context, one validation per frame, the Data Docs.

GX runs in an ephemeral, in-memory context: it writes nothing but the Data Docs we ask for, and is
imported only when the contract runs, because importing it takes seconds. Analytics are off
through the context's own configuration (``analytics_enabled=False``), which GX 1.x reads before
the ``GX_ANALYTICS_ENABLED`` environment variable; this module leaves the environment alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medimg.config import CHECK_LEVELS
from medimg.validation.checks import CHECK_KEY, Check
from medimg.validation.frames import FRAMES, lacks
from medimg.validation.report import CheckResult

if TYPE_CHECKING:
    from great_expectations.data_context import AbstractDataContext

_SITE_NAME = "medimg"


def import_gx() -> Any:
    """The ``great_expectations`` module, imported on first use (it takes seconds)."""
    import great_expectations as gx

    return gx


def ephemeral_context(gx: Any) -> AbstractDataContext:
    """An in-memory context: stores in memory, no docs sites, no analytics, no progress bars.

    ``analytics_enabled=False`` in the project config turns analytics off for this context
    whatever ``GX_ANALYTICS_ENABLED`` says: GX 1.x releases that send analytics give the config
    precedence over the variable, and recent ones (1.24 here) carry no analytics code at all.
    """
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def run_checks(
    gx: Any,
    context: AbstractDataContext,
    checks: list[Check],
    frames: dict[str, pd.DataFrame],
    unavailable: dict[str, str],
    levels: dict[str, str],
    run_name: str | None = None,
) -> list[CheckResult]:
    """Run one GX validation definition per frame and map results back to checks by name.

    The validations make one GX run: they share its name and time, which the Data Docs show.

    Args:
        gx: The imported ``great_expectations`` module.
        context: The context to register data, suites and validations in.
        checks: Every check, in report order.
        frames: Every frame of ``FRAMES`` by name; ``frames["manifest"]`` is the manifest.
        unavailable: Why a frame could not be derived, by frame name.
        levels: Each check's level, from ``validation.levels``; ``CHECK_LEVELS`` for the rest.
        run_name: The run's name in the Data Docs; ``None`` leaves GX's ``__none__``.

    Returns:
        One result per check, in the order of ``checks``. A check whose columns or frame are
        missing, or whose expectation raised, fails with the reason in its details.
    """
    from great_expectations.core.run_identifier import RunIdentifier

    run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(UTC))
    source = context.data_sources.add_pandas(name="medimg")
    by_name: dict[str, Any] = {}
    for frame_name, spec in FRAMES.items():
        frame = frames[frame_name]
        batch = source.add_dataframe_asset(name=frame_name).add_batch_definition_whole_dataframe(
            name="whole"
        )
        suite = context.suites.add(gx.ExpectationSuite(name=f"medimg_{frame_name}"))
        for check in checks:
            if check.frame == frame_name:
                suite.add_expectation(check.expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"medimg_{frame_name}", data=batch, suite=suite)
        )
        result_format: dict[str, Any] = {"result_format": "COMPLETE"}
        named_by = [c for c in spec.key_columns if c in frame.columns]
        if named_by:
            result_format["unexpected_index_column_names"] = named_by
        suite_result = definition.run(
            batch_parameters={"dataframe": frame}, result_format=result_format, run_id=run_id
        )
        for result in suite_result.results:
            by_name[result.expectation_config.meta[CHECK_KEY]] = result

    outcomes = []
    for check in checks:
        result = by_name[check.name]
        missing = [c for c in check.needs if c not in frames["manifest"].columns]
        reason = lacks(missing) if missing else unavailable.get(check.frame)
        reason = reason or exception_message(result.exception_info)
        offending: list[str] = []
        if reason is not None:
            observed: object = {"error": reason}
            details = f"could not run: {reason}"
        else:
            observed, details, offending = check.summarise(result.result or {})
        outcomes.append(
            CheckResult(
                name=check.name,
                expectation=result.expectation_config.type,
                level=levels.get(check.name, CHECK_LEVELS[check.name]),
                success=bool(result.success) and reason is None,
                observed=observed,
                details=details,
                offending_ids=offending,
            )
        )
    return outcomes


def exception_message(info: Any) -> str | None:
    """The message of an exception GX caught for one expectation, if any.

    GX reports either one ``{raised_exception, exception_message}`` mapping, or one such mapping
    per metric that failed to compute.
    """
    if not isinstance(info, dict):
        return None
    entries = [info] if "raised_exception" in info else list(info.values())
    for entry in entries:
        if isinstance(entry, dict) and entry.get("raised_exception"):
            return str(entry.get("exception_message") or "unknown error").strip()
    return None


def build_data_docs(context: AbstractDataContext, site_dir: Path) -> None:
    """Render this run's suites and results as a static site in ``site_dir``.

    The site loads nothing from the network (:mod:`medimg.validation.docs_site`), so it reads
    the same on a hospital network without internet.
    """
    from medimg.validation.docs_site import drop_static_assets, site_config

    context.add_data_docs_site(site_name=_SITE_NAME, site_config=site_config(site_dir))
    context.build_data_docs(site_names=[_SITE_NAME])
    drop_static_assets(site_dir)
