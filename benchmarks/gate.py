"""What the honest gate costs and what it changes, side by side in one run.

Two comparisons on synthetic test splits scored by real metric code:

- speed: the champion comparison as it was (two point estimates) against the paired patient
  bootstrap of the difference (both models scored on each resample), and against the
  single-model intervals the evaluate stage already computes;
- quality: the F1 interval of a weak model when resamples with no true positive are dropped
  (the old bootstrap) against counting them as 0 (as the point estimate does), and how often a
  point-estimate comparison promotes a challenger that is truly worse by 0.05 F1, against the
  paired interval.

Usage:
    python benchmarks/gate.py [--images 123] [--resamples 1000] [--trials 40]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from medimg.evaluation.bootstrap import bootstrap_intervals, paired_differences, patient_resamples
from medimg.evaluation.metrics import compute_metrics

NAMES = ["normal", "pneumonia"]


def _split(rng: np.random.Generator, n: int, separation: float):
    """Labels, positive-class scores and patients (about 4 images each) of one test split."""
    y = rng.integers(0, 2, n)
    p = np.clip(separation * y + (1 - separation) * rng.random(n), 0, 1)
    return y, p, np.arange(n) // 4


def _probs(p: np.ndarray) -> np.ndarray:
    return np.stack([1 - p, p], axis=1)


def speed(n: int, resamples: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    y, p, patients = _split(rng, n, 0.35)
    q = np.clip(p + rng.normal(0, 0.05, n), 0, 1)
    t = time.perf_counter()
    compute_metrics(y, _probs(p), NAMES, 0.5), compute_metrics(y, _probs(q), NAMES, 0.5)
    points = time.perf_counter() - t
    t = time.perf_counter()
    paired_differences(y, (_probs(q), 0.5), (_probs(p), 0.5), NAMES, patients,
                       ("f1", "recall"), resamples)
    paired = time.perf_counter() - t
    t = time.perf_counter()
    bootstrap_intervals(y, _probs(p), NAMES, 0.5, patients, resamples)
    single = time.perf_counter() - t
    return {"point_comparison_s": points, "paired_bootstrap_s": paired,
            "single_model_intervals_s": single,
            "paired_over_single_model_intervals": paired / single}


def inflation(resamples: int) -> dict[str, float]:
    """A weak model: 3 positives among 60 patients, one found, two false alarms."""
    y = np.r_[np.ones(3, int), np.zeros(57, int)]
    p = np.r_[0.9, 0.2, 0.3, 0.8, 0.7, np.full(55, 0.1)]
    probs = _probs(p)
    kept = bootstrap_intervals(y, probs, NAMES, 0.5, np.arange(60), resamples, seed=1)["f1"]
    dropped = []
    for index in patient_resamples(np.arange(60), resamples, seed=1):
        if ((p[index] >= 0.5) & (y[index] == 1)).any():
            dropped.append(compute_metrics(y[index], probs[index], NAMES, 0.5)["f1"])
    low, high = np.quantile(dropped, [0.025, 0.975])
    return {"point_f1": compute_metrics(y, probs, NAMES, 0.5)["f1"],
            "zeros_dropped_low": float(low), "zeros_dropped_high": float(high),
            "zeros_dropped_resamples": len(dropped),
            "zeros_counted_low": kept["low"], "zeros_counted_high": kept["high"]}


def wrong_promotions(n: int, resamples: int, trials: int, margin: float = 0.02
                     ) -> dict[str, float]:
    """How often a challenger truly worse than the champion is promoted: point estimates
    within the margin, against the paired interval's lower end above -margin."""
    rng = np.random.default_rng(7)
    by_point = by_paired = 0
    gaps = []
    for _ in range(trials):
        y, p, patients = _split(rng, n, 0.45)
        # the challenger: the champion's scores with a share of its right calls spoilt
        q = p.copy()
        flip = rng.random(n) < 0.08
        q[flip] = 1 - q[flip]
        ours = compute_metrics(y, _probs(q), NAMES, 0.5)["f1"]
        theirs = compute_metrics(y, _probs(p), NAMES, 0.5)["f1"]
        gaps.append(ours - theirs)
        by_point += ours >= theirs - margin
        d = paired_differences(y, (_probs(q), 0.5), (_probs(p), 0.5), NAMES, patients, ("f1",),
                               resamples, seed=int(rng.integers(1 << 30)))["f1"]
        by_paired += d["low"] is not None and d["low"] > -margin
    return {"trials": trials, "mean_f1_difference": float(np.mean(gaps)),
            "promoted_by_point_estimate": by_point / trials,
            "promoted_by_paired_interval": by_paired / trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=123)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args()
    figures = {"speed": speed(args.images, args.resamples),
               "inflation": inflation(args.resamples),
               "wrong_promotions": wrong_promotions(args.images, 200, args.trials)}
    s, i, w = figures["speed"], figures["inflation"], figures["wrong_promotions"]
    print(f"comparison time: points {s['point_comparison_s']:.3f}s, paired bootstrap "
          f"{s['paired_bootstrap_s']:.1f}s ({s['paired_over_single_model_intervals']:.2f}x the "
          f"single-model intervals, {s['single_model_intervals_s']:.1f}s)")
    print(f"weak model F1 {i['point_f1']:.3f}: zeros dropped [{i['zeros_dropped_low']:.2f}, "
          f"{i['zeros_dropped_high']:.2f}] from {i['zeros_dropped_resamples']} resamples; "
          f"zeros counted [{i['zeros_counted_low']:.2f}, {i['zeros_counted_high']:.2f}]")
    print(f"a worse challenger promoted: {w['promoted_by_point_estimate']:.0%} by point "
          f"estimate, {w['promoted_by_paired_interval']:.0%} by paired interval "
          f"({w['trials']} trials, mean F1 difference {w['mean_f1_difference']:+.3f})")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
