"""Temperature scaling: fitted on validation, stored in the bundle, applied wherever it predicts."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medimg.bundle import BundleMeta, ModelBundle
from medimg.calibration import apply_temperature, calibrate, fit_temperature
from medimg.evaluation.metrics import ece_of


def _overconfident(n: int, sharpen: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from true probabilities, and a model that reports those probabilities'
    logits multiplied by ``sharpen``: right on ranking, too sure of itself."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.02, 0.98, n)
    labels = (rng.uniform(size=n) < truth).astype(np.int64)
    logit = np.log(truth / (1 - truth)) * sharpen
    p = 1 / (1 + np.exp(-logit))
    return labels, np.stack([1 - p, p], axis=1)


def test_temperature_scaling_lowers_the_ece_of_an_overconfident_model():
    val_labels, val_probs = _overconfident(2000, sharpen=3.0, seed=1)
    test_labels, test_probs = _overconfident(2000, sharpen=3.0, seed=2)
    fitted = calibrate(val_labels, val_probs, "temperature")
    assert fitted.temperature == pytest.approx(3.0, rel=0.15)  # it undoes the sharpening
    assert fitted.ece_before > 0.08 and fitted.ece_after < 0.03
    assert fitted.brier_after < fitted.brier_before and fitted.nll_after < fitted.nll_before
    # on cases it was not fitted on too, and without changing any ranking
    after = apply_temperature(test_probs, fitted.temperature)
    assert ece_of(test_labels, after) < ece_of(test_labels, test_probs) / 3
    assert roc_auc_score(test_labels, after[:, 1]) == pytest.approx(
        roc_auc_score(test_labels, test_probs[:, 1]))
    assert np.allclose(after.sum(axis=1), 1.0)


def test_an_underconfident_model_is_sharpened():
    labels, probs = _overconfident(2000, sharpen=0.4, seed=3)
    assert fit_temperature(labels, probs, "temperature")[0] == pytest.approx(0.4, rel=0.15)


def test_several_classes_are_scaled_together():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(1500, 3)) * 2
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in truth])
    sharp = np.exp(logits * 2.5)
    probs = sharp / sharp.sum(axis=1, keepdims=True)
    fitted = calibrate(labels, probs)  # platt: several classes take the temperature
    assert fitted.temperature == pytest.approx(2.5, rel=0.15) and fitted.bias == 0.0
    assert fitted.ece_after < fitted.ece_before
    assert (apply_temperature(probs, fitted.temperature).argmax(axis=1)
            == probs.argmax(axis=1)).all()


@pytest.mark.parametrize("labels", [np.zeros(50, np.int64), np.zeros(0, np.int64)])
def test_nothing_to_fit_keeps_the_probabilities(labels: np.ndarray):
    probs = np.tile([[0.3, 0.7]], (len(labels), 1))
    assert fit_temperature(labels, probs) == (1.0, 0.0)
    assert calibrate(labels, probs, "none").temperature == 1.0


def test_the_bundle_applies_its_temperature_to_every_prediction(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    out = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="probability",
                             kernel_initializer=keras.initializers.Constant(0.05),
                             bias_initializer=keras.initializers.Constant(-3.0))(x)
    model = keras.Model(inputs, out)
    images = np.stack([np.full((8, 8, 1), v, np.uint8) for v in (0, 40, 80, 160, 250)])
    meta = BundleMeta(["normal", "disease"], 8, 1, {}, temperature=2.0)
    ModelBundle(model, meta).save(tmp_path / "bundle")
    bundle = ModelBundle.load(tmp_path / "bundle")
    assert bundle.meta.temperature == 2.0
    raw = bundle.predict_packed(images, calibrated=False)
    calibrated = bundle.predict_packed(images)
    assert np.allclose(calibrated, apply_temperature(raw, 2.0))
    # softened towards 1/2: the logit halves
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert np.allclose(logit(calibrated[:, 1]), logit(raw[:, 1]) / 2, atol=1e-5)
    assert (np.abs(calibrated[:, 1] - 0.5) < np.abs(raw[:, 1] - 0.5)).all()


def test_platt_scaling_also_undoes_a_prior_shift():
    """Class-weighted training shifts every logit towards the rarer class: a temperature
    cannot move it back, Platt's intercept can."""
    rng = np.random.default_rng(5)
    truth = rng.uniform(0.02, 0.98, 3000)
    labels = (rng.uniform(size=3000) < truth).astype(np.int64)
    shifted = 1 / (1 + np.exp(-(np.log(truth / (1 - truth)) * 2.0 + 1.5)))
    probs = np.stack([1 - shifted, shifted], axis=1)
    platt, temperature = calibrate(labels, probs, "platt"), calibrate(labels, probs, "temperature")
    assert platt.temperature == pytest.approx(2.0, rel=0.15)
    assert platt.bias == pytest.approx(-0.75, abs=0.2)
    assert platt.ece_after < 0.03 < temperature.ece_after < platt.ece_before


def test_a_saturated_model_gets_finite_calibrated_probabilities():
    """Every validation film called certain: the fit stays within its bounds and the result
    is the base rate, not a number thrown far by an ill-conditioned solve."""
    labels = np.array([1] * 389 + [0] * 135)
    probs = np.tile([[1e-9, 1 - 1e-9]], (len(labels), 1))
    fitted = calibrate(labels, probs, "platt")
    assert np.exp(-3) <= fitted.temperature <= np.exp(3) and np.isfinite(fitted.bias)
    after = apply_temperature(probs, fitted.temperature, fitted.bias)
    assert after[:, 1] == pytest.approx(np.full(len(labels), labels.mean()), abs=0.01)
    assert fitted.nll_after < fitted.nll_before
