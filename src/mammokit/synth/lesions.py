"""Lesion patches: masses and calcification clusters whose malignancy shows only at fine scale.

Every lesion is drawn from a smooth *reference* `ref` (a round mass or a hazy cluster blob) that
depends only on size and contrast, never on the lesion type, and from a type-specific fine rendering
`raw` (spicules and an irregular margin, pleomorphic fragments, round specks). The patch added to the
image is

    delta = ref + k * (H(raw) - H(ref)),   H = identity - Gaussian low-pass (sigma = `COARSE_SIGMA_MM`)

so below ~0.3 cycles/mm every lesion type looks like its reference (same size, same mean contrast,
same footprint at ~0.8 mm pixels), while above it spicules, margins and speck shapes differ. `k` is
the fine-detail gain (1 / difficulty). Circumscribed masses use raw = ref, so they are the reference.

Everything is rendered on a fine grid (<= `FINE_MM` per pixel) and area-averaged to the image
spacing, so sub-pixel specks keep their integrated brightness (partial-volume), as on a detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

COARSE_SIGMA_MM = 0.4
FINE_MM = 0.07

MALIGNANT_KINDS = ("spiculated_mass", "pleomorphic_calcifications")
BENIGN_KINDS = ("circumscribed_mass", "round_calcifications")
MASS_KINDS = ("spiculated_mass", "circumscribed_mass")


@dataclass(frozen=True)
class LesionPatch:
    """One rendered lesion at image spacing.

    Attributes:
        delta: float32 attenuation added to the image (normalized units), square patch.
        mask: bool, the lesion footprint (mass body with spicules, or the cluster's hull for calcifications).
        center: (row, col) of the lesion centre inside the patch, in image pixels (sub-pixel).
    """

    delta: np.ndarray
    mask: np.ndarray
    center: tuple[float, float]


def fine_factor(spacing_mm: float) -> int:
    """Integer supersampling factor so the fine grid is at most `FINE_MM` per pixel."""
    return max(1, math.ceil(spacing_mm / FINE_MM - 1e-9))


def _capsules(
    x: np.ndarray, y: np.ndarray, segs: np.ndarray, out: np.ndarray, step: float, gaussian: bool = False
) -> None:
    """Add anti-aliased capsules (segments with a radius) into `out`, each on its own bounding window.

    Args:
        x, y: 1-D fine-grid coordinates (mm) of columns and rows.
        segs: (N, 7) rows of x0, y0, x1, y1, radius, amplitude at start, amplitude at end.
        out: 2-D float32 accumulator.
        step: fine-grid spacing in mm (the width of the anti-aliased edge).
        gaussian: Gaussian cross-section (soft, spicule-like) instead of a flat-topped speck.
    """
    for x0, y0, x1, y1, r, a0, a1 in segs:
        reach = r * (2.5 if gaussian else 1.0) + 2 * step
        c0 = np.searchsorted(x, min(x0, x1) - reach)
        c1 = np.searchsorted(x, max(x0, x1) + reach)
        r0 = np.searchsorted(y, min(y0, y1) - reach)
        r1 = np.searchsorted(y, max(y0, y1) + reach)
        if c1 <= c0 or r1 <= r0:
            continue
        xx = x[c0:c1][None, :]
        yy = y[r0:r1][:, None]
        dx, dy = x1 - x0, y1 - y0
        length2 = dx * dx + dy * dy
        t = np.zeros((r1 - r0, c1 - c0), np.float32) if length2 == 0 else np.clip(
            ((xx - x0) * dx + (yy - y0) * dy) / length2, 0.0, 1.0
        )
        d = np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))
        amp = a0 + (a1 - a0) * t
        if gaussian:
            out[r0:r1, c0:c1] += (amp * np.exp(-((d / r) ** 2))).astype(np.float32)
        else:
            out[r0:r1, c0:c1] += (amp * np.clip((r - d) / step + 0.5, 0.0, 1.0)).astype(np.float32)


def _highpass(img: np.ndarray, step: float) -> np.ndarray:
    """`img` minus its Gaussian low-pass at `COARSE_SIGMA_MM`."""
    sigma = COARSE_SIGMA_MM / step
    return img - cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)


def render_lesion(
    kind: str,
    size_mm: float,
    contrast: float,
    spacing_mm: float,
    rng: np.random.Generator,
    detail: float = 1.0,
) -> LesionPatch:
    """Render one lesion as an attenuation patch at `spacing_mm`.

    Args:
        kind: one of MALIGNANT_KINDS + BENIGN_KINDS.
        size_mm: mass diameter, or calcification cluster extent.
        contrast: peak attenuation of the reference (mass centre) or integrated cluster brightness scale.
        spacing_mm: image pixel spacing.
        rng: the lesion's own generator (same seed -> same lesion in CC and MLO).
        detail: fine-detail gain k (0 = every type equals its smooth reference).

    Raises:
        ValueError: unknown kind or non-positive size/spacing.
    """
    if kind not in MALIGNANT_KINDS + BENIGN_KINDS:
        raise ValueError(f"kind: unknown lesion kind {kind!r}; expected one of {MALIGNANT_KINDS + BENIGN_KINDS}")
    if size_mm <= 0 or spacing_mm <= 0:
        raise ValueError(f"size_mm and spacing_mm must be positive, got {size_mm}, {spacing_mm}")
    f = fine_factor(spacing_mm)
    step = spacing_mm / f
    radius = size_mm / 2
    reach = radius * (2.6 if kind in MASS_KINDS else 1.3) + 4 * COARSE_SIGMA_MM + 1.0
    n_img = 2 * math.ceil(reach / spacing_mm) + 1
    n = n_img * f
    # Sub-pixel centre so lesions are not all pixel-aligned; the same draw is used for every kind.
    off = rng.uniform(-0.5, 0.5, 2) * spacing_mm
    coords = (np.arange(n, dtype=np.float32) + 0.5) * step - n_img * spacing_mm / 2
    x = coords - off[1]
    y = coords - off[0]
    angle = rng.uniform(0, math.pi)
    elong = rng.uniform(0.8, 1.0)
    ca, sa = math.cos(angle), math.sin(angle)
    xr = x[None, :] * ca + y[:, None] * sa
    yr = -x[None, :] * sa + y[:, None] * ca
    if kind in MASS_KINDS:
        rho2 = (xr / radius) ** 2 + (yr / (radius * elong)) ** 2
        ref = (contrast * np.sqrt(np.clip(1.0 - rho2, 0.0, None))).astype(np.float32)
        if kind == "circumscribed_mass":
            raw = ref
            body = rho2 <= 1.0
        else:
            raw, body = _spiculated(xr, yr, x, y, radius, elong, contrast, step, rng)
    else:
        ref, raw, body = _cluster(kind, x, y, radius, contrast, step, rng, angle, elong)
    delta = ref + np.float32(detail) * (_highpass(raw, step) - _highpass(ref, step))
    small = cv2.resize(delta, (n_img, n_img), interpolation=cv2.INTER_AREA) if f > 1 else delta
    mask_f = body.astype(np.float32)
    mask = (cv2.resize(mask_f, (n_img, n_img), interpolation=cv2.INTER_AREA) if f > 1 else mask_f) >= 0.25
    centre = n_img / 2 + off / spacing_mm - 0.5
    return LesionPatch(small.astype(np.float32), mask, (float(centre[0]), float(centre[1])))


def _spiculated(
    xr: np.ndarray, yr: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float, elong: float,
    contrast: float, step: float, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Irregular, microlobulated core plus tapering spicules; returns (raw, footprint)."""
    theta = np.arctan2(yr, xr)
    wobble = np.zeros_like(theta)
    for k in range(3, 14):
        wobble += rng.uniform(0.02, 0.07) / math.sqrt(k / 3) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    core_r = radius * 0.88 * (1.0 + wobble)
    rho2 = (xr / core_r) ** 2 + (yr / (core_r * elong)) ** 2
    raw = (contrast * np.sqrt(np.clip(1.0 - rho2, 0.0, None))).astype(np.float32)
    count = int(rng.integers(10, 22))
    angles = rng.uniform(0, 2 * math.pi, count)
    segs = []
    for a in angles:
        start = radius * rng.uniform(0.6, 0.85)
        end = radius * rng.uniform(1.5, 2.5)
        width = rng.uniform(0.08, 0.15)
        bend = rng.normal(0, 0.12)
        mid = (start + end) / 2
        pts = [(start, a), (mid, a + bend * 0.5), (end, a + bend)]
        amp = contrast * rng.uniform(0.45, 0.75)
        for (r0, t0), (r1, t1), (g0, g1) in zip(pts[:-1], pts[1:], ((1.0, 0.55), (0.55, 0.1)), strict=True):
            segs.append((r0 * math.cos(t0), r0 * math.sin(t0), r1 * math.cos(t1), r1 * math.sin(t1),
                         width, amp * g0, amp * g1))
    _capsules(x, y, np.asarray(segs, np.float64), raw, step, gaussian=True)
    body = raw > 0.12 * contrast
    return raw, body


def _cluster(
    kind: str, x: np.ndarray, y: np.ndarray, radius: float, contrast: float, step: float,
    rng: np.random.Generator, angle: float, elong: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calcification cluster: (ref blob, raw specks, hull footprint). Both kinds share count and brightness laws."""
    count = int(rng.integers(10, 26))
    # Speck centres inside the cluster ellipse; the same law for both kinds, so arrangement is no cue.
    u = rng.uniform(0, 1, count) ** 0.5 * 0.85
    t = rng.uniform(0, 2 * math.pi, count)
    px = radius * u * np.cos(t)
    py = radius * elong * u * np.sin(t)
    ca, sa = math.cos(angle), math.sin(angle)
    cx, cy = px * ca - py * sa, px * sa + py * ca
    # Integrated brightness of each speck (mm^2 x attenuation), same law for both kinds.
    integral = contrast * rng.lognormal(math.log(0.16), 0.35, count)
    segs = []
    for i in range(count):
        if kind == "round_calcifications":
            r = rng.uniform(0.18, 0.3)
            area = math.pi * r * r
            segs.append((cx[i], cy[i], cx[i], cy[i], r, integral[i] / area, integral[i] / area))
        else:
            # Pleomorphic: linear or branching fragments, thin, of varied length and direction.
            r = rng.uniform(0.08, 0.16)
            pieces = 1 if rng.uniform() < 0.5 else int(rng.integers(2, 4))
            lengths = rng.uniform(0.5, 1.2, pieces)
            area = float(np.sum(2 * r * lengths + math.pi * r * r))
            amp = integral[i] / area
            a0 = rng.uniform(0, 2 * math.pi)
            for j in range(pieces):
                # The main fragment is centred on the speck position; branches leave from its middle
                # in opposite-ish directions, so the speck's centroid stays where a round speck would be.
                a = a0 + (0 if j == 0 else (-1) ** j * rng.uniform(0.6, 1.3))
                h = lengths[j] / 2 if j == 0 else lengths[j] * 0.7
                sx0, sy0 = (cx[i] - h * math.cos(a), cy[i] - h * math.sin(a)) if j == 0 else (cx[i], cy[i])
                segs.append((sx0, sy0, cx[i] + h * math.cos(a), cy[i] + h * math.sin(a), r, amp,
                             amp * rng.uniform(0.6, 1.0)))
    raw = np.zeros((y.size, x.size), np.float32)
    _capsules(x, y, np.asarray(segs, np.float64), raw, step)
    # Reference: a Gaussian haze with the same total brightness and spread as the specks.
    total = float(integral.sum())
    sx = max(float(np.std(cx)), 0.5)
    sy = max(float(np.std(cy)), 0.5)
    gx = np.exp(-0.5 * ((x - cx.mean()) / sx) ** 2)
    gy = np.exp(-0.5 * ((y - cy.mean()) / sy) ** 2)
    ref = (total / (2 * math.pi * sx * sy) * gy[:, None] * gx[None, :]).astype(np.float32)
    hull = cv2.convexHull(np.stack([cx, cy], 1).astype(np.float32))[:, 0, :]
    body = np.zeros_like(raw, np.uint8)
    pts = np.round((hull - [x[0], y[0]]) / step).astype(np.int32)
    cv2.fillConvexPoly(body, pts, 1)
    body = cv2.dilate(body, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * round(1.0 / step) + 1,) * 2)) > 0
    return ref, raw, body
