"""FROC on hand-made boxes and points with hand-computed operating points; saliency peak NMS."""

from __future__ import annotations

import numpy as np
import pytest

from mammokit.evaluation.froc import (
    box_iou,
    froc_curve,
    froc_summary,
    hit_matrix,
    saliency_peaks,
    sensitivity_at_fp_rates,
)

# image 0: lesions A, B; candidates: A hit (0.9), A hit again (0.6: neither TP nor FP), FP (0.8), B hit (0.3)
# image 1: normal; two FPs (0.7, 0.2).  image 2: lesion C missed; one FP (0.5).
CANDIDATES = [
    np.array([[15, 15], [12, 18], [30, 30], [55, 55]]),
    np.array([[5, 5], [6, 6]]),
    np.array([[50, 50]]),
]
SCORES = [np.array([0.9, 0.6, 0.8, 0.3]), np.array([0.7, 0.2]), np.array([0.5])]
LESIONS = [np.array([[10, 10, 20, 20], [50, 50, 60, 60]]), None, np.array([[0, 0, 10, 10]])]


def test_froc_curve_hand_computed() -> None:
    curve = froc_curve(CANDIDATES, SCORES, LESIONS)
    assert curve.n_images == 3 and curve.n_lesions == 3
    np.testing.assert_allclose(curve.thresholds, [np.inf, 0.9, 0.8, 0.7, 0.5, 0.3, 0.2])
    np.testing.assert_allclose(curve.fp_per_image, np.array([0, 0, 1, 2, 3, 3, 4]) / 3)
    np.testing.assert_allclose(curve.sensitivity, np.array([0, 1, 1, 1, 1, 2, 2]) / 3)


def test_sensitivity_at_fp_rates_linear_and_step() -> None:
    curve = froc_curve(CANDIDATES, SCORES, LESIONS)
    rates = [0.25, 0.5, 0.75, 1, 2, 4]
    # envelope: (0, 1/3) (1/3, 1/3) (2/3, 1/3) (1, 2/3) (4/3, 2/3); 0.75 lies a quarter of the way from 2/3 to 1
    linear = sensitivity_at_fp_rates(curve, rates, interpolation="linear")
    np.testing.assert_allclose(linear, [1 / 3, 1 / 3, 1 / 3 + 1 / 12, 2 / 3, 2 / 3, 2 / 3])
    step = sensitivity_at_fp_rates(curve, rates)  # the default
    np.testing.assert_allclose(step, [1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3])
    summary = froc_summary(CANDIDATES, SCORES, LESIONS)
    assert summary["mean_sensitivity"] == pytest.approx((1 / 3 + 1 / 3 + 2 / 3 + 2 / 3 + 2 / 3) / 5)
    assert summary["sensitivity_at_fp"]["0.25"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="interpolation"):
        sensitivity_at_fp_rates(curve, rates, interpolation="cubic")


def test_hit_criteria_center_and_iou() -> None:
    lesion = np.array([[0.0, 0.0, 10.0, 10.0]])
    boxes = np.array([[0, 0, 10, 5], [5, 5, 15, 15], [8, 8, 28, 28]], dtype=float)
    np.testing.assert_allclose(box_iou(boxes, lesion)[:, 0], [0.5, 25 / 175, 4 / 496])
    assert hit_matrix(boxes, lesion, "iou", 0.1)[:, 0].tolist() == [True, True, False]
    assert hit_matrix(boxes, lesion, "iou", 0.2)[:, 0].tolist() == [True, False, False]
    # centres (5, 2.5), (10, 10) on the edge (inclusive), (18, 18) outside
    assert hit_matrix(boxes, lesion, "center")[:, 0].tolist() == [True, True, False]
    with pytest.raises(ValueError, match="needs candidate boxes"):
        hit_matrix(np.array([[1.0, 1.0]]), lesion, "iou")


def test_one_candidate_detects_two_overlapping_lesions_and_iou_curve() -> None:
    lesions = [np.array([[0, 0, 10, 10], [5, 5, 20, 20]])]
    curve = froc_curve([np.array([[7, 7], [30, 30]])], [np.array([0.4, 0.9])], lesions)
    np.testing.assert_allclose(curve.fp_per_image, [0, 1, 1])
    np.testing.assert_allclose(curve.sensitivity, [0, 0, 1])
    curve = froc_curve([np.array([[0, 0, 10, 6]])], [np.array([0.5])], [np.array([[0, 0, 10, 10]])], criterion="iou")
    np.testing.assert_allclose(curve.sensitivity, [0, 1])


