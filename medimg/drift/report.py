"""The drift report: incoming images against the training reference, one verdict per feature.

:func:`compare` measures every feature of :mod:`medimg.drift.features` (and the model's scores
when given) and :func:`write_report` saves the JSON and the plot. A feature drifts when its PSI
exceeds ``drift.psi_threshold`` or its test's p-value falls below ``drift.p_value``; with fewer
than ``drift.min_samples`` values on either side it gets no verdict at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medimg.config import DriftConfig
from medimg.drift.features import (
    CATEGORICAL,
    NUMERIC,
    category_values,
    numeric_values,
    recorded,
)
from medimg.drift.plots import plot_drift
from medimg.drift.results import DriftReport, FeatureDrift, Kind
from medimg.drift.stats import Comparison, compare_categorical, compare_numeric

SCORE_FEATURE = "score"
"""The model's score distribution, when :func:`compare` is given scores."""


def split_reference(
    manifest: pd.DataFrame, reference_ids: Collection[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a manifest into the training reference and the incoming images.

    Args:
        manifest: The manifest now.
        reference_ids: The image ids present at the reference (the champion's) data version.

    Returns:
        ``(reference, incoming)``: the train-split rows among ``reference_ids``, and the rows
        not among them. Val and test rows of the reference version are in neither: the model
        was not fitted on them, and they are not new.
    """
    known = manifest["image_id"].isin(set(reference_ids))
    reference = manifest[known & (manifest["split"] == "train")]
    return reference.reset_index(drop=True), manifest[~known].reset_index(drop=True)


def compare(
    reference: pd.DataFrame,
    incoming: pd.DataFrame,
    config: DriftConfig,
    scores: tuple[np.ndarray, np.ndarray] | None = None,
) -> DriftReport:
    """Compare incoming manifest rows with the reference rows, feature by feature.

    Args:
        reference: Manifest rows of the training reference (see :func:`split_reference`).
        incoming: Manifest rows of the incoming images.
        config: Thresholds and the minimum sample size (``drift`` in params.yaml).
        scores: ``(reference_scores, incoming_scores)``, the model's scores of each set (for
            example its positive-class probability), compared as one more numeric feature.
    """
    features = [_numeric(name, numeric_values(reference, name), numeric_values(incoming, name),
                         config) for name in NUMERIC]
    for name in CATEGORICAL:
        if recorded(reference, name) or recorded(incoming, name):
            features.append(_categorical(name, category_values(reference, name),
                                         category_values(incoming, name), config))
        else:
            features.append(FeatureDrift(name, "categorical", "not recorded",
                                         len(reference), len(incoming)))
    if scores is not None:
        ref_scores, new_scores = (np.asarray(s, dtype=float).ravel() for s in scores)
        features.append(_numeric(SCORE_FEATURE, ref_scores[np.isfinite(ref_scores)],
                                 new_scores[np.isfinite(new_scores)], config))
    return DriftReport(features, config)


def _numeric(name: str, ref: np.ndarray, new: np.ndarray, config: DriftConfig) -> FeatureDrift:
    if min(len(ref), len(new)) < config.min_samples:
        return FeatureDrift(name, "numeric", "too few", len(ref), len(new),
                            reference_values=ref, incoming_values=new)
    result = compare_numeric(ref, new, config.bins)
    return _judged(name, "numeric", result, ref, new, config)


def _categorical(name: str, ref: list[str], new: list[str], config: DriftConfig) -> FeatureDrift:
    if min(len(ref), len(new)) < config.min_samples:
        return FeatureDrift(name, "categorical", "too few", len(ref), len(new),
                            reference_values=ref, incoming_values=new)
    result = compare_categorical(ref, new)
    return _judged(name, "categorical", result, ref, new, config)


def _judged(name: str, kind: Kind, result: Comparison, ref: Any, new: Any,
            config: DriftConfig) -> FeatureDrift:
    drifted = result.psi > config.psi_threshold or result.p_value < config.p_value
    return FeatureDrift(name, kind, "drift" if drifted else "ok", len(ref), len(new),
                        statistic=result.statistic, p_value=result.p_value, psi=result.psi,
                        reference_values=ref, incoming_values=new)


def write_report(report: DriftReport, json_path: Path, plot_path: Path) -> None:
    """Write the report as JSON (atomically: a failure leaves the previous one) and its plot."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_name(f".{json_path.name}.tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, json_path)
    plot_drift(report.features, plot_path)
