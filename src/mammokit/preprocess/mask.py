"""Breast mask and crop box, computed on a coarse copy of the original for speed.

The original is block-averaged by an integer factor (long side about `coarse_long_side` px, typically 0.4–0.8 mm
pixels). The threshold is chosen robustly across vendors, bit depths and offsets:

1. clip the coarse values to their 0.5th–99.5th percentiles (offsets, bit depth and a few saturated label pixels
   stop mattering) and take Otsu's threshold on the 256-bin histogram; when the class below it is itself clearly
   bimodal (a large implant made Otsu split tissue from implant), recurse into that class;
2. the pixels below it are mostly air: take their median `b` and robust spread `s` (1.4826 × MAD), and put the
   breast threshold low, at `b + max(k·s, 0.1·(otsu − b))`, never above Otsu's. Otsu alone often splits fatty from
   dense tissue, losing the faint skin-line fringe; anchoring at the air level keeps it.

Then: remove padding, open (breaks thin bridges to labels and markers), keep the largest connected component,
give back the fringe the opening shaved off (dilate ∩ threshold), and fill holes (a bright implant or a dark cyst
inside the breast stays inside the mask).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

_KERNEL3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


@dataclass(frozen=True)
class BreastMask:
    """A breast mask on a coarse grid and its place in the original image.

    Attributes:
        mask: bool (rows, cols) on the coarse grid; coarse pixel (i, j) covers original rows [i*f, (i+1)*f) and
            columns [j*f, (j+1)*f) with f = `factor` (the last < f original rows/cols are beyond the grid).
        factor: integer block size (original pixels per coarse pixel along each axis).
        original_shape: (rows, cols) of the original.
        threshold: intensity threshold in the original's units.
        box: tight (x0, y0, x1, y1) of the mask in original pixels (half-open), or None when the mask is empty.
        area_fraction: fraction of the (valid) coarse image covered by the mask.
        warnings: short sentences about anything unusual (empty mask, tiny breast, constant image).
    """

    mask: np.ndarray
    factor: int
    original_shape: tuple[int, int]
    threshold: float
    box: tuple[int, int, int, int] | None
    area_fraction: float
    warnings: tuple[str, ...] = ()

    @property
    def scale(self) -> tuple[float, float]:
        """(row, col) coarse pixels per original pixel, for `geometry.original_to_stored_mask`."""
        return (1.0 / self.factor, 1.0 / self.factor)


def coarse_factor(shape: tuple[int, int], coarse_long_side: int) -> int:
    """Integer block size that brings the long side to at most `coarse_long_side` px (at least 1)."""
    if coarse_long_side < 16:
        raise ValueError(f"coarse_long_side must be at least 16 px, got {coarse_long_side}")
    return max(1, math.ceil(max(shape) / coarse_long_side))


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Average `factor`×`factor` blocks (OpenCV's exact-integer area path); drops the last partial block."""
    rows, cols = image.shape[0] // factor, image.shape[1] // factor
    if rows < 1 or cols < 1:
        raise ValueError(f"image of shape {image.shape} is smaller than one {factor}×{factor} block")
    if factor == 1:
        return np.asarray(image, dtype=np.float32)
    view = image[: rows * factor, : cols * factor]
    return cv2.resize(view, (cols, rows), interpolation=cv2.INTER_AREA)


def otsu(values: np.ndarray, bins: int = 256) -> tuple[float, float]:
    """Otsu's threshold of a 1-D sample and its separability (between-class / total variance, 0–1)."""
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        return hi, 0.0
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    p = hist.astype(np.float64) / hist.sum()
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    total_mean = m0[-1]
    total_var = float((p * (centres - total_mean) ** 2).sum())
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * w0 - m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = 0.0
    k = int(np.argmax(between[:-1]))
    return float(edges[k + 1]), float(between[k] / total_var) if total_var > 0 else 0.0


def block_any(mask: np.ndarray, factor: int) -> np.ndarray:
    """True for each `factor`×`factor` block holding any True pixel (same grid as `block_mean`)."""
    m8 = np.ascontiguousarray(mask, dtype=bool).view(np.uint8)
    if factor <= 15:  # 255 / factor² rounds to at least 1: OpenCV's uint8 area mean stays exact about "any"
        return block_mean(m8 * np.uint8(255), factor) > 0
    rows, cols = mask.shape[0] // factor, mask.shape[1] // factor
    return m8[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor).any(axis=(1, 3))


def robust_threshold(
    values: np.ndarray, noise_sigmas: float = 4.0, fraction: float = 0.1, bimodal: float = 0.85
) -> float:
    """Air/breast threshold of a 1-D sample of coarse pixel values (see the module docstring).

    When the class below Otsu's threshold is itself clearly bimodal (separability above `bimodal`, where pure noise
    gives about 0.64), Otsu split tissue from something brighter (an implant, a large label): the search recurses
    into the lower class, at most twice.
    """
    v = np.asarray(values, dtype=np.float32).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("robust_threshold: no finite values")
    lo, hi = np.percentile(v, [0.5, 99.5])
    if not hi > lo:
        return float(hi)
    v = np.clip(v, lo, hi)
    t, _ = otsu(v)
    for _ in range(2):
        lower = v[v <= t]
        if lower.size < 16:
            break
        t_low, eta = otsu(lower)
        if eta < bimodal:
            break
        t = t_low
    air = v[v <= t]
    if air.size == 0:
        return float(t)
    b = float(np.median(air))
    s = 1.4826 * float(np.median(np.abs(air - b)))
    return float(min(t, b + max(noise_sigmas * s, fraction * (t - b))))


