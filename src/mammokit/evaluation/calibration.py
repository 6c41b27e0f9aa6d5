"""Calibration: ECE (equal-width and equal-mass bins), Brier score, reliability-diagram data, temperature scaling.

For binary malignancy probabilities the reliability is that of the positive class: in each bin the mean predicted
probability ("confidence") is compared with the observed share of positives ("accuracy"), which is what a
radiologist reading "23% risk" needs to be true. Temperature scaling divides logits by one scalar T fitted on a
held-out set; it changes calibration and never the ranking (AUC is unchanged).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from mammokit.errors import InvalidInputError

BIN_STRATEGIES = ("uniform", "quantile")


def _check_probs(y: ArrayLike, p: ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    y_arr, p_arr = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    if y_arr.ndim != 1 or y_arr.shape != p_arr.shape:
        raise ValueError(
            f"{name}: labels and probabilities must be 1-D of equal length, got {y_arr.shape} and {p_arr.shape}"
        )
    if y_arr.size == 0:
        raise ValueError(f"{name}: no samples")
    if not np.all((y_arr == 0) | (y_arr == 1)):
        raise ValueError(f"{name}: labels must be 0 or 1")
    if not np.all(np.isfinite(p_arr)) or p_arr.min() < 0 or p_arr.max() > 1:
        raise ValueError(f"{name}: probabilities must be finite and in [0, 1]")
    return y_arr, p_arr


def _bin_index(p: np.ndarray, n_bins: int, strategy: str) -> tuple[np.ndarray, np.ndarray]:
    """Bin of each sample and the bin edges (n_bins + 1)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        # bins [0, 1/n), [1/n, 2/n), ..., [(n-1)/n, 1]
        return np.clip(np.floor(p * n_bins).astype(np.int64), 0, n_bins - 1), edges
    if strategy == "quantile":
        if n_bins > p.size:
            raise ValueError(f"quantile bins: n_bins={n_bins} exceeds the {p.size} samples")
        sorted_p = np.sort(p)
        sizes = np.full(n_bins, p.size // n_bins) + (np.arange(n_bins) < p.size % n_bins)  # np.array_split sizes
        by_position = np.repeat(np.arange(n_bins), sizes)
        # tied scores all go to the bin of their first sorted position: bins depend on the scores, not the row order
        index = by_position[np.searchsorted(sorted_p, p, side="left")]
        return index, _quantile_edges(sorted_p, np.sort(index), n_bins)
    raise ValueError(f"strategy must be one of {BIN_STRATEGIES}, got {strategy!r}")


def _quantile_edges(sorted_p: np.ndarray, sorted_bin: np.ndarray, n_bins: int) -> np.ndarray:
    """Edges of equal-mass bins: each bin's lowest score, then the highest score; an empty bin (its share taken by
    a tie in the bin below) gets the lower edge of the next non-empty bin."""
    starts = np.searchsorted(sorted_bin, np.arange(n_bins), side="left")  # n when no later bin is filled
    return np.r_[np.r_[sorted_p, sorted_p[-1]][starts], sorted_p[-1]]


def reliability_diagram(y: ArrayLike, p: ArrayLike, n_bins: int = 10, strategy: str = "uniform") -> dict[str, Any]:
    """Per-bin data for a reliability diagram.

    Args:
        y, p: labels (0/1) and predicted probabilities of the positive class.
        n_bins: number of bins.
        strategy: "uniform" (equal-width bins on [0, 1]) or "quantile" (equal-mass: the samples sorted by p split
            into n_bins groups whose sizes differ by at most one, except that tied scores stay together in the bin
            of the first of them, which can leave the next bin smaller or empty).

    Returns:
        {"bin_edges", "bin_centers", "accuracy" (share of positives), "confidence" (mean p), "counts"}; empty bins
        have NaN accuracy and confidence.
    """
    y_arr, p_arr = _check_probs(y, p, "reliability_diagram")
    index, edges = _bin_index(p_arr, n_bins, strategy)
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=y_arr, minlength=n_bins) / counts
        confidence = np.bincount(index, weights=p_arr, minlength=n_bins) / counts
    return {
        "bin_edges": edges,
        "bin_centers": (edges[:-1] + edges[1:]) / 2,
        "accuracy": accuracy,
        "confidence": confidence,
        "counts": counts,
    }


def expected_calibration_error(y: ArrayLike, p: ArrayLike, n_bins: int = 15, strategy: str = "uniform") -> float:
    """ECE = Σ_b (n_b / N) · |accuracy_b - confidence_b| over non-empty bins (bins as in `reliability_diagram`)."""
    diag = reliability_diagram(y, p, n_bins, strategy)
    counts = diag["counts"]
    used = counts > 0
    gaps = np.abs(diag["accuracy"][used] - diag["confidence"][used])
    return float(np.sum(counts[used] * gaps) / counts.sum())


def ece_if_calibrated(p: ArrayLike, n_bins: int = 15, strategy: str = "uniform", *, n_sim: int = 500,
                      seed: int = 0) -> float:
    """The ECE a perfectly calibrated model would measure on these predictions: its finite-sample floor.

    ECE is biased upward on small sets: even outcomes drawn from `p` itself leave per-bin gaps of order
    sqrt(p(1 - p) / n_b). This is the mean ECE over `n_sim` such draws (seeded), so a measured ECE can be read
    against it; with 200 exams and 15 bins the floor is about 0.05, and it shrinks like 1/sqrt(N).
    """
    p_arr = np.asarray(p, dtype=np.float64)
    _check_probs(np.zeros_like(p_arr), p_arr, "ece_if_calibrated")
    index, _ = _bin_index(p_arr, n_bins, strategy)  # bins depend on p only: the same for every draw
    one_hot = np.eye(n_bins)[index]
    rng = np.random.default_rng(seed)
    total = 0.0
    for start in range(0, n_sim, 64):  # 64 draws at a time bounds memory on large sets
        draws = rng.uniform(size=(min(64, n_sim - start), p_arr.size)) < p_arr
        # ECE = Σ_b n_b |acc_b - conf_b| / N = Σ_b |Σ_{i in b} (y_i - p_i)| / N
        total += float(np.abs((draws - p_arr) @ one_hot).sum())
    return total / (n_sim * p_arr.size)


