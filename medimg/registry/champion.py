"""The challenger against the champion, as a clinical non-inferiority trial compares them.

Both models are loaded as registered (the MLflow pyfunc a client would get), both predict the
same test images from the workspace's files, and both are scored by ``compute_metrics`` with the
workspace's ``evaluate.positive_classes``. The difference, challenger minus champion, gets a
paired patient bootstrap interval: one draw of patients scores both models.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from medimg.config import Config
from medimg.evaluation.bootstrap import paired_differences, patient_groups
from medimg.evaluation.metrics import compute_metrics
from medimg.registry.gates import (
    GateReport,
    compared_metrics,
    noninferiority_gates,
    superiority_gates,
)
from medimg.workspace import Workspace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Predictions:
    """A registered model's probabilities on the test rows, and its own decision threshold
    (None when it decides by arg-max)."""

    probs: np.ndarray
    threshold: float | None


@dataclass
class Comparison:
    champion_version: str
    gates: GateReport
    challenger_metrics: dict[str, object] | None = None
    champion_metrics: dict[str, object] | None = None
    differences: dict[str, dict[str, object]] = field(default_factory=dict)
    reason: str = ""  # why the models could not be compared, when they could not

    def to_dict(self) -> dict[str, object]:
        return {"champion_version": self.champion_version,
                "challenger_metrics": self.challenger_metrics,
                "champion_metrics": self.champion_metrics,
                "differences": self.differences, "unavailable": self.reason,
                **self.gates.to_dict()}


def predict_test(ws: Workspace, config: Config, model_uri: str, test: pd.DataFrame
                 ) -> Predictions | None:
    """A registered model's predictions on the manifest rows ``test``, from the stored files.

    The model is loaded with ``allow_paths`` so that it reads the workspace's files itself; a
    model logged before that opt-in existed is sent the files' bytes instead.

    Returns None (and the caller fails closed) when the model cannot be loaded or predict, or
    its classes differ from ``base.class_names``.
    """
    import mlflow.pyfunc

    from medimg.serving.pyfunc import ALLOW_PATHS

    try:
        model = mlflow.pyfunc.load_model(model_uri, model_config={ALLOW_PATHS: True})
        files = [ws.resolve(p) for p in test["source_path"]]
        if ALLOW_PATHS in model.model_config:
            frame = pd.DataFrame({"path": [str(f) for f in files]})
        else:  # MLflow drops an opt-in the model was not logged with, and it refuses paths
            frame = pd.DataFrame({"image": [base64.b64encode(f.read_bytes()).decode("ascii")
                                            for f in files]})
        out = model.predict(frame)
        names = [c.removeprefix("p_") for c in out.columns if c.startswith("p_")]
        if names != list(config.base.class_names):
            logger.warning("%s has classes %s, not %s", model_uri, names,
                           config.base.class_names)
            return None
        probs = out[[f"p_{n}" for n in names]].to_numpy(dtype=np.float64)
        threshold = (float(out["threshold"].iloc[0])
                     if len(names) == 2 and "threshold" in out.columns else None)
        if len(names) == 2 and threshold is None:
            raise ValueError("a two-class model returned no threshold")
        return Predictions(probs, threshold)
    except Exception as exc:  # a broken model must fail the gate, not the pipeline
        logger.warning("%s could not be scored: %s", model_uri, exc)
        return None


def labels_of(config: Config, test: pd.DataFrame) -> np.ndarray:
    names = list(config.base.class_names)
    return np.array([names.index(x) for x in test["label"]], dtype=np.int64)


def score(config: Config, test: pd.DataFrame, predictions: Predictions) -> dict[str, object]:
    """The metrics of one model's predictions on ``test``, by the evaluate stage's definition."""
    return compute_metrics(labels_of(config, test), predictions.probs,
                           list(config.base.class_names), predictions.threshold,
                           positive_classes=list(config.evaluate.positive_classes) or None)


def compare_with_champion(ws: Workspace, config: Config, challenger_uri: str,
                          champion_uri: str, champion_version: str, test: pd.DataFrame
                          ) -> Comparison:
    """Score both models on the same test images and apply the non-inferiority (and, when set,
    superiority) gates to the paired differences. A model that cannot be scored fails every
    check closed."""
    evaluate = config.evaluate
    ours = predict_test(ws, config, challenger_uri, test)
    theirs = predict_test(ws, config, champion_uri, test)
    if ours is None or theirs is None:
        which = "the challenger" if ours is None else f"champion v{champion_version}"
        return _unscored(config, champion_version,
                         f"{which} could not be scored on the test split")
    try:
        differences = paired_differences(
            labels_of(config, test), (ours.probs, ours.threshold),
            (theirs.probs, theirs.threshold), list(config.base.class_names),
            patient_groups(test), compared_metrics(config.gates), evaluate.bootstrap_resamples,
            evaluate.confidence, seed=config.base.seed,
            positive_classes=list(evaluate.positive_classes) or None)
        ours_metrics, theirs_metrics = score(config, test, ours), score(config, test, theirs)
    except Exception as exc:  # the comparison must fail closed, never crash the registration
        logger.warning("the comparison with v%s failed: %s", champion_version, exc)
        return _unscored(config, champion_version, f"the comparison failed: {exc}")
    report = GateReport(noninferiority_gates(differences, config.gates, evaluate.confidence)
                        + superiority_gates(differences, config.gates, evaluate.confidence))
    return Comparison(champion_version, report, ours_metrics, theirs_metrics, differences)


def _unscored(config: Config, champion_version: str, reason: str) -> Comparison:
    """A comparison that could not be made: every check fails closed, with the reason."""
    confidence = config.evaluate.confidence
    return Comparison(champion_version, GateReport(
        noninferiority_gates(None, config.gates, confidence)
        + superiority_gates(None, config.gates, confidence)), reason=reason)
