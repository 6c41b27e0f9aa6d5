"""Breast mask and crop box, computed on a coarse copy of the original for speed.

The original is block-averaged by an integer factor (long side about `coarse_long_side` px, typically 0.4–0.8 mm
pixels). The threshold anchors on the air, whatever share of the image the air is (`estimate_air`): the darkest
clear histogram mode below Otsu's threshold, its noise from its darker half, the threshold a few noise widths above.
Recognised on the way: padding drawn over all the air, collimator zeros along whole border lines, scanner bands
(row/column offsets of the air), bright film or plate edge bands.

Then the breast grows in three layers from a core well above the air (`breast_mask`): tissue clearly above the air
joins wherever it lies, the faintest layer (the skin line) only near the mask, so film fog cannot carry the mask
across the air; small protrusions (the nipple) and small holes (a cyst, an implant) are kept. Every other bright
component is reported as a marker or label, and the crop margin stops short of it (`crop_box`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

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
        separability: Otsu's between-class / total variance of the coarse values (low: air and breast barely part).
        air_level, air_noise: the air's value and robust spread (`estimate_air`).
        tissue_outside: bright coarse pixels just outside the mask (a two-pixel ring), over the bright pixels inside
            it: tissue the mask may have lost (markers and labels apart from the breast do not count).
        edge_bands: image sides where a bright film/plate edge band was cut off before segmenting.
        markers: boxes (x0, y0, x1, y1, original px) of bright components apart from the breast.
    """

    mask: np.ndarray
    factor: int
    original_shape: tuple[int, int]
    threshold: float
    box: tuple[int, int, int, int] | None
    area_fraction: float
    warnings: tuple[str, ...] = ()
    separability: float = float("nan")
    air_level: float = float("nan")
    air_noise: float = float("nan")
    tissue_outside: float = float("nan")
    edge_bands: tuple[str, ...] = ()
    markers: tuple[tuple[int, int, int, int], ...] = ()

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


@dataclass(frozen=True)
class AirEstimate:
    """Where the air sits in a sample of coarse pixel values, and the breast threshold above it.

    Attributes:
        level: the air's value (median of the air mode).
        noise: the air's robust spread, from its darker half only (tissue cannot contaminate it).
        threshold: the breast threshold, `level + max(noise_sigmas·noise, floor)`, never above `otsu`.
        otsu: Otsu's threshold of the whole sample (for reference and QC).
        separability: Otsu's between-class / total variance (0–1): low means air and breast barely separate.
        peak_ratio: the air mode's mass over the mean mass of the windows beside it: a real air peak stands far
            above its neighbours (> 3), a plateau of tissue values does not (about 1).
    """

    level: float
    noise: float
    threshold: float
    otsu: float
    separability: float
    peak_ratio: float = float("inf")


def estimate_air(
    values: np.ndarray, noise_sigmas: float = 4.0, floor_fraction: float = 0.001, bins: int = 256,
    mode_bins: int = 9,
) -> AirEstimate:
    """Find the air mode below Otsu's threshold and put the breast threshold just above its noise.

    The air is the darkest clear mode of the histogram below Otsu's threshold that holds a fair share of the
    heaviest mode's mass (a box of `mode_bins` bins measures each mode's mass; see `_air_mode`), whatever share of
    the image it is: fatty tissue next to air, air as a 5% strip, and a small darker object (a clip, a hole in the
    film) do not move it, because tissue spreads over many values and the air piles up in a few. Its noise comes
    from the values below its level only. The threshold is `noise_sigmas` noise
    widths above the air, and at least `floor_fraction` of the range above it (so exact-zero air does not put the
    threshold on the quantisation step of a compressed stream).
    """
    v = np.asarray(values, dtype=np.float32).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("estimate_air: no finite values")
    lo, hi = float(v.min()), float(np.percentile(v, 99.5))
    if not hi > lo:
        return AirEstimate(hi, 0.0, hi, hi, 0.0, 0.0)
    v = np.minimum(v, hi)
    t, eta = otsu(v)
    below = v[v <= t]
    hist, edges = np.histogram(below, bins=bins, range=(lo, t))
    mass = np.convolve(hist, np.ones(mode_bins), mode="same")
    k, peak_ratio = _air_mode(mass, mode_bins)
    half = mode_bins // 2
    near = below[(below >= edges[max(0, k - half)]) & (below <= edges[min(bins, k + half + 1)])]
    level = float(np.median(near)) if near.size else float(edges[k])
    darker = below[below <= level]
    noise = 1.4826 * float(np.median(level - darker)) if darker.size else 0.0
    threshold = min(t, level + max(noise_sigmas * noise, floor_fraction * (hi - level)))
    return AirEstimate(level, noise, float(threshold), float(t), float(eta), peak_ratio)


