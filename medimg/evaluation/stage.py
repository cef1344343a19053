"""The evaluate stage: score the locked test split with the trained bundle, no augmentation."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medimg.bundle import ModelBundle
from medimg.calibration import apply_temperature
from medimg.config import Config
from medimg.data.manifest import META_PREFIX, load_manifest
from medimg.data.packed import check_packed_with, load_index, load_split
from medimg.errors import ConfigError, DataError
from medimg.evaluation.bootstrap import bootstrap_intervals, patient_groups
from medimg.evaluation.metrics import (
    brier_score,
    compute_metrics,
    disease_classes,
    ece_of,
    pr_points,
    reliability_points,
    roc_points,
)
from medimg.evaluation.plots import (
    plot_confusion_matrix,
    plot_gradcam_grid,
    plot_pr,
    plot_reliability,
    plot_roc,
    plot_threshold_curves,
    plot_training_curves,
    write_rows,
)
from medimg.evaluation.tta import tta_probs
from medimg.metric_table import HEADLINE_METRICS, SLICE_METRICS
from medimg.training.history import HISTORY_FILE, read_history
from medimg.workspace import Workspace

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationResult:
    metrics: dict[str, object]
    metrics_path: Path
    plots: list[Path]




def _test_rows(ws: Workspace, image_ids: list[str]) -> pd.DataFrame:
    """The manifest's rows for the test images, in the packed split's order."""
    manifest = load_manifest(ws.manifest_path).drop_duplicates("image_id").set_index("image_id")
    return manifest.reindex(image_ids)


def _finite(value: object) -> object:
    return None if isinstance(value, float) and not np.isfinite(value) else value


def slice_metrics(
    rows: pd.DataFrame, columns: list[str], y_true: np.ndarray, probs: np.ndarray,
    class_names: list[str], threshold: float | None, positive_classes: list[str] | None = None,
) -> dict[str, dict[str, dict[str, object]]]:
    """``{column: {value: metrics}}`` for each manifest column named in ``evaluate.slices``.

    A column is named as in the manifest or by its metadata name (``site`` for ``meta_site``);
    images without a value form the slice ``(missing)``. Undefined values (ROC-AUC of a slice
    with one class) are null.

    Raises:
        ConfigError: when a column is not in the manifest.
    """
    out: dict[str, dict[str, dict[str, object]]] = {}
    for name in columns:
        column = name if name in rows.columns else f"{META_PREFIX}{name}"
        if column not in rows.columns:
            available = sorted(c for c in rows.columns if c.startswith(META_PREFIX))
            raise ConfigError(
                f"evaluate.slices names {name!r}, which the manifest does not have; metadata "
                f"columns there: {', '.join(available) or 'none'} (a label list's extra "
                "columns become meta_<name>)")
        values = rows[column].astype("string").fillna("(missing)").to_numpy()
        out[name] = {}
        for value in sorted(set(values)):
            inside = values == value
            m = compute_metrics(y_true[inside], probs[inside], class_names, threshold,
                                positive_classes=positive_classes)
            out[name][str(value)] = {"n": int(inside.sum()),
                                     **{k: _finite(m[k]) for k in SLICE_METRICS}}
    return out


def _keras_backend() -> str:
    import keras

    return keras.backend.backend()


GRID = np.linspace(0.0, 1.0, 101)


def _on_grid(x: list[float], y: list[float], grid: np.ndarray) -> np.ndarray:
    """``y`` read at each ``grid`` point of ``x`` (linear between the curve's own points)."""
    order = np.argsort(x, kind="stable")
    return np.interp(grid, np.asarray(x)[order], np.asarray(y)[order])


def _write_curves(out: Path, roc: dict[str, dict], pr: dict[str, dict],
                  by_threshold: dict[str, dict]) -> None:
    """Each curve's points per class in ``<curve>_by_class.csv`` (class, x, y), and in
    ``roc.csv``, ``pr.csv`` and ``threshold.csv`` the one line DVC draws: the positive class's
    own points for two classes, the disease classes' average on a 0.01 grid for more (the
    curve of the macro average the headline metrics report)."""
    tables = {"roc": (roc, "fpr", ["tpr"]), "pr": (pr, "recall", ["precision"]),
              "threshold": (by_threshold, "threshold", ["recall", "precision"])}
    for name, (curves, x, ys) in tables.items():
        write_rows(out / f"{name}_by_class.csv", ["class", x, *ys],
                   [[c, *row] for c, points in curves.items()
                    for row in zip(points[x], *(points[y] for y in ys), strict=True)])
        if len(curves) == 1:
            [points] = curves.values()
            rows = [list(row) for row in zip(points[x], *(points[y] for y in ys), strict=True)]
        else:
            averaged = [np.mean([_on_grid(p[x], p[y], GRID) for p in curves.values()], axis=0)
                        for y in ys]
            rows = [[float(g), *(float(a[i]) for a in averaged)] for i, g in enumerate(GRID)]
        write_rows(out / f"{name}.csv", [x, *ys], rows)


def _curve_classes(names: list[str], diseases: list[str]) -> list[str]:
    """The classes that get a one-vs-rest curve: the positive class of two, else each disease
    class (each class when every class is one)."""
    return [names[-1]] if len(names) == 2 else list(diseases)


OUTCOMES = ("true positives", "false positives", "false negatives", "true negatives")
WRONG_DISEASE = "wrong disease"  # several disease classes: sick, but called another disease


def gradcam_grid(ws: Workspace, bundle: ModelBundle, test, probs: np.ndarray,
                 predicted: np.ndarray, positive_classes: list[str], per_outcome: int) -> Path:
    """``reports/plots/gradcam.png`` and ``gradcam_cases.csv``: Grad-CAM of the disease
    probability on the most confident cases of each outcome.

    An image is positive when its class is one of ``positive_classes``; true and false
    positives are shown from the highest disease probability down, negatives from the lowest up,
    so the errors shown are the model's most confident ones. With several disease classes, a
    sick image called another disease is neither a true positive nor a miss: it has its own
    row. With every class positive (several classes, none named) the rows are the correct and
    the wrong predictions, each explained for the class predicted.
    """
    from medimg.serving.gradcam import gradcam_maps

    names = bundle.meta.class_names
    positive = tuple(names.index(c) for c in positive_classes)
    labels = np.asarray(test.labels)
    chosen: dict[str, np.ndarray] = {}
    if len(positive) < len(names):
        disease = probs[:, positive].sum(axis=1)
        actual, said = np.isin(labels, positive), np.isin(predicted, positive)
        right = predicted == labels
        masks = {OUTCOMES[0]: (actual & right, -1), OUTCOMES[1]: (~actual & said, -1),
                 OUTCOMES[2]: (actual & ~said, 1), OUTCOMES[3]: (~actual & ~said, 1)}
        if len(positive) > 1:
            masks[WRONG_DISEASE] = (actual & said & ~right, -1)
        for outcome, (mask, sign) in masks.items():
            index = np.flatnonzero(mask)
            chosen[outcome] = index[np.argsort(sign * disease[index], kind="stable")][:per_outcome]
        target = {int(i): positive for i in np.concatenate(list(chosen.values()))}
        shown = disease
    else:
        confidence = probs[np.arange(len(probs)), predicted]
        for outcome, mask in (("correct", labels == predicted), ("wrong", labels != predicted)):
            index = np.flatnonzero(mask)
            chosen[outcome] = index[np.argsort(-confidence[index], kind="stable")][:per_outcome]
        target = {int(i): (int(predicted[i]),) for i in np.concatenate(list(chosen.values()))}
        shown = confidence
    groups: dict[tuple[int, ...], list[int]] = {}  # one Grad-CAM pass per explained class set
    for i, classes in target.items():
        groups.setdefault(classes, []).append(i)
    maps: dict[int, np.ndarray] = {}
    for classes, index in groups.items():
        maps.update(zip(index, gradcam_maps(bundle.model, test.images[index], classes),
                        strict=True))
    short = dict(zip(OUTCOMES, ("TP", "FP", "FN", "TN"), strict=True))
    rows, records = {}, []
    for outcome, index in chosen.items():
        rows[outcome] = []
        for i in index:
            image_id = test.image_ids[i]
            caption = f"{short.get(outcome, outcome)}  p={shown[i]:.2f}  {image_id[:10]}"
            rows[outcome].append((np.asarray(test.images[i]), maps[int(i)], caption))
            records.append([outcome, image_id, names[labels[i]], names[predicted[i]],
                            f"{shown[i]:.6f}"])
    write_rows(ws.plots_dir / "gradcam_cases.csv",
               ["outcome", "image_id", "actual", "predicted", "probability"], records)
    what = ("P(" + " or ".join(positive_classes) + ")" if len(positive) < len(names)
            else "the predicted class")
    title = (f"Grad-CAM for {what} on the test split; threshold {bundle.meta.threshold:.3f}"
             if len(names) == 2 else f"Grad-CAM for {what} on the test split")
    return plot_gradcam_grid(rows, title, ws.plots_dir / "gradcam.png")


def calibration_report(meta, labels: np.ndarray, raw: np.ndarray, calibrated: np.ndarray
                       ) -> dict[str, object]:
    """What temperature scaling did: on validation (fitted there, from the bundle) and on the
    test split, ECE and Brier before (the model's own probabilities) and after."""
    return {
        "method": meta.calibration.get("method", "none"),
        "temperature": meta.temperature,
        "bias": meta.bias,
        "validation": meta.calibration,
        "test": {"ece_before": ece_of(labels, raw), "ece_after": ece_of(labels, calibrated),
                 "brier_before": brier_score(labels, raw),
                 "brier_after": brier_score(labels, calibrated)},
    }


def tta_report(bundle: ModelBundle, test, probs: np.ndarray, config: Config,
               positives: list[str] | None) -> dict[str, object]:
    """What ``evaluate.tta`` views would buy: the headline metrics with them, at the same
    threshold, beside the single-view figures the report leads with, which are what the served
    model (one view per film) gives."""
    views = config.evaluate.tta
    averaged = tta_probs(bundle, test.images, views, config.base.seed, plain=probs)
    applied = averaged is not probs  # no augment ranges in the bundle: nothing to average
    with_tta = compute_metrics(test.labels, averaged, bundle.meta.class_names,
                               bundle.meta.threshold, positive_classes=positives)
    logger.info("test-time augmentation, %d views: ROC-AUC %.4f (one view %.4f)", views,
                with_tta["roc_auc"], compute_metrics(test.labels, probs, bundle.meta.class_names,
                                                     bundle.meta.threshold,
                                                     positive_classes=positives)["roc_auc"])
    return {"views": views, "applied": applied,
            "with": {k: with_tta[k] for k in HEADLINE_METRICS}}


def run_evaluate(ws: Workspace, config: Config,
                 progress: Callable[[int, int], None] | None = None) -> EvaluationResult:
    """Metrics JSON, predictions CSV, confusion-matrix and ROC plots for the test split.

    Predictions are made in file order, one batch after another, so row i of the predictions is
    image i of the split: nothing is shuffled or augmented (``evaluate.tta`` reports what
    augmented views would add, beside). ``progress(done, total)`` follows
    the bootstrap resamples, the longest part.
    """
    if ws.plots_dir.is_dir():  # what an earlier model left must not be logged with this one
        for stale in ws.plots_dir.iterdir():
            if stale.is_file():
                stale.unlink()
    bundle = ModelBundle.load(ws.model_dir)
    meta = bundle.meta
    check_packed_with(load_index(ws), meta.class_names, meta.image_size, meta.channels,
                      meta.preprocess, "run `medimg preprocess` and `medimg train` (`dvc repro`)")
    test = load_split(ws, "test")
    if len(test.labels) == 0:
        raise DataError("the test split is empty; add images or change data.split_fractions")
    raw = bundle.predict_packed(test.images, calibrated=False)
    probs = apply_temperature(raw, meta.temperature, meta.bias)  # as every prediction path
    names = bundle.meta.class_names
    positives = list(config.evaluate.positive_classes) or None
    metrics = compute_metrics(test.labels, probs, names, bundle.meta.threshold,
                              positive_classes=positives)
    metrics["positive_classes"] = disease_classes(names, positives)
    metrics["calibration"] = calibration_report(meta, test.labels, raw, probs)
    metrics["ece_uncalibrated"] = metrics["calibration"]["test"]["ece_before"]
    metrics["brier_uncalibrated"] = metrics["calibration"]["test"]["brier_before"]
    if config.evaluate.tta > 1:
        metrics["tta"] = tta_report(bundle, test, probs, config, positives)
    if meta.operating_point:  # how the threshold was chosen, on validation
        metrics["operating_point"] = meta.operating_point
    evaluate = config.evaluate
    rows = _test_rows(ws, test.image_ids)
    patients = patient_groups(rows)
    metrics["ci"] = bootstrap_intervals(test.labels, probs, names, meta.threshold, patients,
                                        evaluate.bootstrap_resamples, evaluate.confidence,
                                        seed=config.base.seed, positive_classes=positives,
                                        progress=progress)
    if evaluate.slices:
        metrics["slices"] = slice_metrics(rows, list(evaluate.slices), test.labels, probs, names,
                                          meta.threshold, positives)
    metrics["bootstrap"] = {"resamples": evaluate.bootstrap_resamples,
                            "confidence": evaluate.confidence, "unit": "patient",
                            "patients": len(set(patients)),
                            # resamples where a metric has no value (AUC with one class drawn)
                            "left_out": {k: b["left_out"] for k, b in metrics["ci"].items()
                                         if b["left_out"]}}

    ws.reports_dir.mkdir(parents=True, exist_ok=True)
    predicted = bundle.decide(probs)
    write_rows(
        ws.reports_dir / "predictions.csv",
        ["image_id", "actual", "predicted", *(f"p_{n}" for n in names)],
        [[i, names[t], names[p], *(f"{x:.6f}" for x in row)]
         for i, t, p, row in zip(test.image_ids, test.labels, predicted, probs, strict=True)],
    )
    curves = _curve_classes(names, metrics["positive_classes"])
    roc = {c: roc_points(test.labels, probs, names.index(c)) for c in curves}
    pr = {c: pr_points(test.labels, probs, names.index(c)) for c in curves}
    # recall and precision at each threshold on the class's probability (the last PR point,
    # recall 0, has none)
    by_threshold = {c: {"threshold": r["threshold"],
                        **{k: r[k][:len(r["threshold"])] for k in ("recall", "precision")}}
                    for c, r in pr.items()}
    _write_curves(ws.plots_dir, roc, pr, by_threshold)
    calibration = reliability_points(test.labels, probs)
    write_rows(ws.plots_dir / "reliability.csv", ["confidence", "frequency", "count"],
               [list(row) for row in zip(calibration["confidence"], calibration["frequency"],
                                         calibration["count"], strict=True)])
    prevalence = float(np.mean(np.asarray(test.labels) == len(names) - 1))
    plots = [
        plot_confusion_matrix(metrics["confusion_matrix"], names,
                              ws.plots_dir / "confusion_matrix.png"),
        plot_roc(roc, float(metrics["roc_auc"]), ws.plots_dir / "roc.png"),
        plot_pr(pr, float(metrics["pr_auc"]), prevalence if len(names) == 2 else None,
                ws.plots_dir / "pr.png"),
        plot_reliability(calibration, float(metrics["ece"]), ws.plots_dir / "reliability.png",
                         top_class=len(names) > 2),
        plot_threshold_curves(by_threshold, metrics["threshold"], ws.plots_dir / "threshold.png"),
    ]
    history = read_history(ws.reports_dir / HISTORY_FILE)
    if history:
        plots.append(plot_training_curves(history, ws.plots_dir / "training_curves.png"))
    if evaluate.gradcam_cases and (backend := _keras_backend()) != "tensorflow":
        logger.warning("no Grad-CAM grid: it needs the TensorFlow backend, not %s", backend)
    elif evaluate.gradcam_cases:
        plots.append(gradcam_grid(ws, bundle, test, probs, predicted,
                                  metrics["positive_classes"], evaluate.gradcam_cases))
    # last, so that a metrics file is only ever there beside complete predictions and plots
    ws.metrics_path.write_text(json.dumps(metrics, indent=2))
    logger.info("test F1 %.3f, recall %.3f on %d images", metrics["f1"], metrics["recall"],
                metrics["n"])
    return EvaluationResult(metrics, ws.metrics_path, plots)
