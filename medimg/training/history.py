"""The per-epoch training history file, ``reports/train_history.csv``: written by training,
read by evaluation (the training-curves plot) and the MLflow run (metrics by step)."""

from __future__ import annotations

import csv
from pathlib import Path

HISTORY_FILE = "train_history.csv"


def write_history(path: Path, history: dict[str, list[float]]) -> None:
    """One row per epoch, a column per metric."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(history)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *keys])
        for epoch in range(len(history[keys[0]])):
            writer.writerow([epoch + 1, *(f"{history[k][epoch]:.6g}" for k in keys)])


def read_history(path: Path) -> dict[str, list[float]]:
    """The file back as ``{metric: value per epoch}``; empty when there is none."""
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {}) if k != "epoch"}
