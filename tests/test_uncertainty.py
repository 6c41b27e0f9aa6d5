"""Uncertainty summaries on constructed pass stacks with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mammokit.evaluation.uncertainty import (
    binary_entropy,
    error_detection_auc,
    misclassified,
    summarize_passes,
)


def test_binary_entropy_values() -> None:
    np.testing.assert_allclose(binary_entropy([0.0, 1.0, 0.5]), [0.0, 0.0, math.log(2)])
    assert binary_entropy(0.5, base=2) == pytest.approx(1.0)
    p = 0.2
    assert binary_entropy(p) == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)))


def test_agreeing_passes_have_zero_mutual_information() -> None:
    probs = np.tile([0.1, 0.5, 0.9], (8, 1))
    s = summarize_passes(probs)
    np.testing.assert_allclose(s["mean"], [0.1, 0.5, 0.9])
    np.testing.assert_allclose(s["std"], 0.0, atol=1e-12)
    np.testing.assert_allclose(s["predictive_entropy"], binary_entropy([0.1, 0.5, 0.9]))
    np.testing.assert_allclose(s["mutual_information"], 0.0, atol=1e-12)


def test_disagreeing_passes_are_epistemic() -> None:
    # sample 0: passes split between 0 and 1 (pure disagreement); sample 1: every pass says 0.5 (pure noise)
    probs = np.array([[0.0, 0.5], [1.0, 0.5], [0.0, 0.5], [1.0, 0.5]])
    s = summarize_passes(probs, base=2)
    np.testing.assert_allclose(s["mean"], [0.5, 0.5])
    np.testing.assert_allclose(s["std"], [0.5, 0.0])
    np.testing.assert_allclose(s["predictive_entropy"], [1.0, 1.0])
    np.testing.assert_allclose(s["expected_entropy"], [0.0, 1.0])
    np.testing.assert_allclose(s["mutual_information"], [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(summarize_passes(probs, ddof=1)["std"], [math.sqrt(1 / 3), 0.0])


def test_mutual_information_by_hand() -> None:
    probs = np.array([[0.2], [0.6]])
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    s = summarize_passes(probs)
    assert s["mutual_information"][0] == pytest.approx(h(0.4) - (h(0.2) + h(0.6)) / 2)


def test_error_detection_auc() -> None:
    labels = np.array([1, 1, 0, 0, 1, 0])
    probs = np.array([0.9, 0.4, 0.2, 0.7, 0.8, 0.1])
    errors = misclassified(labels, probs)
    assert errors.tolist() == [False, True, False, True, False, False]
    uncertainty = binary_entropy(probs)  # 0.4 and 0.7 are the least certain calls
    assert error_detection_auc(uncertainty, errors) == 1.0
    assert error_detection_auc(-uncertainty, errors) == 0.0
    # one error (rank 2 of 4 among 4 scores): it beats 1 of 3 correct samples -> 1/3
    assert error_detection_auc([0.1, 0.5, 0.2, 0.9], [0, 0, 1, 0]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="error_detection_auc"):
        error_detection_auc([0.1, 0.2], [False, False])


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="probabilities in"):
        summarize_passes(np.array([[0.2, 1.5]]))
    with pytest.raises(ValueError, match="N passes, M samples"):
        summarize_passes(np.zeros((2, 2, 2)))
