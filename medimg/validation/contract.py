"""The manifest data contract, checked with Great Expectations.

Every check is a real GX expectation. Where GX has no expectation for a rule that spans rows
(class counts per split, an image or a patient in two splits), pandas first derives a small frame
(counts per split, counts per (split, class), distinct (id, split) pairs) and GX validates that
frame, so the Data Docs show every rule next to the data it judged.

GX runs in an ephemeral, in-memory context: it writes nothing but the Data Docs we ask for, and is
imported only when :func:`validate_manifest` runs, because importing it takes seconds.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medimg.config import ValidationConfig
from medimg.workspace import SPLITS

if TYPE_CHECKING:
    from great_expectations.data_context import AbstractDataContext
    from great_expectations.expectations.expectation import Expectation

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = (
    "image_id",
    "source_path",
    "label",
    "patient_id",
    "split",
    "width",
    "height",
    "channels",
)
MAX_NAMED = 10
"""At most this many offenders are named in a check's details and observed value."""

_SITE_NAME = "medimg"
_CHECK_KEY = "medimg_check"

# One GX batch per frame. Derived frames name their rows through these columns.
_FRAME_INDEX_COLUMNS: dict[str, list[str]] = {
    "manifest": [],
    "split_counts": ["split"],
    "class_counts": ["split", "label"],
    "image_splits": ["split"],
    "patient_splits": ["split"],
}

Summary = tuple[object, str]
Summarise = Callable[[dict[str, Any]], Summary]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one contract check.

    Attributes:
        name: Short stable name, e.g. ``label_in_class_set``.
        expectation: The GX expectation type that ran, e.g. ``expect_column_values_to_be_in_set``.
        success: Whether the check passed.
        observed: JSON-serialisable observed value (unexpected count and values, counts...).
        details: One human line saying what passed or what is wrong and where.
    """

    name: str
    expectation: str
    success: bool
    observed: object
    details: str


@dataclass(frozen=True)
class ValidationReport:
    """Every contract check on one manifest, in a fixed order."""

    success: bool
    checks: list[CheckResult]
    n_rows: int

    @property
    def failed(self) -> list[CheckResult]:
        """The checks that did not pass, in report order."""
        return [c for c in self.checks if not c.success]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary: success, n_rows, every check, and the failed check names."""
        return {
            "success": self.success,
            "n_rows": self.n_rows,
            "checks": [asdict(c) for c in self.checks],
            "failed": [c.name for c in self.failed],
        }


@dataclass(frozen=True)
class _Check:
    name: str
    frame: str
    expectation: Expectation
    summarise: Summarise


def validate_manifest(
    manifest: pd.DataFrame,
    class_names: list[str],
    validation: ValidationConfig,
    report_path: Path,
    data_docs_dir: Path | None = None,
) -> ValidationReport:
    """Check a manifest against the data contract with Great Expectations.

    Args:
        manifest: One row per image with at least the columns in ``REQUIRED_COLUMNS``; extra
            columns are ignored.
        class_names: The allowed labels, as in ``base.class_names``.
        validation: Thresholds from the ``validation`` section of ``params.yaml``.
        report_path: Where to write the JSON report; parent folders are created.
        data_docs_dir: Where to write the GX Data Docs site (``index.html``); ``None`` skips it.
            An existing Data Docs site there is replaced.

    Returns:
        Every check, passed or failed, in a fixed order. Failing checks do not raise; the caller
        decides whether a failed contract stops the pipeline.

    Raises:
        TypeError: ``manifest`` is not a DataFrame.
        ValueError: ``class_names`` is empty or repeats a name, or ``data_docs_dir`` is a
            non-empty folder that holds no Data Docs.
    """
    if not isinstance(manifest, pd.DataFrame):
        raise TypeError(f"manifest must be a pandas DataFrame, got {type(manifest).__name__}")
    if not class_names or len(set(class_names)) != len(class_names):
        raise ValueError(
            f"class_names {class_names!r} must be non-empty and distinct; set base.class_names "
            "in params.yaml"
        )
    if data_docs_dir is not None:
        _check_docs_dir(data_docs_dir)

    gx = _import_gx()
    frames = _derive_frames(manifest, class_names)
    checks = _define_checks(gx, class_names, validation, frames)
    context = _ephemeral_context(gx)
    results = _run_checks(gx, context, checks, frames)

    report = ValidationReport(
        success=all(r.success for r in results),
        checks=results,
        n_rows=len(manifest),
    )
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")

    if data_docs_dir is not None:
        _build_data_docs(context, data_docs_dir)

    passed = len(results) - len(report.failed)
    logger.info(
        "manifest contract: %d/%d checks passed on %d rows", passed, len(results), len(manifest)
    )
    for check in report.failed:
        logger.warning("contract check %s failed: %s", check.name, check.details)
    return report


