"""FROC analysis: lesion sensitivity against false positives per image, from scored candidates.

Coordinates follow the project convention: boxes are (y0, x0, y1, x1) in pixels (rows, then columns) and points
are (y, x), all in one frame per image (canonical-frame or original DICOM pixels, as long as candidates and lesions
agree).

Hit criterion (`criterion`):
    "center": a candidate hits a lesion when its point, or its box centre, lies inside the lesion box
        (edges included).
    "iou": a candidate box hits a lesion when their intersection-over-union is >= `iou_threshold` (boxes only).
Counting: a lesion is detected at threshold t when any candidate hitting it scores >= t, so each lesion counts
once, at the score of its best hitting candidate. Other candidates hitting an already-counted lesion are neither
TP nor FP; a candidate that hits no lesion is a false positive. A candidate hitting two lesions detects both.

Reading sensitivity at a FP/image rate (`interpolation`, named in `froc_summary`'s output):
    "step" (default): the field's convention, as LUNA16's `computeFROC` and MONAI's `compute_froc_score` read the
        curve (`np.interp` through every operating point). Consecutive thresholds add false positives (a flat
        step) or lesions (a vertical one), so a rate reads the best operating point with FP/image <= the rate; only
        a false positive tied with a lesion at one score makes a sloped segment (a random tie-break's expected
        value). MONAI also drops the lowest score's operating point (normally a missed lesion's 0 there).
    "linear": linear between the points of the curve's upper envelope (best sensitivity per FP/image value), as
        mammokit reported before: it reads higher wherever a rate falls between two FP counts (0.6375 where LUNA16
        and MONAI give 0.600), so it is used only when asked for by name.
Both start at (0 FP, the sensitivity reached without a false positive) and hold the final sensitivity beyond the
last operating point (no candidates remain).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

DEFAULT_FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0)
DEFAULT_INTERPOLATION = "step"
CONVENTIONS = {  # how each reading is named in metrics.json and the report
    "step": "step: the best operating point at or below each FP/image rate (LUNA16's computeFROC, MONAI's "
            "compute_froc_score)",
    "linear": "linear interpolation between the upper envelope's operating points (reads higher than LUNA16 and "
              "MONAI)",
}


@dataclass(frozen=True)
class FROCCurve:
    """FROC operating points, one per distinct candidate score (descending), preceded by (0 FP, 0 sensitivity).

    Attributes:
        thresholds: score thresholds (inf first); a candidate counts when its score >= threshold.
        fp_per_image: false positives per image at each threshold.
        sensitivity: share of lesions detected at each threshold.
        n_images, n_lesions: totals the rates are normalised by.
    """

    thresholds: np.ndarray
    fp_per_image: np.ndarray
    sensitivity: np.ndarray
    n_images: int
    n_lesions: int


def _as_boxes(a: ArrayLike | None, name: str) -> np.ndarray:
    arr = np.zeros((0, 4)) if a is None else np.asarray(a, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name}: expected boxes of shape (N, 4) as (y0, x0, y1, x1), got {arr.shape}")
    if np.any(arr[:, 2] < arr[:, 0]) or np.any(arr[:, 3] < arr[:, 1]):
        raise ValueError(f"{name}: boxes must have y1 >= y0 and x1 >= x0")
    return arr


def _as_candidates(a: ArrayLike | None, name: str) -> np.ndarray:
    arr = np.zeros((0, 2)) if a is None else np.asarray(a, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] not in (2, 4):
        raise ValueError(
            f"{name}: expected points (K, 2) as (y, x) or boxes (K, 4) as (y0, x0, y1, x1), got {arr.shape}"
        )
    if arr.shape[1] == 4:
        _as_boxes(arr, name)
    return arr


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a (K, 4) and b (L, 4), (y0, x0, y1, x1) with continuous coordinates."""
    y0 = np.maximum(a[:, None, 0], b[None, :, 0])
    x0 = np.maximum(a[:, None, 1], b[None, :, 1])
    y1 = np.minimum(a[:, None, 2], b[None, :, 2])
    x1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def hit_matrix(
    candidates: np.ndarray, lesions: np.ndarray, criterion: str = "center", iou_threshold: float = 0.1
) -> np.ndarray:
    """Boolean (K, L) matrix: candidate k hits lesion l under `criterion` (see the module docstring)."""
    if candidates.shape[0] == 0 or lesions.shape[0] == 0:
        return np.zeros((candidates.shape[0], lesions.shape[0]), dtype=bool)
    if criterion == "center":
        pts = candidates if candidates.shape[1] == 2 else (candidates[:, :2] + candidates[:, 2:]) / 2
        y, x = pts[:, 0:1], pts[:, 1:2]
        return (y >= lesions[:, 0]) & (y <= lesions[:, 2]) & (x >= lesions[:, 1]) & (x <= lesions[:, 3])
    if criterion == "iou":
        if candidates.shape[1] != 4:
            raise ValueError("criterion 'iou' needs candidate boxes (K, 4), not points")
        return box_iou(candidates, lesions) >= iou_threshold
    raise ValueError(f"criterion must be 'center' or 'iou', got {criterion!r}")


