"""A workspace's MLflow runs as people compare them: the recent ones, and two side by side.

Each run is read as the pipeline records it: flat params, lineage tags (``data_version``,
``test_split_hash``), test metrics with their interval bounds (``test_f1``, ``test_f1_ci_low``,
``test_f1_ci_high``), the gate's verdict (``gate.passed``) and, for a failed run, the stage and
the reason. Two runs scored on the same test split, which both kept their predictions, get the
paired difference B - A with a patient bootstrap interval, as the champion gate computes it
(:func:`medimg.evaluation.bootstrap.paired_differences`): one draw of patients scores both.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medimg.config import Config
from medimg.errors import MedimgError
from medimg.evaluation.bootstrap import paired_differences, patient_groups
from medimg.metric_table import HEADLINE_METRICS
from medimg.mlflow_run import FAILED_STAGE_TAG, FAILURE_TAG
from medimg.workspace import Workspace

PREDICTIONS = "reports/predictions.csv"
GATE_TAG = "gate.passed"
VERSION_TAG = "registered_version"


class RunNotFound(MedimgError):
    """No run, or more than one, answers to the name or id the user gave."""


@dataclass(frozen=True)
class Estimate:
    """A metric's value and, when it was bootstrapped, its interval."""

    value: float | None
    low: float | None = None
    high: float | None = None

    def text(self, signed: bool = False) -> str:
        """``0.812 (0.740 to 0.880)``; ``—`` for no value."""
        if self.value is None:
            return "—"
        form = "+.3f" if signed else ".3f"
        if self.low is None or self.high is None:
            return format(self.value, form)
        return f"{self.value:{form}} ({self.low:{form}} to {self.high:{form}})"


@dataclass(frozen=True)
class RunSummary:
    """One MLflow run, as `medimg runs` and `medimg compare` show it."""

    run_id: str
    name: str
    status: str
    started_ms: int
    ended_ms: int | None
    data_version: str
    test_split: str
    params: Mapping[str, str]
    metrics: Mapping[str, Estimate]
    threshold: float | None  # the decision threshold it was scored at; None for arg-max
    gate_passed: bool | None  # None: the run never reached the gate
    versions: tuple[str, ...] = ()  # "v3 (champion)", ...
    failed_stage: str = ""
    failure: str = ""

    @property
    def short_id(self) -> str:
        return self.run_id[:8]

    @property
    def started(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(self.started_ms / 1000))

    @property
    def duration(self) -> str:
        """``42s``, ``3m 05s``, ``1h 02m``; ``—`` while it runs."""
        if self.ended_ms is None:
            return "—"
        seconds = max(0, round((self.ended_ms - self.started_ms) / 1000))
        if seconds < 60:
            return f"{seconds}s"
        if seconds < 3600:
            return f"{seconds // 60}m {seconds % 60:02d}s"
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"

    @property
    def data(self) -> str:
        """The data version shortened as a commit id is (``file-md5:`` dropped)."""
        return self.data_version.removeprefix("file-md5:")[:8] or "—"

    @property
    def registered(self) -> str:
        return ", ".join(self.versions) or "—"


@dataclass(frozen=True)
class RecentRuns:
    """The last runs of an experiment, newest first, and the params that differ among them."""

    experiment: str
    runs: tuple[RunSummary, ...]
    varying: tuple[str, ...]


@dataclass(frozen=True)
class ParamPair:
    key: str
    a: str | None
    b: str | None


@dataclass(frozen=True)
class RunComparison:
    """Two runs side by side, and B - A paired on the same test images when that can be had.

    Attributes:
        differing: the params whose values differ (``None`` where a run lacks one).
        equal_params: how many params the runs share with equal values.
        differences: per headline metric, B - A (``value``) with its paired interval.
        paired_on: what the paired difference was computed on (images, patients, resamples).
        unpaired: why there is no paired difference, when there is none.
    """

    a: RunSummary
    b: RunSummary
    differing: tuple[ParamPair, ...]
    equal_params: int
    differences: Mapping[str, Estimate] = field(default_factory=dict)
    paired_on: str = ""
    unpaired: str = ""


def recent_runs(client: Any, experiment_id: str, model_name: str, n: int = 10) -> RecentRuns:
    """The last ``n`` runs of the experiment, newest first, with the registry versions made
    from each (versions of ``model_name`` only)."""
    if n < 1:
        raise MedimgError(f"-n {n} shows no run; give a number of runs of at least 1")
    found = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"],
                               max_results=n)
    runs = tuple(summarise(client, run, model_name) for run in found)
    return RecentRuns(client.get_experiment(experiment_id).name, runs, _varying(runs))


