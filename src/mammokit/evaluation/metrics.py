"""Classification metrics for one prediction level (exam or breast): ROC-AUC with patient-level bootstrap CIs,
operating points at fixed specificity / sensitivity, PR-AUC, probabilistic F1, and per-group breakdowns.

Conventions: `y` is 0/1, `p` a score where higher means more likely malignant, and a case is called positive
when p >= threshold. Results are plain dicts of floats (NaN where undefined, e.g. AUC of a single-class group) so
they go straight into metrics.json.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

DEFAULT_SPECIFICITIES = (0.90, 0.95)
DEFAULT_SENSITIVITIES = (0.90, 0.95)


def _check_binary(y: ArrayLike, p: ArrayLike, name: str = "metrics") -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and scores; return (y as int8, p as float64)."""
    y_arr, p_arr = np.asarray(y), np.asarray(p, dtype=np.float64)
    if y_arr.ndim != 1 or p_arr.ndim != 1:
        raise ValueError(f"{name}: labels and scores must be 1-D, got shapes {y_arr.shape} and {p_arr.shape}")
    if y_arr.shape != p_arr.shape:
        raise ValueError(f"{name}: {y_arr.shape[0]} labels but {p_arr.shape[0]} scores")
    if y_arr.size == 0:
        raise ValueError(f"{name}: no samples")
    y_num = y_arr.astype(np.float64)
    if not np.all((y_num == 0) | (y_num == 1)):
        raise ValueError(f"{name}: labels must be 0 or 1 (found {np.unique(y_num)[:5]})")
    if not np.all(np.isfinite(p_arr)):
        raise ValueError(f"{name}: scores contain NaN or infinity")
    return y_num.astype(np.int8), p_arr


