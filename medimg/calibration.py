"""Calibration: probabilities that mean what they say.

A network trained on a small set is often over- or underconfident: of the cases it calls 95 %
sick, far fewer (or more) than 95 % are; class-weighted training also shifts every probability
towards the rarer class. After training, on the validation split, one of:

- temperature scaling (Guo et al., 2017): one scalar ``T`` divides the model's logits,
  ``softmax(log p / T)`` (for one sigmoid unit, ``sigmoid(logit p / T)``);
- Platt scaling (two classes): ``sigmoid(logit p / T + bias)``, a slope and an intercept, which
  also undoes the prior shift of class weights.

Neither changes any ranking, so ROC-AUC and the order of cases stay as they are, and with one or
two parameters neither can overfit a validation split the way a per-bin method can. The
functions here use NumPy alone: the bundle applies them wherever a model predicts.

The bundle stores ``T`` (and the bias) and applies them in
:meth:`medimg.bundle.ModelBundle.predict_packed`, so every path that predicts (evaluation, the
registered pyfunc, the review app) gives the same calibrated probabilities, and the operating
point is chosen on them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# T is searched on log T in this range: 1/20 (sharpen) to 20 (soften)
_LOG_T_BOUNDS = (-3.0, 3.0)
_EPS = 1e-7


def brier_score(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Brier score: the positive class's squared error for two classes, the sum over classes of
    the squared error for more."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if len(y_true) == 0:
        return float("nan")
    if probs.shape[1] == 2:
        return float(np.mean((probs[:, 1] - y_true) ** 2))
    return float(np.mean(np.sum((probs - np.eye(probs.shape[1])[y_true]) ** 2, axis=1)))


def ece_of(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The ECE ``compute_metrics`` reports: the positive class's for two classes, the top
    class's for more."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[1] == 2:
        return expected_calibration_error(y_true == 1, probs[:, 1])
    return expected_calibration_error(probs.argmax(axis=1) == y_true, probs.max(axis=1))


def _calibration_bins(hit: np.ndarray, confidence: np.ndarray, bins: int
                      ) -> dict[str, list[float]]:
    """Mean confidence, observed frequency and count per equal-width bin that holds images."""
    hit = np.asarray(hit, dtype=float)
    confidence = np.asarray(confidence, dtype=float)
    which = np.clip(np.digitize(confidence, np.linspace(0, 1, bins + 1)[1:-1], right=True),
                    0, bins - 1)
    out: dict[str, list[float]] = {"confidence": [], "frequency": [], "count": []}
    for b in range(bins):
        inside = which == b
        if inside.any():
            out["confidence"].append(float(confidence[inside].mean()))
            out["frequency"].append(float(hit[inside].mean()))
            out["count"].append(int(inside.sum()))
    return out


def expected_calibration_error(hit: np.ndarray, confidence: np.ndarray, bins: int = 10) -> float:
    """ECE: the image-weighted mean gap between confidence and frequency in equal-width bins.

    Binary models pass the positive class (``hit`` = is positive, ``confidence`` = its
    probability); multi-class models pass the top class (hit = it is right).
    """
    if len(hit) == 0:
        return float("nan")
    b = _calibration_bins(hit, confidence, bins)
    gaps = np.abs(np.subtract(b["confidence"], b["frequency"])) * np.asarray(b["count"])
    return float(gaps.sum() / len(hit))


def _log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, np.float64), _EPS, 1.0))


def apply_temperature(probs: np.ndarray, temperature: float, bias: float = 0.0) -> np.ndarray:
    """Class probabilities ``(N, K)`` rescaled by ``temperature`` and, for two classes, shifted
    by ``bias`` on the logit (Platt scaling); 1.0 and 0.0 return them as given."""
    probs = np.asarray(probs, np.float64)
    if (temperature == 1.0 and bias == 0.0) or probs.size == 0:
        return probs
    z = _log_probs(probs) / temperature
    if probs.shape[1] == 2:
        z[:, 1] += bias
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    labels = np.asarray(labels, np.int64)
    if len(labels) == 0:
        return float("nan")
    return float(-_log_probs(probs)[np.arange(len(labels)), labels].mean())


def _golden(f, low: float, high: float, tol: float = 1e-4) -> float:
    """The minimum of a unimodal ``f`` on ``[low, high]`` by golden-section search."""
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2.0


def _best_bias(z: np.ndarray, y: np.ndarray) -> float:
    """The intercept that minimises the logistic NLL of ``sigmoid(z + b)`` (convex in ``b``):
    Newton's method, each step clipped so a saturated model cannot throw it far."""
    b = 0.0
    for _ in range(100):
        q = 1.0 / (1.0 + np.exp(-np.clip(z + b, -60, 60)))
        gradient, curvature = float(np.mean(q - y)), float(np.mean(q * (1 - q)))
        step = float(np.clip(gradient / max(curvature, 1e-6), -2.0, 2.0))
        b -= step
        if abs(step) < 1e-7:
            break
    return b


