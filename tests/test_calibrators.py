"""Beta calibration and the choice between it and temperature scaling, on data drawn from known maps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, log_expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from mammokit.evaluation.calibration import NoTemperatureError, expected_calibration_error
from mammokit.evaluation.calibrators import cross_validated_nll, fit_beta_calibration, fit_level_calibration
from mammokit.release.calibration import Calibrator, LevelCalibration, calibration_from_config


def _draw(n: int, true_logit, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw logits and labels drawn from sigmoid(true_logit(z))."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-0.5, 2.5, n)
    return z, (rng.uniform(size=n) < expit(true_logit(z))).astype(float)


def test_beta_recovers_known_parameters() -> None:
    a, b, c = 1.6, 0.5, -0.4
    z, y = _draw(40_000, lambda z: a * log_expit(z) - b * log_expit(-z) + c, seed=1)
    np.testing.assert_allclose(fit_beta_calibration(z, y), (a, b, c), atol=0.08)


def test_beta_is_logistic_regression_on_its_two_features_when_unconstrained() -> None:
    """Where the optimum has a, b > 0, it is plain logistic regression on (log σ(z), −log σ(−z))."""
    z, y = _draw(3_000, lambda z: 0.8 * z + 0.3, seed=2)
    features = np.stack([log_expit(z), -log_expit(-z)], axis=1)
    reference = LogisticRegression(C=1e12, tol=1e-12, max_iter=10_000).fit(features, y)
    np.testing.assert_allclose(fit_beta_calibration(z, y), [*reference.coef_[0], reference.intercept_[0]],
                               rtol=1e-3, atol=1e-3)


def test_beta_stays_monotone_when_the_data_want_it_to_turn_down() -> None:
    """Positives rarer at the very top than below it: the unconstrained fit would make b < 0 (non-monotone)."""
    z, y = _draw(5_000, lambda z: np.where(z > 1, 2.0 - z, z), seed=3)
    features = np.stack([log_expit(z), -log_expit(-z)], axis=1)
    assert LogisticRegression(C=1e12, max_iter=10_000).fit(features, y).coef_[0, 1] < 0
    a, b, c = fit_beta_calibration(z, y)
    assert a > 0 and b == 0.0
    cal = Calibrator("beta", {"a": a, "b": b, "c": c})
    grid = np.linspace(-8, 8, 401)
    assert np.all(np.diff(cal.probabilities(grid)) >= 0)
    assert roc_auc_score(y, cal.probabilities(z)) == pytest.approx(roc_auc_score(y, z))


def test_temperature_is_the_special_case_a_equals_b() -> None:
    z = np.linspace(-6, 6, 13)
    np.testing.assert_allclose(Calibrator("beta", {"a": 0.5, "b": 0.5, "c": 0.0}).logits(z),
                               Calibrator("temperature", {"T": 2.0}).logits(z), atol=1e-12)
    t_data = _draw(20_000, lambda z: z / 2.0, seed=4)
    a, b, c = fit_beta_calibration(*t_data)
    assert a == pytest.approx(0.5, abs=0.04) and b == pytest.approx(0.5, abs=0.04) and c == pytest.approx(0, abs=0.06)


def test_auto_keeps_temperature_when_that_is_the_truth_and_beta_when_it_is_not() -> None:
    z, y = _draw(4_000, lambda z: z / 1.7, seed=5)
    fitted = fit_level_calibration(z, y, method="auto")
    assert fitted.chosen.method == "temperature" and fitted.chosen.params["T"] == pytest.approx(1.7, rel=0.08)
    assert set(fitted.cv_nll) == {"none", "temperature", "beta"}

    def capped(z: np.ndarray) -> np.ndarray:  # sharper below, capped at sigmoid(1.5) above: no temperature fits
        return 1.4 * log_expit(z) + 1.5
    z, y = _draw(4_000, capped, seed=6)
    fitted = fit_level_calibration(z, y, method="auto", source="held-out")
    assert fitted.chosen.method == "beta" and fitted.temperature.method == "temperature"
    assert fitted.cv_nll["beta"] < fitted.cv_nll["temperature"]
    z_test, y_test = _draw(20_000, capped, seed=7)
    ece_beta = expected_calibration_error(y_test, fitted.chosen.probabilities(z_test))
    ece_t = expected_calibration_error(y_test, fitted.temperature.probabilities(z_test))
    assert ece_beta < 0.02 and ece_t > 3 * ece_beta, (ece_beta, ece_t)


def test_cross_validation_keeps_patients_together() -> None:
    """Duplicated cases of one patient in train and test folds would reward memorising: groups prevent it."""
    z, y = _draw(200, lambda z: z, seed=8)
    groups = np.repeat(np.arange(100), 2)
    a = cross_validated_nll(z, y, groups, seed=0)
    b = cross_validated_nll(z, y, groups[::-1].copy(), seed=0)  # relabelled groups, same pairing
    assert a.keys() == b.keys() == {"none", "temperature", "beta"}
    assert cross_validated_nll(z[:4], np.array([1.0, 0, 0, 0])) in ({}, cross_validated_nll(z[:4], [1, 0, 0, 0]))


def test_serialisation_and_legacy_configs() -> None:
    fitted = LevelCalibration(Calibrator("beta", {"a": 1.4, "b": 0.0, "c": 1.5}),
                              Calibrator("temperature", {"T": 1.35}), {"beta": 0.3, "temperature": 0.4}, "val")
    config = {"temperature": 1.35, "calibration": {"exam": fitted.to_dict()}}
    loaded = calibration_from_config(config)
    assert loaded["exam"] == fitted
    assert loaded["breast"].chosen == Calibrator("temperature", {"T": 1.35})  # only the exam level was stored
    assert calibration_from_config({})["exam"].chosen.logits(2.0) == 2.0
    assert "sigmoid(logit / T)" in loaded["breast"].chosen.formula()


@pytest.mark.parametrize("bad", [("beta", {"a": -1.0, "b": 0.0, "c": 0.0}), ("temperature", {"T": 0.0}),
                                 ("temperature", {"a": 1.0}), ("isotonic", {})])
def test_invalid_calibrators_are_refused(bad: tuple[str, dict]) -> None:
    with pytest.raises(ValueError):
        Calibrator(*bad)


def test_fitting_needs_both_classes_and_finite_logits() -> None:
    with pytest.raises(ValueError, match="positive and negative"):
        fit_beta_calibration([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        fit_level_calibration([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError, match="auto, temperature or beta"):
        fit_level_calibration([0.1, 0.2], [0, 1], method="platt")


def test_folds_without_a_temperature_are_skipped_and_a_whole_split_without_one_is_refused() -> None:
    """Ten cases the logit's sign separates except one: the folds that leave the mistake out admit no temperature
    (skipped), the fold that trains on it does; a split with no mistake at all is refused for "temperature", and an
    offset split gets beta calibration under "auto", with T = 1 and the reason kept."""
    z = np.array([3.0, 2.0, 1.5, 1.0, 0.5, -0.5, -1.0, -1.5, -2.0, 0.8])
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])  # the last case: a negative with a positive logit
    cv = cross_validated_nll(z, y, folds=5, seed=0)
    assert set(cv) == {"none", "temperature", "beta"} and all(np.isfinite(v) for v in cv.values())
    with pytest.raises(NoTemperatureError, match="own side"):
        fit_level_calibration(z[:-1], y[:-1], method="temperature")
    offset = fit_level_calibration(np.array([-1.0, -1.2, -1.1, -1.5, -1.05]), np.array([1, 1, 1, 0, 0]),
                                   method="auto")
    assert offset.chosen.method == "beta" and offset.temperature.params["T"] == 1.0 and "T = ∞" in offset.note
    assert LevelCalibration.from_dict(offset.to_dict()).note == offset.note