def breast_mask(
    pixels: np.ndarray,
    padding_mask: np.ndarray | None = None,
    coarse_long_side: int = 512,
    min_area_fraction: float = 0.005,
) -> BreastMask:
    """Segment the breast (largest bright connected region, holes filled) on a coarse copy of `pixels`.

    Args:
        pixels: original float image in MONOCHROME2 sense (higher = denser), any offset or bit depth.
        padding_mask: optional bool mask, True on padding pixels (PixelPaddingValue); they are never breast.
        coarse_long_side: long side of the coarse working grid in px.
        min_area_fraction: below this fraction of the image the result is reported as empty.
    """
    arr = np.asarray(pixels)
    if arr.ndim != 2:
        raise ValueError(f"pixels must be a 2-D array, got shape {arr.shape}")
    if padding_mask is not None and np.shape(padding_mask) != arr.shape:
        raise ValueError(f"padding_mask has shape {np.shape(padding_mask)}, pixels have shape {arr.shape}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    factor = coarse_factor(arr.shape, coarse_long_side)
    coarse = block_mean(arr, factor)
    if padding_mask is not None:
        valid = ~block_any(np.asarray(padding_mask, dtype=bool), factor)
    else:
        valid = np.ones(coarse.shape, dtype=bool)
    valid &= np.isfinite(coarse)
    shape = (int(arr.shape[0]), int(arr.shape[1]))
    warnings: list[str] = []
    if not valid.any():
        return BreastMask(np.zeros(coarse.shape, bool), factor, shape, float("nan"), None, 0.0,
                          ("every pixel is padding or not finite",))
    values = coarse[valid]
    threshold = robust_threshold(values)
    if float(values.max()) <= threshold:
        return BreastMask(np.zeros(coarse.shape, bool), factor, shape, threshold, None, 0.0,
                          ("image is constant: no breast found",))
    binary = ((coarse > threshold) & valid).astype(np.uint8)
    opened = cv2.morphologyEx(binary, cv2.MORPH_OPEN, _KERNEL3)
    largest = _largest_component(opened)
    if largest is None:
        largest = _largest_component(binary)
    if largest is None:
        return BreastMask(np.zeros(coarse.shape, bool), factor, shape, threshold, None, 0.0, ("no breast found",))
    grown = cv2.dilate(largest.astype(np.uint8), _KERNEL3, iterations=2).astype(bool) & binary.astype(bool)
    mask = _fill_holes(grown)
    area_fraction = float(mask.sum() / valid.sum())
    if area_fraction < min_area_fraction:
        warnings.append(f"breast mask covers only {area_fraction:.2%} of the image")
        return BreastMask(mask, factor, shape, threshold, None, area_fraction, tuple(warnings))
    box = _mask_box(mask, factor, shape)
    return BreastMask(mask, factor, shape, threshold, box, area_fraction, tuple(warnings))


def _largest_component(binary: np.ndarray) -> np.ndarray | None:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes, also those open only towards the image edge the breast lies against (the chest wall)."""
    filled = ndimage.binary_fill_holes(mask)
    # A hole cut by the chest-wall edge is not closed topologically: close it by treating that one edge as breast.
    coverage = [filled[:, 0].mean(), filled[:, -1].mean(), filled[0, :].mean(), filled[-1, :].mean()]
    side = int(np.argmax(coverage))
    if coverage[side] > 0.5:
        widths = [((0, 0), (1, 0)), ((0, 0), (0, 1)), ((1, 0), (0, 0)), ((0, 1), (0, 0))][side]
        padded = ndimage.binary_fill_holes(np.pad(filled, widths, constant_values=True))
        (r0, _), (c0, _) = widths
        filled = padded[r0 : r0 + mask.shape[0], c0 : c0 + mask.shape[1]]
    return np.ascontiguousarray(filled)


def _mask_box(mask: np.ndarray, factor: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    y0, y1 = int(rows[0]) * factor, (int(rows[-1]) + 1) * factor
    x0, x1 = int(cols[0]) * factor, (int(cols[-1]) + 1) * factor
    # The last partial block is beyond the coarse grid: a mask touching that border extends to the image edge.
    if rows[-1] == mask.shape[0] - 1:
        y1 = shape[0]
    if cols[-1] == mask.shape[1] - 1:
        x1 = shape[1]
    return x0, y0, min(x1, shape[1]), min(y1, shape[0])


def crop_box(
    mask: BreastMask, spacing_mm: tuple[float, float] | None, margin_mm: float = 2.0
) -> tuple[int, int, int, int]:
    """The crop in original pixels: the mask's box grown by `margin_mm` on each side, clipped to the image.

    An empty mask gives the whole image (the caller records `mask.warnings`). Without a spacing the margin is
    taken as `margin_mm` / 0.1 px.
    """
    rows, cols = mask.original_shape
    if mask.box is None:
        return 0, 0, cols, rows
    if margin_mm < 0:
        raise ValueError(f"margin_mm must be non-negative, got {margin_mm}")
    sr, sc = spacing_mm if spacing_mm is not None else (0.1, 0.1)
    if not (sr > 0 and sc > 0):
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm!r}")
    my, mx = math.ceil(margin_mm / sr), math.ceil(margin_mm / sc)
    x0, y0, x1, y1 = mask.box
    return max(0, x0 - mx), max(0, y0 - my), min(cols, x1 + mx), min(rows, y1 + my)


def mask_to_original(mask: BreastMask) -> np.ndarray:
    """The coarse mask at the original resolution (nearest block; the partial last block copies its neighbour)."""
    f = mask.factor
    full = np.repeat(np.repeat(mask.mask, f, axis=0), f, axis=1)
    rows, cols = mask.original_shape
    full = np.pad(full, ((0, rows - full.shape[0]), (0, cols - full.shape[1])), mode="edge")
    return full