def _platt_targets(labels: np.ndarray) -> np.ndarray:
    """Platt's (1999) targets, ``(N+ + 1) / (N+ + 2)`` for positives and ``1 / (N- + 2)`` for
    negatives: a validation split the model separates perfectly would otherwise drive the fit
    to infinite confidence."""
    positives = float(labels.sum())
    negatives = float(len(labels) - positives)
    return np.where(labels == 1, (positives + 1) / (positives + 2), 1.0 / (negatives + 2))


def _binary_loss(z: np.ndarray, y: np.ndarray) -> float:
    q = np.clip(1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))), _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


def _binary_fit(labels: np.ndarray, probs: np.ndarray, with_bias: bool) -> tuple[float, float]:
    """``(temperature, bias)`` for ``sigmoid(logit p / T + bias)`` against Platt's targets:
    ``T`` searched on log T within the bounds, the best bias for each (or none)."""
    p = np.clip(probs[:, 1], _EPS, 1 - _EPS)
    z = np.log(p / (1 - p))
    y = _platt_targets(labels)

    def loss(log_t: float) -> float:
        scaled = z / np.exp(log_t)
        return _binary_loss(scaled + (_best_bias(scaled, y) if with_bias else 0.0), y)

    temperature = float(np.exp(_golden(loss, *_LOG_T_BOUNDS)))
    return temperature, _best_bias(z / temperature, y) if with_bias else 0.0


def fit_temperature(labels: np.ndarray, probs: np.ndarray, method: str = "temperature"
                    ) -> tuple[float, float]:
    """``(temperature, bias)`` that minimise the NLL of ``apply_temperature`` on these cases.

    ``temperature``: one scalar, bias 0. ``platt`` (two classes): a slope and an intercept on
    the logit, which also undoes the prior shift of class-weighted training; several classes
    fall back to the temperature. ``(1.0, 0.0)``, no change, when there is nothing to fit (no
    cases, one class present), when the fit would flip the ranking, or when it does not help.
    """
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float64)
    if method == "none" or len(labels) == 0 or len(np.unique(labels)) < 2:
        return 1.0, 0.0
    if probs.shape[1] == 2:
        fitted = _binary_fit(labels, probs, with_bias=method == "platt")
    else:
        log_t = _golden(lambda v: nll(labels, apply_temperature(probs, float(np.exp(v)))),
                        *_LOG_T_BOUNDS)
        fitted = (float(np.exp(log_t)), 0.0)
    if nll(labels, apply_temperature(probs, *fitted)) >= nll(labels, probs):
        return 1.0, 0.0
    return fitted


@dataclass(frozen=True)
class Calibration:
    """The fitted temperature and what it did on the split it was fitted on."""

    method: str
    temperature: float
    bias: float
    n: int
    ece_before: float
    ece_after: float
    brier_before: float
    brier_after: float
    nll_before: float
    nll_after: float

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def calibrate(labels: np.ndarray, probs: np.ndarray, method: str = "platt") -> Calibration:
    """Fit ``method`` ("platt", "temperature", or "none" to keep the probabilities) and
    measure ECE, Brier and NLL before and after on the same cases."""
    labels = np.asarray(labels, np.int64)
    temperature, bias = fit_temperature(labels, probs, method)
    temperature, bias = round(temperature, 6), round(bias, 6)
    after = apply_temperature(probs, temperature, bias)
    if method == "platt" and np.asarray(probs).shape[1] != 2:
        method = "temperature"  # what several classes get
    return Calibration(
        method=method, temperature=temperature, bias=bias, n=len(labels),
        ece_before=ece_of(labels, probs), ece_after=ece_of(labels, after),
        brier_before=brier_score(labels, probs), brier_after=brier_score(labels, after),
        nll_before=nll(labels, probs), nll_after=nll(labels, after),
    )