def _peak_ratio(mass: np.ndarray, k: int, width: int) -> float:
    """A mode's mass over the mean mass of the windows one window-width beside it."""
    beside = [mass[j] for j in (k - width, k + width) if 0 <= j < mass.size]
    return float(mass[k] / max(np.mean(beside), 1.0)) if beside else float("inf")


def _air_mode(mass: np.ndarray, width: int, share: float = 0.25, min_ratio: float = 2.0) -> tuple[int, float]:
    """(bin, peak ratio) of the air: the darkest clear peak holding at least `share` of the heaviest mode's mass.

    The air is the darkest large population. Requiring a clear peak of a fair share keeps a small darker object (a
    clip, a hole in the film) from passing for it, and taking the darkest such peak, not the heaviest, keeps fatty
    tissue from passing for it when the air is a thin strip beside a breast that fills the detector.
    """
    top = float(mass.max())
    half = max(1, width // 2)
    for k in range(mass.size):
        lo, hi = max(0, k - half), min(mass.size, k + half + 1)
        if mass[k] < share * top or mass[k] < mass[lo:hi].max():
            continue
        ratio = _peak_ratio(mass, k, width)
        if ratio >= min_ratio:
            return k, ratio
    k = int(np.argmax(mass))
    return k, _peak_ratio(mass, k, width)


def _block_all(mask: np.ndarray, factor: int) -> np.ndarray:
    """True for each `factor`×`factor` block whose pixels are all True (same grid as `block_mean`)."""
    return ~block_any(~np.asarray(mask, dtype=bool), factor)


def robust_threshold(values: np.ndarray, noise_sigmas: float = 4.0, floor_fraction: float = 0.001) -> float:
    """Air/breast threshold of a 1-D sample of coarse pixel values (`estimate_air(...).threshold`)."""
    return estimate_air(values, noise_sigmas, floor_fraction).threshold


def breast_mask(
    pixels: np.ndarray,
    padding_mask: np.ndarray | None = None,
    coarse_long_side: int = 512,
    min_area_fraction: float = 0.005,
    core_fraction: float = 0.1,
    fringe_fraction: float = 0.01,
    body_fraction: float = 0.03,
) -> BreastMask:
    """Segment the breast (largest bright connected region, holes filled) on a coarse copy of `pixels`.

    The breast's core is the largest component above `air + core_fraction·(otsu − air)`; from it the mask grows
    without limit into everything above `air + body_fraction·(otsu − air)` (fatty tissue), then into everything
    above the air-anchored threshold (the faint skin line) for at most `fringe_fraction` of the long side (about
    2.5 mm on a full-field image), so faint film fog beside the breast cannot carry the mask across the air.

    Args:
        pixels: original float image in MONOCHROME2 sense (higher = denser), any offset or bit depth.
        padding_mask: optional bool mask, True on padding pixels (PixelPaddingValue); they are never breast.
        coarse_long_side: long side of the coarse working grid in px.
        min_area_fraction: below this fraction of the image the result is reported as empty.
        core_fraction: where the core threshold sits between the air and Otsu's threshold.
        fringe_fraction: how far (share of the long side) the mask may grow into the faintest pixels.
        body_fraction: where the level that the mask may grow into without limit sits between air and Otsu.
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
    padding = None if padding_mask is None else block_any(np.asarray(padding_mask, dtype=bool), factor)
    valid = np.isfinite(coarse) if padding is None else ~padding & np.isfinite(coarse)
    shape = (int(arr.shape[0]), int(arr.shape[1]))
    empty = np.zeros(coarse.shape, bool)
    if not valid.any():
        return BreastMask(empty, factor, shape, float("nan"), None, 0.0, ("every pixel is padding or not finite",))
    if padding is not None and _padding_is_the_air(padding, valid):
        # The vendor wrote the padding value over all the air (RSNA's processed images): what is left is breast,
        # and so is every block holding any of it (the skin line lies in blocks that are partly padding).
        valid = ~_block_all(np.asarray(padding_mask, dtype=bool), factor) & np.isfinite(coarse)
        low = float(coarse[valid].min())
        air = AirEstimate(low, 0.0, low - 1.0, float("nan"), 1.0)
    else:
        valid, air = _air_inside_the_field(coarse, valid)
        coarse, air = _flatten_bands(coarse, valid, air)
    values = coarse[valid]
    threshold = air.threshold
    if float(values.max()) <= threshold:
        return BreastMask(empty, factor, shape, threshold, None, 0.0, ("image is constant: no breast found",))
    binary = (coarse > threshold) & valid
    # The breast's core stands clearly above the air; fog, haze and scanner shading on film sit between the two.
    core_threshold = max(threshold, _above_air(air, core_fraction))
    core_binary = (coarse > core_threshold) & valid
    # One more line than the band itself: the block straddling the band's inner edge is a sliver of it.
    bands = {side: width + 1 for side, width in edge_bands(core_binary, valid).items()}
    for side, width in bands.items():
        _line_view(binary, side, width)[...] = False
        _line_view(core_binary, side, width)[...] = False
    core8 = core_binary.astype(np.uint8)
    largest = _largest_component(cv2.morphologyEx(core8, cv2.MORPH_OPEN, _KERNEL3))
    if largest is None:
        largest = _largest_component(core8)
    if largest is None:
        return BreastMask(empty, factor, shape, threshold, None, 0.0, ("no breast found",))
    # Tissue clearly above the air (fatty tissue) joins whatever its distance from the core; the faintest layer
    # (the skin line, or film fog) only within `fringe_fraction` of the long side.
    body_threshold = min(core_threshold, max(threshold, _above_air(air, body_fraction)))
    body_binary = cv2.morphologyEx((binary & (coarse > body_threshold)).astype(np.uint8), cv2.MORPH_OPEN, _KERNEL3)
    body = _reconstruct(largest, body_binary.astype(bool))  # opened: no thin slivers of fog
    reach = max(2, round(fringe_fraction * max(coarse.shape)))
    grown = _attach_protrusions(_grow_within(body, binary, reach), binary)
    mask = _fill_holes(grown)
    for side, width in bands.items():  # tissue that reaches a film edge continues to the image edge
        band = _line_view(mask, side, width + 1)
        band[:width] = band[width]
    # Tissue the mask may have lost lies against it: bright pixels in a two-pixel ring around the mask (markers,
    # labels and film edges apart from the breast are not tissue and do not count).
    ring = cv2.dilate(mask.astype(np.uint8), _KERNEL3, iterations=2).astype(bool) & ~mask & binary
    qc = {"separability": air.separability, "air_level": air.level, "air_noise": air.noise,
          "tissue_outside": float(ring.sum() / max(1, int((binary & mask).sum()))),
          "edge_bands": tuple(sorted(bands)), "markers": _marker_boxes(binary & ~mask, factor, shape)}
    area_fraction = float(mask.sum() / valid.sum())
    if area_fraction < min_area_fraction:
        return BreastMask(mask, factor, shape, threshold, None, area_fraction,
                          (f"breast mask covers only {area_fraction:.2%} of the image",), **qc)
    box = _mask_box(mask, factor, shape)
    return BreastMask(mask, factor, shape, threshold, box, area_fraction, (), **qc)


SIDES = ("top", "bottom", "left", "right")


def _line_view(a: np.ndarray, side: str, width: int | None = None) -> np.ndarray:
    """A writable view of the `width` lines (all by default) of `a` along `side`, the first line being the edge."""
    if side == "top":
        return a[:width]
    if side == "bottom":
        return a[::-1][:width]
    if side == "left":
        return a.T[:width]
    return a.T[::-1][:width]


def edge_bands(binary: np.ndarray, valid: np.ndarray, max_fraction: float = 0.06, full: float = 0.5,
               drop: float = 0.25) -> dict[str, int]:
    """Bright bands along the image edges that are not breast: {side: width in coarse lines}.

    A scanned film's unexposed edge (and a CR plate's frame) is a bright strip along a border, filled across its
    length or much of it, and it ends abruptly: a line just inside it is much emptier. Breast tissue reaching an edge
    (the chest wall, an MLO's axilla) does not end that way. A band is at most `max_fraction` of the image thick; its
    lines are at least `full` filled and within 0.1 of the edge line; one of the next three lines is at least `drop`
    emptier than the band.
    """
    bands: dict[str, int] = {}
    for side in SIDES:
        lines, ok = _line_view(binary, side), _line_view(valid, side)
        cap = max(1, int(max_fraction * lines.shape[0]))
        counts = ok[: cap + 1].sum(axis=1)
        frac = np.where(counts > 0, lines[: cap + 1].sum(axis=1) / np.maximum(counts, 1), 0.0)
        in_band = frac >= max(full, frac[0] - 0.1)
        n = int(np.argmin(in_band)) if not in_band.all() else cap + 1
        if 0 < n <= cap and frac[n : n + 3].min() <= frac[:n].min() - drop:
            bands[side] = n
    return bands


def _constant_border_lines(coarse: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """True on whole rows/columns at the image edges that hold only the image's minimum value (collimation)."""
    low = float(coarse[valid].min())
    const = (coarse <= low) | ~valid
    out = np.zeros(coarse.shape, bool)
    for side in SIDES:
        full_lines = _line_view(const, side).all(axis=1)
        n = int(np.argmin(full_lines)) if not full_lines.all() else 0
        _line_view(out, side, n)[...] = True
    return out


def _air_inside_the_field(coarse: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, AirEstimate]:
    """(valid, air): whole border lines at the minimum value are left out when they are a collimator's shadow.

    Zeros outside a collimated field (with no PixelPaddingValue) are darker than the air inside it and would pass
    for the air. They are left out when the rest of the image then has its own air: a clear peak (see
    `AirEstimate.peak_ratio`) with almost nothing clearly below it. When the rest is all tissue (a breast against air
    that fills whole columns), those lines were the air and stay in.
    """
    strip = _constant_border_lines(coarse, valid)
    inner = valid & ~strip
    if strip[valid].any() and inner.any():
        air = estimate_air(coarse[inner])
        gap = air.threshold - air.level
        if air.peak_ratio >= 3.0 and float((coarse[inner] < air.level - gap).mean()) < 0.02:
            return inner, air
    return valid, estimate_air(coarse[valid])


def _flatten_bands(coarse: np.ndarray, valid: np.ndarray, air: AirEstimate,
                   min_share: float = 0.1) -> tuple[np.ndarray, AirEstimate]:
    """Take out scanner bands: row and column offsets of the air level, when that makes the air clearly better.

    A film scanner (and some CR readers) adds a constant per row or per column: the air then sits at several levels,
    its noise looks larger and a threshold above it cuts the breast's faint rim, or the darker band passes for the
    air and the rest of the air for breast. Each line's offset is the median of its air-like pixels (within three
    threshold gaps of the air) minus the air level; lines with too few of them borrow from their neighbours. The
    direction whose offsets vary more (the bands' own) is corrected first, so the other direction's medians are not
    mixtures of two levels. The correction is kept when the air's noise drops by a fifth, or when it brings at
    least 5% more of the air-like pixels under the threshold (a band that made the air bimodal).
    """
    gap = air.threshold - air.level
    if not gap > 0 or air.noise <= 0:
        return coarse, air
    airish = valid & (np.abs(coarse - air.level) <= 3 * gap)
    corrected = coarse.astype(np.float32, copy=True)
    first = {axis: _line_offsets(corrected, airish, axis, air.level, min_share) for axis in (0, 1)}
    order = sorted(first, key=lambda a: -float(np.ptp(first[a])) if first[a] is not None else 0.0)
    for i, axis in enumerate(order):
        offsets = first[axis] if i == 0 else _line_offsets(corrected, airish, axis, air.level, min_share)
        if offsets is not None:
            corrected -= offsets[:, None] if axis == 1 else offsets[None, :]
    flat = estimate_air(corrected[valid])
    quieter = flat.noise < 0.8 * air.noise
    united = (corrected[airish] <= flat.threshold).mean() >= (coarse[airish] <= air.threshold).mean() + 0.05
    return (corrected, flat) if quieter or united else (coarse, air)


def _line_offsets(image: np.ndarray, airish: np.ndarray, axis: int, level: float,
                  min_share: float) -> np.ndarray | None:
    """Per-line (axis 1: rows, 0: columns) median of the air-like pixels minus `level`; None with under two lines."""
    counts = airish.sum(axis=axis)
    enough = counts >= min_share * image.shape[axis]
    if enough.sum() < 2:
        return None
    lines = np.sort(np.where(airish, image, np.inf), axis=axis)  # each line's air-like values first, in order
    middle = np.maximum(counts - 1, 0) // 2
    med = np.take_along_axis(lines, middle[:, None] if axis == 1 else middle[None, :], axis=axis).ravel()
    idx = np.flatnonzero(enough)
    return np.interp(np.arange(med.size), idx, med[idx] - level).astype(np.float32)


def _padding_is_the_air(padding: np.ndarray, valid: np.ndarray) -> bool:
    """Padding that follows the breast outline (not a collimator's rectangle) covers the air itself."""
    if padding.mean() < 0.05:
        return False
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    field = valid[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return bool(field.mean() < 0.9)


def _marker_boxes(outside: np.ndarray, factor: int, shape: tuple[int, int],
                  min_fraction: float = 2e-4) -> tuple[tuple[int, int, int, int], ...]:
    """Boxes (original px) of bright components apart from the breast: burned-in markers, labels, film slivers."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(outside.astype(np.uint8), connectivity=8)
    min_area = max(2, int(min_fraction * outside.size))
    boxes = []
    for x, y, w, h, area in stats[1:]:
        if area >= min_area:
            boxes.append((int(x) * factor, int(y) * factor, min(shape[1], int(x + w) * factor),
                          min(shape[0], int(y + h) * factor)))
    return tuple(boxes)


def _largest_component(binary: np.ndarray) -> np.ndarray | None:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def _above_air(air: AirEstimate, fraction: float) -> float:
    """The level `fraction` of the way from the air to Otsu's threshold (the air threshold when Otsu is unknown)."""
    return air.level + fraction * (air.otsu - air.level) if np.isfinite(air.otsu) else air.threshold


def _reconstruct(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Everything in `allowed` (or seed) 4-connected to `seed`: `_grow_within` without a step limit, in one pass."""
    _, labels = cv2.connectedComponents((allowed | seed).astype(np.uint8), connectivity=4)
    return np.isin(labels, np.unique(labels[seed]))


def _grow_within(seed: np.ndarray, allowed: np.ndarray, steps: int) -> np.ndarray:
    """Geodesic dilation: grow `seed` by one pixel at a time, `steps` times, staying inside `allowed` (or seed)."""
    region = seed.astype(np.uint8)
    allowed8 = (allowed | seed).astype(np.uint8)
    for _ in range(steps):
        nxt = cv2.dilate(region, _KERNEL3) & allowed8
        if np.array_equal(nxt, region):
            break
        region = nxt
    return region.astype(bool)


def _attach_protrusions(mask: np.ndarray, binary: np.ndarray, max_fraction: float = 0.03) -> np.ndarray:
    """Add faint parts beyond the growth limit that touch the mask, are small and stay off the image border.

    That is a nipple or a thin skin fold out in the air; film fog and haze reach the film border and are large.
    """
    rest = (binary & ~mask).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(rest, connectivity=8)
    if n <= 1:
        return mask
    touching = np.unique(labels[cv2.dilate(mask.astype(np.uint8), _KERNEL3).astype(bool) & rest.astype(bool)])
    h, w = mask.shape
    keep = []
    for i in touching[touching > 0]:
        x, y, bw, bh, area = stats[i]
        inside = x > 0 and y > 0 and x + bw < w and y + bh < h
        if inside and area <= max_fraction * mask.sum():
            keep.append(i)
    return mask | np.isin(labels, keep) if keep else mask


def _fill_holes(mask: np.ndarray, max_hole_fraction: float = 0.1) -> np.ndarray:
    """Fill holes, also those open only towards the image edge the breast lies against (the chest wall).

    A "hole" larger than `max_hole_fraction` of the mask is air enclosed by a film edge or fog, not a cyst or an
    implant inside the breast: it stays out.
    """
    filled = _fill_small_holes(mask, max_hole_fraction)
    # A hole cut by the chest-wall edge is not closed topologically: close it by treating that one edge as breast.
    coverage = [filled[:, 0].mean(), filled[:, -1].mean(), filled[0, :].mean(), filled[-1, :].mean()]
    side = int(np.argmax(coverage))
    if coverage[side] > 0.5:
        widths = [((0, 0), (1, 0)), ((0, 0), (0, 1)), ((1, 0), (0, 0)), ((0, 1), (0, 0))][side]
        padded = _fill_small_holes(np.pad(filled, widths, constant_values=True), max_hole_fraction)
        (r0, _), (c0, _) = widths
        filled = padded[r0 : r0 + mask.shape[0], c0 : c0 + mask.shape[1]]
    return np.ascontiguousarray(filled)


def _fill_small_holes(mask: np.ndarray, max_hole_fraction: float) -> np.ndarray:
    """Fill the background components (4-connected) that touch no image border and are small."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    if n <= 1:
        return mask
    x, y, w, h, area = (stats[:, i] for i in range(5))
    inside = (x > 0) & (y > 0) & (x + w < mask.shape[1]) & (y + h < mask.shape[0])
    small = np.flatnonzero(inside & (area <= max_hole_fraction * max(1, int(mask.sum()))))
    small = small[small > 0]
    return mask | np.isin(labels, small) if small.size else mask


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


def boxes_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Do two (x0, y0, x1, y1) half-open boxes share any pixel?"""
    return a[0] < b[2] and a[2] > b[0] and a[1] < b[3] and a[3] > b[1]


def crop_box(
    mask: BreastMask, spacing_mm: tuple[float, float] | None, margin_mm: float = 2.0
) -> tuple[int, int, int, int]:
    """The crop in original pixels: the mask's box grown by `margin_mm` on each side, clipped to the image.

    The margin stops one coarse block short of a burned-in marker or label beside the breast (`mask.markers`), so
    the letters stay outside the crop; it never cuts into the mask's box. An empty mask gives the whole image (the
    caller records `mask.warnings`). Without a spacing the margin is taken as `margin_mm` / 0.1 px.
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
    bx0, by0, bx1, by1 = mask.box
    x0, y0, x1, y1 = max(0, bx0 - mx), max(0, by0 - my), min(cols, bx1 + mx), min(rows, by1 + my)
    f = mask.factor
    for mx0, my0, mx1, my1 in mask.markers:
        if not boxes_overlap((mx0, my0, mx1, my1), (x0, y0, x1, y1)):
            continue
        if mx0 >= bx1:
            x1 = max(bx1, min(x1, mx0 - f))
        elif mx1 <= bx0:
            x0 = min(bx0, max(x0, mx1 + f))
        elif my0 >= by1:
            y1 = max(by1, min(y1, my0 - f))
        elif my1 <= by0:
            y0 = min(by0, max(y0, my1 + f))
    return x0, y0, x1, y1


def mask_to_original(mask: BreastMask) -> np.ndarray:
    """The coarse mask at the original resolution (nearest block; the partial last block copies its neighbour)."""
    f = mask.factor
    full = np.repeat(np.repeat(mask.mask, f, axis=0), f, axis=1)
    rows, cols = mask.original_shape
    full = np.pad(full, ((0, rows - full.shape[0]), (0, cols - full.shape[1])), mode="edge")
    return full