def _import_gx() -> Any:
    """Import GX with analytics off; the variable must be set before the first import."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    return gx


def _ephemeral_context(gx: Any) -> AbstractDataContext:
    """An in-memory context: stores in memory, no docs sites, no analytics, no progress bars."""
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


def _derive_frames(manifest: pd.DataFrame, class_names: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The manifest plus the small frames that let GX judge rules spanning rows."""
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    # Missing columns count as empty here; GX itself reports them on the manifest batch.
    work = manifest.reindex(columns=[*manifest.columns, *missing])

    in_split = work[work["split"].isin(SPLITS)]
    per_split = in_split.groupby("split").size().reindex(SPLITS, fill_value=0)
    split_counts = pd.DataFrame({"split": list(SPLITS), "n_images": per_split.to_numpy()})

    known = in_split[in_split["label"].isin(class_names)]
    pairs = pd.MultiIndex.from_product([SPLITS, class_names], names=["split", "label"])
    class_counts = (
        known.groupby(["split", "label"], observed=True)
        .size()
        .reindex(pairs, fill_value=0)
        .rename("n_images")
        .reset_index()
    )
    return {
        "manifest": manifest,
        "split_counts": split_counts,
        "class_counts": class_counts,
        "image_splits": _distinct_pairs(work, "image_id"),
        "patient_splits": _distinct_pairs(work, "patient_id"),
    }


def _distinct_pairs(work: pd.DataFrame, key: str) -> pd.DataFrame:
    """Distinct (key, split) rows: a key is in one split exactly when it is unique here."""
    pairs = work[[key, "split"]].dropna().drop_duplicates()
    return pairs.astype(str).sort_values([key, "split"]).reset_index(drop=True)


def _define_checks(
    gx: Any,
    class_names: Sequence[str],
    cfg: ValidationConfig,
    frames: dict[str, pd.DataFrame],
) -> list[_Check]:
    """Every check in report order."""
    E = gx.expectations
    lo, hi = cfg.min_side, cfg.max_side
    channels = sorted(cfg.allowed_channels)
    checks = [
        _Check(
            "columns_present",
            "manifest",
            E.ExpectTableColumnsToMatchSet(column_set=list(REQUIRED_COLUMNS), exact_match=False),
            _summarise_columns,
        ),
        _Check(
            "manifest_not_empty",
            "manifest",
            E.ExpectTableRowCountToBeBetween(min_value=1),
            _summarise_row_count,
        ),
    ]
    checks += [
        _Check(
            f"{column}_not_null",
            "manifest",
            E.ExpectColumnValuesToNotBeNull(column=column),
            _summarise_not_null(column),
        )
        for column in REQUIRED_COLUMNS
    ]
    checks += [
        _Check(
            "label_in_class_set",
            "manifest",
            E.ExpectColumnValuesToBeInSet(column="label", value_set=list(class_names)),
            _summarise_in_set("labels", class_names),
        ),
        _Check(
            "split_in_allowed_set",
            "manifest",
            E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
            _summarise_in_set("splits", SPLITS),
        ),
        _Check(
            "splits_non_empty",
            "split_counts",
            E.ExpectColumnValuesToBeBetween(column="n_images", min_value=1),
            _summarise_split_counts(frames["split_counts"]),
        ),
        _Check(
            "class_counts_per_split",
            "class_counts",
            E.ExpectColumnValuesToBeBetween(
                column="n_images", min_value=cfg.min_images_per_class_per_split
            ),
            _summarise_class_counts(frames["class_counts"], cfg.min_images_per_class_per_split),
        ),
        _Check(
            "width_in_bounds",
            "manifest",
            E.ExpectColumnValuesToBeBetween(column="width", min_value=lo, max_value=hi),
            _summarise_in_range("width", lo, hi),
        ),
        _Check(
            "height_in_bounds",
            "manifest",
            E.ExpectColumnValuesToBeBetween(column="height", min_value=lo, max_value=hi),
            _summarise_in_range("height", lo, hi),
        ),
        _Check(
            "channels_allowed",
            "manifest",
            E.ExpectColumnValuesToBeInSet(column="channels", value_set=channels),
            _summarise_in_set("channels", channels),
        ),
        _Check(
            "image_id_in_one_split",
            "image_splits",
            E.ExpectColumnValuesToBeUnique(column="image_id"),
            _summarise_one_split("image_id", "image id(s)"),
        ),
        _Check(
            "patient_in_one_split",
            "patient_splits",
            E.ExpectColumnValuesToBeUnique(column="patient_id"),
            _summarise_one_split("patient_id", "patient(s)"),
        ),
    ]
    for check in checks:
        # A column GX cannot find fails its check instead of aborting the whole suite.
        check.expectation.catch_exceptions = True
        check.expectation.meta = {_CHECK_KEY: check.name}
    return checks


