"""Orientation: metadata, image content, and the disagreement record."""

from __future__ import annotations

import numpy as np
import pytest

from mammokit.preprocess.orient import content_evidence, decide_orientation, flip_from_content, flip_from_metadata


def half_ellipse(chest_wall_left: bool, shape: tuple[int, int] = (200, 160)) -> np.ndarray:
    yy, xx = np.indices(shape) + 0.5
    mask = (xx / (0.7 * shape[1])) ** 2 + ((yy - shape[0] / 2) / (0.4 * shape[0])) ** 2 < 1
    return mask if chest_wall_left else mask[:, ::-1]


@pytest.mark.parametrize(
    ("laterality", "po", "expected"),
    [("L", ("A", "FR"), (False, "PatientOrientation")), ("R", ("P", "FL"), (True, "PatientOrientation")),
     ("R", "A\\R", (False, "PatientOrientation")), ("R", None, (True, "laterality")),
     ("L", ("F", "L"), (False, "laterality")), (None, None, (None, None)), ("B", [], (None, None))],
)
def test_metadata(laterality: str | None, po: object, expected: tuple) -> None:
    assert flip_from_metadata(laterality, po) == expected


def test_content_finds_the_chest_wall_side() -> None:
    assert flip_from_content(half_ellipse(True))[0] is False
    flip, conf = flip_from_content(half_ellipse(False))
    assert flip is True and conf > 0.5
    assert flip_from_content(np.zeros((10, 10), bool)) == (None, 0.0)


def test_content_ignores_columns_outside_the_mask() -> None:
    mask = np.zeros((200, 260), bool)
    mask[:, 50:210] = half_ellipse(False)  # padding bands on both sides
    assert flip_from_content(mask)[0] is True


def test_metadata_missing_content_decides_and_says_so() -> None:
    o = decide_orientation(half_ellipse(False))
    assert o.flip is True and o.source == "content" and not o.disagreement
    assert "no usable laterality" in o.reason


def test_agreement_is_not_flagged() -> None:
    o = decide_orientation(half_ellipse(False), laterality="R", patient_orientation=("P", "FL"))
    assert o.flip is True and not o.disagreement and o.metadata_flip is True and o.content_flip is True


@pytest.mark.parametrize(("prefer", "flip", "source"), [("content", False, "content"),
                                                          ("metadata", True, "PatientOrientation")])
def test_disagreement_is_flagged_and_policy_decides(prefer: str, flip: bool, source: str) -> None:
    o = decide_orientation(half_ellipse(True), laterality="R", patient_orientation=("P", "FL"), prefer=prefer)
    assert o.disagreement and o.flip is flip and o.source == source
    assert "PatientOrientation" in o.reason and "content" in o.reason


def test_ambiguous_content_defers_to_metadata() -> None:
    full = np.ones((100, 80), bool)  # breast filling the detector: no side
    o = decide_orientation(full, laterality="R")
    assert o.flip is True and o.source == "laterality" and not o.disagreement and o.content_confidence < 0.3


def test_nothing_usable_is_not_flipped() -> None:
    o = decide_orientation(np.zeros((10, 10), bool))
    assert o.flip is False and o.source == "default"


def test_bad_policy_raises() -> None:
    with pytest.raises(ValueError, match="prefer"):
        decide_orientation(half_ellipse(True), prefer="votes")


def test_weak_content_without_metadata_is_flagged_ambiguous() -> None:
    mask = np.zeros((200, 160), bool)
    mask[40:160, 20:140] = True  # a rectangle: no side is the chest wall
    o = decide_orientation(mask)
    assert o.ambiguous and o.confidence < 0.3 and "ambiguous" in o.reason


def test_confident_decisions_are_not_ambiguous_and_carry_a_confidence() -> None:
    o = decide_orientation(half_ellipse(False))
    assert not o.ambiguous and o.confidence > 0.5
    o = decide_orientation(half_ellipse(True), laterality="R", patient_orientation=("P", "FL"))
    assert o.disagreement and o.ambiguous


def test_content_votes_must_agree() -> None:
    """A tall strip on the left border, a slightly taller block on the right: the votes split, the content abstains."""
    mask = np.zeros((200, 160), bool)
    mask[50:150, 0:10] = True
    mask[80:120, 10:140] = True
    mask[60:145, 140:160] = True
    votes = content_evidence(mask)
    assert min(votes.values()) < 0 < max(votes.values())
    assert flip_from_content(mask)[1] == 0.0
    assert decide_orientation(mask).ambiguous
