"""Model quality: the seed's recipe against medimg's defaults, side by side, on real films.

On the development set (``../shared/data/pneumoniamnist_trainval.npz``: PneumoniaMNIST's official
train and val splits, real paediatric chest radiographs at 28x28), one run trains and evaluates:

- **the seed's recipe**: the seed CNN at 224x224 in RGB, its augmentation (rotation 15 degrees,
  shifts 0.1, shear 0.1, zoom 0.1), Adam at 1e-3, binary cross-entropy, batch 32, 10 epochs
  (no early stopping, no schedule, no class weights), no calibration and a 0.5 threshold;
- **the defaults**: ``params.yaml`` as shipped (residual CNN, ``base.image_size: auto``, class
  weights, cosine schedule, early stopping, calibration, ``train.mixed_precision: auto``, the
  operating point chosen on validation).

Both run medimg's own stages (ingest, validate, preprocess, train, evaluate) in workspaces of
their own, from one ingest. The test split is carved from the development *train* split, per
patient (every MedMNIST image is its own patient) and stratified by label; the development val
split is the validation split both train against, and was what the defaults were chosen on, so
it is never scored here.

Each is reported with ROC-AUC and its patient-bootstrap interval, accuracy, recall and
specificity at its operating point, ECE (and before calibration), and wall time (preprocess,
train and evaluate). The last line printed is one JSON object with every figure.

Usage:
    python benchmarks/quality.py [--data PATH] [--test-fraction 0.15] [--seed-epochs 10]
                                 [--seed-size 224] [--default-epochs N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
DEV_SET = HERE.parent.parent / "shared" / "data" / "pneumoniamnist_trainval.npz"
PSEUDONYM_KEY = "medimg-quality-benchmark-key"
SEED_RECIPE = {
    "base": {"image_size": 224, "channels": 3},
    "model": {"architecture": "seed_cnn", "filters": [32, 64], "dense_units": 128,
              "dropout": 0.5},
    "augment": {"rotation_degrees": 15.0, "width_shift": 0.1, "height_shift": 0.1,
                "shear": 0.1, "zoom": 0.1, "horizontal_flip": False},
    "train": {"epochs": 10, "batch_size": 32, "learning_rate": 0.001, "loss": "cross_entropy",
              "lr_schedule": "constant", "class_weight": "none",
              "early_stopping_patience": 10_000, "restore_best_weights": False,
              "threshold_method": "fixed", "threshold": 0.5, "calibration": "none",
              "mixed_precision": False},
}
REPORTED = ("roc_auc", "accuracy", "recall", "specificity", "precision", "f1", "ece", "brier")


def carve(source: Path, out: Path, test_fraction: float, seed: int) -> dict[str, int]:
    """The development set with a test split carved from its train split, stratified by label
    (each image its own patient); val is kept as it is. Returns the split sizes."""
    with np.load(source) as data:
        images, labels = data["train_images"], data["train_labels"].reshape(-1)
        val_images, val_labels = data["val_images"], data["val_labels"].reshape(-1)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        test[rng.choice(members, round(test_fraction * len(members)), replace=False)] = True
    np.savez(out, train_images=images[~test], train_labels=labels[~test],
             val_images=val_images, val_labels=val_labels,
             test_images=images[test], test_labels=labels[test])
    return {"train": int((~test).sum()), "val": len(val_labels), "test": int(test.sum())}


def merge_params(base: dict, overrides: dict) -> dict:
    sys.path.insert(0, str(HERE))
    from retrain import merge_params as merge  # the benchmarks' one params merge

    return merge(base, overrides)


def write_params(root: Path, overrides: dict) -> None:
    """The shipped params.yaml with ``overrides`` over it, into ``root``."""
    params = merge_params(yaml.safe_load((HERE.parent / "params.yaml").read_text()), overrides)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_workspace(root: Path, overrides: dict) -> Path:
    """A workspace with the shipped params.yaml, ``overrides`` over it."""
    root.mkdir(parents=True)
    write_params(root, overrides)
    shutil.copy(HERE.parent / "dvc.yaml", root / "dvc.yaml")
    return root


def ingest(root: Path, source: Path) -> None:
    from medimg.data.stage import run_ingest
    from medimg.settings import read_settings
    from medimg.validation.stage import run_validate
    from medimg.workspace import Workspace

    ws = Workspace(root)
    run_ingest(ws, ws.config, read_settings(), [source], dedupe=True)
    run_validate(ws, Workspace(root).config)


def contender(name: str, root: Path, ingested: Path, overrides: dict) -> dict:
    """Preprocess, train and evaluate in a workspace of its own; its figures and times."""
    from medimg.evaluation.stage import run_evaluate
    from medimg.preprocessing.stage import run_preprocess
    from medimg.training.stage import run_train
    from medimg.workspace import Workspace

    shutil.copytree(ingested, root)
    write_params(root, overrides)
    ws = Workspace(root)
    config = ws.config
    times = {}
    print(f"[{name}] image size {config.base.image_size}, {config.model.architecture}",
          flush=True)
    start = time.perf_counter()
    run_preprocess(ws, config)
    times["preprocess_s"] = time.perf_counter() - start
    start = time.perf_counter()
    trained = run_train(ws, config)
    times["train_s"] = time.perf_counter() - start
    start = time.perf_counter()
    run_evaluate(ws, config)
    times["evaluate_s"] = time.perf_counter() - start
    times["wall_s"] = sum(times.values())
    metrics = json.loads(ws.metrics_path.read_text())
    run = json.loads((ws.reports_dir / "train_run.json").read_text())
    out = {k: metrics[k] for k in REPORTED}
    out.update({
        "roc_auc_ci": [metrics["ci"]["roc_auc"]["low"], metrics["ci"]["roc_auc"]["high"]],
        "ece_uncalibrated": metrics["ece_uncalibrated"],
        "threshold": metrics["threshold"],
        "image_size": config.base.image_size,
        "architecture": config.model.architecture,
        "epochs_run": trained.epochs_run,
        "dtype_policy": run["precision"],
        "precision_timings_ms": run.get("precision_timings"),
        "calibration": metrics["calibration"],
        "test_n": metrics["n"],
        **{k: round(v, 1) for k, v in times.items()},
    })
    print(f"[{name}] ROC-AUC {out['roc_auc']:.4f} ({out['roc_auc_ci'][0]:.4f}-"
          f"{out['roc_auc_ci'][1]:.4f}), accuracy {out['accuracy']:.3f}, recall "
          f"{out['recall']:.3f}, specificity {out['specificity']:.3f}, ECE {out['ece']:.4f} "
          f"(uncalibrated {out['ece_uncalibrated']:.4f}), {out['wall_s']:.0f}s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEV_SET)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--seed-epochs", type=int, default=10)
    parser.add_argument("--seed-size", type=int, default=224)
    parser.add_argument("--default-epochs", type=int, default=None,
                        help="override the defaults' train.epochs (a quick check of the script)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the workspaces here")
    args = parser.parse_args()
    if not args.data.is_file():  # `make bench` goes on without it
        reason = (f"{args.data} is not there: this benchmark needs the development set "
                  "(../shared/data/pneumoniamnist_trainval.npz, see its README)")
        print(f"skipped: {reason}")
        print(json.dumps({"skipped": reason}))
        return
    os.environ.setdefault("MEDIMG_PSEUDONYM_KEY", PSEUDONYM_KEY)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    scratch = Path(tempfile.mkdtemp(prefix="medimg-quality-")) if args.keep is None else args.keep
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        sizes = carve(args.data, scratch / "dev_carved.npz", args.test_fraction, seed=0)
        print(f"splits: {sizes} (test carved from the development train split)", flush=True)
        ingested = make_workspace(scratch / "ingested", {})
        ingest(ingested, scratch / "dev_carved.npz")
        seed = SEED_RECIPE | {
            "base": {**SEED_RECIPE["base"], "image_size": args.seed_size},
            "train": {**SEED_RECIPE["train"], "epochs": args.seed_epochs}}
        results = {
            "seed_recipe": contender("seed recipe", scratch / "seed", ingested, seed),
            "defaults": contender("defaults", scratch / "defaults", ingested, {"train": {
                "checkpoint": False,
                **({"epochs": args.default_epochs} if args.default_epochs else {})}}),
        }
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    s, d = results["seed_recipe"], results["defaults"]
    summary = {
        "data": args.data.name, "splits": sizes, "cpu_count": os.cpu_count(),
        **results,
        "roc_auc_gain": round(d["roc_auc"] - s["roc_auc"], 4),
        # the gain counts when the defaults' interval sits wholly above the seed's estimate
        "roc_auc_gain_beyond_interval": d["roc_auc_ci"][0] > s["roc_auc_ci"][1],
        "ece_target_met": d["ece"] <= 0.05,
        "wall_time_ratio": round(d["wall_s"] / s["wall_s"], 3),
    }
    print(f"defaults vs seed recipe: ROC-AUC {d['roc_auc']:.4f} vs {s['roc_auc']:.4f} "
          f"(+{summary['roc_auc_gain']:.4f}; beyond the intervals: "
          f"{summary['roc_auc_gain_beyond_interval']}), ECE {d['ece']:.4f} vs {s['ece']:.4f}, "
          f"wall time {summary['wall_time_ratio']:.2f}x the seed's", flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    main()
