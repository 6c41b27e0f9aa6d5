"""Decide the horizontal flip that puts the chest wall on the left (the canonical frame).

Metadata: PatientOrientation (0020,0020)'s first value is the direction of increasing column index; "A" (towards
anterior, the nipple on the right) means the chest wall is already on the left, "P" means it is on the right. Without
it, the display convention of stored mammograms is used: left breasts have the chest wall on the left, right
breasts on the right.

Content: three votes from the breast mask's shape (`content_evidence`): the breast is tallest at the chest wall,
its area lies towards the chest wall, and the chest wall is cut by the detector edge while the nipple side is a
free contour. The confidence is their mean when all three lean the same way, else 0.

Policy (`prefer`): with "content" (default), a confident content decision wins, and metadata decides only when the
content is ambiguous (e.g. a breast filling the detector); with "metadata", metadata wins when present. Either way a
disagreement between the two is flagged with a reason, for the manifest. With no metadata and weak content the
image is flagged `ambiguous` (the content's lean is kept, and said to be a lean) instead of silently guessed.
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
        confidence: how sure the decision is, 0–1: the content's confidence, the metadata's (PatientOrientation 0.9,
            laterality alone 0.6, since it trusts the vendor's display convention), the larger when they agree, and
            their difference when they disagree.
        ambiguous: the decision rests on weak or conflicting evidence (weak content and no metadata, or content and
            metadata disagreeing): a person should look; the manifest and the QC page flag it.
    """

    flip: bool
    source: str
    metadata_flip: bool | None
    content_flip: bool | None
    content_confidence: float
    disagreement: bool
    reason: str
    confidence: float = 0.0
    ambiguous: bool = False


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


def content_evidence(mask: np.ndarray, band_fraction: float = 0.1) -> dict[str, float]:
    """Three signed votes for the chest-wall side from the breast mask (positive = chest wall on the left).

    - `profile`: the breast is tallest at the chest wall: mean height in the first vs the last `band_fraction` of
      the mask's own column span, normalised by the larger (so padding bands and labels beside the mask do not
      matter);
    - `mass`: the breast is widest at the chest wall and tapers to the nipple, so its area lies towards the chest
      wall: the centroid's offset from the middle of the span, in half-spans, scaled by 3 and clipped to ±1;
    - `edge`: the chest wall is cut by the detector edge, the nipple side is a free contour in air: the share of the
      mask's rows that touch the first column of the span minus the share that touch the last one.
    All three are 0 for an empty mask.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    profile = m.sum(axis=0).astype(np.float64)
    cols = np.flatnonzero(profile)
    if cols.size == 0:
        return {"profile": 0.0, "mass": 0.0, "edge": 0.0}
    span = profile[cols[0] : cols[-1] + 1]
    k = max(1, round(band_fraction * span.size))
    left, right = float(span[:k].mean()), float(span[-k:].mean())
    top = max(left, right)
    x = np.arange(span.size) + 0.5
    centroid = float((span * x).sum() / span.sum())
    half = span.size / 2.0
    rows = max(1, int(m.any(axis=1).sum()))
    edge = (float(m[:, cols[0]].sum()) - float(m[:, cols[-1]].sum())) / rows
    return {"profile": (left - right) / top if top > 0 else 0.0,
            "mass": float(np.clip(3.0 * (half - centroid) / half, -1.0, 1.0)), "edge": float(np.clip(edge, -1, 1))}


def flip_from_content(mask: np.ndarray, band_fraction: float = 0.1) -> tuple[bool | None, float]:
    """(flip, confidence) from the breast mask's shape; (None, 0.0) for an empty mask or no lean at all.

    The confidence is the mean of the three votes of `content_evidence` when they all lean the same way, and 0 when
    they disagree: one strong vote against two others is exactly the weak evidence that must not decide alone.
    """
    votes = content_evidence(mask, band_fraction)
    values = np.array(list(votes.values()))
    if not values.any():
        return None, 0.0
    score = float(values.mean())
    agree = bool((np.sign(values[values != 0]) == np.sign(score)).all())
    return bool(score < 0), float(abs(score)) if agree else 0.0


METADATA_CONFIDENCE = {"PatientOrientation": 0.9, "laterality": 0.6}  # laterality alone trusts the vendor convention


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
    meta_conf = METADATA_CONFIDENCE.get(str(meta_source), 0.0)
    content_flip, confidence = flip_from_content(mask)
    confident = content_flip is not None and confidence >= min_confidence
    disagreement = confident and meta_flip is not None and meta_flip != content_flip
    side = {True: "right", False: "left", None: "unknown"}
    if disagreement:
        winner = "content" if prefer == "content" else meta_source
        flip = content_flip if prefer == "content" else meta_flip
        reason = (f"{meta_source} puts the chest wall on the {side[meta_flip]}, the image content on the "
                  f"{side[content_flip]} (confidence {confidence:.2f}); {winner} decided")
        return Orientation(bool(flip), str(winner), meta_flip, content_flip, confidence, True, reason,
                           confidence=abs(confidence - meta_conf), ambiguous=True)
    if confident and (prefer == "content" or meta_flip is None):
        reason = f"content: chest wall on the {side[content_flip]} (confidence {confidence:.2f})"
        if meta_flip is None:
            reason += "; no usable laterality or PatientOrientation"
        overall = max(confidence, meta_conf) if meta_flip is not None else confidence
        return Orientation(bool(content_flip), "content", meta_flip, content_flip, confidence, False, reason,
                           confidence=overall)
    if meta_flip is not None:
        reason = f"{meta_source}: chest wall on the {side[meta_flip]}"
        reason += "; content agrees" if confident else f"; content ambiguous (confidence {confidence:.2f})"
        overall = max(confidence, meta_conf) if confident else meta_conf
        return Orientation(meta_flip, str(meta_source), meta_flip, content_flip, confidence, False, reason,
                           confidence=overall)
    if content_flip is not None:
        reason = (f"ambiguous: no usable metadata and weak content evidence (confidence {confidence:.2f}); "
                  f"kept the content's lean to the {side[content_flip]}: check this image")
        return Orientation(content_flip, "content", None, content_flip, confidence, False, reason,
                           confidence=confidence, ambiguous=True)
    return Orientation(False, "default", None, None, 0.0, False,
                       "ambiguous: no usable metadata and an empty mask: not flipped", confidence=0.0, ambiguous=True)
