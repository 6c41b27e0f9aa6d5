"""`mammokit show`: a picture of one stored image, so a user can look instead of read.

Left: the original DICOM (as the reader returns it) with the crop box and lesion boxes in DICOM pixels.
Right: the stored canonical-frame image with the breast-mask outline, the pectoral line and the mapped lesion boxes.
`draw_original` and `draw_stored` draw one panel each; `mammokit qc` (qc.py) reuses them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mammokit.dicom import read_dicom
from mammokit.errors import InvalidInputError, MissingInputError
from mammokit.io import atomic_write
from mammokit.preprocess.sources import SOURCE_LINK, with_sources
from mammokit.preprocess.store import read_image, read_mask
from mammokit.preprocess.store_schema import row_lesions, row_pectoral_line, row_transform

GREEN, RED, CYAN, YELLOW = (60, 200, 60), (40, 40, 230), (230, 200, 40), (40, 220, 240)


def to_rgb(values: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
    ref = values[inside] if inside is not None and inside.any() else values
    lo, hi = np.percentile(ref, [0.5, 99.5])
    scaled = np.clip((values - lo) / max(hi - lo, 1e-6), 0, 1)
    return cv2.cvtColor((scaled * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)


def fit_height(img: np.ndarray, height: int) -> tuple[np.ndarray, float]:
    s = height / img.shape[0]
    return cv2.resize(img, (max(1, round(img.shape[1] * s)), height), interpolation=cv2.INTER_AREA), s


def _box(img: np.ndarray, b: tuple[float, float, float, float], s: float, color: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = (round(v * s) for v in b)
    cv2.rectangle(img, (x0, y0), (x1, y1), color, 2)


def render_show(store: str | Path, image_id: str, height: int = 720) -> np.ndarray:
    """The two-panel BGR picture of `image_id` in `store`."""
    store = Path(store)
    table = pd.read_parquet(store / "preprocessed.parquet")
    rows = table[table["image_id"].astype(str) == str(image_id)]
    if rows.empty:
        raise InvalidInputError(f"{store}: no image {image_id!r} in preprocessed.parquet")
    row = with_sources(rows, store).iloc[0]
    if not isinstance(row["path"], str):
        raise MissingInputError(f"{store}: the original of {image_id!r} is not in the store's index "
                                f"({SOURCE_LINK} names none, or the index moved)")
    right = draw_stored(store, row, height)
    left = draw_original(read_dicom(row["path"]).pixels, row, height)
    gap = np.full((height, 12, 3), 255, np.uint8)
    panel = np.hstack([left, gap, right])
    label = (f"{row['laterality']} {row['view']}  flip={bool(row['flip'])} ({row['orientation_source']})  "
             f"{row['spacing_mm']:.3f} mm  pectoral={'yes' if row['pectoral_found'] else 'no'}")
    bar = np.full((28, panel.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, label, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, panel])


def draw_stored(store: Path, row: pd.Series, height: int) -> np.ndarray:
    """The stored image of `row` at `height` (BGR) with the breast-mask outline, pectoral line and lesion boxes."""
    stored = read_image(store / row["image_path"], row["offset"], row["scale"])
    mask = read_mask(store / row["breast_mask_path"])
    right, s_r = fit_height(to_rgb(stored, mask), height)
    contours, _ = cv2.findContours(cv2.resize(mask.astype(np.uint8), (right.shape[1], right.shape[0]),
                                              interpolation=cv2.INTER_NEAREST), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(right, contours, -1, GREEN, 1)
    line = row_pectoral_line(row)
    if line:
        (xa, ya), (xb, yb) = line
        cv2.line(right, (round(xa * s_r), round(ya * s_r)), (round(xb * s_r), round(yb * s_r)), CYAN, 2)
    for les in row_lesions(row):
        _box(right, (les["x0"], les["y0"], les["x1"], les["y1"]), s_r, RED if les.get("malignant") else YELLOW)
    return right


def draw_original(pixels: np.ndarray, row: pd.Series, height: int) -> np.ndarray:
    """The original DICOM pixels at `height` (BGR, percentile window) with the crop box and the lesion boxes."""
    left, s_l = fit_height(to_rgb(pixels), height)
    _box(left, (row["crop_x0"], row["crop_y0"], row["crop_x1"], row["crop_y1"]), s_l, GREEN)
    for les in _original_lesions(row):
        _box(left, (les["x0"], les["y0"], les["x1"], les["y1"]), s_l, RED if les.get("malignant") else YELLOW)
    return left


def _original_lesions(row: pd.Series) -> list[dict]:
    """Lesion boxes in DICOM pixels, mapped back from the stored frame through the recorded transform."""
    from mammokit.preprocess.geometry import stored_to_original_boxes

    stored = row_lesions(row)
    if not stored:
        return []
    record = row_transform(row)
    boxes = np.array([[d["x0"], d["y0"], d["x1"], d["y1"]] for d in stored], dtype=np.float64)
    back = stored_to_original_boxes(boxes, record)
    return [{**d, "x0": b[0], "y0": b[1], "x1": b[2], "y1": b[3]} for d, b in zip(stored, back, strict=True)]


def write_show(store: str | Path, image_id: str, out: str | Path, height: int = 720) -> Path:
    """Write the picture as PNG."""
    picture = render_show(store, image_id, height)

    def _write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), picture):
            raise OSError(f"{out}: could not write PNG")

    return atomic_write(out, _write)