def _run_checks(
    gx: Any,
    context: AbstractDataContext,
    checks: list[_Check],
    frames: dict[str, pd.DataFrame],
) -> list[CheckResult]:
    """Run one GX validation definition per frame and map results back to checks by name."""
    source = context.data_sources.add_pandas(name="medimg")
    by_name: dict[str, Any] = {}
    for frame_name, index_columns in _FRAME_INDEX_COLUMNS.items():
        frame_checks = [c for c in checks if c.frame == frame_name]
        batch = source.add_dataframe_asset(name=frame_name).add_batch_definition_whole_dataframe(
            name="whole"
        )
        suite = context.suites.add(gx.ExpectationSuite(name=f"medimg_{frame_name}"))
        for check in frame_checks:
            suite.add_expectation(check.expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"medimg_{frame_name}", data=batch, suite=suite)
        )
        result_format: dict[str, Any] = {"result_format": "COMPLETE"}
        if index_columns:
            result_format["unexpected_index_column_names"] = index_columns
        suite_result = definition.run(
            batch_parameters={"dataframe": frames[frame_name]}, result_format=result_format
        )
        for result in suite_result.results:
            by_name[result.expectation_config.meta[_CHECK_KEY]] = result

    outcomes = []
    for check in checks:
        result = by_name[check.name]
        error = _exception_message(result.exception_info)
        if error is not None:
            observed: object = {"error": error}
            details = f"could not run: {error}"
        else:
            observed, details = check.summarise(result.result or {})
        outcomes.append(
            CheckResult(
                name=check.name,
                expectation=result.expectation_config.type,
                success=bool(result.success),
                observed=observed,
                details=details,
            )
        )
    return outcomes


def _exception_message(info: Any) -> str | None:
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


def _check_docs_dir(data_docs_dir: Path) -> None:
    if data_docs_dir.is_file():
        raise ValueError(f"data_docs_dir {data_docs_dir} is a file; pass a folder")
    if (
        data_docs_dir.is_dir()
        and any(data_docs_dir.iterdir())
        and not (data_docs_dir / "index.html").is_file()
    ):
        raise ValueError(
            f"data_docs_dir {data_docs_dir} is not empty and holds no Data Docs; "
            "pass an empty or new folder"
        )


