"""Pixel error: the ISBI 2012 challenge's 1 - max F-score and the plain misclassified fraction, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from gnnseg.seg.pixel_error import (
    CHALLENGE_THRESHOLDS,
    challenge_pixel_error,
    misclassified_fraction,
    pixel_fscores,
)

TRUTH = np.array([[1, 1, 0, 0]])
PROBABILITY = np.array([[0.9, 0.35, 0.6, 0.05]])


def test_thresholds_are_the_challenge_eleven() -> None:
    assert CHALLENGE_THRESHOLDS == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def test_fscores_at_each_threshold_by_hand() -> None:
    # t=0: all four positive (TP 2, FP 2) -> 4/6; t in 0.1..0.3: TP 2, FP 1 -> 4/5; t=0.4, 0.5: TP 1, FP 1,
    # FN 1 -> 2/4; t in 0.6..0.8 (0.6 is not > 0.6): TP 1, FN 1 -> 2/3; t >= 0.9: nothing positive -> 0.
    expected = [4 / 6, 0.8, 0.8, 0.8, 0.5, 0.5, 2 / 3, 2 / 3, 2 / 3, 0.0, 0.0]
    np.testing.assert_allclose(pixel_fscores(PROBABILITY, TRUTH), expected)
    assert challenge_pixel_error(PROBABILITY, TRUTH) == pytest.approx(0.2)
    assert misclassified_fraction(PROBABILITY > 0.5, TRUTH) == pytest.approx(0.5)


def test_counts_are_pooled_over_the_stack_not_averaged_per_section() -> None:
    truth = np.array([[[1, 1, 1, 1]], [[1, 0, 0, 0]]])
    probability = np.array([[[1.0, 1.0, 1.0, 1.0]], [[0.0, 1.0, 1.0, 1.0]]])
    # at t=0.5: TP 4, FP 3, FN 1 over the stack -> F = 8/12; per section the F-scores are 1 and 0
    assert pixel_fscores(probability, truth, [0.5])[0] == pytest.approx(8 / 12)
    assert challenge_pixel_error(probability, truth, [0.5]) == pytest.approx(1 / 3)


def test_a_perfect_map_scores_zero_and_a_confident_inverted_one_scores_one() -> None:
    truth = np.zeros((8, 8), bool)
    truth[2:6, 1:7] = True
    assert challenge_pixel_error(truth.astype(float), truth) == 0.0
    assert challenge_pixel_error(1.0 - truth, truth) == 1.0       # every threshold keeps only wrong pixels


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="shape"):
        challenge_pixel_error(PROBABILITY, TRUTH[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        challenge_pixel_error(np.array([[np.nan, 0.1, 0.2, 0.3]]), TRUTH)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        challenge_pixel_error(PROBABILITY * 2, TRUTH)
    with pytest.raises(ValueError, match="no positive"):
        challenge_pixel_error(PROBABILITY, np.zeros_like(TRUTH))
    with pytest.raises(ValueError, match="empty"):
        misclassified_fraction(np.zeros((0, 4)), np.zeros((0, 4)))
