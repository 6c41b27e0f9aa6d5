"""What surrounds the breast in a stored image: collimation bands and the marks of a scanned film.

Every function works on the stored pixel grid (after any mirroring; `chest_left` says where the chest wall is) and
returns its ground truth as boxes (x0, y0, x1, y1), end-exclusive, in stored pixels.

A scanned film (`film_marks`) gets, in this order: bright unexposed film borders on some of the free edges (top,
bottom, nipple side), a lead marker ("L CC", "RMLO", ...), a paper label (a bright rectangle with dark text-like
strokes, placed either far from the breast or within a few mm of its bounding box, never touching it), then film
grain and scanner bands (stripes of slightly different background) over the whole image. Markers and labels lie
outside the breast's bounding box grown by their gap, so a correct crop of the breast excludes them.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

import cv2
import numpy as np

from mammokit.synth.vendors import VendorProfile

Box = tuple[int, int, int, int]
EDGES = ("top", "bottom", "nipple")
FAR_GAPS_MM = (10.0, 6.0, 4.0)


@dataclass
class FilmMarks:
    """Ground truth of the film marks: boxes (stored grid) and each marker/label's distance to the breast."""

    marker_boxes: list[Box] = field(default_factory=list)
    label_boxes: list[Box] = field(default_factory=list)
    border_boxes: list[Box] = field(default_factory=list)
    gaps_mm: list[float] = field(default_factory=list)


