"""Numbers that must match the field's conventions: FROC read as LUNA16 and MONAI read it, operating points that
return the best of equally good thresholds, equal-mass ECE independent of row order, no temperature from one class.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from mammokit.errors import InvalidInputError
from mammokit.evaluation.calibration import expected_calibration_error, fit_temperature, reliability_diagram
from mammokit.evaluation.calibrators import fit_calibrator, fit_level_calibration
from mammokit.evaluation.froc import DEFAULT_FP_RATES, froc_summary
from mammokit.evaluation.metrics import sensitivity_at_specificity, specificity_at_sensitivity

# Three images, four lesions (A, B in image 0; C in image 1; D in image 2), four false positives per image.
# In descending score: A .95, FP .90, C .85, FP x5 (.80-.60), D .55, FP x6 (.50-.25), B .20. The operating points
# (FP/image, sensitivity): (0, 1/4) (1/3, 1/4) (1/3, 2/4) ... (2, 2/4) (2, 3/4) ... (4, 3/4) (4, 1).
LESION = np.array([[0.0, 0.0, 10.0, 10.0]])
LESIONS = [np.array([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]), LESION, LESION]
HITS = {0: [((5, 5), 0.95), ((25, 25), 0.20)], 1: [((5, 5), 0.85)], 2: [((5, 5), 0.55)]}
FP_SCORES = {0: [0.90, 0.70, 0.50, 0.35], 1: [0.80, 0.65, 0.45, 0.30], 2: [0.75, 0.60, 0.40, 0.25]}


def _froc_case() -> tuple[list[np.ndarray], list[np.ndarray]]:
    cands, scores = [], []
    for i in range(3):
        points = [p for p, _ in HITS[i]] + [(50 + k, 50 + k) for k in range(len(FP_SCORES[i]))]
        cands.append(np.array(points, dtype=float))
        scores.append(np.array([s for _, s in HITS[i]] + FP_SCORES[i]))
    return cands, scores


def _luna16_sensitivities(tp_scores: list[float], fp_scores: list[float], n_lesions: int, n_images: int,
                          rates: tuple[float, ...]) -> np.ndarray:
    """LUNA16's computeFROC and CPM reading, written from its description: scikit-learn's ROC curve over detected
    lesions (positives) and false positives, rescaled to FP/image and lesion sensitivity, read with np.interp."""
    y = np.r_[np.ones(len(tp_scores)), np.zeros(len(fp_scores))]
    fpr, tpr, _ = roc_curve(y, np.r_[tp_scores, fp_scores])
    return np.interp(rates, fpr * len(fp_scores) / n_images, tpr * len(tp_scores) / n_lesions)


def test_froc_default_reads_the_curve_as_luna16_and_monai() -> None:
    cands, scores = _froc_case()
    summary = froc_summary(cands, scores, LESIONS)
    # at 0.25 FP/image no threshold has more than 1/4 of the lesions: the first FP comes before the second lesion
    assert summary["sensitivity_at_fp"] == pytest.approx({"0.25": 0.25, "0.5": 0.5, "1": 0.5, "2": 0.75, "4": 1.0})
    assert summary["mean_sensitivity"] == pytest.approx(0.600)
    tps = [s for i in HITS for _, s in HITS[i]]
    fps = [s for i in FP_SCORES for s in FP_SCORES[i]]
    luna = _luna16_sensitivities(tps, fps, 4, 3, DEFAULT_FP_RATES)
    np.testing.assert_allclose(list(summary["sensitivity_at_fp"].values()), luna, atol=1e-12)
    assert summary["interpolation"] == "step" and "LUNA16" in summary["convention"]


def test_froc_linear_reading_only_by_name() -> None:
    cands, scores = _froc_case()
    linear = froc_summary(cands, scores, LESIONS, interpolation="linear")
    # the envelope joins (0, 1/4) to (1/3, 2/4): at 0.25 it reads 1/4 + 3/4 * 1/4, which no threshold achieves
    assert linear["sensitivity_at_fp"]["0.25"] == pytest.approx(0.4375)
    assert linear["mean_sensitivity"] == pytest.approx(0.6375)
    assert "higher than LUNA16" in linear["convention"]


def test_froc_tie_between_a_false_positive_and_a_lesion_is_a_sloped_segment() -> None:
    # one image: lesion 1 at 0.5 tied with a FP at 0.5, lesion 2 missed, another FP at 0.3
    cands = [np.array([[5.0, 5.0], [50.0, 50.0], [60.0, 60.0]])]
    scores = [np.array([0.5, 0.5, 0.3])]
    lesions = [np.array([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])]
    rates = (0.25, 0.5, 1.0, 2.0)
    summary = froc_summary(cands, scores, lesions, fp_rates=rates)
    want = _luna16_sensitivities([0.5], [0.5, 0.3], 2, 1, rates)  # (0, 0) to (1, 1/2), then flat
    np.testing.assert_allclose(want, [0.125, 0.25, 0.5, 0.5])
    np.testing.assert_allclose(list(summary["sensitivity_at_fp"].values()), want, atol=1e-12)


def test_sensitivity_at_specificity_returns_the_most_specific_of_equally_sensitive_thresholds() -> None:
    y = np.array([1, 1, 1] + [0] * 10)
    p = np.array([0.9, 0.8, 0.2, 0.5, 0.3] + [0.1] * 8)
    # specificity >= 0.9 at t = 0.5 (0.9), 0.8 (1.0), 0.9 and inf; t = 0.5 and 0.8 both give sensitivity 2/3
    got = sensitivity_at_specificity(y, p, 0.9)
    assert got == {"target": 0.9, "sensitivity": pytest.approx(2 / 3), "specificity": 1.0, "threshold": 0.8}


def test_specificity_at_sensitivity_returns_the_most_sensitive_of_equally_specific_thresholds() -> None:
    y = np.array([1, 1, 1] + [0] * 10)
    p = np.array([0.9, 0.8, 0.7, 0.95] + [0.1] * 9)
    # sensitivity >= 1/3 at t = 0.1 (spec 0), 0.7, 0.8, 0.9 (spec 0.9 each); t = 0.7 detects all three
    got = specificity_at_sensitivity(y, p, 1 / 3)
    assert got == {"target": pytest.approx(1 / 3), "sensitivity": 1.0, "specificity": 0.9, "threshold": 0.7}


def test_equal_mass_ece_keeps_ties_in_one_bin_whatever_the_row_order() -> None:
    y = np.array([0, 0, 1, 1, 1, 1])
    p = np.array([0.2, 0.2, 0.2, 0.2, 0.8, 0.8])
    # three bins of two: the four 0.2s share one bin (observed rate 1/2, gap 0.3), the 0.8s another (gap 0.2)
    want = (4 * 0.3 + 2 * 0.2) / 6
    rng = np.random.default_rng(0)
    for _ in range(20):
        order = rng.permutation(y.size)
        assert expected_calibration_error(y[order], p[order], 3, "quantile") == pytest.approx(want)
    diag = reliability_diagram(y, p, 3, "quantile")
    assert diag["counts"].tolist() == [4, 0, 2]
    np.testing.assert_allclose(diag["bin_edges"], [0.2, 0.8, 0.8, 0.8])
    # without ties the bins are the usual equal-mass ones
    assert reliability_diagram(y, np.linspace(0.1, 0.6, 6), 3, "quantile")["counts"].tolist() == [2, 2, 2]


@pytest.mark.parametrize("labels", [np.ones(3), np.zeros(3)])
def test_a_temperature_is_not_fitted_on_one_class(labels: np.ndarray) -> None:
    logits = np.array([-1.0, -2.0, 0.5])  # on all-positive labels the NLL falls towards T = infinity
    with pytest.raises(InvalidInputError, match="positive and negative"):
        fit_temperature(logits, labels)
    with pytest.raises(ValueError, match="positive and negative"):
        fit_calibrator(logits, labels, "temperature")
    with pytest.raises(ValueError, match="positive and negative"):
        fit_level_calibration(logits, labels, method="temperature")
    with pytest.raises(ValueError, match="two classes"):
        fit_temperature(np.zeros((3, 4)), np.full(3, 2))
    assert 0.5 < fit_temperature(logits, np.array([1.0, 0.0, 1.0])) < 100  # two classes: a finite minimum