def froc_curve(
    candidates: Sequence[ArrayLike | None],
    scores: Sequence[ArrayLike | None],
    lesions: Sequence[ArrayLike | None],
    *,
    criterion: str = "center",
    iou_threshold: float = 0.1,
) -> FROCCurve:
    """FROC curve over a set of images.

    Args:
        candidates: per image, candidate points (K, 2) or boxes (K, 4) (None or empty for no candidates).
        scores: per image, the K candidate scores.
        lesions: per image, lesion boxes (L, 4) (None or empty for a normal image; it still counts for FP/image).
        criterion, iou_threshold: the hit criterion (module docstring).
    """
    if not len(candidates) == len(scores) == len(lesions):
        raise ValueError(
            f"froc_curve: {len(candidates)} candidate lists, {len(scores)} score lists, {len(lesions)} lesion lists"
        )
    n_images = len(candidates)
    if n_images == 0:
        raise ValueError("froc_curve: no images")
    lesion_scores: list[float] = []  # best hitting score per lesion (-inf when missed)
    fp_scores: list[np.ndarray] = []
    for i, (c, s, les) in enumerate(zip(candidates, scores, lesions, strict=True)):
        cand = _as_candidates(c, f"candidates[{i}]")
        sc = np.zeros(0) if s is None else np.asarray(s, dtype=np.float64).ravel()
        if sc.shape[0] != cand.shape[0]:
            raise ValueError(f"scores[{i}]: {sc.shape[0]} scores for {cand.shape[0]} candidates")
        if not np.all(np.isfinite(sc)):
            raise ValueError(f"scores[{i}]: scores contain NaN or infinity")
        boxes = _as_boxes(les, f"lesions[{i}]")
        hits = hit_matrix(cand, boxes, criterion, iou_threshold)
        fp_scores.append(sc[~hits.any(axis=1)])
        for j in range(boxes.shape[0]):
            lesion_scores.append(float(sc[hits[:, j]].max()) if hits[:, j].any() else -np.inf)
    n_lesions = len(lesion_scores)
    if n_lesions == 0:
        raise ValueError("froc_curve: no lesions in any image; sensitivity is undefined")
    fps = np.sort(np.concatenate(fp_scores)) if fp_scores else np.zeros(0)
    tps = np.sort(np.asarray(lesion_scores))
    detected = np.isfinite(tps)
    thresholds = np.unique(np.r_[fps, tps[detected]])[::-1]
    n_fp = fps.size - np.searchsorted(fps, thresholds, side="left")
    n_tp = tps.size - np.searchsorted(tps, thresholds, side="left")
    return FROCCurve(
        thresholds=np.r_[np.inf, thresholds],
        fp_per_image=np.r_[0.0, n_fp / n_images],
        sensitivity=np.r_[0.0, n_tp / n_lesions],
        n_images=n_images,
        n_lesions=n_lesions,
    )


def reading_points(curve: FROCCurve, interpolation: str = DEFAULT_INTERPOLATION) -> tuple[np.ndarray, np.ndarray]:
    """The (FP/image, sensitivity) vertices that `interpolation` reads between, piecewise linearly and flat beyond
    the last: every operating point for "step", the upper envelope's points for "linear" (module docstring)."""
    if interpolation == "step":
        return curve.fp_per_image, curve.sensitivity
    if interpolation == "linear":
        fpi, idx = np.unique(curve.fp_per_image, return_inverse=True)
        best = np.full(fpi.size, -np.inf)
        np.maximum.at(best, idx.ravel(), curve.sensitivity)
        return fpi, np.maximum.accumulate(best)  # envelope: more FP never lowers the best sensitivity
    raise ValueError(f"interpolation must be one of {sorted(CONVENTIONS)}, got {interpolation!r}")


def sensitivity_at_fp_rates(
    curve: FROCCurve, fp_rates: Sequence[float] = DEFAULT_FP_RATES, interpolation: str = DEFAULT_INTERPOLATION
) -> np.ndarray:
    """Sensitivity at each FP/image rate, read from the curve by `interpolation` (module docstring)."""
    rates = np.asarray(fp_rates, dtype=np.float64)
    if np.any(rates < 0):
        raise ValueError(f"fp_rates must be >= 0, got {list(fp_rates)}")
    fpi, sens = reading_points(curve, interpolation)
    # np.interp, with repeated x values (a threshold that adds only lesions) read at the last of them, as LUNA16 and
    # MONAI get from np.interp, whose result for repeated x numpy does not document
    j = np.searchsorted(fpi, rates, side="right") - 1
    nxt = np.minimum(j + 1, fpi.size - 1)
    width = fpi[nxt] - fpi[j]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(width > 0, (rates - fpi[j]) / width, 0.0)
    return sens[j] + share * (sens[nxt] - sens[j])


