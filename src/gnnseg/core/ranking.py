"""Threshold-free scores of a ranking: ROC-AUC and average precision (both halves use them)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(labels).ravel().astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(f"scores ({scores.size}) and labels ({labels.size}) differ in length")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    if labels.all() or not labels.any():
        raise ValueError("ranking scores need both positive and negative labels")
    return scores, labels


def roc_auc(scores, labels) -> float:
    """Probability that a random positive outranks a random negative (ties count half): the
    Mann-Whitney U statistic over the averaged ranks."""
    scores, labels = _check(scores, labels)
    ranks = rankdata(scores)
    positives, negatives = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_precision(scores, labels) -> float:
    """Mean of the precision at each positive, scanning scores from high to low (tied scores are
    taken as one step, as scikit-learn does)."""
    scores, labels = _check(scores, labels)
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    true_positives = np.cumsum(labels)[last_of_tie]
    precision = true_positives / (last_of_tie + 1)
    recall_steps = np.diff(np.r_[0, true_positives]) / labels.sum()
    return float((precision * recall_steps).sum())
