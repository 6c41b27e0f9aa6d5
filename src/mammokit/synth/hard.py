"""Hard cases real archives have and a preprocessing pipeline must survive (opt-in; the default output is unchanged).

- fatty: fat close to air in value (fat attenuation 0.04 instead of 0.35, a faint skin line) and density A, so
  the dense tissue is a small bright minority and Otsu splits fat from dense tissue (`render_view(mu_fat, skin)`).
- air_minority: a large breast on a small detector; it touches the top, bottom and chest-wall edges and air is
  below 15% of the image (`adjust_spec`, `crop_to_breast`).
- collimated: the darkest stored value (0; the top value for MONOCHROME1) outside a collimated rectangle, in bands
  on one or more free edges, and no PixelPaddingValue (`artifacts.collimation`).
- film: the scanned-film profile: Secondary Capture, 12 bit, no spacing tags, film grain, unexposed borders,
  scanner bands, a lead marker and a paper label (`artifacts.film_marks`).
- skin_fold: a thin dense fold 1.5-5 mm inside the skin line (CC) or at the axilla (top of an MLO)
  (`add_skin_fold`).

Each function here changes one canonical-frame phantom (chest wall on the left) before the writer stores it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import cv2
import numpy as np

from mammokit.synth.phantom import FALLOFF_MM, BreastSpec, PlacedLesion, ViewPhantom

HARD_KINDS: tuple[str, ...] = ("fatty", "air_minority", "collimated", "film", "skin_fold")
FATTY_MU_FAT = 0.04
FATTY_SKIN = 0.02
AIR_TARGET = 0.12


def resolve_hard_cases(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Hard-case kinds from None (none), "all", a comma-separated string or names.

    Raises:
        ValueError: an unknown kind (the message lists the known ones).
    """
    if value is None:
        return ()
    if isinstance(value, str):
        value = HARD_KINDS if value.strip().lower() == "all" else [v for v in value.split(",") if v.strip()]
    kinds = tuple(dict.fromkeys(v.strip().lower().replace("-", "_") for v in value))
    unknown = [k for k in kinds if k not in HARD_KINDS]
    if unknown:
        raise ValueError(f"hard_cases: unknown kind(s) {unknown}; known: {', '.join(HARD_KINDS)}")
    return kinds


def adjust_spec(kind: str | None, spec: BreastSpec, rows: int, cols: int, spacing: float,
                rng: np.random.Generator) -> BreastSpec:
    """The breast anatomy a hard case needs (fatty: density A; air minority: as deep and tall as the detector)."""
    if kind == "fatty":
        return replace(spec, density="A")
    if kind == "air_minority":
        depth = (cols * spacing - 10.0) / 1.2 * rng.uniform(0.95, 0.99)
        return replace(spec, depth_mm=float(depth), height_mm=float(rows * spacing * rng.uniform(1.4, 1.6)),
                       power=float(rng.uniform(2.8, 3.4)), asym=0.0)
    return spec


def render_options(kind: str | None) -> dict[str, float]:
    """Extra keyword arguments of `render_view` for a hard case."""
    return {"mu_fat": FATTY_MU_FAT, "skin": FATTY_SKIN} if kind == "fatty" else {}


def modify_phantom(kind: str | None, phantom: ViewPhantom, view: str, spacing: float,
                   rng: np.random.Generator) -> tuple[ViewPhantom, np.ndarray | None]:
    """Content changes made after rendering; returns the phantom and the skin-fold mask (None without a fold)."""
    if kind == "air_minority":
        return crop_to_breast(phantom, spacing), None
    if kind == "skin_fold":
        return phantom, add_skin_fold(phantom, view, spacing, rng)
    return phantom, None


def _crop(ph: ViewPhantom, y0: int, y1: int, x1: int) -> ViewPhantom:
    """Rows [y0, y1) and columns [0, x1) of a phantom, lesions included."""
    sl = (slice(y0, y1), slice(0, x1))
    lesions = [PlacedLesion(p.spec, (p.box[0], p.box[1] - y0, p.box[2], p.box[3] - y0), p.mask[sl].copy())
               for p in ph.lesions]
    return ViewPhantom(ph.atten[sl].copy(), ph.tissue[sl].copy(), ph.pectoral[sl].copy(), lesions,
                       (ph.nipple[0] - y0, ph.nipple[1]))


