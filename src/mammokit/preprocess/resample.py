"""Resample an image to an isotropic pixel spacing, anti-aliased when downsampling.

Two methods share one geometry (pixel edges aligned: output pixel edges at input edge * scale), so coordinates map
back exactly through `scale` whichever is used:

- "sitk": SimpleITK, spacing-aware. When an axis is downsampled by a factor f > 1 it is first smoothed with a
  Gaussian of sigma (f - 1) / 2 input pixels (scikit-image's rule), then resampled with linear interpolation.
- "area": OpenCV `INTER_AREA` (exact area averaging, an anti-aliasing box filter) when downsampling, `INTER_LINEAR`
  when upsampling. About 3x faster; tests check it agrees with "sitk" within a stated tolerance on mammogram-like
  texture, so it is the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

METHODS = ("area", "sitk")


@dataclass(frozen=True)
class ResampleResult:
    """A resampled image and the exact geometry used.

    Attributes:
        image: float32 (rows, cols).
        scale: (row, col) output pixels per input pixel (exactly out_size / in_size).
        spacing_mm: (row, col) spacing realised (source spacing / scale).
    """

    image: np.ndarray
    scale: tuple[float, float]
    spacing_mm: tuple[float, float]


def output_shape(
    shape: tuple[int, int], spacing_mm: tuple[float, float], target_spacing_mm: float
) -> tuple[int, int]:
    """Rows and columns at `target_spacing_mm`: round(size * spacing / target), at least 1."""
    if not (np.isfinite(target_spacing_mm) and target_spacing_mm > 0):
        raise ValueError(f"target_spacing_mm must be positive and finite, got {target_spacing_mm!r}")
    sr, sc = (float(v) for v in spacing_mm)
    if not (np.isfinite(sr) and np.isfinite(sc) and sr > 0 and sc > 0):
        raise ValueError(f"spacing_mm must be positive and finite (row, col), got {spacing_mm!r}")
    rows, cols = shape
    return max(1, round(rows * sr / target_spacing_mm)), max(1, round(cols * sc / target_spacing_mm))


def resample(
    image: np.ndarray,
    spacing_mm: tuple[float, float],
    target_spacing_mm: float = 0.1,
    method: str = "area",
    out_shape: tuple[int, int] | None = None,
) -> ResampleResult:
    """Resample `image` from (row, col) `spacing_mm` to isotropic `target_spacing_mm`.

    Args:
        image: 2-D array (converted to float32).
        spacing_mm: (row, col) source spacing in mm; may differ between axes.
        target_spacing_mm: output spacing in mm (any positive value, e.g. 0.05–0.1 for full resolution).
        method: "area" (OpenCV, fast) or "sitk" (SimpleITK with Gaussian anti-aliasing).
        out_shape: force the output (rows, cols), e.g. from a `TransformRecord`; None computes it from the spacing.
    """
    arr = np.asarray(image)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"image must be a non-empty 2-D array, got shape {arr.shape}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    rows, cols = arr.shape
    if out_shape is None:
        out_shape = output_shape((rows, cols), spacing_mm, target_spacing_mm)
    else:
        output_shape((rows, cols), spacing_mm, target_spacing_mm)  # validates the arguments
    out_rows, out_cols = (int(v) for v in out_shape)
    if out_rows < 1 or out_cols < 1:
        raise ValueError(f"out_shape must be positive, got {out_shape!r}")
    scale = (out_rows / rows, out_cols / cols)
    src = np.asarray(arr, dtype=np.float32)  # OpenCV reads strided views (a crop) without a copy
    if (out_rows, out_cols) == (rows, cols):
        out = src.copy()
    elif method == "area":
        out = _resize_cv2(src, out_rows, out_cols)
    else:
        out = _resize_sitk(src, (float(spacing_mm[0]), float(spacing_mm[1])), out_rows, out_cols)
    sr, sc = float(spacing_mm[0]), float(spacing_mm[1])
    return ResampleResult(image=out, scale=scale, spacing_mm=(sr / scale[0], sc / scale[1]))


def _resize_cv2(src: np.ndarray, out_rows: int, out_cols: int) -> np.ndarray:
    rows, cols = src.shape
    if out_rows <= rows and out_cols <= cols:
        return cv2.resize(src, (out_cols, out_rows), interpolation=cv2.INTER_AREA)
    if out_rows >= rows and out_cols >= cols:
        return cv2.resize(src, (out_cols, out_rows), interpolation=cv2.INTER_LINEAR)
    # Mixed: downsample the shrinking axis by area first, then upsample the other linearly.
    if out_rows < rows:
        tmp = cv2.resize(src, (cols, out_rows), interpolation=cv2.INTER_AREA)
    else:
        tmp = cv2.resize(src, (out_cols, rows), interpolation=cv2.INTER_AREA)
    return cv2.resize(tmp, (out_cols, out_rows), interpolation=cv2.INTER_LINEAR)


def _resize_sitk(src: np.ndarray, spacing_mm: tuple[float, float], out_rows: int, out_cols: int) -> np.ndarray:
    import SimpleITK as sitk  # here, not at the top: reading a preprocessed store (training, evaluation) needs no ITK

    rows, cols = src.shape
    sr, sc = spacing_mm
    img = sitk.GetImageFromArray(np.ascontiguousarray(src))
    img.SetSpacing((sc, sr))  # SimpleITK orders axes x (cols), y (rows)
    img.SetOrigin((0.0, 0.0))  # centre of pixel (0, 0); its left/top edge is at -spacing / 2
    factors = (cols / out_cols, rows / out_rows)
    sigmas_px = [max(0.0, (f - 1.0) / 2.0) for f in factors]
    if any(s > 0 for s in sigmas_px):
        variances = [(s * sp) ** 2 for s, sp in zip(sigmas_px, (sc, sr), strict=True)]
        img = sitk.DiscreteGaussian(img, variance=variances, maximumKernelWidth=64, maximumError=0.01,
                                    useImageSpacing=True)
    out_spacing = (sc * cols / out_cols, sr * rows / out_rows)
    out_origin = (-sc / 2 + out_spacing[0] / 2, -sr / 2 + out_spacing[1] / 2)
    out = sitk.Resample(img, (out_cols, out_rows), sitk.Transform(), sitk.sitkLinear, out_origin, out_spacing,
                        (1.0, 0.0, 0.0, 1.0), 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)
