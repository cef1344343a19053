"""The drift statistics: PSI with a two-sample KS test (numeric), or with chi-square (categories).

Pure functions over arrays; :mod:`medimg.drift.report` turns their numbers into verdicts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2_contingency, ks_2samp

EPSILON = 1e-4
"""The share an empty bin counts as, so that PSI's logarithm stays finite."""
MIN_PER_BIN = 20
"""Values the smaller sample puts in each PSI bin, at least: with fewer, PSI's sampling noise
alone (about ``(bins - 1) * (1/n_reference + 1/n_incoming)``, more with empty bins) reaches
the usual thresholds, and an unshifted batch would read as drift."""


@dataclass(frozen=True)
class Comparison:
    """One feature's numbers: the test's statistic and p-value, and the PSI."""

    statistic: float
    p_value: float
    psi: float


def psi(reference_shares: np.ndarray, incoming_shares: np.ndarray) -> float:
    """Population stability index of two distributions over the same bins (shares sum to 1)."""
    ref = np.clip(np.asarray(reference_shares, dtype=float), EPSILON, None)
    inc = np.clip(np.asarray(incoming_shares, dtype=float), EPSILON, None)
    return float(np.sum((inc - ref) * np.log(inc / ref)))


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """The inner bin edges: the reference's quantiles, repeated values merged.

    The outer bins are open, so an incoming value beyond the reference's range still counts. A
    constant reference gives one edge at its value: bins ``<= value`` and ``> value``.
    """
    levels = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    return np.unique(np.quantile(reference, levels))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of ``values`` in the bins ``(-inf, e0], (e0, e1], ..., (ek, inf)``."""
    index = np.searchsorted(edges, values, side="left")
    return np.bincount(index, minlength=len(edges) + 1) / max(len(values), 1)


def usable_bins(bins: int, n_reference: int, n_incoming: int) -> int:
    """``bins``, or fewer (at least 2) so the smaller sample fills each with
    :data:`MIN_PER_BIN` values."""
    return max(2, min(bins, min(n_reference, n_incoming) // MIN_PER_BIN))


def compare_numeric(reference: np.ndarray, incoming: np.ndarray, bins: int) -> Comparison:
    """PSI over the reference's quantile bins (at most ``bins``, see :func:`usable_bins`), and
    the two-sample Kolmogorov-Smirnov test."""
    edges = quantile_edges(reference, usable_bins(bins, len(reference), len(incoming)))
    with warnings.catch_warnings():
        # with many ties scipy falls back from the exact p-value to the asymptotic one, and says so
        warnings.filterwarnings("ignore", "ks_2samp: Exact calculation", RuntimeWarning)
        test = ks_2samp(reference, incoming)
    return Comparison(float(test.statistic), float(test.pvalue),
                      psi(bin_shares(reference, edges), bin_shares(incoming, edges)))


def compare_categorical(reference: list[str], incoming: list[str]) -> Comparison:
    """PSI over the category frequencies, and the chi-square test of the 2 x k table.

    One category on both sides is no evidence of drift: statistic 0, p-value 1.
    """
    categories = sorted(set(reference) | set(incoming))
    table = np.array([[reference.count(c) for c in categories],
                      [incoming.count(c) for c in categories]], dtype=float)
    shares = table / table.sum(axis=1, keepdims=True)
    if len(categories) < 2:
        return Comparison(0.0, 1.0, 0.0)
    test = chi2_contingency(table, correction=False)
    return Comparison(float(test.statistic), float(test.pvalue), psi(shares[0], shares[1]))