def _build_data_docs(context: AbstractDataContext, data_docs_dir: Path) -> None:
    """Render this run's suites and results as a fresh static site in ``data_docs_dir``."""
    target = data_docs_dir.resolve()
    # The index lists every page in the folder, so pages from an earlier run would show up as
    # current results.
    shutil.rmtree(target, ignore_errors=True)
    context.add_data_docs_site(
        site_name=_SITE_NAME,
        site_config={
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(target),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    context.build_data_docs(site_names=[_SITE_NAME])
    logger.info("data docs written to %s", target / "index.html")


# --- Summaries: turn a GX result dictionary into (observed, details). ---


def _plain(value: Any) -> Any:
    """A JSON-safe scalar: numpy scalars unwrapped, NaN and NA as None, others as text."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _distinct(values: Iterable[Any]) -> list[Any]:
    """Distinct JSON-safe values, sorted so reports are stable."""
    unique = {_plain(v) for v in values}
    return sorted(unique, key=lambda v: (v is None, str(type(v)), str(v)))


def _rows(n: int) -> str:
    return "1 row has" if n == 1 else f"{n} rows have"


def _unexpected(result: dict[str, Any]) -> tuple[int, list[Any]]:
    count = int(result.get("unexpected_count") or 0)
    return count, _distinct(result.get("unexpected_list") or [])[:MAX_NAMED]


def _summarise_columns(result: dict[str, Any]) -> Summary:
    mismatched = (result.get("details") or {}).get("mismatched") or {}
    missing = sorted(str(c) for c in mismatched.get("missing") or [])
    observed = {"missing": missing}
    if missing:
        return observed, f"manifest lacks required columns: {missing}"
    return observed, f"all {len(REQUIRED_COLUMNS)} required columns are present"


def _summarise_row_count(result: dict[str, Any]) -> Summary:
    n = int(result.get("observed_value") or 0)
    details = "manifest has no rows" if n == 0 else f"manifest has {n} rows"
    return {"n_rows": n}, details


def _summarise_not_null(column: str) -> Summarise:
    def summarise(result: dict[str, Any]) -> Summary:
        count = int(result.get("unexpected_count") or 0)
        rows = [_plain(i) for i in (result.get("unexpected_index_list") or [])[:MAX_NAMED]]
        observed = {"unexpected_count": count, "rows": rows}
        if count:
            return observed, f"{_rows(count)} no {column} (row index {rows})"
        return observed, f"every row has a value for {column}"

    return summarise


def _summarise_in_set(noun: str, allowed: Sequence[object]) -> Summarise:
    shown = ", ".join(str(a) for a in allowed)

    def summarise(result: dict[str, Any]) -> Summary:
        count, values = _unexpected(result)
        observed = {"unexpected_count": count, "unexpected_values": values}
        if count:
            return observed, f"{_rows(count)} {noun} outside [{shown}]: {values}"
        return observed, f"all {noun} are in [{shown}]"

    return summarise


def _summarise_in_range(column: str, lo: int, hi: int) -> Summarise:
    def summarise(result: dict[str, Any]) -> Summary:
        count, values = _unexpected(result)
        observed = {"unexpected_count": count, "unexpected_values": values}
        if count:
            return observed, f"{_rows(count)} {column} outside [{lo}, {hi}]: {values}"
        return observed, f"every {column} is within [{lo}, {hi}]"

    return summarise


def _offending_rows(result: dict[str, Any], columns: Sequence[str]) -> list[tuple[str, ...]]:
    rows = result.get("unexpected_index_list") or []
    return sorted({tuple(str(row[c]) for c in columns) for row in rows if isinstance(row, dict)})


def _summarise_split_counts(split_counts: pd.DataFrame) -> Summarise:
    counts = {
        str(s): int(n) for s, n in zip(split_counts["split"], split_counts["n_images"], strict=True)
    }

    def summarise(result: dict[str, Any]) -> Summary:
        empty = [s for (s,) in _offending_rows(result, ["split"])]
        empty.sort(key=_split_order)
        observed = {"counts": counts, "empty": empty}
        if empty:
            return observed, f"splits with no images: {empty}"
        return observed, "every split has images: " + ", ".join(
            f"{s}={n}" for s, n in counts.items()
        )

    return summarise


def _summarise_class_counts(class_counts: pd.DataFrame, minimum: int) -> Summarise:
    counts = {
        f"{s}/{c}": int(n)
        for s, c, n in zip(
            class_counts["split"], class_counts["label"], class_counts["n_images"], strict=True
        )
    }

    def summarise(result: dict[str, Any]) -> Summary:
        short = sorted(
            _offending_rows(result, ["split", "label"]), key=lambda p: (_split_order(p[0]), p[1])
        )
        below = [{"split": s, "label": c, "n_images": counts[f"{s}/{c}"]} for s, c in short]
        observed = {"counts": counts, "below_minimum": below}
        if below:
            named = ", ".join(f"{b['split']}/{b['label']}={b['n_images']}" for b in below)
            return observed, f"(split, class) pairs with fewer than {minimum} images: {named}"
        return observed, f"every class has at least {minimum} images in every split"

    return summarise


def _summarise_one_split(key: str, noun: str) -> Summarise:
    def summarise(result: dict[str, Any]) -> Summary:
        splits: dict[str, list[str]] = {}
        for value, split in _offending_rows(result, [key, "split"]):
            splits.setdefault(value, []).append(split)
        offenders = {k: sorted(v, key=_split_order) for k, v in sorted(splits.items())[:MAX_NAMED]}
        observed = {"offender_count": len(splits), "offenders": offenders}
        if splits:
            named = "; ".join(f"{k} in {v}" for k, v in offenders.items())
            more = f" (first {MAX_NAMED} shown)" if len(splits) > MAX_NAMED else ""
            return observed, f"{len(splits)} {noun} in more than one split{more}: {named}"
        return observed, f"no {noun.removesuffix('(s)')} is in more than one split"

    return summarise


def _split_order(split: str) -> tuple[int, str]:
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)