def summarise(client: Any, run: Any, model_name: str) -> RunSummary:
    """What a run recorded, read from its tags, params and metrics."""
    tags, metrics = run.data.tags, run.data.metrics
    gate = tags.get(GATE_TAG)
    return RunSummary(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id[:8],
        status=run.info.status,
        started_ms=run.info.start_time,
        ended_ms=run.info.end_time,
        data_version=tags.get("data_version", ""),
        test_split=tags.get("test_split_hash", ""),
        params=dict(run.data.params),
        metrics={m: Estimate(metrics.get(f"test_{m}"), metrics.get(f"test_{m}_ci_low"),
                             metrics.get(f"test_{m}_ci_high"))
                 for m in HEADLINE_METRICS if f"test_{m}" in metrics},
        threshold=metrics.get("test_threshold"),
        gate_passed=None if gate is None else gate == "true",
        versions=_versions(client, run.info.run_id, model_name, tags.get(VERSION_TAG)),
        failed_stage=tags.get(FAILED_STAGE_TAG, ""),
        failure=tags.get(FAILURE_TAG, ""),
    )


def _versions(client: Any, run_id: str, model_name: str, tagged: str | None
              ) -> tuple[str, ...]:
    """``v3 (champion, challenger)`` for each version of ``model_name`` made from the run."""
    found = [v for v in client.search_model_versions(f"run_id='{run_id}'")
             if v.name == model_name]
    if not found:
        return (f"v{tagged}",) if tagged else ()
    out = []
    for listed in sorted(found, key=lambda v: int(v.version)):
        # search results leave aliases out; the version itself carries them
        aliases = sorted(client.get_model_version(model_name, listed.version).aliases)
        out.append(f"v{listed.version}" + (f" ({', '.join(aliases)})" if aliases else ""))
    return tuple(out)


def _varying(runs: tuple[RunSummary, ...]) -> tuple[str, ...]:
    """Params whose values differ among the runs that logged any (a run that failed before
    logging its params would make every param look changed)."""
    logged = [r.params for r in runs if r.params]
    keys = sorted({k for params in logged for k in params})
    return tuple(k for k in keys if len({params.get(k) for params in logged}) > 1)


def find_run(client: Any, experiment_id: str, ref: str) -> Any:
    """The run of the experiment whose id, name or unambiguous id prefix is ``ref``.

    Raises:
        RunNotFound: no run answers to ``ref``, or several do.
    """
    runs = list(_all_runs(client, experiment_id))
    for matches, what in (([r for r in runs if r.info.run_id == ref], "id"),
                          ([r for r in runs if r.info.run_name == ref], "name"),
                          ([r for r in runs if ref and r.info.run_id.startswith(ref.lower())],
                           "id prefix")):
        if len(matches) == 1:
            return matches[0]
        if matches:
            ids = ", ".join(r.info.run_id[:12] for r in matches[:4])
            raise RunNotFound(f"{ref!r} is the {what} of {len(matches)} runs ({ids}"
                              f"{', ...' if len(matches) > 4 else ''}); give more of the run id")
    raise RunNotFound(f"no run {ref!r} in this workspace's experiment; `medimg runs` lists the "
                      "recent ones by name and id")


def _all_runs(client: Any, experiment_id: str) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def compare_runs(client: Any, experiment_id: str, ws: Workspace, config: Config, ref_a: str,
                 ref_b: str) -> RunComparison:
    """Runs ``ref_a`` and ``ref_b`` side by side, with B - A paired on their shared test images
    when both scored the same test split and kept ``reports/predictions.csv``.

    The bootstrap takes its resamples, confidence, seed and disease classes from ``config``
    (the workspace's ``evaluate`` and ``base``), and its patients from the workspace's
    manifest; an image the manifest does not know is its own patient.
    """
    name = config.registry.model_name
    a = summarise(client, find_run(client, experiment_id, ref_a), name)
    b = summarise(client, find_run(client, experiment_id, ref_b), name)
    keys = sorted(set(a.params) | set(b.params))
    differing = tuple(ParamPair(k, a.params.get(k), b.params.get(k)) for k in keys
                      if a.params.get(k) != b.params.get(k))
    unpaired = _unpairable(a, b)
    if unpaired:
        return RunComparison(a, b, differing, len(keys) - len(differing), unpaired=unpaired)
    with tempfile.TemporaryDirectory(prefix="medimg-compare-") as tmp:
        frames = []
        for run in (a, b):
            path = _download_predictions(client, run.run_id, Path(tmp) / run.run_id)
            if path is None:
                return RunComparison(a, b, differing, len(keys) - len(differing), unpaired=(
                    f"no paired difference: run {run.name} kept no {PREDICTIONS}"))
            frames.append(pd.read_csv(path))
    differences, paired_on, unpaired = _paired(ws, config, a, b, frames[0], frames[1])
    return RunComparison(a, b, differing, len(keys) - len(differing), differences, paired_on,
                         unpaired)


