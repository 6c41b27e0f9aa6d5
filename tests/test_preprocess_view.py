"""View and laterality read from the image (`preprocess/view.py`) when the header is silent."""

from __future__ import annotations

import numpy as np

from mammokit.preprocess import breast_mask, detect_pectoral, mask_to_original
from mammokit.preprocess.orient import decide_orientation
from mammokit.preprocess.pectoral import PectoralResult
from mammokit.preprocess.view import laterality_from_content, top_share, view_from_content
from test_preprocess_phantom import make_phantom


def _guess(view: str, seed: int):
    ph = make_phantom(view=view, seed=seed)
    mask = mask_to_original(breast_mask(ph.pixels))
    return view_from_content(mask, detect_pectoral(ph.pixels, mask, spacing_mm=ph.spacing_mm[0]))


def test_an_mlo_with_its_muscle_is_found_and_a_cc_never_called_mlo() -> None:
    """The phantom's CC is a round half-ellipse (its top rows half filled): unknown is allowed, MLO is not."""
    for seed in range(3):
        mlo, cc = _guess("MLO", seed), _guess("CC", seed)
        assert mlo.value == "MLO" and mlo.confidence >= 0.3, (seed, mlo.reason)
        assert cc.value in ("CC", None), (seed, cc.reason)


def test_contradicting_votes_leave_the_view_unknown() -> None:
    """A breast filling the top rows (a large CC cut by the detector edge) with no muscle: no guess."""
    full_top = np.zeros((200, 120), bool)
    full_top[:, :100] = True
    none = PectoralResult(np.zeros_like(full_top), None, False, 0.1, 0.5, "no clear pectoral edge")
    assert top_share(full_top) == 1.0
    guess = view_from_content(full_top, none)
    assert guess.value is None and guess.confidence == 0.0 and "disagree" in guess.reason


def test_laterality_from_patient_orientation_then_from_the_chest_wall_side() -> None:
    right = decide_orientation(make_phantom(chest_wall_left=False).breast)
    assert laterality_from_content(right).value == "R"
    assert laterality_from_content(right, ("A", "R")).value == "L"  # the column direction says it outright
    left = decide_orientation(make_phantom().breast)
    guess = laterality_from_content(left)
    assert guess.value == "L" and guess.confidence == left.confidence
