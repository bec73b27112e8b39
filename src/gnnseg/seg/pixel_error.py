"""Pixel error of a binary segmentation, as the ISBI 2012 EM challenge scores it and as a plain fraction.

Two numbers go by the name "pixel error":

* :func:`misclassified_fraction` -- the share of pixels whose label is wrong, at one decision.
* :func:`challenge_pixel_error` -- the ISBI 2012 challenge's pixel error, the figure of the U-Net paper's
  Table 1 (0.0611): ``1 - max_t F(t)`` (Arganda-Carreras et al. 2015, Front. Neuroanat. 9:142; Fiji's
  ``trainableSegmentation.metrics.PixelError.getPixelErrorMaximalFScore``). The submitted probability
  map of the *positive* class (in ISBI, cell interiors: the white, nonzero pixels of the labels; the
  membranes are 0) is binarised at each threshold ``t`` in 0.0, 0.1, ..., 1.0 (a pixel is positive when
  its probability is strictly greater than ``t``). True and false positives and negatives are summed
  over the whole stack, ``F = 2 TP / (2 TP + FP + FN)`` (the harmonic mean of precision and recall), and
  the best threshold for the stack wins.

The two differ in kind, not only in value: the challenge's number measures how well the positive class
is recovered, so at the same predictions it is smaller than the fraction of wrong pixels whenever the
positive class covers most of the image (cells cover about 78 % of an ISBI section).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CHALLENGE_THRESHOLDS", "challenge_pixel_error", "misclassified_fraction", "pixel_fscores"]

CHALLENGE_THRESHOLDS: tuple[float, ...] = tuple(k / 10 for k in range(11))


def _truth(truth: object, shape: tuple[int, ...]) -> np.ndarray:
    truth = np.asarray(truth)
    if truth.shape != shape:
        raise ValueError(f"truth has shape {truth.shape}, the prediction {shape}: they must match")
    if truth.dtype.kind == "f" and np.isnan(truth).any():
        raise ValueError("truth contains NaN")
    return truth != 0


def misclassified_fraction(predicted: object, truth: object) -> float:
    """Fraction of pixels where the binary ``predicted`` (nonzero = positive) disagrees with ``truth``."""
    predicted = np.asarray(predicted)
    if predicted.size == 0:
        raise ValueError("predicted is empty")
    if predicted.dtype.kind == "f" and np.isnan(predicted).any():
        raise ValueError("predicted contains NaN")
    return float(((predicted != 0) != _truth(truth, predicted.shape)).mean())


def pixel_fscores(probability: object, truth: object,
                  thresholds: Sequence[float] = CHALLENGE_THRESHOLDS) -> np.ndarray:
    """F-score of the positive class at each threshold, counts pooled over every pixel of the stack.

    Args:
        probability: probability of the positive class, any shape (one section ``(H, W)`` or a stack
            ``(N, H, W)``), values in ``[0, 1]``.
        truth: same shape; nonzero = positive.
        thresholds: a pixel is predicted positive when its probability is strictly greater.

    Returns:
        ``(len(thresholds),)`` F-scores; 0 where nothing is predicted positive.
    """
    probability = np.asarray(probability, dtype=np.float64)
    if probability.size == 0:
        raise ValueError("probability is empty")
    if np.isnan(probability).any():
        raise ValueError("probability contains NaN")
    if probability.min() < 0 or probability.max() > 1:
        raise ValueError(f"probability must lie in [0, 1], got [{probability.min()}, {probability.max()}]")
    positive = _truth(truth, probability.shape)
    if not positive.any():
        raise ValueError("truth has no positive pixel: the F-score is undefined")
    scores = []
    for threshold in thresholds:
        predicted = probability > threshold
        true_positives = np.count_nonzero(predicted & positive)
        errors = np.count_nonzero(predicted != positive)         # false positives + false negatives
        scores.append(2 * true_positives / (2 * true_positives + errors))
    return np.asarray(scores)


def challenge_pixel_error(probability: object, truth: object,
                          thresholds: Sequence[float] = CHALLENGE_THRESHOLDS) -> float:
    """ISBI 2012 pixel error: ``1 -`` the best F-score of the positive class over ``thresholds``."""
    return float(1.0 - pixel_fscores(probability, truth, thresholds).max())
