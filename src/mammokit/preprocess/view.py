"""View (CC or MLO) and laterality from the image, for files whose header is silent.

View: in the canonical frame (chest wall left, cropped to the breast), an MLO's axillary tail and pectoral muscle
reach the top of the image along the chest wall, so the top rows of the mask are filled across the chest-wall half;
a CC's outline is a convex curve whose top rows only touch the chest wall. The pectoral muscle's edge (the
`detect_pectoral` step across the upper chest-wall corner) is the second vote. On the real images in
`../shared/realdata` and the eight CBIS-DDSM films, the top-row share is 0.15–0.37 on every CC and 1.0 on every MLO,
but a CC larger than the detector, or the round outline of a synthetic CC, fills the top rows too: there the muscle
decides, and when the two votes contradict each other the view stays unknown (and the QC page shows the image).

Laterality: once the chest-wall side is known, a mammogram stored in the standard display orientation has the
chest wall on the left for a left breast and on the right for a right breast (the same convention the orientation
step uses when only the laterality tag is known). PatientOrientation's column direction says it outright when
present ("R" for a left breast, "L" for a right one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mammokit.preprocess.orient import Orientation
from mammokit.preprocess.pectoral import PectoralResult


@dataclass(frozen=True)
class ContentGuess:
    """A value read from the image, how sure it is (0–1), why, and what it was read from (None when unknown)."""

    value: str | None
    confidence: float
    reason: str
    source: str | None = "content"


def top_share(mask: np.ndarray, top_fraction: float = 0.03) -> float:
    """Share of the chest-wall half covered in the mask's top rows (canonical frame); 0 for an empty mask."""
    m = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return 0.0
    band = m[rows[0] : rows[0] + max(1, round(top_fraction * m.shape[0]))]
    half = max(1, m.shape[1] // 2)
    return float(band.any(axis=0)[:half].mean())


def view_from_content(mask: np.ndarray, pectoral: PectoralResult, min_confidence: float = 0.3) -> ContentGuess:
    """CC or MLO from the stored (canonical-frame) breast mask and the pectoral search on it.

    Two votes in [-1, 1]: the top-row share mapped around 0.55 (±0.3 is a full vote), and the pectoral edge: its
    contrast above the detector's acceptance level 0.45 (+0.3 is a full vote) when found, -0.5 when not. When they
    contradict each other (a large CC cut by the detector's top edge, a round synthetic CC outline, a CC showing a
    clear muscle) the view stays unknown rather than guessed; otherwise the score is `0.6·top + 0.4·pectoral` and
    below `min_confidence` the view stays unknown too.
    """
    share = top_share(mask)
    top_vote = float(np.clip((share - 0.55) / 0.3, -1.0, 1.0))
    pect_vote = float(np.clip((pectoral.contrast - 0.45) / 0.3, 0.0, 1.0)) if pectoral.found else -0.5
    why = (f"top rows cover {share:.0%} of the chest-wall half; pectoral edge "
           f"{'found' if pectoral.found else 'not found'} (contrast {pectoral.contrast:.2f})")
    if (top_vote > 0.2 and pect_vote < 0) or (top_vote < -0.2 and pect_vote > 0.2):
        return ContentGuess(None, 0.0, f"view unknown: shape and pectoral muscle disagree ({why})", None)
    score = 0.6 * top_vote + 0.4 * pect_vote
    if abs(score) < min_confidence:
        return ContentGuess(None, abs(score), f"view unknown: weak evidence ({why})", None)
    view = "MLO" if score > 0 else "CC"
    return ContentGuess(view, abs(score), f"{view} from the image ({why})")


def laterality_from_content(
    orientation: Orientation, patient_orientation: tuple[str, ...] | list[str] | str | None = None
) -> ContentGuess:
    """L or R from PatientOrientation's column direction, else from the chest-wall side the orientation step found."""
    po = patient_orientation
    if isinstance(po, str):
        po = tuple(p for p in po.replace("\\", "/").split("/") if p)
    if po and len(po) > 1:
        col = str(po[1]).upper()
        if ("R" in col) != ("L" in col):
            side = "L" if "R" in col else "R"
            return ContentGuess(side, 0.9, f"{side} from PatientOrientation's column direction {col!r}",
                                "PatientOrientation")
    if orientation.source == "default":
        return ContentGuess(None, 0.0, "laterality unknown: no chest-wall side found", None)
    side = "R" if orientation.flip else "L"
    reason = (f"{side} from the chest-wall side ({'right' if orientation.flip else 'left'}), assuming the standard "
              f"display orientation")
    return ContentGuess(side, orientation.confidence, reason)