def _check_both_classes(y: np.ndarray, name: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise ValueError(f"{name}: needs both positive and negative samples (got {n_pos} of {y.size} positive)")


def roc_auc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the ROC curve via the Mann-Whitney statistic (ties count one half), equal to scikit-learn's."""
    y_arr, p_arr = _check_binary(y, p, "roc_auc")
    _check_both_classes(y_arr, "roc_auc")
    ranks = rankdata(p_arr)  # average ranks for ties
    n_pos = int(y_arr.sum())
    n_neg = y_arr.size - n_pos
    return float((ranks[y_arr == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _cluster_index(patient_ids: ArrayLike | None, n: int) -> tuple[np.ndarray, int]:
    """Map each row to a cluster index 0..K-1 (each row its own cluster when no ids are given)."""
    if patient_ids is None:
        return np.arange(n), n
    ids = np.asarray(patient_ids)
    if ids.shape != (n,):
        raise ValueError(f"patient_ids: expected {n} ids (one per row), got shape {ids.shape}")
    _, index = np.unique(ids.astype(str), return_inverse=True)
    return index.ravel(), int(index.max()) + 1


def _percentile_ci(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """Two-sided percentile interval of finite bootstrap replicates (NaNs when there are none)."""
    if not replicates.size:
        return float("nan"), float("nan")
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_auc(
    y: ArrayLike,
    p: ArrayLike,
    patient_ids: ArrayLike | None = None,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 256,
    return_replicates: bool = False,
) -> dict[str, Any]:
    """ROC-AUC with a percentile bootstrap CI, resampling patients (cluster bootstrap).

    Each replicate draws as many patients as there are, with replacement, and keeps all rows of every drawn patient
    (a patient drawn twice counts twice), so correlated rows of one patient (views, breasts, exams) never straddle
    the resample. Replicates are computed together: a replicate's AUC is the weighted Mann-Whitney statistic with
    each row weighted by how often its patient was drawn, evaluated from cumulative negative weights over the rows
    sorted by score once. Replicates without both classes are dropped (counted in `n_boot_valid`).

    Args:
        y, p: labels (0/1) and scores, one per row.
        patient_ids: cluster id per row; None resamples rows.
        n_boot: number of replicates.
        confidence: two-sided CI level.
        seed: seed of the resampling RNG.
        chunk: replicates computed per vectorised block (bounds memory at chunk × rows); each block draws its
            patients as `rng.integers(0, n_patients, size=(block, n_patients))`, patients indexed in sorted id order.
        return_replicates: also return the replicate AUCs (NaN for dropped ones) under "replicates".

    Returns:
        {"auc", "ci_low", "ci_high", "n_boot_valid"} (+ "replicates").
    """
    y_arr, p_arr = _check_binary(y, p, "bootstrap_auc")
    _check_both_classes(y_arr, "bootstrap_auc")
    if n_boot < 1:
        raise ValueError(f"bootstrap_auc: n_boot must be >= 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_auc: confidence must be in (0, 1), got {confidence}")
    n = y_arr.size
    cluster, n_clusters = _cluster_index(patient_ids, n)

    order = np.argsort(p_arr, kind="stable")
    ys, cs, ps = y_arr[order], cluster[order], p_arr[order]
    # level[i] = index of row i's distinct score; level_end[k] = last sorted row with score level k
    new_level = np.r_[True, ps[1:] != ps[:-1]]
    level = np.cumsum(new_level) - 1
    level_end = np.r_[np.flatnonzero(new_level)[1:] - 1, n - 1]
    pos_rows = np.flatnonzero(ys == 1)
    pos_level = level[pos_rows]
    neg_flag = (ys == 0).astype(np.float64)

    rng = np.random.default_rng(seed)
    aucs = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        r = min(chunk, n_boot - start)
        draws = rng.integers(0, n_clusters, size=(r, n_clusters))
        counts = np.bincount((draws + np.arange(r)[:, None] * n_clusters).ravel(), minlength=r * n_clusters)
        w = counts.reshape(r, n_clusters)[:, cs].astype(np.float64)  # (r, n) row weights in score order
        cum_neg = np.cumsum(w * neg_flag, axis=1)
        neg_through = cum_neg[:, level_end]  # negatives with score <= level k
        neg_below = np.concatenate([np.zeros((r, 1)), neg_through[:, :-1]], axis=1)
        below, tied = neg_below[:, pos_level], neg_through[:, pos_level] - neg_below[:, pos_level]
        w_pos = w[:, pos_rows]
        num = (w_pos * (below + 0.5 * tied)).sum(axis=1)
        total_pos, total_neg = w_pos.sum(axis=1), cum_neg[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            aucs[start : start + r] = np.where((total_pos > 0) & (total_neg > 0), num / (total_pos * total_neg), np.nan)
    valid = aucs[np.isfinite(aucs)]
    low, high = _percentile_ci(valid, confidence)
    out: dict[str, Any] = {
        "auc": roc_auc(y_arr, p_arr),
        "ci_low": float(low),
        "ci_high": float(high),
        "n_boot_valid": int(valid.size),
    }
    if return_replicates:
        out["replicates"] = aucs
    return out


def paired_auc_difference(
    y: ArrayLike,
    p_a: ArrayLike,
    p_b: ArrayLike,
    patient_ids: ArrayLike | None = None,
    *,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """AUC(a) - AUC(b) for two models scored on the same rows, with a paired patient-level bootstrap CI.

    Both models are resampled with the same patients in every replicate (`bootstrap_auc` with one seed), so the
    CI reflects how differently the two models rank the same cases, not the case-to-case noise they share.

    Returns:
        {"auc_a", "auc_b", "difference", "ci_low", "ci_high", "share_not_better"}; the last is the share of
        replicates where a does not beat b (a one-sided bootstrap p-value for "a is better").
    """
    kwargs = {"n_boot": n_boot, "confidence": confidence, "seed": seed, "return_replicates": True}
    a = bootstrap_auc(y, p_a, patient_ids, **kwargs)
    b = bootstrap_auc(y, p_b, patient_ids, **kwargs)
    diff = a["replicates"] - b["replicates"]
    diff = diff[np.isfinite(diff)]
    low, high = _percentile_ci(diff, confidence)
    return {"auc_a": a["auc"], "auc_b": b["auc"], "difference": a["auc"] - b["auc"], "ci_low": float(low),
            "ci_high": float(high), "share_not_better": float(np.mean(diff <= 0))}


def _operating_table(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate thresholds (distinct scores ascending, then +inf) with sensitivity and specificity at each."""
    thresholds = np.r_[np.unique(p), np.inf]
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    sens = (pos.size - np.searchsorted(pos, thresholds, side="left")) / pos.size  # share of positives with p >= t
    spec = np.searchsorted(neg, thresholds, side="left") / neg.size  # share of negatives with p < t
    return thresholds, sens, spec


def sensitivity_at_specificity(y: ArrayLike, p: ArrayLike, specificity: float = 0.9) -> dict[str, float]:
    """Best sensitivity among thresholds whose specificity is at least `specificity`.

    Among the thresholds (the distinct scores, and +inf) that reach the target and give that best sensitivity, the
    one returned is the highest, the most specific of them: lowering a threshold past negatives only costs
    specificity. A case is positive when p >= threshold. The achieved specificity is returned too, since with few
    negatives it can exceed the target.
    """
    y_arr, p_arr = _check_binary(y, p, "sensitivity_at_specificity")
    _check_both_classes(y_arr, "sensitivity_at_specificity")
    if not 0.0 <= specificity <= 1.0:
        raise ValueError(f"sensitivity_at_specificity: specificity must be in [0, 1], got {specificity}")
    thr, sens, spec = _operating_table(y_arr, p_arr)
    ok = spec >= specificity - 1e-12
    i = int(np.flatnonzero(ok & (sens == sens[ok].max()))[-1])  # spec grows with t: the last is the most specific
    return _operating_point(specificity, sens[i], spec[i], thr[i])


def specificity_at_sensitivity(y: ArrayLike, p: ArrayLike, sensitivity: float = 0.9) -> dict[str, float]:
    """Best specificity among thresholds whose sensitivity is at least `sensitivity`; among those giving it, the
    lowest threshold, the most sensitive of them."""
    y_arr, p_arr = _check_binary(y, p, "specificity_at_sensitivity")
    _check_both_classes(y_arr, "specificity_at_sensitivity")
    if not 0.0 <= sensitivity <= 1.0:
        raise ValueError(f"specificity_at_sensitivity: sensitivity must be in [0, 1], got {sensitivity}")
    thr, sens, spec = _operating_table(y_arr, p_arr)
    ok = sens >= sensitivity - 1e-12
    i = int(np.flatnonzero(ok & (spec == spec[ok].max()))[0])  # sens falls with t: the first is the most sensitive
    return _operating_point(sensitivity, sens[i], spec[i], thr[i])


def _operating_point(target: float, sensitivity: float, specificity: float, threshold: float) -> dict[str, float]:
    return {"target": float(target), "sensitivity": float(sensitivity), "specificity": float(specificity),
            "threshold": float(threshold)}


def average_precision(y: ArrayLike, p: ArrayLike) -> float:
    """PR-AUC as average precision: Σ_k (R_k - R_{k-1}) P_k over distinct thresholds (scikit-learn's definition)."""
    y_arr, p_arr = _check_binary(y, p, "average_precision")
    n_pos = int(y_arr.sum())
    if n_pos == 0:
        raise ValueError("average_precision: needs at least one positive sample")
    order = np.argsort(-p_arr, kind="stable")
    ps, ys = p_arr[order], y_arr[order]
    last_of_level = np.r_[ps[1:] != ps[:-1], True]  # thresholds are the distinct scores, descending
    tp = np.cumsum(ys)[last_of_level]
    predicted = (np.flatnonzero(last_of_level) + 1).astype(np.float64)
    precision, recall = tp / predicted, tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def probabilistic_f1(y: ArrayLike, p: ArrayLike) -> dict[str, float]:
    """Probabilistic F1 (the RSNA 2023 screening metric) for probabilities in [0, 1].

    pTP = Σ p over positives, pFP = Σ p over negatives, pPrecision = pTP / (pTP + pFP), pRecall = pTP / n_pos,
    pF1 = 2·pP·pR / (pP + pR); 0 where a denominator is 0.
    """
    y_arr, p_arr = _check_binary(y, p, "probabilistic_f1")
    if p_arr.min() < 0 or p_arr.max() > 1:
        raise ValueError("probabilistic_f1: scores must be probabilities in [0, 1]")
    n_pos = int(y_arr.sum())
    ptp, pfp = float(p_arr[y_arr == 1].sum()), float(p_arr[y_arr == 0].sum())
    precision = ptp / (ptp + pfp) if ptp + pfp > 0 else 0.0
    recall = ptp / n_pos if n_pos > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"pf1": f1, "p_precision": precision, "p_recall": recall}


def _safe(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a metric; NaN (or a dict of NaN) where it is undefined for this subset (e.g. one class only)."""
    try:
        return fn(*args, **kwargs)
    except ValueError:
        return float("nan")


def _nan_point(target: float) -> dict[str, float]:
    nan = float("nan")
    return {"target": float(target), "sensitivity": nan, "specificity": nan, "threshold": nan}


def summarize(
    y: ArrayLike,
    p: ArrayLike,
    groups: Mapping[str, ArrayLike] | ArrayLike | None = None,
    patient_ids: ArrayLike | None = None,
    *,
    specificities: Sequence[float] = DEFAULT_SPECIFICITIES,
    sensitivities: Sequence[float] = DEFAULT_SENSITIVITIES,
    threshold: float = 0.5,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """All classification metrics for one level (exam or breast) of probabilities `p` against labels `y`.

    Args:
        y, p: labels (0/1) and probabilities, one per row.
        groups: per-row group labels for a breakdown: a mapping {name: labels} (e.g. site, vendor, density) or
            one array (reported under "group").
        patient_ids: per-row patient ids for the cluster bootstrap (None resamples rows).
        specificities / sensitivities: operating points to report.
        threshold: fixed probability threshold for the sensitivity/specificity pair at that cut.
        n_boot, confidence, seed: bootstrap settings (n_boot=0 skips the CI; groups get no CI).

    Returns:
        A JSON-ready dict: n, n_pos, n_patients, prevalence, auc, auc_ci_low, auc_ci_high, pr_auc, pf1,
        p_precision, p_recall, sensitivity/specificity at `threshold`, brier, lists of operating points, and
        "groups": {name: [per-group rows]} when groups are given.
    """
    y_arr, p_arr = _check_binary(y, p, "summarize")
    if p_arr.min() < 0 or p_arr.max() > 1:
        raise ValueError("summarize: p must be probabilities in [0, 1]")
    result = _level_metrics(y_arr, p_arr, specificities, sensitivities, threshold)
    result["n_patients"] = _cluster_index(patient_ids, y_arr.size)[1]
    nan = float("nan")
    ci = {"ci_low": nan, "ci_high": nan}
    if n_boot > 0 and 0 < result["n_pos"] < result["n"]:
        ci = bootstrap_auc(y_arr, p_arr, patient_ids, n_boot=n_boot, confidence=confidence, seed=seed)
    result["auc_ci_low"], result["auc_ci_high"] = ci["ci_low"], ci["ci_high"]
    result["confidence"] = float(confidence)
    if groups is not None:
        named = dict(groups) if isinstance(groups, Mapping) else {"group": groups}
        result["groups"] = {
            name: group_breakdown(
                y_arr, p_arr, labels, specificities=specificities, sensitivities=sensitivities, threshold=threshold
            )
            for name, labels in named.items()
        }
    return result


def _level_metrics(
    y: np.ndarray, p: np.ndarray, specificities: Sequence[float], sensitivities: Sequence[float], threshold: float
) -> dict[str, Any]:
    n_pos = int(y.sum())
    pred = p >= threshold
    out: dict[str, Any] = {
        "n": int(y.size),
        "n_pos": n_pos,
        "prevalence": n_pos / y.size,
        "auc": _safe(roc_auc, y, p),
        "pr_auc": _safe(average_precision, y, p),
        **probabilistic_f1(y, p),
        "threshold": float(threshold),
        "sensitivity_at_threshold": float(pred[y == 1].mean()) if n_pos else float("nan"),
        "specificity_at_threshold": float((~pred[y == 0]).mean()) if n_pos < y.size else float("nan"),
        "brier": float(np.mean((p - y) ** 2)),
    }
    both = 0 < n_pos < y.size
    out["sensitivity_at_specificity"] = [
        sensitivity_at_specificity(y, p, s) if both else _nan_point(s) for s in specificities
    ]
    out["specificity_at_sensitivity"] = [
        specificity_at_sensitivity(y, p, s) if both else _nan_point(s) for s in sensitivities
    ]
    return out


def group_breakdown(
    y: ArrayLike,
    p: ArrayLike,
    groups: ArrayLike,
    *,
    specificities: Sequence[float] = DEFAULT_SPECIFICITIES,
    sensitivities: Sequence[float] = DEFAULT_SENSITIVITIES,
    threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Metrics per group (site, vendor, density, ...): one dict per group, sorted by group name.

    Each row holds "group" (the label as a string; missing labels become "unknown") and the same keys as
    `summarize` without the bootstrap CI. Metrics undefined for a group (AUC of a one-class group) are NaN.
    """
    y_arr, p_arr = _check_binary(y, p, "group_breakdown")
    g = np.asarray(groups, dtype=object)
    if g.shape != y_arr.shape:
        raise ValueError(f"group_breakdown: expected {y_arr.size} group labels, got shape {g.shape}")
    labels = np.array(["unknown" if _is_missing(v) else str(v) for v in g], dtype=object)
    rows = []
    for name in sorted(set(labels.tolist())):
        sel = labels == name
        rows.append({"group": name, **_level_metrics(y_arr[sel], p_arr[sel], specificities, sensitivities, threshold)})
    return rows


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(np.isnan(value))
    except (TypeError, ValueError):
        return False