def tissue_box(tissue: np.ndarray) -> Box:
    """Tight box of the tissue mask."""
    rows, cols = np.flatnonzero(tissue.any(1)), np.flatnonzero(tissue.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def edge_room(tissue: np.ndarray, chest_left: bool) -> dict[str, int]:
    """Pixels of air between the tissue and the top, bottom and nipple-side edges."""
    rows, cols = tissue.shape
    x0, y0, x1, y1 = tissue_box(tissue)
    return {"top": y0, "bottom": rows - y1, "nipple": cols - x1 if chest_left else x0}


def _edge_slice(edge: str, width: int, shape: tuple[int, int], chest_left: bool) -> tuple[slice, slice]:
    """Rows and columns of a band `width` px wide along `edge`."""
    rows, cols = shape
    if edge == "top":
        return slice(0, width), slice(0, cols)
    if edge == "bottom":
        return slice(rows - width, rows), slice(0, cols)
    return (slice(0, rows), slice(cols - width, cols)) if chest_left else (slice(0, rows), slice(0, width))


def _slice_box(sl: tuple[slice, slice]) -> Box:
    return sl[1].start, sl[0].start, sl[1].stop, sl[0].stop


def collimation(
    tissue: np.ndarray, spacing: float, rng: np.random.Generator, chest_left: bool
) -> tuple[np.ndarray, Box]:
    """Bands outside a collimated field on one or more free edges, at least 2 mm clear of the tissue.

    Returns:
        (outside, field): bool mask of the collimated-off pixels and the field rectangle.
    """
    room = edge_room(tissue, chest_left)
    chosen = [e for e in EDGES if rng.uniform() < 0.6] or [max(EDGES, key=room.__getitem__)]
    outside = np.zeros(tissue.shape, bool)
    for edge in chosen:
        width = min(round(rng.uniform(3, 15) / spacing), room[edge] - round(2 / spacing))
        if width >= max(1, round(1 / spacing)):
            outside[_edge_slice(edge, width, tissue.shape, chest_left)] = True
    if not outside.any():  # the nipple side always has room (the phantom leaves >= 10 mm there)
        width = max(1, min(round(5 / spacing), room["nipple"] - round(2 / spacing)))
        outside[_edge_slice("nipple", width, tissue.shape, chest_left)] = True
    inside_rows, inside_cols = np.flatnonzero(~outside.all(1)), np.flatnonzero(~outside.all(0))
    box = (int(inside_cols[0]), int(inside_rows[0]), int(inside_cols[-1]) + 1, int(inside_rows[-1]) + 1)
    return outside, box


def _grow(box: Box, pad: int, shape: tuple[int, int]) -> Box:
    x0, y0, x1, y1 = box
    return max(0, x0 - pad), max(0, y0 - pad), min(shape[1], x1 + pad), min(shape[0], y1 + pad)


def _box_map(box: Box, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, bool)
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = True
    return out


def _window_sums(mask: np.ndarray, bh: int, bw: int) -> np.ndarray:
    """Number of True pixels in every bh × bw window, indexed by its top-left corner."""
    ii = cv2.integral(mask.astype(np.uint8))
    return ii[bh:, bw:] - ii[:-bh, bw:] - ii[bh:, :-bw] + ii[:-bh, :-bw]


def place_box(blocked: np.ndarray, size: tuple[int, int], rng: np.random.Generator,
              near: np.ndarray | None = None) -> Box | None:
    """A random bh × bw box that avoids `blocked` (and, when given, overlaps `near`); None when none fits."""
    bh, bw = size
    if bh >= blocked.shape[0] or bw >= blocked.shape[1]:
        return None
    ok = _window_sums(blocked, bh, bw) == 0
    if near is not None:
        ok &= _window_sums(near, bh, bw) > 0
    ys, xs = np.nonzero(ok)
    if ys.size == 0:
        return None
    i = int(rng.integers(ys.size))
    return int(xs[i]), int(ys[i]), int(xs[i]) + bw, int(ys[i]) + bh


def _borders(values: np.ndarray, tissue: np.ndarray, level: float, spacing: float, rng: np.random.Generator,
             chest_left: bool) -> list[Box]:
    """Paint bright unexposed-film bands (slightly tilted inner edge) on some free edges; returns their boxes."""
    room = edge_room(tissue, chest_left)
    boxes = []
    for edge in EDGES:
        if rng.uniform() > 0.55:
            continue
        limit = room[edge] - round(3 / spacing)
        w0, w1 = (min(limit, round(rng.uniform(2, 7) / spacing)) for _ in range(2))
        if min(w0, w1) < max(1, round(1 / spacing)):
            continue
        sl = _edge_slice(edge, max(w0, w1), tissue.shape, chest_left)
        along = (sl[1].stop - sl[1].start) if edge != "nipple" else (sl[0].stop - sl[0].start)
        width = np.linspace(w0, w1, along)  # band width along the edge
        depth = np.arange(max(w0, w1))
        if edge == "top":
            band = depth[:, None] < width[None, :]
        elif edge == "bottom":
            band = depth[::-1, None] < width[None, :]
        else:
            band = (depth[None, ::-1] if chest_left else depth[None, :]) < width[:, None]  # depth from the edge
        region = values[sl]
        region[band] = level * rng.uniform(0.97, 1.03) + 0.01 * level * rng.standard_normal(int(band.sum()))
        boxes.append(_slice_box(sl))
    return boxes


def _marker_text(laterality: str, view: str, rng: np.random.Generator) -> str:
    return f"{laterality} {view}" if rng.uniform() < 0.5 else f"{laterality}{view}"


def _draw_text(ink: np.ndarray, text: str, height: int, origin: tuple[int, int]) -> None:
    """Draw `text` about `height` px tall into a uint8 mask (1 = ink), baseline-left corner at `origin` (x, y)."""
    thick = max(1, round(height / 8))
    cv2.putText(ink, text, origin, cv2.FONT_HERSHEY_SIMPLEX, height / 22.0, 1, thick, lineType=cv2.LINE_8)


def _text_size(text: str, height: int) -> tuple[int, int, int]:
    """Width, height above the baseline and depth below it of `text` drawn by `_draw_text`."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, height / 22.0, max(1, round(height / 8)))
    return tw, th, base


def _lead_marker(values: np.ndarray, blocked: np.ndarray, text: str, level: float, spacing: float,
                 rng: np.random.Generator) -> Box | None:
    """Bright lead letters in the air; returns the box of the letters (with a 2-px margin)."""
    height = max(6, round(rng.uniform(7, 11) / spacing))
    tw, th, base = _text_size(text, height)
    box = place_box(blocked, (th + base + 4, tw + 4), rng)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    ink = np.zeros((y1 - y0, x1 - x0), np.uint8)
    _draw_text(ink, text, height, (2, 2 + th))
    values[y0:y1, x0:x1] = np.where(ink > 0, np.float32(level), values[y0:y1, x0:x1])
    return box


def _paper_label(values: np.ndarray, blocked: np.ndarray, near: np.ndarray | None, bright: float, dark: float,
                 spacing: float, rng: np.random.Generator) -> Box | None:
    """A bright paper rectangle with lines of dark random characters; returns its box."""
    bw, bh = round(rng.uniform(28, 42) / spacing), round(rng.uniform(13, 20) / spacing)
    box = place_box(blocked, (bh, bw), rng, near=near)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    label = np.full((bh, bw), bright, np.float32) + 0.01 * bright * rng.standard_normal((bh, bw), dtype=np.float32)
    lines = int(rng.integers(2, 4))
    height = max(4, int(bh / (lines + 1.5)))
    chars = string.ascii_uppercase + string.digits
    ink = np.zeros((bh, bw), np.uint8)
    for i in range(lines):
        text = "".join(rng.choice(list(chars), int(rng.integers(5, 11))))
        _draw_text(ink, text, height, (max(1, bw // 14), round((i + 1) * bh / (lines + 0.6))))
    values[y0:y1, x0:x1] = np.where(ink > 0, np.float32(dark), label)
    return box


def _grain_and_bands(values: np.ndarray, span: float, spacing: float, rng: np.random.Generator) -> None:
    """Film grain, a low-frequency mottle and scanner bands (stripes of slightly different level), in place."""
    rows, cols = values.shape
    mottle = cv2.GaussianBlur(rng.standard_normal((rows, cols), dtype=np.float32), (0, 0), max(1.0, 2.0 / spacing))
    mottle /= max(float(mottle.std()), 1e-6)
    values += 0.006 * span * rng.standard_normal((rows, cols), dtype=np.float32) + 0.008 * span * mottle
    vertical = rng.uniform() < 0.5
    length = cols if vertical else rows
    cuts = np.sort(rng.integers(1, length, int(rng.integers(3, 8))))
    level = np.zeros(length, np.float32)
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, length], strict=True):
        level[a:b] = 0.012 * span * rng.standard_normal()
    values += level[None, :] if vertical else level[:, None]


def _gap_mm(box: Box, tissue: np.ndarray, spacing: float) -> float:
    """Shortest distance (mm) from the box to any tissue pixel."""
    x0, y0, x1, y1 = box
    dist = cv2.distanceTransform((~tissue).astype(np.uint8), cv2.DIST_L2, 5)
    return float(dist[y0:y1, x0:x1].min() * spacing)


def film_marks(values: np.ndarray, tissue: np.ndarray, profile: VendorProfile, laterality: str, view: str,
               spacing: float, rng: np.random.Generator, chest_left: bool) -> tuple[np.ndarray, FilmMarks]:
    """Add the marks of a scanned film to modality values (MONOCHROME2 sense); returns new values and the truth."""
    lo, hi = profile.value_range
    span = hi - lo
    out = values.copy()
    shape = tissue.shape
    marks = FilmMarks(border_boxes=_borders(out, tissue, lo + 1.08 * span, spacing, rng, chest_left))
    edge = round(2 / spacing)
    frame = np.ones(shape, bool)
    frame[edge:-edge, edge:-edge] = False
    taken = frame.copy()
    for box in marks.border_boxes:
        taken |= _box_map(_grow(box, round(2 / spacing), shape), shape)
    breast = tissue_box(tissue)
    marker = None
    text = _marker_text(laterality, view, rng)
    for gap in FAR_GAPS_MM:  # as far from the breast as there is room for
        blocked = taken | _box_map(_grow(breast, round(gap / spacing), shape), shape)
        marker = _lead_marker(out, blocked, text, lo + 1.2 * span, spacing, rng)
        if marker is not None:
            marks.marker_boxes.append(marker)
            taken |= _box_map(_grow(marker, round(3 / spacing), shape), shape)
            break
    label = None
    if rng.uniform() < 0.5:  # within a few mm of the breast's box, never touching it
        near_gap = rng.uniform(3.5, 6.0)
        ring = _box_map(_grow(breast, round((near_gap + 2) / spacing), shape), shape)
        blocked = taken | _box_map(_grow(breast, round(near_gap / spacing), shape), shape)
        label = _paper_label(out, blocked, ring, lo + 1.05 * span, lo + 0.25 * span, spacing, rng)
    for gap in FAR_GAPS_MM if label is None else ():
        blocked = taken | _box_map(_grow(breast, round(gap / spacing), shape), shape)
        label = _paper_label(out, blocked, None, lo + 1.05 * span, lo + 0.25 * span, spacing, rng)
        if label is not None:
            break
    if label is not None:
        marks.label_boxes.append(label)
    marks.gaps_mm = [_gap_mm(b, tissue, spacing) for b in marks.marker_boxes + marks.label_boxes]
    _grain_and_bands(out, span, spacing, rng)
    return out, marks
