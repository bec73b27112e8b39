"""How sure a difference between two models is: a paired, stratified bootstrap over the items both were scored on.

Both models answer the same items (held-out objects), grouped into strata (modalities). The statistic is the
difference of the two models' mean over strata of each stratum's mean score, the way a five-modality mean is
formed, so a small stratum weighs as much as a large one. Each resample draws every stratum's items with
replacement, the same draw for both models (paired), and keeps the strata's sizes (stratified); the interval is
the percentile interval of the resampled differences. It speaks for the items' sampling only: another training
run of the same recipe is another source of variation, which no resampling of one run's scores can show.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedDifference:
    """``difference``: the second model's mean over strata minus the first's; ``low`` / ``high``: the percentile
    interval of it over ``resamples`` resamples at ``confidence``; ``per_stratum``: each stratum's own difference of
    means (second minus first)."""

    difference: float
    low: float
    high: float
    confidence: float
    resamples: int
    per_stratum: dict[str, float]


def _paired_scores(first: Mapping[str, np.ndarray], second: Mapping[str, np.ndarray]
                   ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if not first:
        raise ValueError("no strata to compare")
    if set(first) != set(second):
        raise ValueError(f"the two models were scored on different strata: {sorted(first)} vs {sorted(second)}")
    pairs = []
    for name in sorted(first):      # the draws then follow the strata's names, not the order they were given in
        a = np.asarray(first[name], dtype=np.float64).ravel()
        b = np.asarray(second[name], dtype=np.float64).ravel()
        if a.shape != b.shape:
            raise ValueError(f"stratum {name!r}: {a.size} scores for one model and {b.size} for the other; a paired "
                             f"comparison needs the same items")
        if a.size == 0:
            raise ValueError(f"stratum {name!r} has no scores")
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ValueError(f"stratum {name!r} has NaN or infinite scores")
        pairs.append((name, a, b))
    return pairs


def paired_bootstrap(first: Mapping[str, np.ndarray], second: Mapping[str, np.ndarray], *, resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> PairedDifference:
    """Second model minus first: the difference of their means over strata, with its bootstrap interval.

    ``first`` and ``second`` map each stratum's name to the per-item scores of that model, items in the same order
    in both."""
    if resamples < 1:
        raise ValueError(f"resamples must be 1 or more, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    pairs = _paired_scores(first, second)
    rng = np.random.default_rng(seed)
    resampled = np.zeros(resamples)
    for _, a, b in pairs:
        draws = rng.integers(0, a.size, size=(resamples, a.size))
        resampled += (b - a)[draws].mean(axis=1)
    resampled /= len(pairs)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    per_stratum = {name: float(b.mean() - a.mean()) for name, a, b in pairs}
    return PairedDifference(float(np.mean(list(per_stratum.values()))), float(low), float(high), confidence,
                            resamples, per_stratum)
