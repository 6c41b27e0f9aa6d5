"""Multi-scale outputs: the aspect-preserving global image and a dense grid of local patches with breast fractions.

Patch boxes are (x0, y0, x1, y1) integer pixel-edge coordinates on the stored grid. The grid starts at 0 and steps
by `stride`; a last patch flush with the far edge is added when the steps do not reach it, so every pixel is in at
least one patch. An image smaller than the patch gets one patch at 0 that extends past the image (the loader pads;
the breast fraction counts the overhang as non-breast).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PatchIndex:
    """Patch boxes and their breast fractions.

    Attributes:
        boxes: int64 (N, 4) xyxy on the stored grid.
        breast_fraction: float (N,), breast pixels / patch area.
        patch_size: side of every patch in pixels.
        stride: grid step in pixels.
    """

    boxes: np.ndarray
    breast_fraction: np.ndarray
    patch_size: int
    stride: int


def global_image(
    image: np.ndarray, long_side: int = 1024, allow_upsample: bool = False
) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize so the long side is `long_side` px (aspect kept); returns the image and its (row, col) scale.

    The scale is output pixels per input pixel, exactly out_size / in_size per axis, so boxes map with
    x_global = x_stored * scale[1]. Anti-aliased (area averaging) when shrinking; when the image is already smaller
    and `allow_upsample` is False, it is returned unchanged with scale 1.
    """
    img = np.asarray(image)
    if img.ndim != 2 or min(img.shape) < 1:
        raise ValueError(f"image must be a non-empty 2-D array, got shape {img.shape}")
    if long_side < 1:
        raise ValueError(f"long_side must be positive, got {long_side}")
    rows, cols = img.shape
    factor = long_side / max(rows, cols)
    if factor >= 1.0 and not allow_upsample:
        return np.ascontiguousarray(img, dtype=np.float32), (1.0, 1.0)
    out_rows, out_cols = max(1, round(rows * factor)), max(1, round(cols * factor))
    interp = cv2.INTER_AREA if factor < 1.0 else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(img, dtype=np.float32), (out_cols, out_rows), interpolation=interp)
    return out, (out_rows / rows, out_cols / cols)


def grid_starts(length: int, patch_size: int, stride: int) -> np.ndarray:
    """Start offsets along one axis: 0, stride, ... plus one flush with the end when needed."""
    if length <= patch_size:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, length - patch_size + 1, stride, dtype=np.int64)
    if starts[-1] + patch_size < length:
        starts = np.append(starts, length - patch_size)
    return starts


def patch_grid(
    mask: np.ndarray, patch_size: int = 512, stride: int | None = None, min_breast_fraction: float = 0.1
) -> PatchIndex:
    """Dense-grid patches over the stored image and the fraction of breast in each; keeps those with enough breast.

    Args:
        mask: bool breast mask on the stored grid.
        patch_size: patch side in pixels (e.g. 512 or 1024 at full resolution).
        stride: grid step (default patch_size // 2, i.e. 50% overlap).
        min_breast_fraction: patches with a smaller breast fraction are dropped (0 keeps all).
    """
    m = np.asarray(mask)
    if m.ndim != 2 or min(m.shape) < 1:
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {m.shape}")
    if patch_size < 1:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    stride = patch_size // 2 if stride is None else int(stride)
    if stride < 1:
        raise ValueError(f"stride must be positive, got {stride}")
    if not 0.0 <= min_breast_fraction <= 1.0:
        raise ValueError(f"min_breast_fraction must be in [0, 1], got {min_breast_fraction}")
    rows, cols = m.shape
    integral = cv2.integral(np.ascontiguousarray(m, dtype=bool).view(np.uint8), sdepth=cv2.CV_64F)
    ys, xs = grid_starts(rows, patch_size, stride), grid_starts(cols, patch_size, stride)
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")
    y0, x0 = y0.ravel(), x0.ravel()
    y1, x1 = y0 + patch_size, x0 + patch_size
    cy1, cx1 = np.minimum(y1, rows), np.minimum(x1, cols)
    inside = integral[cy1, cx1] - integral[y0, cx1] - integral[cy1, x0] + integral[y0, x0]
    fraction = inside / float(patch_size * patch_size)
    keep = fraction >= min_breast_fraction
    boxes = np.stack([x0, y0, x1, y1], axis=1)[keep]
    return PatchIndex(boxes.astype(np.int64), fraction[keep].astype(np.float64), int(patch_size), stride)
