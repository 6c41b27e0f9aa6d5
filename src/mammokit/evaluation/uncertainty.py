"""Uncertainty summaries from N stochastic passes (MC-dropout or test-time augmentation) of binary probabilities.

For stacked probabilities P of shape (N passes, M samples):
    mean       p̄ = mean over passes
    std        spread of the passes (ddof configurable, population std by default)
    predictive entropy   H(p̄) = -p̄ log p̄ - (1-p̄) log(1-p̄): total uncertainty
    expected entropy     mean over passes of H(p_n): the aleatoric part
    mutual information   H(p̄) - mean H(p_n) (BALD, Houlsby et al. 2011): disagreement between passes, the
                         epistemic part; >= 0 by concavity of H, 0 when all passes agree.
Entropies are in nats (base e) unless `base` is given (base=2 gives bits, so a 50/50 prediction has entropy 1).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import entr

from mammokit.evaluation.metrics import roc_auc


def binary_entropy(p: ArrayLike, base: float | None = None) -> np.ndarray:
    """Entropy of Bernoulli(p), elementwise; H(0) = H(1) = 0 exactly."""
    p_arr = np.asarray(p, dtype=np.float64)
    h = entr(p_arr) + entr(1.0 - p_arr)
    return h / np.log(base) if base is not None else h


def summarize_passes(probs: ArrayLike, *, base: float | None = None, ddof: int = 0) -> dict[str, np.ndarray]:
    """Per-sample mean, std, predictive entropy, expected entropy and mutual information over the passes.

    Args:
        probs: (N, M) probabilities from N stochastic passes over M samples (a (M,) array is one pass).
        base: logarithm base of the entropies (None = e).
        ddof: delta degrees of freedom of the std.

    Returns:
        {"mean", "std", "predictive_entropy", "expected_entropy", "mutual_information"}, each of shape (M,).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = p[None, :]
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"summarize_passes: probs must be (N passes, M samples), got shape {np.shape(probs)}")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ValueError("summarize_passes: probs must be finite probabilities in [0, 1]")
    if ddof >= p.shape[0]:
        raise ValueError(f"summarize_passes: ddof={ddof} needs more than {p.shape[0]} passes")
    mean = p.mean(axis=0)
    predictive = binary_entropy(mean, base)
    expected = binary_entropy(p, base).mean(axis=0)
    return {
        "mean": mean,
        "std": p.std(axis=0, ddof=ddof),
        "predictive_entropy": predictive,
        "expected_entropy": expected,
        "mutual_information": np.clip(predictive - expected, 0.0, None),  # rounding can dip below 0
    }


def misclassified(labels: ArrayLike, probs: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """Boolean errors of the call p >= threshold against 0/1 labels (the targets of `error_detection_auc`)."""
    y, p = np.asarray(labels, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"misclassified: {y.shape} labels but {p.shape} probabilities")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("misclassified: labels must be 0 or 1")
    return (p >= threshold) != (y == 1)


def error_detection_auc(uncertainty: ArrayLike, errors: ArrayLike) -> float:
    """ROC-AUC of an uncertainty score for flagging misclassified samples (0.5 = uninformative, 1 = perfect).

    Raises ValueError when `errors` holds only errors or only correct samples (the AUC is undefined).
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    e = np.asarray(errors)
    if e.dtype != bool and not np.all((e == 0) | (e == 1)):
        raise ValueError("error_detection_auc: errors must be boolean or 0/1")
    try:
        return roc_auc(e.astype(np.int8), u)
    except ValueError as err:
        raise ValueError(f"error_detection_auc: {err}") from err
