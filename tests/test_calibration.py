"""Calibration metrics on hand-made and synthetic data; temperature scaling recovers a known temperature."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit, softmax

from mammokit.evaluation.calibration import (
    NoTemperatureError,
    apply_temperature,
    brier_score,
    ece_if_calibrated,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram,
)


def test_ece_hand_example_uniform_and_quantile() -> None:
    y = np.array([0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.7, 0.9])
    # two equal-width bins: {0.1, 0.2}: conf 0.15, acc 0.5; {0.7, 0.9}: conf 0.8, acc 1.0
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.5 * 0.35 + 0.5 * 0.2)
    # four equal-width bins: [0, .25) holds 0.1 and 0.2, [.5, .75) holds 0.7, [.75, 1] holds 0.9
    assert expected_calibration_error(y, p, n_bins=4) == pytest.approx(0.5 * 0.35 + 0.25 * 0.3 + 0.25 * 0.1)
    # four equal-mass bins: one sample each, |y - p| averaged
    assert expected_calibration_error(y, p, n_bins=4, strategy="quantile") == pytest.approx((0.1 + 0.8 + 0.3 + 0.1) / 4)
    diag = reliability_diagram(y, p, n_bins=4)
    assert diag["counts"].tolist() == [2, 0, 1, 1]
    np.testing.assert_allclose(diag["bin_centers"], [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(diag["accuracy"][[0, 2, 3]], [0.5, 1.0, 1.0])
    np.testing.assert_allclose(diag["confidence"][[0, 2, 3]], [0.15, 0.7, 0.9])
    assert np.isnan(diag["accuracy"][1])
    assert reliability_diagram([0, 1], [0.0, 1.0], n_bins=10)["counts"].tolist() == [1] + [0] * 8 + [1]


def test_equal_mass_bins_sizes() -> None:
    p = np.linspace(0, 1, 103)
    diag = reliability_diagram(np.zeros(103), p, n_bins=10, strategy="quantile")
    assert diag["counts"].tolist() == [11, 11, 11] + [10] * 7
    assert diag["bin_edges"][0] == 0 and diag["bin_edges"][-1] == 1
    assert np.all(np.diff(diag["bin_edges"]) > 0)


def test_ece_near_zero_when_calibrated_and_large_when_not() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    y = (rng.random(p.size) < p).astype(int)
    for strategy in ("uniform", "quantile"):
        assert expected_calibration_error(y, p, 15, strategy) < 0.01
        # overconfident scores: p pushed towards 0/1 while outcomes follow the original p
        sharp = expit(3 * (np.log(p) - np.log1p(-p)))
        assert expected_calibration_error(y, sharp, 15, strategy) > 0.1


def test_ece_floor_of_a_perfectly_calibrated_model() -> None:
    # one bin, two cases at p = 0.5: mean(y) is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4, so E[ECE] = 0.25
    assert ece_if_calibrated([0.5, 0.5], n_bins=1, n_sim=20_000) == pytest.approx(0.25, abs=0.01)
    assert ece_if_calibrated([0.0, 1.0, 1.0, 0.0]) == 0.0  # certain outcomes: no sampling noise at all
    rng = np.random.default_rng(1)
    small, large = rng.random(250), rng.random(4000)
    f_small, f_large = ece_if_calibrated(small, n_sim=300), ece_if_calibrated(large, n_sim=300)
    assert f_large == pytest.approx(f_small / 4, rel=0.25)  # shrinks like 1 / sqrt(N)
    assert ece_if_calibrated(small, n_sim=300) == f_small  # seeded
    # the measured ECE of calibrated outcomes sits at the floor, not at zero
    measured = [expected_calibration_error((rng.random(250) < small).astype(int), small) for _ in range(300)]
    assert np.mean(measured) == pytest.approx(f_small, rel=0.1)


def test_brier_and_errors() -> None:
    assert brier_score([0, 1, 1], [0.2, 0.6, 1.0]) == pytest.approx((0.04 + 0.16 + 0.0) / 3)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        brier_score([0, 1], [0.2, 1.2])
    with pytest.raises(ValueError, match="0 or 1"):
        expected_calibration_error([0, 3], [0.2, 0.3])
    with pytest.raises(ValueError, match="strategy"):
        expected_calibration_error([0, 1], [0.2, 0.3], strategy="kmeans")


def test_fit_temperature_recovers_known_temperature_binary() -> None:
    rng = np.random.default_rng(1)
    t_true = 2.5
    z = rng.normal(0, 4, 40_000)
    y = (rng.random(z.size) < expit(z / t_true)).astype(float)
    t_hat = fit_temperature(z, y)
    assert t_hat == pytest.approx(t_true, rel=0.05)

    # the fitted T is a minimum of the NLL: a nudge either way is worse
    def nll(t: float) -> float:
        q = np.clip(expit(z / t), 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

    assert nll(t_hat) < nll(t_hat * 1.02) and nll(t_hat) < nll(t_hat / 1.02)
    p_cal = apply_temperature(z, t_hat, probabilities=True)
    assert expected_calibration_error(y, p_cal) < expected_calibration_error(y, expit(z))
    assert expected_calibration_error(y, p_cal) < 0.02


def test_fit_temperature_multiclass_and_torch_input() -> None:
    rng = np.random.default_rng(2)
    t_true = 0.5  # under-confident logits
    z = rng.normal(0, 1, (30_000, 3))
    probs = softmax(z / t_true, axis=1)
    labels = (rng.random(z.shape[0])[:, None] > probs.cumsum(axis=1)).sum(axis=1)
    t_hat = fit_temperature(torch.tensor(z, dtype=torch.float32), torch.tensor(labels))
    assert t_hat == pytest.approx(t_true, rel=0.05)
    scaled = apply_temperature(torch.tensor(z), 2.0)
    assert isinstance(scaled, torch.Tensor) and torch.allclose(scaled, torch.tensor(z) / 2)
    np.testing.assert_allclose(apply_temperature(z, 2.0, probabilities=True), softmax(z / 2, axis=1))
    with pytest.raises(ValueError, match="class labels"):
        fit_temperature(z[:4], np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(z, 0.0)


@pytest.mark.parametrize(("logits", "labels", "message"), [
    ([2.0, 1.0, -1.0, -3.0], [1, 1, 0, 0], "own side"),  # NLL falls towards T = 0
    ([2.0, 0.0, 0.0, -3.0], [1, 1, 0, 0], "own side"),  # ties at 0 are on no wrong side either
    ([-2.0, -1.0, 1.0, 3.0], [1, 1, 0, 0], "T = ∞"),  # inverted: NLL falls towards T = ∞
    ([-1.0, -1.0, -1.0, -1.5], [1, 1, 1, 0], "T = ∞"),  # ranks well, but offset: no intercept to fix it
    ([0.0, 0.0, 0.0, 0.0], [1, 0, 1, 0], "T = ∞"),  # no signal at all
    ([1.0, 1.0], [1, 1], "two classes"),
])
def test_fit_temperature_refuses_where_the_nll_has_no_finite_minimum(logits, labels, message) -> None:
    """Before, these returned T ≈ 1e-9 or T ≈ 6.7e9 and `calibrate` stored it."""
    with pytest.raises(NoTemperatureError, match=message):
        fit_temperature(np.array(logits), np.array(labels))


def test_a_finite_minimum_is_still_found_next_to_the_refused_cases() -> None:
    """One mistake is enough for a minimum: the fitted T is where the NLL's derivative vanishes."""
    z, y = np.array([2.0, 1.0, -1.0, -3.0, 0.5]), np.array([1, 1, 0, 0, 0])
    t = fit_temperature(z, y)
    beta = 1.0 / t
    grad = np.sum((1.0 / (1.0 + np.exp(-beta * z)) - y) * z)  # dNLL/dβ, summed
    assert 0 < t < 100 and abs(grad) < 1e-6