def crop_to_breast(ph: ViewPhantom, spacing: float, target: float = AIR_TARGET) -> ViewPhantom:
    """Crop the detector to 1 mm beyond the nipple, then trim the rows with least tissue until air < `target`.

    Rows holding a lesion are never trimmed, so every finding stays whole.
    """
    tissue = ph.tissue
    x1 = min(tissue.shape[1], int(np.flatnonzero(tissue.any(0))[-1]) + 1 + max(1, round(1 / spacing)))
    rows = np.flatnonzero(tissue.any(1))
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    keep0 = min([p.box[1] for p in ph.lesions], default=y1)
    keep1 = max([p.box[3] for p in ph.lesions], default=y0)
    count = tissue[:, :x1].sum(1)
    cum = np.concatenate([[0], np.cumsum(count)])

    def air(a: int, b: int) -> float:
        return 1.0 - (cum[b] - cum[a]) / ((b - a) * x1)

    while air(y0, y1) > target and y1 - y0 > tissue.shape[0] // 2:
        if count[y0] <= count[y1 - 1] and y0 < keep0:
            y0 += 1
        elif y1 > keep1:
            y1 -= 1
        elif y0 < keep0:
            y0 += 1
        else:
            break
    return _crop(ph, y0, y1, x1)


def skin_distance(tissue: np.ndarray, view: str, spacing: float) -> np.ndarray:
    """Distance (mm) to the skin; the chest wall (left edge) and, for an MLO, the top edge are body, not skin."""
    pad = int(FALLOFF_MM / spacing) + 2
    top = pad if view == "MLO" else 0
    padded = cv2.copyMakeBorder(tissue.astype(np.uint8), top, 0, pad, 0, cv2.BORDER_REPLICATE)
    return cv2.distanceTransform(padded, cv2.DIST_L2, 5)[top:, pad:] * spacing


def add_skin_fold(ph: ViewPhantom, view: str, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Add a thin dense fold along the skin (CC: one side, MLO: the axilla at the top); returns its mask."""
    dist = skin_distance(ph.tissue, view, spacing)
    rows = np.flatnonzero(ph.tissue.any(1))
    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    height = r1 - r0
    if view == "MLO":  # the axilla: the upper part of the outline, next to the top edge
        lo, hi = r0, r0 + int(height * rng.uniform(0.18, 0.3))
    else:
        length = int(rng.uniform(0.2, 0.35) * height)
        lo = r0 + int(height * rng.uniform(0.05, 0.15))
        if rng.uniform() < 0.5:
            lo = r1 - (lo - r0) - length
        hi = lo + length
    y = np.arange(ph.tissue.shape[0], dtype=np.float32)
    taper = np.clip(np.minimum(y - lo, hi - y) / max(1.0, 0.15 * (hi - lo)), 0.0, 1.0)[:, None]
    depth = rng.uniform(1.5, 5.0)
    half = max(rng.uniform(0.4, 0.7), 0.75 * spacing)
    line = np.exp(-(((dist - depth) / half) ** 2)).astype(np.float32) * taper.astype(np.float32)
    line[~ph.tissue] = 0.0
    amp = rng.uniform(0.12, 0.2)
    ph.atten += np.float32(amp) * line
    fold = line > 0.3
    if not fold.any():  # a breast too small for the chosen band: mark the strongest pixel
        fold.flat[int(np.argmax(line))] = True
    return fold & ph.tissue


def air_fraction(tissue: np.ndarray) -> float:
    """Fraction of the image that is not breast."""
    return float(1.0 - tissue.mean())


def fold_summary(fold: np.ndarray | None) -> dict[str, object]:
    """JSON-able description of a fold mask (pixel count and box)."""
    if fold is None or not fold.any():
        return {"fold_pixels": 0, "fold_box": None}
    ys, xs = np.nonzero(fold)
    return {"fold_pixels": int(fold.sum()), "fold_box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1,
                                                          int(ys.max()) + 1]}