def froc_summary(
    candidates: Sequence[ArrayLike | None],
    scores: Sequence[ArrayLike | None],
    lesions: Sequence[ArrayLike | None],
    *,
    fp_rates: Sequence[float] = DEFAULT_FP_RATES,
    criterion: str = "center",
    iou_threshold: float = 0.1,
    interpolation: str = DEFAULT_INTERPOLATION,
) -> dict[str, object]:
    """FROC curve plus the mean sensitivity over `fp_rates` (a CPM-style score), as a JSON-ready dict that names
    how the sensitivities were read (`interpolation` and its `convention` in words)."""
    curve = froc_curve(candidates, scores, lesions, criterion=criterion, iou_threshold=iou_threshold)
    sens = sensitivity_at_fp_rates(curve, fp_rates, interpolation)
    return {
        "mean_sensitivity": float(sens.mean()),
        "sensitivity_at_fp": {f"{r:g}": float(s) for r, s in zip(fp_rates, sens, strict=True)},
        "n_images": curve.n_images,
        "n_lesions": curve.n_lesions,
        "criterion": criterion if criterion == "center" else f"iou>={iou_threshold:g}",
        "interpolation": interpolation,
        "convention": CONVENTIONS[interpolation],
        "curve": {"fp_per_image": curve.fp_per_image.tolist(), "sensitivity": curve.sensitivity.tolist()},
    }


def saliency_peaks(
    heatmap: ArrayLike, k: int = 5, min_distance: int = 1, min_score: float | None = None, *, refine: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Up to k scored candidate points from a 2-D saliency map, by non-maximum suppression.

    A peak is a pixel equal to the maximum of its (2·min_distance+1)² neighbourhood and above `min_score`
    (default: above the map's minimum, so a flat map has no peaks). Peaks are taken in descending value (ties in
    row-major order), and a peak within Chebyshev distance `min_distance` of one already taken is dropped, so
    plateaus give one point.

    With `refine`, each peak moves to the vertex of the parabola through it and its two neighbours, per axis (at
    most half a pixel; not across the border; to the middle of a two-pixel plateau). A coarse map (a model's
    saliency is often 1/32 of its input) cannot otherwise place a peak between its cell centres: on the demo a
    lesion box held the unrefined top peak for 53% of the malignant lesions and the refined one for 90%.

    Returns:
        points (n, 2) as (y, x) pixel indices (float with `refine`, int otherwise), and their heatmap values (n,),
        n <= k, best first.
    """
    h = np.asarray(heatmap, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"saliency_peaks: heatmap must be 2-D, got shape {h.shape}")
    if k < 1 or min_distance < 0:
        raise ValueError(f"saliency_peaks: need k >= 1 and min_distance >= 0, got k={k}, min_distance={min_distance}")
    if not np.all(np.isfinite(h)):
        raise ValueError("saliency_peaks: heatmap contains NaN or infinity")
    floor = h.min() if min_score is None else min_score
    local_max = ndimage.maximum_filter(h, size=2 * min_distance + 1, mode="nearest") == h
    ys, xs = np.nonzero(local_max & (h > floor))
    order = np.lexsort((xs, ys, -h[ys, xs]))  # value descending, then row-major
    chosen: list[int] = []
    for i in order:
        if all(max(abs(ys[i] - ys[j]), abs(xs[i] - xs[j])) > min_distance for j in chosen):
            chosen.append(i)
            if len(chosen) == k:
                break
    idx = np.asarray(chosen, dtype=np.intp)
    points = np.stack([ys[idx], xs[idx]], axis=1).astype(np.int64) if idx.size else np.zeros((0, 2), np.int64)
    if refine:
        points = points.astype(np.float64)
        points[:, 0] += _parabola_offsets(h, ys[idx], xs[idx], axis=0)
        points[:, 1] += _parabola_offsets(h, ys[idx], xs[idx], axis=1)
    return points, h[ys[idx], xs[idx]]


def _parabola_offsets(h: np.ndarray, ys: np.ndarray, xs: np.ndarray, axis: int) -> np.ndarray:
    """Per peak, the offset along `axis` of the parabola through (-1, 0, +1) neighbours, clipped to ±0.5; 0 at the
    border or where the three values are not strictly concave."""
    out = np.zeros(len(ys))
    size = h.shape[axis]
    for n, (y, x) in enumerate(zip(ys, xs, strict=True)):
        at = y if axis == 0 else x
        if not 0 < at < size - 1:
            continue
        before = h[y - 1, x] if axis == 0 else h[y, x - 1]
        after = h[y + 1, x] if axis == 0 else h[y, x + 1]
        curvature = before - 2 * h[y, x] + after
        if curvature < 0:
            out[n] = float(np.clip(0.5 * (before - after) / curvature, -0.5, 0.5))
    return out