def _unpairable(a: RunSummary, b: RunSummary) -> str:
    if not a.test_split or not b.test_split:
        which = a if not a.test_split else b
        return (f"no paired difference: run {which.name} recorded no test split "
                "(it never reached the register stage)")
    if a.test_split != b.test_split:
        return (f"no paired difference: the runs were scored on different test splits "
                f"({a.test_split[:8]} and {b.test_split[:8]})")
    return ""


def _download_predictions(client: Any, run_id: str, into: Path) -> Path | None:
    folder = PREDICTIONS.rsplit("/", 1)[0]
    if not any(f.path == PREDICTIONS for f in client.list_artifacts(run_id, folder)):
        return None
    into.mkdir(parents=True)
    return Path(client.download_artifacts(run_id, PREDICTIONS, str(into)))


def _paired(ws: Workspace, config: Config, a: RunSummary, b: RunSummary, rows_a: pd.DataFrame,
            rows_b: pd.DataFrame) -> tuple[dict[str, Estimate], str, str]:
    """B - A per headline metric on the images both predicted, with its paired interval;
    ``(differences, paired_on, "")``, or ``({}, "", why not)``."""
    names = [c.removeprefix("p_") for c in rows_a.columns if c.startswith("p_")]
    if names != [c.removeprefix("p_") for c in rows_b.columns if c.startswith("p_")]:
        return {}, "", "no paired difference: the runs' models have different classes"
    rows_a, rows_b = rows_a.set_index("image_id"), rows_b.set_index("image_id")
    if set(rows_a.index) != set(rows_b.index):
        return {}, "", ("no paired difference: the runs' predictions cover different images, "
                        "though they name the same test split")
    rows_b = rows_b.loc[rows_a.index]
    for run in (a, b):
        if len(names) == 2 and run.threshold is None:
            return {}, "", f"no paired difference: run {run.name} recorded no decision threshold"
    thresholds = [run.threshold if len(names) == 2 else None for run in (a, b)]
    labels = np.array([names.index(x) for x in rows_a["actual"]], dtype=np.int64)
    columns = [f"p_{n}" for n in names]
    patients, unit = _patients(ws, list(rows_a.index))
    evaluate = config.evaluate
    found = paired_differences(
        labels, (rows_b[columns].to_numpy(np.float64), thresholds[1]),
        (rows_a[columns].to_numpy(np.float64), thresholds[0]), names, patients,
        HEADLINE_METRICS, evaluate.bootstrap_resamples, evaluate.confidence,
        seed=config.base.seed, positive_classes=list(evaluate.positive_classes) or None)
    differences = {m: Estimate(d["difference"], d["low"], d["high"]) for m, d in found.items()}
    paired_on = (f"{len(labels)} test images of {len(set(patients))} {unit}s, "
                 f"{evaluate.bootstrap_resamples} resamples by {unit}, "
                 f"{evaluate.confidence:.0%} intervals")
    return differences, paired_on, ""


def _patients(ws: Workspace, image_ids: list[str]) -> tuple[list[str], str]:
    """Each image's pseudonymous patient from the workspace's manifest, and the resampling
    unit: ``patient``, or ``image`` when the manifest knows none of them."""
    from medimg.data.manifest import load_manifest

    if not ws.manifest_path.is_file():
        return [f"image:{i}" for i in image_ids], "image"
    manifest = load_manifest(ws.manifest_path).drop_duplicates("image_id").set_index("image_id")
    rows = manifest.reindex(image_ids)
    known = rows["patient_id"].notna().any()
    return patient_groups(rows), "patient" if known else "image"
