"""The drift plot: one small panel per feature, reference against incoming."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medimg.drift.results import FeatureDrift
from medimg.evaluation.plots import _figure, _save

_COLUMNS = 4


def plot_drift(features: Sequence[FeatureDrift], path: Path) -> Path:
    """Histograms (numeric) or category shares (categorical) of both sets, a panel per feature
    that was recorded, titled with its verdict."""
    shown = [f for f in features if f.verdict != "not recorded"]
    plt = _figure()
    rows = max(1, -(-len(shown) // _COLUMNS))
    fig, axes = plt.subplots(rows, _COLUMNS, figsize=(3.0 * _COLUMNS, 2.3 * rows), dpi=90,
                             squeeze=False)
    for ax in axes.ravel()[len(shown):]:
        ax.set_axis_off()
    for ax, feature in zip(axes.ravel(), shown, strict=False):
        if feature.kind == "numeric":
            _histograms(ax, np.asarray(feature.reference_values),
                        np.asarray(feature.incoming_values))
        else:
            _shares(ax, list(feature.reference_values), list(feature.incoming_values))
        ax.set_title(f"{feature.name}: {feature.verdict}", fontsize=8,
                     color="tab:red" if feature.verdict == "drift" else "black")
        ax.tick_params(labelsize=6)
    axes.ravel()[0].legend(fontsize=6)
    return _save(plt, fig, path)


def _histograms(ax, ref: np.ndarray, new: np.ndarray) -> None:
    both = np.concatenate([ref, new])
    edges = np.histogram_bin_edges(both, bins=20) if len(both) else np.linspace(0.0, 1.0, 2)
    for values, label in ((ref, "reference"), (new, "incoming")):
        if len(values):  # a density of no values is 0/0
            ax.hist(values, bins=edges, density=True, alpha=0.5, label=label)


def _shares(ax, ref: list[str], new: list[str]) -> None:
    categories = sorted(set(ref) | set(new))
    x = np.arange(len(categories))
    for offset, values, label in ((-0.2, ref, "reference"), (0.2, new, "incoming")):
        shares = [values.count(c) / max(len(values), 1) for c in categories]
        ax.bar(x + offset, shares, width=0.4, alpha=0.7, label=label)
    ax.set_xticks(x, categories, fontsize=6, rotation=30)
