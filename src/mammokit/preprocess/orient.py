"""Decide the horizontal flip that puts the chest wall on the left (the canonical frame).

Metadata: PatientOrientation (0020,0020)'s first value is the direction of increasing column index; "A" (towards
anterior, the nipple on the right) means the chest wall is already on the left, "P" means it is on the right. Without
it, the display convention of stored mammograms is used: left breasts have the chest wall on the left, right
breasts on the right.

Content: on the breast mask, the chest-wall side is where the breast is tallest. The mask's column profile
(breast height per column) is compared between the first and last 10% of the mask's own column span, so padding
bands and labels outside the mask do not matter. The normalised difference is the confidence.

Policy (`prefer`): with "content" (default), a confident content decision wins, and metadata decides only when the
content is ambiguous (e.g. a breast filling the detector); with "metadata", metadata wins when present. Either way a
disagreement between the two is flagged with a reason, for the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PREFER = ("content", "metadata")


@dataclass(frozen=True)
class Orientation:
    """The flip decision and how it was reached.

    Attributes:
        flip: mirror left-right to put the chest wall on the left.
        source: what decided: "content", "PatientOrientation", "laterality" or "default" (nothing usable: no flip).
        metadata_flip: what the metadata says (None when it says nothing usable).
        content_flip: what the image says (None when the mask is empty).
        content_confidence: 0 (ambiguous) to 1 (all tissue on one side).
        disagreement: metadata and a confident content decision point opposite ways.
        reason: one sentence for the manifest.
    """

    flip: bool
    source: str
    metadata_flip: bool | None
    content_flip: bool | None
    content_confidence: float
    disagreement: bool
    reason: str


def flip_from_metadata(
    laterality: str | None, patient_orientation: tuple[str, ...] | list[str] | str | None
) -> tuple[bool | None, str | None]:
    """(flip, source) from PatientOrientation's row direction, else from laterality; (None, None) when neither."""
    po = patient_orientation
    if isinstance(po, str):
        po = tuple(p for p in po.replace("\\", "/").split("/") if p)
    if po:
        row_dir = str(po[0]).strip().upper()
        has_a, has_p = "A" in row_dir, "P" in row_dir
        if has_a != has_p:
            return has_p, "PatientOrientation"
    lat = (laterality or "").strip().upper()
    if lat in ("L", "R"):
        return lat == "R", "laterality"
    return None, None


def flip_from_content(mask: np.ndarray, band_fraction: float = 0.1) -> tuple[bool | None, float]:
    """(flip, confidence) from where the breast mask is tallest; (None, 0.0) for an empty mask."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    profile = m.sum(axis=0).astype(np.float64)
    cols = np.flatnonzero(profile)
    if cols.size == 0:
        return None, 0.0
    span = profile[cols[0] : cols[-1] + 1]
    k = max(1, round(band_fraction * span.size))
    left, right = float(span[:k].mean()), float(span[-k:].mean())
    top = max(left, right)
    if top <= 0:
        return None, 0.0
    score = (left - right) / top
    return bool(score < 0), float(abs(score))


def decide_orientation(
    mask: np.ndarray,
    laterality: str | None = None,
    patient_orientation: tuple[str, ...] | list[str] | str | None = None,
    prefer: str = "content",
    min_confidence: float = 0.3,
) -> Orientation:
    """Decide the flip from metadata and the breast mask (any grid of the unflipped original), and explain it.

    Args:
        mask: bool breast mask of the image as stored in the DICOM (e.g. `BreastMask.mask`).
        laterality: "L", "R" or None.
        patient_orientation: PatientOrientation values, e.g. ("A", "FR"), or None.
        prefer: "content" or "metadata", which wins when both are usable and disagree.
        min_confidence: content confidence needed for the content to count.
    """
    if prefer not in PREFER:
        raise ValueError(f"prefer must be one of {PREFER}, got {prefer!r}")
    meta_flip, meta_source = flip_from_metadata(laterality, patient_orientation)
    content_flip, confidence = flip_from_content(mask)
    confident = content_flip is not None and confidence >= min_confidence
    disagreement = confident and meta_flip is not None and meta_flip != content_flip
    side = {True: "right", False: "left", None: "unknown"}
    if disagreement:
        winner = "content" if prefer == "content" else meta_source
        flip = content_flip if prefer == "content" else meta_flip
        reason = (f"{meta_source} puts the chest wall on the {side[meta_flip]}, the image content on the "
                  f"{side[content_flip]} (confidence {confidence:.2f}); {winner} decided")
        return Orientation(bool(flip), str(winner), meta_flip, content_flip, confidence, True, reason)
    if confident and (prefer == "content" or meta_flip is None):
        reason = f"content: chest wall on the {side[content_flip]} (confidence {confidence:.2f})"
        if meta_flip is None:
            reason += "; no usable laterality or PatientOrientation"
        return Orientation(bool(content_flip), "content", meta_flip, content_flip, confidence, False, reason)
    if meta_flip is not None:
        reason = f"{meta_source}: chest wall on the {side[meta_flip]}"
        reason += "; content agrees" if confident else f"; content ambiguous (confidence {confidence:.2f})"
        return Orientation(meta_flip, str(meta_source), meta_flip, content_flip, confidence, False, reason)
    if content_flip is not None:
        reason = (f"no usable metadata and ambiguous content (confidence {confidence:.2f}); "
                  f"followed the content's weak lean to the {side[content_flip]}")
        return Orientation(content_flip, "content", None, content_flip, confidence, False, reason)
    return Orientation(False, "default", None, None, 0.0, False, "no usable metadata and an empty mask: not flipped")
