"""Breast phantom physics: outline, compressed thickness, 1/f^beta glandular texture, pectoral muscle, lesions.

Each view is rendered in the canonical frame (chest wall on the left, nipple to the right, top =
cranial) as a normalized attenuation image: 0 in air, ~0.35 for fat at full thickness, ~0.7 for
glandular tissue, more for muscle and calcium. Writers map it to detector values per vendor.

Texture follows the standard model of mammographic parenchyma: a Gaussian field with a power-law
spectrum P(f) ~ 1/f^beta, beta ~ 3, thresholded softly so that the dense fraction matches the BI-RADS
density category. A lesion keeps its distance from the nipple in both views of a breast (the rule
radiologists use to match CC and MLO findings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from mammokit.synth.lesions import LesionPatch, render_lesion

DENSITY_FRACTION = {"A": 0.07, "B": 0.25, "C": 0.5, "D": 0.75}
MU_FAT = 0.35  # normalized attenuation of fat at full compressed thickness
MU_GLAND = 0.70
MU_MUSCLE = 0.78
SKIN_MM = 0.9
SKIN_GAIN = 0.12
FALLOFF_MM = 14.0


@dataclass(frozen=True)
class BreastSpec:
    """Anatomy of one breast, shared by its CC and MLO views.

    Attributes:
        depth_mm: chest wall to nipple in the CC view (MLO is ~8% longer).
        height_mm: extent along the chest wall in the CC view.
        power: superellipse exponent of the outline (2 = ellipse; higher = squarer).
        asym: top/bottom asymmetry of the CC outline.
        density: BI-RADS density letter A-D.
        beta: spectral exponent of the parenchymal texture.
    """

    depth_mm: float
    height_mm: float
    power: float
    asym: float
    density: str
    beta: float


@dataclass(frozen=True)
class LesionSpec:
    """One finding in one breast, shown in both views.

    Attributes:
        lesion_id: 1-based id within the exam.
        kind: lesion kind (see `mammokit.synth.lesions`).
        malignant: whether it is a cancer.
        size_mm: mass diameter or cluster extent.
        contrast: reference peak attenuation (masses) or brightness scale (calcifications).
        nipple_frac: distance from the nipple as a fraction of breast depth (same in CC and MLO).
        angle_cc, angle_mlo: direction from the nipple in each view (radians, 0 = straight to the chest wall).
        seed: the lesion's own seed, so its fine structure is the same in both views.
    """

    lesion_id: int
    kind: str
    malignant: bool
    size_mm: float
    contrast: float
    nipple_frac: float
    angle_cc: float
    angle_mlo: float
    seed: int


@dataclass
class PlacedLesion:
    """A lesion as placed in one view: its spec, pixel box [y0, y1) x [x0, x1) and footprint mask."""

    spec: LesionSpec
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in canonical-frame pixels, end-exclusive
    mask: np.ndarray  # bool, same shape as the view


@dataclass
class ViewPhantom:
    """One rendered view in the canonical frame.

    Attributes:
        atten: float32 normalized attenuation (0 = air).
        tissue: bool, all tissue including pectoral muscle and nipple (the breast mask).
        pectoral: bool, pectoral muscle (MLO only; empty for CC).
        lesions: lesions placed in this view.
        nipple: (row, col) of the nipple tip.
    """

    atten: np.ndarray
    tissue: np.ndarray
    pectoral: np.ndarray
    lesions: list[PlacedLesion] = field(default_factory=list)
    nipple: tuple[int, int] = (0, 0)


def power_law_texture(shape: tuple[int, int], spacing_mm: float, beta: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian field with power spectrum ~ 1/(f^2 + f0^2)^(beta/2).

    f0 = 1/60 mm^-1 keeps the lowest frequencies finite; the field is made by filtering white noise
    in Fourier space (one real FFT of the image size).
    """
    rows, cols = shape
    noise = rng.standard_normal(shape, dtype=np.float32)
    spec = np.fft.rfft2(noise)
    fy = np.fft.fftfreq(rows, d=spacing_mm)[:, None]
    fx = np.fft.rfftfreq(cols, d=spacing_mm)[None, :]
    f2 = fy * fy + fx * fx + (1.0 / 60.0) ** 2
    spec *= (f2 ** (-beta / 4.0)).astype(np.float32)
    field_ = np.fft.irfft2(spec, s=shape).astype(np.float32)
    field_ -= field_.mean()
    std = float(field_.std())
    return field_ / std if std > 0 else field_


