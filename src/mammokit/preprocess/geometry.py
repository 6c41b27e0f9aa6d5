"""The transform from the original DICOM pixel grid to the stored canonical-frame grid, and its exact inverse.

Order of operations (the pipeline follows it): the breast mask and the orientation are decided on a coarse copy of
the original; the original is cropped to `crop_box`; the crop is resampled to the output spacing; the resampled crop
is flipped horizontally when `flip` is set. Flipping last is cheapest (the array is smallest) and, being a mirror of
the stored grid, it is exact.

Coordinates are continuous pixel-edge coordinates: pixel (row i, col j) covers x in [j, j+1), y in [i, i+1). Boxes
are `(x0, y0, x1, y1)` with x along columns and y along rows (torchvision's xyxy). With these conventions
the map is affine and exact:

    stored_x = (x - crop_x0) * scale_x, then stored_x -> stored_w - stored_x when flipped
    stored_y = (y - crop_y0) * scale_y

where `scale = stored_shape / crop_shape` per axis is the output-pixels-per-input-pixel ratio the resampler used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from mammokit.preprocess.resample import output_shape, resample

RECORD_VERSION = 1


@dataclass(frozen=True)
class TransformRecord:
    """Everything needed to map between the original DICOM grid and the stored image.

    Attributes:
        original_shape: (rows, cols) of the DICOM pixel array.
        source_spacing_mm: (row, col) spacing of the original in mm.
        target_spacing_mm: the requested isotropic output spacing.
        output_spacing_mm: (row, col) spacing actually realised (integer output sizes make it differ slightly).
        crop_box: (x0, y0, x1, y1) integer crop in original pixels, half-open.
        scale: (row, col) output pixels per input pixel, exactly stored_shape / crop shape.
        stored_shape: (rows, cols) of the stored image.
        flip: True when the resampled crop was mirrored left-right (applied after resampling).
        version: format version of this record.
    """

    original_shape: tuple[int, int]
    source_spacing_mm: tuple[float, float]
    target_spacing_mm: float
    output_spacing_mm: tuple[float, float]
    crop_box: tuple[int, int, int, int]
    scale: tuple[float, float]
    stored_shape: tuple[int, int]
    flip: bool
    version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformRecord:
        """Rebuild a record from `to_dict` output; raises ValueError naming a missing or malformed field."""
        if not isinstance(data, dict):
            raise ValueError(f"TransformRecord.from_dict: expected a dict, got {type(data).__name__}")
        version = int(data.get("version", RECORD_VERSION))
        if version != RECORD_VERSION:
            raise ValueError(f"TransformRecord.from_dict: unsupported version {version} (expected {RECORD_VERSION})")
        try:
            record = cls(
                original_shape=_ints(data["original_shape"], 2),
                source_spacing_mm=_floats(data["source_spacing_mm"], 2),
                target_spacing_mm=float(data["target_spacing_mm"]),
                output_spacing_mm=_floats(data["output_spacing_mm"], 2),
                crop_box=_ints(data["crop_box"], 4),
                scale=_floats(data["scale"], 2),
                stored_shape=_ints(data["stored_shape"], 2),
                flip=bool(data["flip"]),
                version=version,
            )
        except KeyError as err:
            raise ValueError(f"TransformRecord.from_dict: missing field {err.args[0]!r}") from err
        except (TypeError, ValueError) as err:
            raise ValueError(f"TransformRecord.from_dict: malformed field ({err})") from err
        return record


def _ints(value: Any, n: int) -> tuple[int, ...]:
    items = tuple(int(v) for v in value)
    if len(items) != n:
        raise ValueError(f"expected {n} integers, got {list(value)!r}")
    return items


def _floats(value: Any, n: int) -> tuple[float, ...]:
    items = tuple(float(v) for v in value)
    if len(items) != n:
        raise ValueError(f"expected {n} numbers, got {list(value)!r}")
    return items


def _check_spacing(spacing_mm: tuple[float, float], name: str) -> tuple[float, float]:
    try:
        sr, sc = (float(v) for v in spacing_mm)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a (row, col) pair of mm values, got {spacing_mm!r}") from err
    if not (np.isfinite(sr) and np.isfinite(sc) and sr > 0 and sc > 0):
        raise ValueError(f"{name} must be positive and finite, got {spacing_mm!r}")
    return sr, sc


def plan_transform(
    original_shape: tuple[int, int],
    spacing_mm: tuple[float, float],
    crop_box: tuple[int, int, int, int] | None,
    target_spacing_mm: float = 0.1,
    flip: bool = False,
) -> TransformRecord:
    """Decide the stored grid: crop (None = whole image), output size at the target spacing, flip.

    Args:
        original_shape: (rows, cols) of the original pixels.
        spacing_mm: (row, col) spacing of the original in mm.
        crop_box: (x0, y0, x1, y1) in original pixels (clipped to the image), or None for no crop.
        target_spacing_mm: isotropic output spacing in mm.
        flip: mirror left-right after resampling (to put the chest wall on the left).
    """
    rows, cols = (int(v) for v in original_shape)
    if rows < 1 or cols < 1:
        raise ValueError(f"original_shape must be positive, got {original_shape!r}")
    sr, sc = _check_spacing(spacing_mm, "spacing_mm")
    if crop_box is None:
        crop_box = (0, 0, cols, rows)
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    x0, x1 = max(0, x0), min(cols, x1)
    y0, y1 = max(0, y0), min(rows, y1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"crop_box {crop_box!r} is empty inside an image of shape {original_shape!r}")
    out_rows, out_cols = output_shape((y1 - y0, x1 - x0), (sr, sc), target_spacing_mm)
    scale = (out_rows / (y1 - y0), out_cols / (x1 - x0))
    return TransformRecord(
        original_shape=(rows, cols),
        source_spacing_mm=(sr, sc),
        target_spacing_mm=float(target_spacing_mm),
        output_spacing_mm=(sr / scale[0], sc / scale[1]),
        crop_box=(x0, y0, x1, y1),
        scale=scale,
        stored_shape=(out_rows, out_cols),
        flip=bool(flip),
    )


def apply_transform(pixels: np.ndarray, record: TransformRecord, method: str = "area") -> np.ndarray:
    """Crop, resample and flip `pixels` (the original grid) into the stored grid described by `record`.

    Args:
        pixels: original image, shape `record.original_shape`.
        record: from `plan_transform`.
        method: resampling method, see `mammokit.preprocess.resample.resample`.
    """
    if pixels.shape != tuple(record.original_shape):
        raise ValueError(f"pixels have shape {pixels.shape}, the record expects {tuple(record.original_shape)}")
    x0, y0, x1, y1 = record.crop_box
    out = resample(pixels[y0:y1, x0:x1], record.source_spacing_mm, record.target_spacing_mm, method=method,
                   out_shape=record.stored_shape).image
    if record.flip:
        out = cv2.flip(out, 1)
    return out


def _as_boxes(boxes: np.ndarray | list, name: str) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 4:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) as (x0, y0, x1, y1), got {arr.shape}")
    return arr.copy()


def original_to_stored_boxes(boxes: np.ndarray | list, record: TransformRecord) -> np.ndarray:
    """Map (N, 4) xyxy boxes from original pixel-edge coordinates to the stored grid (float64, not clipped)."""
    arr = _as_boxes(boxes, "boxes")
    x0, y0 = record.crop_box[0], record.crop_box[1]
    sy, sx = record.scale
    out = np.empty_like(arr)
    out[:, [0, 2]] = (arr[:, [0, 2]] - x0) * sx
    out[:, [1, 3]] = (arr[:, [1, 3]] - y0) * sy
    if record.flip:
        width = record.stored_shape[1]
        out[:, [0, 2]] = width - out[:, [2, 0]]
    return out


def stored_to_original_boxes(boxes: np.ndarray | list, record: TransformRecord) -> np.ndarray:
    """Map (N, 4) xyxy boxes from stored-grid pixel-edge coordinates back to the original DICOM grid (float64)."""
    arr = _as_boxes(boxes, "boxes")
    if record.flip:
        width = record.stored_shape[1]
        arr[:, [0, 2]] = width - arr[:, [2, 0]]
    x0, y0 = record.crop_box[0], record.crop_box[1]
    sy, sx = record.scale
    out = np.empty_like(arr)
    out[:, [0, 2]] = arr[:, [0, 2]] / sx + x0
    out[:, [1, 3]] = arr[:, [1, 3]] / sy + y0
    return out


def original_to_stored_matrix(record: TransformRecord, grid_shape: tuple[int, int] | None = None) -> np.ndarray:
    """2x3 affine taking original pixel-edge (x, y) to edge coordinates of a grid over the stored image.

    `grid_shape` is the shape of a scaled version of the stored image (e.g. a heatmap); None means the stored grid.
    """
    gh, gw = record.stored_shape if grid_shape is None else grid_shape
    ky, kx = gh / record.stored_shape[0], gw / record.stored_shape[1]
    sy, sx = record.scale
    x0, y0 = record.crop_box[0], record.crop_box[1]
    ax, bx = sx * kx, -x0 * sx * kx
    if record.flip:
        ax, bx = -ax, gw - bx
    ay, by = sy * ky, -y0 * sy * ky
    return np.array([[ax, 0.0, bx], [0.0, ay, by]], dtype=np.float64)


def _edge_to_index(matrix: np.ndarray) -> np.ndarray:
    """Turn an edge-coordinate affine into OpenCV's pixel-index (pixel centre = integer) convention."""
    out = matrix.copy()
    # index_dst = A (index_src + 0.5) + b - 0.5
    out[0, 2] = matrix[0, 2] + 0.5 * (matrix[0, 0] + matrix[0, 1]) - 0.5
    out[1, 2] = matrix[1, 2] + 0.5 * (matrix[1, 0] + matrix[1, 1]) - 0.5
    return out


