"""The gray picture an overlay is drawn on: the DICOM pixels windowed by their own percentiles, downscaled.

`mammokit predict` asks the preprocessing workers, which hold the decoded pixels anyway, to keep this picture in the
store (`previews/<stem>.png`), so the overlays never decode a DICOM a second time. `evaluation.explain.overlay_png`
makes the same picture from full pixels; both go through `overlay_gray`, so the overlays are the same either way.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mammokit.io import atomic_write

__all__ = ["overlay_gray", "preview_path", "read_preview", "window_gray", "write_preview"]
PREVIEW_DIR = "previews"


def window_gray(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Gray uint8 from the image's own percentiles (no VOI window: raw values vary by vendor)."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.zeros(image.shape, np.uint8)
    lo, hi = np.percentile(finite, [low, high])
    scaled = (np.nan_to_num(image, nan=lo) - lo) / max(float(hi - lo), 1e-12)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def overlay_size(shape: tuple[int, ...], max_side: int | None) -> tuple[int, int] | None:
    """(width, height) an image of `shape` is downscaled to so its long side is at most `max_side`; None = as is."""
    if max_side is None or max(shape[:2]) <= max_side:
        return None
    factor = max_side / max(shape[:2])
    return max(1, round(shape[1] * factor)), max(1, round(shape[0] * factor))


def overlay_gray(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """The windowed gray image at the overlay's size (area-downscaled to `max_side` on the long side)."""
    gray = window_gray(np.asarray(image, dtype=np.float32))
    size = overlay_size(gray.shape, max_side)
    return gray if size is None else cv2.resize(gray, size, interpolation=cv2.INTER_AREA)


def preview_path(store: str | Path, stem: str) -> Path:
    return Path(store) / PREVIEW_DIR / f"{stem}.png"


def write_preview(store: str | Path, stem: str, image: np.ndarray, max_side: int | None) -> Path:
    """Write `overlay_gray(image, max_side)` as an 8-bit PNG in the store (atomically)."""
    path = preview_path(store, stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    gray = overlay_gray(image, max_side)

    def write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), gray, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise OSError(f"{path}: OpenCV could not write the preview")

    return atomic_write(path, write)


def read_preview(store: str | Path, stem: str) -> np.ndarray | None:
    """The stored preview, or None when there is none."""
    path = preview_path(store, stem)
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.is_file() else None