def brier_score(y: ArrayLike, p: ArrayLike) -> float:
    """Mean squared difference between the predicted probability and the 0/1 outcome."""
    y_arr, p_arr = _check_probs(y, p, "brier_score")
    return float(np.mean((p_arr - y_arr) ** 2))


def _as_tensor(x: ArrayLike | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64).cpu()
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _nll(logits: torch.Tensor, labels: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    scaled = logits / temperature
    if logits.ndim == 1:
        return F.binary_cross_entropy_with_logits(scaled, labels)
    return F.cross_entropy(scaled, labels.long())


class NoTemperatureError(InvalidInputError):
    """The NLL of logits / T has no finite minimum on these cases, so no temperature can be fitted."""


def _check_binary_minimum(z: torch.Tensor, t: torch.Tensor) -> None:
    """Raise `NoTemperatureError` unless the binary NLL, convex in β = 1/T, has its minimum at a finite β > 0."""
    n_pos, n_neg = int((t == 1).sum()), int((t == 0).sum())
    slope = float(((t - 0.5) * z).sum())  # −dNLL/dβ at β = 0, up to a positive factor
    if slope <= 0:
        raise NoTemperatureError(
            f"fit_temperature: on these {n_pos} positive and {n_neg} negative cases Σ (y − ½)·logit = {slope:.3g} ≤ 0, "
            "so the NLL falls all the way to T = ∞ (every probability ½): the logits are offset or do not rank the "
            "classes, and a temperature alone (no intercept) cannot calibrate them")
    if bool(((2 * t - 1) * z >= 0).all()):
        raise NoTemperatureError(
            f"fit_temperature: the sign of the logit puts all {n_pos} positive and all {n_neg} negative cases on "
            "their own side, so the NLL falls towards T = 0 (every probability 0 or 1) and has no minimum; "
            "calibrate on a larger split, where the model makes mistakes")

def fit_temperature(
    logits: ArrayLike | torch.Tensor, labels: ArrayLike | torch.Tensor, *, max_iter: int = 200, tol: float = 1e-10
) -> float:
    """Temperature T minimising the NLL of logits / T on held-out labels (Guo et al. 2017).

    Optimises log T (so T stays positive) with L-BFGS and a strong-Wolfe line search, in float64. Refused, with
    `NoTemperatureError`, where the NLL has no finite minimum to find: labels of one class; binary logits with
    Σ (y − ½)·z ≤ 0 (offset, or not ranking the classes: the NLL falls towards T = ∞, every probability ½); and binary
    logits whose sign already separates the classes (the NLL falls towards T = 0, every probability 0 or 1).

    Args:
        logits: (N,) binary logits (one per sample, sigmoid sense) or (N, C) multi-class logits.
        labels: (N,) 0/1 labels for binary logits, or class indices 0..C-1 for (N, C) logits.
    """
    z, t = _as_tensor(logits), _as_tensor(labels)
    if z.ndim not in (1, 2) or t.ndim != 1 or z.shape[0] != t.shape[0]:
        raise ValueError(
            f"fit_temperature: logits (N,) or (N, C) and labels (N,) expected, got {tuple(z.shape)}, {tuple(t.shape)}"
        )
    if z.shape[0] == 0:
        raise ValueError("fit_temperature: no samples")
    if not torch.isfinite(z).all():
        raise ValueError("fit_temperature: logits contain NaN or infinity")
    if z.ndim == 1 and not ((t == 0) | (t == 1)).all():
        raise ValueError("fit_temperature: binary labels must be 0 or 1")
    if z.ndim == 2 and (((t < 0) | (t >= z.shape[1])).any() or (t != t.round()).any()):
        raise ValueError(f"fit_temperature: class labels must be integers in [0, {z.shape[1]})")
    if t.unique().numel() < 2:
        raise NoTemperatureError(f"fit_temperature: all {t.numel()} labels are {t[0].item():g}; a temperature needs "
                                "cases of two classes (positive and negative): on one class its NLL says nothing "
                                "about calibration")
    if z.ndim == 1:
        _check_binary_minimum(z, t)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [log_t], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=tol, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _nll(z, t, log_t.exp())
        loss.backward()
        return loss

    opt.step(closure)
    temperature = float(log_t.detach().exp())
    if not math.isfinite(temperature) or temperature <= 0:
        raise RuntimeError(f"fit_temperature: optimisation diverged (T = {temperature})")
    return temperature


def apply_temperature(
    logits: ArrayLike | torch.Tensor, temperature: float, *, probabilities: bool = False
) -> np.ndarray | torch.Tensor:
    """Logits divided by T (same type as the input), or with `probabilities=True` the calibrated probabilities
    (sigmoid for (N,) logits, softmax over the last axis for (N, C))."""
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"apply_temperature: temperature must be a positive finite number, got {temperature}")
    is_tensor = isinstance(logits, torch.Tensor)
    z = logits if is_tensor else torch.as_tensor(np.asarray(logits, dtype=np.float64))
    scaled = z / temperature
    if probabilities:
        scaled = torch.sigmoid(scaled) if scaled.ndim <= 1 else torch.softmax(scaled, dim=-1)
    return scaled if is_tensor else scaled.numpy()
