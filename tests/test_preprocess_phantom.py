"""A mammogram phantom with known answers, shared by the preprocessing tests and the bench.

The breast is a half-ellipse on the chest-wall edge with 1/f-like texture and a thin, faint skin fringe; MLO views
add a brighter pectoral triangle in the upper chest-wall corner. Optional extras: a bright label block in the air,
a padding border, a saturated implant, an arbitrary bit depth and offset. Ground truth comes back with the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Phantom:
    """Pixels plus ground truth in the stored (possibly flipped) DICOM grid."""

    pixels: np.ndarray
    spacing_mm: tuple[float, float]
    breast: np.ndarray  # bool, true breast (skin line included)
    pectoral: np.ndarray  # bool, empty for CC
    padding: np.ndarray  # bool
    chest_wall_left: bool
    pectoral_line: tuple[tuple[float, float], tuple[float, float]] | None  # canonical-frame edge coordinates
    lesion_boxes: np.ndarray  # (N, 4) xyxy in the stored grid


def texture(shape: tuple[int, int], rng: np.random.Generator, sigma_px: float) -> np.ndarray:
    """Zero-mean unit-variance smooth noise (sum of two scales, roughly 1/f)."""
    noise = rng.standard_normal(shape).astype(np.float32)
    out = cv2.GaussianBlur(noise, (0, 0), sigma_px) + 0.5 * cv2.GaussianBlur(noise, (0, 0), sigma_px / 4)
    return (out - out.mean()) / out.std()


def make_phantom(
    shape: tuple[int, int] = (832, 640),
    spacing_mm: tuple[float, float] = (0.28, 0.28),
    view: str = "MLO",
    chest_wall_left: bool = True,
    seed: int = 0,
    bits: int = 14,
    offset: float = 0.0,
    label: bool = False,
    padding_px: int = 0,
    implant: bool = False,
    depth: float = 0.75,
    pectoral_ab: tuple[float, float] = (0.35, 0.5),
    pectoral_step: float = 0.25,
    lesions: int = 2,
    muscle: bool = True,
) -> Phantom:
    """Build a phantom; `depth` is the nipple distance as a fraction of the width, `pectoral_ab` the muscle's
    top-edge and chest-wall intercepts as fractions of the width and height, `pectoral_step` its brightness step."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32) + 0.5
    a = depth * cols
    if view == "MLO":
        cy, b = 0.42 * rows, 0.6 * rows  # touches the top edge (axilla)
    else:
        cy, b = 0.5 * rows, 0.42 * rows
    r = np.sqrt((xx / a) ** 2 + ((yy - cy) / b) ** 2)
    breast = r < 1.0
    thickness = np.clip((1.0 - r) / 0.06, 0, 1) ** 0.5  # compressed breast: flat, thinning at the skin
    tex = texture(shape, rng, sigma_px=6.0 / spacing_mm[0])
    dense = np.clip(0.5 + 0.35 * tex, 0, 1)
    signal = np.where(breast, thickness * (0.35 + 0.4 * dense), 0.0)
    pectoral = np.zeros(shape, dtype=bool)
    line = None
    if view == "MLO" and muscle:
        pa, pb = pectoral_ab[0] * cols, pectoral_ab[1] * rows
        pectoral = (xx / pa + yy / pb < 1.0) & breast
        signal = np.where(pectoral, thickness * (0.35 + 0.4 * 0.5 + pectoral_step + 0.05 * tex), signal)
        line = ((pa, 0.0), (0.0, pb))
    boxes = []
    for _ in range(lesions):
        # small bright blobs well inside the breast, outside the muscle
        for _attempt in range(100):
            lx, ly = rng.uniform(0.15, 0.6) * a, cy + rng.uniform(-0.5, 0.5) * b
            if breast[int(ly), int(lx)] and not pectoral[int(ly), int(lx)]:
                break
        rad = 4.0 / spacing_mm[0]
        signal = signal + 0.15 * np.exp(-((xx - lx) ** 2 + (yy - ly) ** 2) / (2 * rad**2)) * breast
        boxes.append((lx - 2 * rad, ly - 2 * rad, lx + 2 * rad, ly + 2 * rad))
    if implant:
        imp = ((xx - 0.35 * a) / (0.22 * a)) ** 2 + ((yy - cy) / (0.3 * b)) ** 2 < 1.0
        signal = np.where(imp, 1.6, signal)
    signal = signal + 0.004 * rng.standard_normal(shape).astype(np.float32)
    top = 2**bits - 1
    pixels = offset + np.clip(signal / 1.6, 0, 1) * top
    if label:
        pixels[int(0.05 * rows) : int(0.12 * rows), int(0.8 * cols) : int(0.95 * cols)] = offset + top
    padding = np.zeros(shape, dtype=bool)
    if padding_px:
        padding[:, -padding_px:] = True
        padding[-padding_px:, :] = True
        pixels[padding] = offset + top  # e.g. a PixelPaddingValue that lands bright after inversion
        breast &= ~padding
        pectoral &= ~padding
    pixels = np.round(pixels).astype(np.float32)
    box_arr = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    if not chest_wall_left:
        flipped = (np.ascontiguousarray(x[:, ::-1]) for x in (pixels, breast, pectoral, padding))
        pixels, breast, pectoral, padding = flipped
        box_arr[:, [0, 2]] = cols - box_arr[:, [2, 0]]
    return Phantom(pixels, spacing_mm, breast, pectoral, padding, chest_wall_left, line, box_arr)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def test_phantom_ground_truth_is_consistent() -> None:
    ph = make_phantom(view="MLO", chest_wall_left=False, padding_px=10, label=True)
    assert ph.pectoral.any() and not (ph.pectoral & ~ph.breast).any()
    assert not (ph.breast & ph.padding).any()
    # chest wall on the right: the last breast column holds far more breast than the first
    assert ph.breast[:, -12].sum() > 10 * max(1, ph.breast[:, 5].sum())
    assert ph.pixels.max() <= 2**14 - 1
