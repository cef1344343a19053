"""Evaluation plots as PNG images (for people and MLflow) and data files (for `dvc plots`)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    """Write the figure as a PNG of pixels only; every plot medimg draws is saved here."""
    from PIL.PngImagePlugin import PngInfo

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Matplotlib stamps text chunks (its "Software" key) into a PNG; an empty PngInfo replaces
    # all of them, present and future, so the file holds pixels and its resolution only.
    fig.savefig(path, format="png", pil_kwargs={"pnginfo": PngInfo()})
    plt.close(fig)
    return path


def plot_confusion_matrix(cm: list[list[int]], class_names: list[str], path: Path) -> Path:
    plt = _figure()
    matrix = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=110)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        ax.text(j, i, str(value), ha="center", va="center", color=colour)
    ax.set_title("Confusion matrix (test split)")
    return _save(plt, fig, path)


def plot_roc(curves: dict[str, dict[str, list[float]]], auc: float, path: Path) -> Path:
    """One ROC curve per class, one-vs-rest (the positive class alone for two classes); the
    legend names each class with its own AUC, the title the headline (macro) ROC-AUC."""
    from sklearn.metrics import auc as area

    plt = _figure()
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=110)
    for name, points in curves.items():
        ax.plot(points["fpr"], points["tpr"],
                label=f"{name} vs rest, AUC {area(points['fpr'], points['tpr']):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    headline = "ROC-AUC" if len(curves) == 1 else "macro ROC-AUC"
    ax.set_title(f"ROC (test split), {headline} {auc:.3f}", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    return _save(plt, fig, path)


def _line_plot(path: Path, title: str, xlabel: str, ylabel: str,
               lines: list[tuple[list[float], list[float], str, dict]],
               marker: float | None = None, marker_label: str = "") -> Path:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=110)
    for xs, ys, label, style in lines:
        ax.plot(xs, ys, label=label, **style)
    if marker is not None:
        ax.axvline(marker, color="black", linestyle=":", linewidth=1.0, label=marker_label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    return _save(plt, fig, path)


def plot_pr(curves: dict[str, dict[str, list[float]]], pr_auc: float,
            prevalence: float | None, path: Path) -> Path:
    """One precision-recall curve per class, one-vs-rest; with one class, its prevalence as
    the no-skill line."""
    lines = [(points["recall"], points["precision"], f"{name} vs rest", {})
             for name, points in curves.items()]
    if prevalence is not None:
        lines.append(([0, 1], [prevalence, prevalence], f"prevalence {prevalence:.2f}",
                      {"linestyle": "--", "color": "grey", "linewidth": 0.8}))
    headline = "PR-AUC" if len(curves) == 1 else "macro PR-AUC"
    return _line_plot(path, f"Precision-recall (test split), {headline} {pr_auc:.3f}",
                      "recall (sensitivity)", "precision (PPV)", lines)


def plot_reliability(points: dict[str, list[float]], ece: float, path: Path,
                     top_class: bool = False) -> Path:
    """Observed frequency against predicted probability: of the positive class, or with
    ``top_class`` (several classes) of the class predicted against how often it is right."""
    return _line_plot(path, "Reliability (test split)",
                      "top-class probability" if top_class else "predicted probability",
                      "how often the top class is right" if top_class else "observed frequency",
                      [(points["confidence"], points["frequency"], f"model (ECE {ece:.3f})",
                        {"marker": "o"}),
                       ([0, 1], [0, 1], "perfect calibration",
                        {"linestyle": "--", "color": "grey", "linewidth": 0.8})])


def plot_threshold_curves(curves: dict[str, dict[str, list[float]]], threshold: float | None,
                          path: Path) -> Path:
    """Recall and precision against a threshold on each class's probability, one pair of
    lines per class; the operating point is marked only where a threshold decides (two
    classes); several classes decide by arg-max."""
    lines = []
    for name, points in curves.items():
        lines += [(points["threshold"], points["recall"], f"recall, {name}", {}),
                  (points["threshold"], points["precision"], f"precision, {name}",
                   {"linestyle": "--"})]
    what = ("the positive-class probability" if len(curves) == 1
            else "each class's probability (decisions are arg-max)")
    return _line_plot(path, "Recall, precision by threshold (test)", f"threshold on {what}",
                      "value", lines, marker=threshold,
                      marker_label=f"operating point {threshold:.3f}" if threshold is not None
                      else "")


def write_rows(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def plot_training_curves(history: dict[str, list[float]], path: Path) -> Path:
    """Loss and accuracy per epoch, training against validation."""
    plt = _figure()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.6), dpi=110)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if key in history:
                values = history[key]
                ax.plot(range(1, len(values) + 1), values, style, marker="o", markersize=3,
                        label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("Training curves")
    return _save(plt, fig, path)


def plot_gradcam_grid(rows: dict[str, list[tuple[np.ndarray, np.ndarray, str]]], title: str,
                      path: Path) -> Path:
    """One row per outcome (true positives, false positives...), each case its image with the
    Grad-CAM heat map over it and a caption. An outcome with no cases says so."""
    plt = _figure()
    columns = max(1, max((len(cases) for cases in rows.values()), default=1))
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.9 * columns + 0.6, 2.1 * len(rows)),
                             dpi=110, squeeze=False)
    for r, (outcome, cases) in enumerate(rows.items()):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(outcome, fontsize=8)
            if c >= len(cases):
                if not cases and c == 0:
                    ax.text(0.5, 0.5, "none in the test split", ha="center", va="center",
                            fontsize=7, transform=ax.transAxes)
                for spine in ax.spines.values():
                    spine.set_visible(False)
                continue
            image, cam, caption = cases[c]
            pixels = image[..., 0] if image.shape[-1] == 1 else image
            ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=255)
            ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0)
            ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(plt, fig, path)
