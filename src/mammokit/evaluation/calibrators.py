"""Fitting calibrators: monotone maps from raw logits to calibrated logits, chosen on held-out data. The maps
themselves (`Calibrator`, `LevelCalibration`, reading them from a released model) live in `release.calibration`.

Two families, both fitted by minimising the NLL on a held-out split:
- temperature scaling, z / T (Guo et al. 2017): one parameter, symmetric, the issue's baseline;
- beta calibration, a·log σ(z) − b·log σ(−z) + c with a, b ≥ 0 (Kull, Silva Filho & Flach 2017). Since
  log σ(z) − log σ(−z) = z it contains temperature scaling (a = b = 1/T, c = 0) and Platt scaling (a = b); for
  very negative z the slope is a, for very positive z it is b, so it can sharpen one side and flatten the other. The
  constraint a, b ≥ 0 keeps the map monotone (rankings and AUC never change); b = 0 caps the top probability at
  σ(c), which is what a model that is over-confident on its most suspicious-looking negatives needs.

`fit_level_calibration` always fits the temperature (it is reported), and with `method="auto"` keeps beta only when
its patient-grouped cross-validated NLL on the held-out split beats the temperature's by more than `MIN_NLL_GAIN`:
an in-sample comparison would always favour the three-parameter map.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from mammokit.errors import InvalidInputError
from mammokit.evaluation.calibration import NoTemperatureError, fit_temperature
from mammokit.release.calibration import METHODS, Calibrator, LevelCalibration

MIN_NLL_GAIN = 1e-3  # nats per case beta must win by, in cross-validation, to replace the temperature


def _binary(logits: ArrayLike, labels: ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    z, y = np.asarray(logits, dtype=np.float64).ravel(), np.asarray(labels, dtype=np.float64).ravel()
    if z.shape != y.shape or z.size == 0:
        raise ValueError(f"{name}: logits and labels must be non-empty and of equal length, got {z.size} and {y.size}")
    if not np.all(np.isfinite(z)):
        raise ValueError(f"{name}: logits contain NaN or infinity")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(f"{name}: labels must be 0 or 1")
    return z, y


def _nll(q: np.ndarray, y: np.ndarray) -> float:
    """Mean binary NLL of logits q."""
    return float(np.mean(-(y * log_expit(q) + (1 - y) * log_expit(-q))))


def fit_beta_calibration(logits: ArrayLike, labels: ArrayLike) -> tuple[float, float, float]:
    """(a, b, c) minimising the NLL of a·log σ(z) − b·log σ(−z) + c, with a, b ≥ 0 (L-BFGS-B, analytic gradient)."""
    z, y = _binary(logits, labels, "fit_beta_calibration")
    if y.min() == y.max():
        raise InvalidInputError("fit_beta_calibration: needs positive and negative cases")
    features = np.stack([log_expit(z), -log_expit(-z), np.ones_like(z)], axis=1)

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        q = features @ theta
        return _nll(q, y), features.T @ (expit(q) - y) / y.size

    result = minimize(loss_and_grad, np.array([1.0, 1.0, 0.0]), jac=True, method="L-BFGS-B",
                      bounds=[(0.0, None), (0.0, None), (None, None)], options={"maxiter": 500, "gtol": 1e-10})
    a, b, c = (float(v) for v in result.x)
    if not all(math.isfinite(v) for v in (a, b, c)):
        raise RuntimeError(f"fit_beta_calibration: optimisation diverged ({result.message})")
    return a, b, c


def fit_calibrator(logits: ArrayLike, labels: ArrayLike, method: str) -> Calibrator:
    """Fit one method ("temperature" or "beta") on all the given cases."""
    z, y = _binary(logits, labels, f"fit_calibrator({method})")
    if method == "temperature":
        return Calibrator("temperature", {"T": fit_temperature(z.copy(), y.copy())})
    if method == "beta":
        return Calibrator("beta", dict(zip("abc", fit_beta_calibration(z, y), strict=True)))
    raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")


def cross_validated_nll(logits: ArrayLike, labels: ArrayLike, groups: ArrayLike | None = None, *, folds: int = 5,
                        seed: int = 0) -> dict[str, float]:
    """Per method, the mean NLL on held-out folds (groups, e.g. patients, never straddle folds), plus "none".

    Fold assignment is a seeded permutation of the groups. A fold whose training part lacks a class, or admits no
    temperature (`NoTemperatureError`: e.g. a small fold the logits separate), is skipped; if every fold is skipped
    the result is empty.
    """
    z, y = _binary(logits, labels, "cross_validated_nll")
    g = np.arange(z.size) if groups is None else np.asarray(groups)
    if g.shape != z.shape:
        raise ValueError(f"cross_validated_nll: {g.size} groups for {z.size} cases")
    unique, inverse = np.unique(g, return_inverse=True)
    fold_of_group = np.random.default_rng(seed).permutation(unique.size) % max(2, min(folds, unique.size))
    fold = fold_of_group[inverse]
    totals, used = dict.fromkeys(("none", *METHODS), 0.0), 0
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        if y[train].min() == y[train].max():
            continue
        try:
            fitted = {method: fit_calibrator(z[train], y[train], method) for method in METHODS}
        except NoTemperatureError:
            continue
        totals["none"] += _nll(z[test], y[test]) * test.sum()
        for method, calibrator in fitted.items():
            totals[method] += _nll(calibrator.logits(z[test]), y[test]) * test.sum()
        used += int(test.sum())
    return {m: t / used for m, t in totals.items()} if used else {}


def fit_level_calibration(logits: ArrayLike, labels: ArrayLike, *, method: str = "auto",
                          groups: ArrayLike | None = None, source: str = "", seed: int = 0) -> LevelCalibration:
    """Fit the temperature and, for `method` "beta" or "auto", beta calibration; "auto" keeps beta only when its
    cross-validated NLL beats the temperature's by more than `MIN_NLL_GAIN` nats per case.

    Where the NLL of logits / T has no finite minimum (`NoTemperatureError`), "temperature" is refused with the
    reason; "auto" and "beta" choose beta calibration (its intercept can fix an offset) and keep T = 1 as the
    level's temperature, with the reason in `note`, instead of storing a temperature that runs off to 0 or ∞.
    """
    if method not in ("auto", *METHODS):
        raise ValueError(f"calibration method must be auto, temperature or beta; got {method!r}")
    try:
        temperature, note = fit_calibrator(logits, labels, "temperature"), ""
    except NoTemperatureError as err:
        if method == "temperature":
            raise NoTemperatureError(f"{source or 'calibration'}: {err}; --method beta or auto fits an intercept "
                                     "as well") from err
        temperature, note = Calibrator("temperature", {"T": 1.0}), f"no temperature fitted, T = 1 kept: {err}"
    cv = cross_validated_nll(logits, labels, groups, seed=seed) if method == "auto" else {}
    beta_wins = bool(cv) and cv["beta"] < cv["temperature"] - MIN_NLL_GAIN
    if method == "beta" or (method == "auto" and (beta_wins or note)):
        return LevelCalibration(fit_calibrator(logits, labels, "beta"), temperature, cv, source, note)
    return LevelCalibration(temperature, temperature, cv, source, note)
