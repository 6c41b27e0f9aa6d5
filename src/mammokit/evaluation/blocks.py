"""Metric blocks that `evaluate` writes into metrics.json and the report draws again: ECE and Brier per calibration
stage, and the FROC of the model's saliency peaks."""

from __future__ import annotations

from typing import Any

import numpy as np

from mammokit.evaluation.calibration import brier_score, ece_if_calibrated, expected_calibration_error
from mammokit.evaluation.froc import froc_curve, froc_summary, saliency_peaks
from mammokit.evaluation.inference import InferenceResult

FROC_PEAKS_PER_VIEW = 5


def ece_bins(n: int, default: int = 15) -> int:
    """15 bins, fewer when a (small external) set has fewer cases than that."""
    return max(1, min(default, n))


def calibration_block(y: np.ndarray, probs: dict[str, np.ndarray]) -> dict[str, float]:
    """Per tag of `probs` ("before", "temperature", "after"): ECE (equal-width and equal-mass, 15 bins), its
    finite-sample floor (`ece_if_calibrated`, equal-width) and the Brier score, as `ece_uniform_{tag}` etc."""
    out = {}
    bins = ece_bins(len(y))
    for tag, p in probs.items():
        out[f"ece_uniform_{tag}"] = expected_calibration_error(y, p, bins, "uniform")
        out[f"ece_quantile_{tag}"] = expected_calibration_error(y, p, bins, "quantile")
        out[f"ece_uniform_floor_{tag}"] = ece_if_calibrated(p, bins, "uniform")
        out[f"brier_{tag}"] = brier_score(y, p)
    return out


def froc_inputs(res: InferenceResult) -> tuple[list, list, list]:
    """Per view image: saliency-peak candidate points and scores (input pixels) and its malignant lesion boxes."""
    cands, scores, lesions = [], [], []
    h_in, w_in = res.input_size
    for sal, les in zip(res.saliency, res.lesion_boxes, strict=True):
        for slot, (boxes, malignant) in enumerate(les):
            heat = sal[min(slot, sal.shape[0] - 1)]
            if not np.any(heat) and not len(boxes):
                continue  # absent view
            pts, sc = saliency_peaks(heat, k=FROC_PEAKS_PER_VIEW, min_distance=max(1, heat.shape[0] // 16),
                                     refine=True)
            scale = np.array([h_in / heat.shape[0], w_in / heat.shape[1]])
            cands.append((pts + 0.5) * scale)
            scores.append(sc)
            keep = np.asarray(malignant, bool)
            lesions.append(np.asarray(boxes, np.float64).reshape(-1, 4)[keep] if len(boxes) else np.zeros((0, 4)))
    return cands, scores, lesions


def froc_block(res: InferenceResult) -> tuple[dict[str, Any] | None, Any]:
    """FROC of the model's saliency peaks (refined between map cells) against malignant lesion boxes (hit: peak
    inside the box)."""
    cands, scores, lesions = froc_inputs(res)
    if not cands or not sum(len(x) for x in lesions):
        return None, None
    summary = froc_summary(cands, scores, lesions)
    summary["candidates"] = (f"up to {FROC_PEAKS_PER_VIEW} saliency peaks per view, each refined between map cells "
                             "(parabola through its neighbours), scored by the saliency value")
    return summary, froc_curve(cands, scores, lesions)
