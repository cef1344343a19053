"""Evaluation plots as PNG images (for people and MLflow) and data files (for `dvc plots`)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
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


@dataclass(frozen=True)
class GradcamGrid:
    """The Grad-CAM grid's pixels (H, W, 3) and where each case's picture lies in them:
    ``origins[(outcome, i)]`` is the (left, top) of the ``i``-th case of that outcome, whose
    panels lie where :func:`medimg.serving.gradcam.case_layout` says (with ``scale``)."""

    pixels: np.ndarray
    origins: dict[tuple[str, int], tuple[int, int]]
    scale: int


_MARGIN = 8  # white pixels around the grid
_SPACING = 14  # white pixels between cases, and between outcome rows
_TEXT = 14  # height of a line of the grid's own text (title, outcome names)


def draw_gradcam_grid(rows: dict[str, list[tuple[np.ndarray, np.ndarray, str]]],
                      title: str) -> GradcamGrid:
    """The title, then one row per outcome (true positives, false positives...) under its name,
    each case ``(film, map, caption)`` as :func:`medimg.serving.gradcam.render_case` draws it:
    film | map over the film | colour bar, its caption above. An outcome with no cases says so.

    Films smaller than :data:`~medimg.serving.gradcam.LEAST_PANEL` are enlarged by whole pixels,
    so every film pixel shows with its value unchanged.
    """
    from PIL import Image, ImageDraw, ImageFont

    from medimg.serving.gradcam import panel_scale, render_case

    films = [film for cases in rows.values() for film, _, _ in cases]
    scale = panel_scale(max(film.shape[0] for film in films)) if films else 1
    pictures = {outcome: [render_case(film, cam, scale, caption=caption)
                          for film, cam, caption in cases] for outcome, cases in rows.items()}
    drawn = [p for row in pictures.values() for p in row]
    cell_w = max((p.shape[1] for p in drawn), default=0)
    cell_h = max((p.shape[0] for p in drawn), default=0)
    columns = max((len(row) for row in pictures.values()), default=0)
    font = ImageFont.load_default()
    words = [title, *rows, "none in the test split"]
    text_w = max(int(np.ceil(font.getlength(word))) for word in words)
    width = 2 * _MARGIN + max(text_w, columns * cell_w + max(columns - 1, 0) * _SPACING)
    height = _MARGIN + _TEXT + _SPACING // 2
    for row in pictures.values():
        height += _TEXT + (cell_h if row else _TEXT) + _SPACING
    canvas = np.full((height, width, 3), 255, np.uint8)
    origins: dict[tuple[str, int], tuple[int, int]] = {}
    texts = [((_MARGIN, _MARGIN), title)]
    top = _MARGIN + _TEXT + _SPACING // 2
    for outcome, row in pictures.items():
        texts.append(((_MARGIN, top), outcome))
        top += _TEXT
        if not row:
            texts.append(((_MARGIN, top), "none in the test split"))
            top += _TEXT + _SPACING
            continue
        for i, picture in enumerate(row):
            left = _MARGIN + i * (cell_w + _SPACING)
            canvas[top:top + picture.shape[0], left:left + picture.shape[1]] = picture
            origins[(outcome, i)] = (left, top)
        top += cell_h + _SPACING
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for xy, text in texts:
        draw.text(xy, text, fill=(0, 0, 0), font=font)
    return GradcamGrid(np.asarray(image), origins, scale)


def plot_gradcam_grid(rows: dict[str, list[tuple[np.ndarray, np.ndarray, str]]], title: str,
                      path: Path) -> Path:
    """:func:`draw_gradcam_grid` written to ``path`` as a PNG of pixels only."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw_gradcam_grid(rows, title).pixels).save(path, format="PNG")
    return path
