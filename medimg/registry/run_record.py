"""What the register stage writes into the pipeline's MLflow run and onto the logged model.

The run is the flow's, which spans every stage, or, when the stage runs on its own (``dvc
repro``, ``medimg register``), one of its own. Either way it ends holding the whole record: the
per-epoch history (what training did not log live is filled in), the splits as dataset inputs,
and the model with its metrics. Test metrics with their intervals are logged on the logged model
against the test split, and the kept epoch's train and validation loss against those splits, so
the model links to all three datasets and ``mlflow.search_logged_models`` and the registry's
Compare view rank versions by them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pandas as pd

from medimg.config import Config
from medimg.metric_table import HEADLINE_METRICS
from medimg.mlflow_datasets import log_split_inputs, logged_split_names, split_datasets
from medimg.workspace import Workspace

if TYPE_CHECKING:
    from mlflow.data.dataset import Dataset

    from medimg.registry.gates import GateReport

# the calibration errors of the model's own probabilities, before temperature scaling, beside
# the calibrated ones the headline reports
SCALAR_METRICS = (*HEADLINE_METRICS, "threshold", "ece_uncalibrated", "brier_uncalibrated")
# the params a model is defined by, as LoggedModel params (the run holds all of them)
MODEL_PARAM_SECTIONS = ("base.", "preprocess.", "augment.", "model.", "train.")


@contextmanager
def the_run(run_id: str | None, run_name: str | None) -> Iterator[Any]:
    """The active MLflow run to log into: ``run_id`` when given (left open when it was already
    active here; its owner ends it), else a new run named ``run_name``, ended on leaving."""
    import mlflow

    active = mlflow.active_run()
    if run_id is not None and active is not None and active.info.run_id == run_id:
        yield active
        return
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name) as run:
        yield run


def log_missing_history(client: Any, run_id: str, history: Mapping[str, list[float]]) -> None:
    """The per-epoch history's values the run lacks: all of it when training did not log live
    into this run, the epochs before a resume when it did."""
    import time

    from mlflow.entities import Metric

    missing, now = [], int(time.time() * 1000)
    for key, values in history.items():
        have = {m.step for m in client.get_metric_history(run_id, key)}
        missing += [Metric(key, float(v), now, epoch) for epoch, v in enumerate(values, start=1)
                    if epoch not in have]
    for start in range(0, len(missing), 1000):
        client.log_batch(run_id, metrics=missing[start:start + 1000])


def log_datasets(client: Any, run_id: str, ws: Workspace, config: Config,
                 manifest: pd.DataFrame, lineage: Mapping[str, str]) -> dict[str, Dataset]:
    """The splits as MLflow datasets, logged as the run's inputs unless it has them already."""
    datasets = split_datasets(manifest, list(config.base.class_names),
                              ws.relative(ws.manifest_path), lineage["data_version"],
                              lineage["git_commit"])
    if not logged_split_names(client, run_id) >= set(datasets):
        log_split_inputs(client, run_id, datasets)
    return datasets


def model_params(config: Config) -> dict[str, str]:
    """The params that define the model: what the LoggedModel carries for comparison."""
    return {k: str(v) for k, v in config.flat().items() if k.startswith(MODEL_PARAM_SECTIONS)}


def metrics_on_test(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``test_<metric>`` and ``test_<metric>_ci_low|high`` from ``reports/metrics.json``."""
    values = {f"test_{k}": float(metrics[k]) for k in SCALAR_METRICS
              if isinstance(metrics.get(k), int | float)}
    values.update({f"test_{k}_ci_{end}": float(bounds[end])
                   for k, bounds in (metrics.get("ci") or {}).items()
                   for end in ("low", "high") if isinstance(bounds.get(end), int | float)})
    return values


def kept_epoch_metrics(history: Mapping[str, list[float]], facts: Mapping[str, Any],
                       datasets: Mapping[str, Dataset]) -> Iterator[tuple[dict[str, float],
                                                                         Dataset | None]]:
    """The kept epoch's (the bundle's weights') loss on train and loss and AUC on val, each
    with its split: ``kept_train_loss``, ``kept_val_loss``, ``kept_val_auc``."""
    kept = int(facts.get("kept_epoch") or len(history.get("val_loss", [])))
    for split, prefix in (("train", ""), ("val", "val_")):
        values = {f"kept_{split}_{name}": float(history[prefix + name][kept - 1])
                  for name in ("loss", "auc")
                  if kept >= 1 and len(history.get(prefix + name, [])) >= kept
                  and not (split == "train" and name == "auc")}
        yield values, datasets.get(split)


def log_model_metrics(run_id: str, model_id: str, values: Mapping[str, float],
                      dataset: Dataset | None) -> None:
    """``values`` on the run and on the logged model ``model_id``, scored on ``dataset``."""
    import mlflow

    if values:
        mlflow.log_metrics(dict(values), run_id=run_id, model_id=model_id, dataset=dataset)


def check_lines(report: GateReport) -> str:
    """A gate report as one line: ``name pass|fail (reason); ...``."""
    return "; ".join(f"{c.name} {'pass' if c.passed else 'fail'} ({c.reason})"
                     for c in report.checks)