def test_froc_input_errors() -> None:
    with pytest.raises(ValueError, match="no lesions"):
        froc_curve([np.array([[1, 1]])], [np.array([0.5])], [None])
    with pytest.raises(ValueError, match=r"scores\[0\]: 1 scores for 2 candidates"):
        froc_curve([np.array([[1, 1], [2, 2]])], [np.array([0.5])], [np.array([[0, 0, 3, 3]])])
    with pytest.raises(ValueError, match=r"lesions\[0\]"):
        froc_curve([np.array([[1, 1]])], [np.array([0.5])], [np.array([[5, 5, 0, 0]])])


def test_saliency_peaks_nms() -> None:
    h = np.zeros((20, 20))
    h[3, 4], h[3, 6], h[15, 10] = 1.0, 0.8, 0.5
    h[10, 2] = h[10, 3] = 0.6  # plateau: one point, the row-major first
    pts, vals = saliency_peaks(h, k=3, min_distance=2)
    assert pts.tolist() == [[3, 4], [10, 2], [15, 10]]
    np.testing.assert_allclose(vals, [1.0, 0.6, 0.5])
    pts, vals = saliency_peaks(h, k=3, min_distance=1)  # (3, 6) is 2 px away: now its own peak
    assert pts.tolist() == [[3, 4], [3, 6], [10, 2]]
    pts, _ = saliency_peaks(h, k=10, min_distance=1, min_score=0.55)
    assert pts.tolist() == [[3, 4], [3, 6], [10, 2]]
    assert saliency_peaks(np.full((5, 5), 0.3), k=3)[0].shape == (0, 2)
    with pytest.raises(ValueError, match="2-D"):
        saliency_peaks(np.zeros((2, 2, 2)))


def test_peaks_feed_froc() -> None:
    h = np.zeros((32, 32))
    h[8, 8], h[24, 20] = 0.9, 0.4
    pts, vals = saliency_peaks(h, k=2, min_distance=3)
    summary = froc_summary([pts], [vals], [np.array([[20, 16, 28, 24]])], fp_rates=[0.5, 1.0])
    # the lesion is found at 0.4, after one FP at 0.9: sensitivity 0 below 1 FP/image, 1 at 1 FP/image
    assert summary["sensitivity_at_fp"] == {"0.5": 0.0, "1": 1.0}


def test_refined_peaks_find_a_blob_between_coarse_cells() -> None:
    """A lesion centred between the cells of a coarse map: refinement places the peak near it, cell centres cannot."""
    truth = np.array([4.3, 6.7])
    yy, xx = np.mgrid[0:10, 0:12]
    h = np.exp(-((yy - truth[0]) ** 2 + (xx - truth[1]) ** 2) / (2 * 1.2**2))
    coarse, _ = saliency_peaks(h, k=1)
    refined, values = saliency_peaks(h, k=1, refine=True)
    assert coarse.tolist() == [[4, 7]] and values[0] == h[4, 7]
    assert np.abs(refined[0] - truth).max() < 0.1 < np.abs(coarse[0] - truth).max()
    # on a 32-pixel grid, the refined point lies inside a 12-pixel lesion box around the truth; the cell centre not
    box = np.array([[(truth[0] + 0.5) * 32 - 6, (truth[1] + 0.5) * 32 - 6,
                     (truth[0] + 0.5) * 32 + 6, (truth[1] + 0.5) * 32 + 6]])
    hits = [froc_summary([(p + 0.5) * 32], [values], [box], fp_rates=[1.0])["sensitivity_at_fp"]["1"]
            for p in (coarse, refined)]
    assert hits == [0.0, 1.0]


def test_refinement_at_borders_and_plateaus() -> None:
    h = np.zeros((6, 6))
    h[0, 3], h[0, 2] = 1.0, 0.5  # top border: y cannot move; x moves towards the stronger neighbour
    h[4, 1] = h[4, 2] = 0.7  # plateau: one point, moved to the middle of the plateau
    pts, _ = saliency_peaks(h, k=2, min_distance=1, refine=True)
    assert pts[0, 0] == 0.0 and -0.5 <= pts[0, 1] - 3 < 0
    assert pts[1].tolist() == [4.0, 1.5]  # a two-pixel plateau: its middle
