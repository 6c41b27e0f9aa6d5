"""Pectoral muscle on MLO views: a straight-line boundary across the upper chest-wall corner.

Works in the canonical frame (chest wall on the left). The muscle is the triangle between the breast's top edge,
its chest-wall edge, and a line from a point on the top edge to a point on the chest-wall edge; it is brighter than
the fatty tissue beside it. Every candidate line (a grid over the two intercepts, then a finer grid around the best)
is scored by the intensity step across it: the smoothed image is sampled at points along the line, a few mm on the
muscle side and a few mm on the breast side, and the score is the mean difference over the points where both
samples fall inside the breast, in units of the breast's robust spread. A line is accepted when the step is large,
consistent along the line, and the triangle stays below `max_area_fraction` of the breast; otherwise the mask is
empty and `reason` says why. By construction nothing outside the upper chest-wall triangle is ever removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from mammokit.preprocess.mask import block_mean

Point = tuple[float, float]


@dataclass(frozen=True)
class PectoralResult:
    """The detected muscle, or an empty mask and the reason.

    Attributes:
        mask: bool, same grid as the input image; True on muscle pixels (inside the breast mask).
        line: ((x, y) on the top edge, (x, y) on the chest-wall edge) in pixel-edge coordinates of the input grid,
            None when nothing was found.
        found: a confident line was accepted.
        contrast: intensity step across the line in robust-spread units (higher = clearer).
        consistency: fraction of points along the line where the muscle side is brighter.
        reason: one sentence.
    """

    mask: np.ndarray
    line: tuple[Point, Point] | None
    found: bool
    contrast: float
    consistency: float
    reason: str


def detect_pectoral(
    image: np.ndarray,
    breast: np.ndarray,
    spacing_mm: float = 0.1,
    work_spacing_mm: float = 1.0,
    min_contrast: float = 0.45,
    min_consistency: float = 0.8,
    min_region_contrast: float = 0.5,
    min_area_fraction: float = 0.03,
    max_area_fraction: float = 0.5,
) -> PectoralResult:
    """Find the pectoral muscle of an MLO view in the canonical frame.

    Args:
        image: float image, chest wall on the left, higher = denser.
        breast: bool breast mask on the same grid.
        spacing_mm: pixel spacing of `image` (isotropic).
        work_spacing_mm: spacing of the internal search grid.
        min_contrast: smallest accepted step across the line, in robust-spread units of the breast.
        min_consistency: smallest accepted fraction of line points with the muscle side brighter.
        min_region_contrast: smallest accepted difference between the medians of the whole triangle and of a 15 mm
            band of breast beyond the line, in robust-spread units (rejects lines that trace one bright blob).
        min_area_fraction: smallest triangle searched, as a fraction of the breast area.
        max_area_fraction: largest triangle searched, as a fraction of the breast area.
    """
    img = np.asarray(image)
    mask = np.ascontiguousarray(breast, dtype=bool)
    if img.ndim != 2 or img.shape != mask.shape:
        raise ValueError(f"image {img.shape} and breast mask {mask.shape} must be 2-D arrays of the same shape")
    if not (spacing_mm > 0 and work_spacing_mm > 0):
        raise ValueError(f"spacing_mm ({spacing_mm}) and work_spacing_mm ({work_spacing_mm}) must be positive")
    empty = np.zeros(img.shape, dtype=bool)
    if mask.sum() < 64:
        return PectoralResult(empty, None, False, 0.0, 0.0, "breast mask is (nearly) empty")
    f = max(1, round(work_spacing_mm / spacing_mm))
    if min(img.shape) // f < 16:
        f = max(1, min(img.shape) // 16)
    work = block_mean(img.astype(np.float32, copy=False), f)
    wmask = block_mean(mask.view(np.uint8) * np.uint8(255), f) >= 128
    px_mm = spacing_mm * f
    rows = np.flatnonzero(wmask.any(axis=1))
    cols = np.flatnonzero(wmask.any(axis=0))
    if rows.size < 8 or cols.size < 8:
        return PectoralResult(empty, None, False, 0.0, 0.0, "breast too small for a pectoral search")
    # Corner of the breast's bounding box on the work grid (edge coordinates).
    cx, cy = float(cols[0]), float(rows[0])
    width, height = float(cols[-1] + 1) - cx, float(rows[-1] + 1) - cy
    values = work[wmask]
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    spread = max(float(q75 - q25) / 1.349, 1e-6 * max(1.0, abs(float(q50))))
    # Clipping keeps an implant or a calcification cluster from dominating the step.
    normed = np.clip((work - q50) / spread, -3.0, 3.0)
    smooth = ndimage.gaussian_filter(normed, sigma=max(0.5, 1.5 / px_mm))
    smooth[~wmask] = 0.0
    valid = wmask.astype(np.float32)
    offsets = [d / px_mm for d in (1.5, 4.0)]

    def score(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _score_lines(smooth, valid, cx, cy, a, b, offsets)

    a_grid = np.linspace(0.06, 0.9, 29) * width
    b_grid = np.linspace(0.06, 1.0, 33) * height
    aa, bb = (g.ravel() for g in np.meshgrid(a_grid, b_grid))
    breast_area = float(wmask.sum())
    area_ok = (0.5 * aa * bb <= max_area_fraction * breast_area) & (0.5 * aa * bb >= min_area_fraction * breast_area)
    if not area_ok.any():
        return PectoralResult(empty, None, False, 0.0, 0.0, "no candidate triangle fits the area limits")
    aa, bb = aa[area_ok], bb[area_ok]
    contrast, consistency = score(aa, bb)
    best = int(np.argmax(contrast))
    a_best, b_best = float(aa[best]), float(bb[best])
    da, db = a_grid[1] - a_grid[0], b_grid[1] - b_grid[0]
    fa, fb = (g.ravel() for g in np.meshgrid(np.linspace(a_best - da, a_best + da, 9),
                                             np.linspace(b_best - db, b_best + db, 9)))
    keep = (fa > 0) & (fb > 0) & (0.5 * fa * fb <= max_area_fraction * breast_area)
    keep &= 0.5 * fa * fb >= min_area_fraction * breast_area
    fa, fb = fa[keep], fb[keep]
    f_contrast, f_consistency = score(fa, fb)
    fbest = int(np.argmax(f_contrast))
    if f_contrast[fbest] >= contrast[best]:
        a_best, b_best = float(fa[fbest]), float(fb[fbest])
        c_best, k_best = float(f_contrast[fbest]), float(f_consistency[fbest])
    else:
        c_best, k_best = float(contrast[best]), float(consistency[best])
    top = ((cx + a_best) * f, cy * f)
    wall = (cx * f, (cy + b_best) * f)
    line = (top, wall)
    if not np.isfinite(c_best) or c_best < min_contrast:
        return PectoralResult(empty, None, False, max(c_best, 0.0) if np.isfinite(c_best) else 0.0, k_best,
                              f"no clear pectoral edge (best step {c_best:.2f} < {min_contrast})")
    if k_best < min_consistency:
        return PectoralResult(empty, None, False, c_best, k_best,
                              f"pectoral edge inconsistent along the line ({k_best:.2f} < {min_consistency})")
    region = _region_contrast(smooth, wmask, ((cx + a_best, cy), (cx, cy + b_best)), band_px=15.0 / px_mm)
    if region < min_region_contrast:
        return PectoralResult(empty, None, False, c_best, k_best,
                              f"the corner triangle is not brighter than the breast beyond it ({region:.2f} < "
                              f"{min_region_contrast})")
    tri = triangle_mask(img.shape, line) & mask
    return PectoralResult(tri, line, True, c_best, k_best,
                          f"line fitted: step {c_best:.2f} robust SD, consistent on {k_best:.0%} of its length")


def _score_lines(smooth: np.ndarray, valid: np.ndarray, cx: float, cy: float, a: np.ndarray, b: np.ndarray,
                 offsets: list[float], n_points: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Mean step (muscle side minus breast side) and its consistency for lines from (cx+a, cy) to (cx, cy+b)."""
    t = np.linspace(0.08, 0.92, n_points)[None, :]
    px = cx + a[:, None] * (1 - t)  # edge coordinates along each line
    py = cy + b[:, None] * t
    norm = np.hypot(a, b)
    nx, ny = (b / norm)[:, None], (a / norm)[:, None]  # unit normal pointing away from the corner
    diffs = np.zeros((a.size, n_points))
    ok = np.ones((a.size, n_points), dtype=bool)
    for d in offsets:
        coords_in = np.stack([py - d * ny, px - d * nx]) - 0.5  # to index coordinates
        coords_out = np.stack([py + d * ny, px + d * nx]) - 0.5
        v_in = ndimage.map_coordinates(smooth, coords_in.reshape(2, -1), order=1, mode="nearest")
        v_out = ndimage.map_coordinates(smooth, coords_out.reshape(2, -1), order=1, mode="nearest")
        m_in = ndimage.map_coordinates(valid, coords_in.reshape(2, -1), order=1, mode="constant", cval=0.0)
        m_out = ndimage.map_coordinates(valid, coords_out.reshape(2, -1), order=1, mode="constant", cval=0.0)
        diffs += (v_in - v_out).reshape(diffs.shape)
        ok &= ((m_in > 0.99) & (m_out > 0.99)).reshape(ok.shape)
    diffs /= len(offsets)
    n_ok = ok.sum(axis=1)
    contrast = np.where(n_ok >= n_points // 2, (diffs * ok).sum(axis=1) / np.maximum(n_ok, 1), -np.inf)
    consistency = ((diffs > 0) & ok).sum(axis=1) / np.maximum(n_ok, 1)
    return contrast, consistency


def _region_contrast(smooth: np.ndarray, wmask: np.ndarray, line: tuple[Point, Point], band_px: float) -> float:
    """Median of the triangle minus median of the breast band within `band_px` beyond the line."""
    (x_top, y_top), (x_wall, y_wall) = line
    a, b = x_top - x_wall, y_wall - y_top
    rows, cols = smooth.shape
    yy = (np.arange(rows) + 0.5 - y_top)[:, None]
    xx = (np.arange(cols) + 0.5 - x_wall)[None, :]
    dist = (xx * b + yy * a - a * b) / math.hypot(a, b)  # signed distance to the line, negative on the corner side
    inside = (dist < 0) & wmask
    band = (dist > 0) & (dist < band_px) & wmask
    if inside.sum() < 4 or band.sum() < 4:
        return -math.inf
    return float(np.median(smooth[inside]) - np.median(smooth[band]))


def triangle_mask(shape: tuple[int, int], line: tuple[Point, Point]) -> np.ndarray:
    """Pixels whose centres lie on the corner side of `line` ((x, y) on the top edge, (x, y) on the chest wall).

    The corner is (chest-wall x, top-edge y); pixels above the top edge or left of the chest wall are included
    too (they are outside the breast and the caller intersects with the breast mask).
    """
    (x_top, y_top), (x_wall, y_wall) = line
    a, b = x_top - x_wall, y_wall - y_top
    rows, cols = shape
    out = np.zeros(shape, dtype=bool)
    if a <= 0 or b <= 0:
        return out
    r1, c1 = min(rows, math.ceil(y_wall)), min(cols, math.ceil(x_top))
    if r1 <= 0 or c1 <= 0:
        return out
    yy = (np.arange(r1, dtype=np.float64) + 0.5 - y_top)[:, None] / b
    xx = (np.arange(c1, dtype=np.float64) + 0.5 - x_wall)[None, :] / a
    out[:r1, :c1] = (xx + yy) < 1.0
    return out


def suppress_pectoral(image: np.ndarray, pectoral: np.ndarray, fill: float | None = None) -> np.ndarray:
    """Copy of `image` with the muscle set to `fill` (default: the image's 0.5th percentile, i.e. about air)."""
    img = np.asarray(image)
    pect = np.asarray(pectoral, dtype=bool)
    if img.shape != pect.shape:
        raise ValueError(f"image {img.shape} and pectoral mask {pect.shape} must have the same shape")
    out = img.astype(np.float32, copy=True)
    if pect.any():
        value = float(np.percentile(img[::4, ::4], 0.5)) if fill is None else float(fill)
        out[pect] = value
    return out


def draw_line(image: np.ndarray, line: tuple[Point, Point], value: float, thickness: int = 2) -> np.ndarray:
    """Copy of `image` with `line` drawn at `value` (for QC pictures)."""
    out = np.array(image, copy=True)
    p0 = (round(line[0][0]), round(line[0][1]))
    p1 = (round(line[1][0]), round(line[1][1]))
    cv2.line(out, p0, p1, value, thickness)
    return out