def _outline_cc(spec: BreastSpec, rows: int, spacing: float, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Per-row x extent (mm) of the CC breast and the nipple row (mm)."""
    y = (np.arange(rows) + 0.5) * spacing
    yc = rows * spacing / 2 + rng.uniform(-0.06, 0.06) * rows * spacing
    h_top = spec.height_mm / 2 * (1 + spec.asym)
    h_bot = spec.height_mm / 2 * (1 - spec.asym)
    u = np.where(y < yc, (yc - y) / h_top, (y - yc) / h_bot)
    inside = u < 1
    bx = np.zeros(rows)
    bx[inside] = spec.depth_mm * (1 - u[inside] ** spec.power) ** (1 / spec.power)
    return bx, yc


def _outline_mlo(
    spec: BreastSpec, rows: int, spacing: float, rng: np.random.Generator
) -> tuple[np.ndarray, float, float]:
    """Per-row x extent (mm) of the MLO breast, nipple row (mm) and axillary width at the top (mm)."""
    y = (np.arange(rows) + 0.5) * spacing
    height = rows * spacing
    depth = spec.depth_mm * rng.uniform(1.03, 1.12)
    bottom = min(height * 0.97, spec.height_mm * rng.uniform(1.05, 1.25) + 20)
    yn = bottom * rng.uniform(0.5, 0.6)
    top_w = depth * rng.uniform(0.45, 0.65)
    p = spec.power
    bx = np.zeros(rows)
    upper = y <= yn
    bx[upper] = top_w + (depth - top_w) * (1 - ((yn - y[upper]) / yn) ** p) ** (1 / p)
    lower = (y > yn) & (y < bottom)
    bx[lower] = depth * (1 - ((y[lower] - yn) / (bottom - yn)) ** (p * 0.9)) ** (1 / (p * 0.9))
    return bx, yn, top_w


def _wobble(rows: int, spacing: float, rng: np.random.Generator, amp_mm: float) -> np.ndarray:
    """Smooth random per-row perturbation of the outline (a few mm), so no two breasts are conics."""
    y = np.arange(rows) * spacing
    out = np.zeros(rows)
    for k in (1, 2, 3, 5):
        out += amp_mm / k * math.sqrt(2) * np.sin(2 * math.pi * k * y / (rows * spacing) + rng.uniform(0, 2 * math.pi))
    return out


def render_view(
    spec: BreastSpec,
    view: str,
    lesions: list[LesionSpec],
    rows: int,
    cols: int,
    spacing_mm: float,
    rng: np.random.Generator,
    detail: float = 1.0,
    mu_fat: float = MU_FAT,
    skin: float = SKIN_GAIN,
) -> ViewPhantom:
    """Render one view (CC or MLO) of one breast in the canonical frame.

    Args:
        spec: the breast's anatomy.
        view: "CC" or "MLO".
        lesions: findings of this breast; each is placed at its nipple distance.
        rows, cols: image size; spacing_mm: square pixel spacing.
        rng: generator for this view's texture, outline details and noise-free anatomy.
        detail: fine-detail gain passed to lesion rendering (1 / difficulty).
        mu_fat: attenuation of fat at full thickness (a fatty hard case puts it close to air).
        skin: peak extra attenuation of the skin line.

    Raises:
        ValueError: a view other than CC/MLO, or an image too small to hold the breast.
    """
    if view not in ("CC", "MLO"):
        raise ValueError(f"view: expected 'CC' or 'MLO', got {view!r}")
    if cols * spacing_mm < spec.depth_mm * 1.2 + 10:
        raise ValueError(f"image width {cols * spacing_mm:.0f} mm cannot hold a {spec.depth_mm:.0f} mm deep breast")
    x = ((np.arange(cols) + 0.5) * spacing_mm).astype(np.float32)
    wob = _wobble(rows, spacing_mm, rng, amp_mm=1.5)
    if view == "CC":
        bx, yn = _outline_cc(spec, rows, spacing_mm, rng)
        top_w = 0.0
    else:
        bx, yn, top_w = _outline_mlo(spec, rows, spacing_mm, rng)
    bx = np.where(bx > 0, np.maximum(bx + wob, 1.0), 0.0)
    tissue = x[None, :] < bx[:, None]
    n_row = min(rows - 1, int(yn / spacing_mm))
    depth = float(bx[n_row])
    # Nipple: a small half-ellipse on the outline at the nipple row.
    nip_w = rng.uniform(3.5, 5.5)
    nip_h = rng.uniform(3.0, 5.0)
    yy = ((np.arange(rows) + 0.5) * spacing_mm)[:, None]
    nipple = ((x[None, :] - depth) / nip_h) ** 2 + ((yy - yn) / nip_w) ** 2 <= 1.0
    tissue |= nipple
    tissue_u8 = tissue.astype(np.uint8)
    # Distance to skin in mm; the chest wall (left edge) and, for MLO, the top edge are body, not skin.
    pad = int(FALLOFF_MM / spacing_mm) + 2
    padded = cv2.copyMakeBorder(tissue_u8, pad if view == "MLO" else 0, 0, pad, 0, cv2.BORDER_REPLICATE)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[pad if view == "MLO" else 0 :, pad:] * spacing_mm
    # Compressed thickness: flat, rounding off over FALLOFF_MM towards the skin.
    s = np.clip(dist / FALLOFF_MM, 0.0, 1.0)
    thick = np.sqrt(1.0 - (1.0 - s) ** 2).astype(np.float32)
    thick[~tissue] = 0
    # Glandular fraction: power-law texture plus a subareolar envelope, thresholded to the density.
    tex = power_law_texture((rows, cols), spacing_mm, spec.beta, rng)
    env = np.exp(-(((x[None, :] - 0.45 * depth) / (0.5 * depth)) ** 2) - ((yy - yn) / (0.35 * spec.height_mm)) ** 2)
    score = tex + 1.4 * env.astype(np.float32) - 0.8 * (1 - s)
    sample = score[tissue][:: max(1, int(tissue.sum() // 20000))]
    target = DENSITY_FRACTION[spec.density] * rng.uniform(0.85, 1.15)
    thr = float(np.quantile(sample, 1.0 - target)) if sample.size else 0.0
    gland = 1.0 / (1.0 + np.exp(-(score - thr) / 0.55))
    atten = thick * (mu_fat + (MU_GLAND - mu_fat) * gland.astype(np.float32))
    # Skin line: a thin brighter rim inside the outline.
    atten += np.where(tissue, skin * np.exp(-dist / SKIN_MM), 0).astype(np.float32)
    atten[nipple] = np.maximum(atten[nipple], 0.45)
    pectoral = np.zeros_like(tissue)
    if view == "MLO":
        pw = top_w * rng.uniform(0.55, 0.85)
        ph = yn * rng.uniform(0.7, 1.1)
        q = rng.uniform(0.75, 1.1)
        xp = pw * np.clip(1.0 - yy / ph, 0.0, 1.0) ** q
        pectoral = tissue & (x[None, :] < xp)
        grad = (1.0 - 0.25 * np.clip(x[None, :] / max(pw, 1.0), 0, 1)).astype(np.float32)
        muscle = MU_MUSCLE * grad * (1.0 + 0.04 * tex)
        edge = np.clip((xp - x[None, :]) / 1.5, 0.0, 1.0).astype(np.float32)  # soft 1.5 mm muscle edge
        atten = np.where(tissue, atten * (1 - edge) + muscle * edge, atten).astype(np.float32)
    phantom = ViewPhantom(atten, tissue, pectoral, nipple=(n_row, min(cols - 1, int((depth + nip_h) / spacing_mm))))
    for les in lesions:
        _place_lesion(phantom, les, view, dist, depth, yn, spacing_mm, detail)
    return phantom


def _place_lesion(
    ph: ViewPhantom, les: LesionSpec, view: str, dist: np.ndarray, depth: float, yn: float, spacing: float,
    detail: float,
) -> None:
    """Put `les` at its nipple distance, nudged inwards until it clears skin and pectoral, and add it."""
    rows, cols = ph.atten.shape
    r_n = les.nipple_frac * depth
    ang = les.angle_cc if view == "CC" else les.angle_mlo
    cx, cy = depth - r_n * math.cos(ang), yn + r_n * math.sin(ang)
    anchor = (0.55 * depth, yn)
    clear = les.size_mm / 2 + 3.0
    if ph.pectoral.any():
        pec_dist = cv2.distanceTransform((~ph.pectoral).astype(np.uint8), cv2.DIST_L2, 5) * spacing
    else:
        pec_dist = None
    for _ in range(40):
        r, c = int(cy / spacing), int(cx / spacing)
        ok = 0 <= r < rows and 0 <= c < cols and dist[r, c] >= clear and ph.tissue[r, c]
        if ok and pec_dist is not None:
            ok = pec_dist[r, c] >= clear
        if ok:
            break
        cx += 0.1 * (anchor[0] - cx) + 0.5 * (1 if anchor[0] > cx else -1)
        cy += 0.1 * (anchor[1] - cy)
    patch: LesionPatch = render_lesion(
        les.kind, les.size_mm, les.contrast, spacing, np.random.default_rng(les.seed), detail=detail
    )
    n = patch.delta.shape[0]
    r0 = round(cy / spacing - 0.5 - patch.center[0])
    c0 = round(cx / spacing - 0.5 - patch.center[1])
    # Clip the patch to the image (it always overlaps: the centre is inside the breast).
    pr0, pc0 = max(0, -r0), max(0, -c0)
    pr1, pc1 = min(n, rows - r0), min(n, cols - c0)
    sl = (slice(r0 + pr0, r0 + pr1), slice(c0 + pc0, c0 + pc1))
    tissue = ph.tissue[sl]
    ph.atten[sl] += np.where(tissue, patch.delta[pr0:pr1, pc0:pc1], 0).astype(np.float32)
    mask = np.zeros_like(ph.tissue)
    mask[sl] = patch.mask[pr0:pr1, pc0:pc1] & tissue
    ys, xs = np.nonzero(mask)
    if ys.size == 0:  # a cluster smaller than a pixel: mark the centre pixel
        rr, cc = min(rows - 1, max(0, int(cy / spacing))), min(cols - 1, max(0, int(cx / spacing)))
        mask[rr, cc] = True
        ys, xs = np.array([rr]), np.array([cc])
    ph.lesions.append(PlacedLesion(les, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), mask))