def stored_to_original_heatmap(
    heatmap: np.ndarray, record: TransformRecord, fill: float = 0.0, interpolation: str = "linear"
) -> np.ndarray:
    """Resample a heatmap over the stored image (or any scaled version of it) onto the original DICOM grid.

    The heatmap's own shape fixes its scale relative to the stored image, per axis. Original pixels outside the
    crop box get `fill`; inside, values are interpolated at the original pixel centres (edge pixels replicate).

    Args:
        heatmap: 2-D float array over the stored image's extent.
        record: the image's transform record.
        fill: value outside the crop box.
        interpolation: "linear" or "nearest".
    """
    hm = np.asarray(heatmap)
    if hm.ndim != 2 or hm.shape[0] < 1 or hm.shape[1] < 1:
        raise ValueError(f"heatmap must be a non-empty 2-D array, got shape {hm.shape}")
    flags = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}
    if interpolation not in flags:
        raise ValueError(f"interpolation must be one of {sorted(flags)}, got {interpolation!r}")
    src = hm.astype(np.float32, copy=False)
    forward = _edge_to_index(original_to_stored_matrix(record, hm.shape))
    rows, cols = record.original_shape
    x0, y0, x1, y1 = record.crop_box
    out = np.full((rows, cols), fill, dtype=np.float32)
    # Warp only the crop window: shift the destination origin to (x0, y0).
    window = forward.copy()
    window[:, 2] += forward[:, 0] * x0 + forward[:, 1] * y0
    flag = flags[interpolation] | cv2.WARP_INVERSE_MAP
    out[y0:y1, x0:x1] = cv2.warpAffine(src, window, (x1 - x0, y1 - y0), flags=flag, borderMode=cv2.BORDER_REPLICATE)
    return out


def original_to_stored_mask(mask: np.ndarray, record: TransformRecord, mask_scale: tuple[float, float] = (1.0, 1.0),
                            grid_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Carry a boolean mask given on the original grid, or a scaled copy of it, onto the stored grid.

    Args:
        mask: 2-D boolean mask over the original image's extent.
        mask_scale: (row, col) mask pixels per original pixel (e.g. 1/8 for a coarse mask).
        grid_shape: output grid over the stored image (None = stored shape).
    Returns:
        bool array of `grid_shape`, True where the bilinearly interpolated mask is at least 0.5.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    gh, gw = record.stored_shape if grid_shape is None else grid_shape
    # mask-edge coords -> original edge coords -> grid edge coords
    to_grid = original_to_stored_matrix(record, (gh, gw))
    ky, kx = mask_scale
    mat = to_grid.copy()
    mat[:, 0] = to_grid[:, 0] / kx
    mat[:, 1] = to_grid[:, 1] / ky
    src = np.ascontiguousarray(m, dtype=bool).view(np.uint8) * np.uint8(255)
    warped = cv2.warpAffine(src, _edge_to_index(mat), (gw, gh), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    return warped >= 128
