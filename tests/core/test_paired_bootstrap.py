"""The paired, stratified bootstrap of a difference between two models' scores."""

from __future__ import annotations

import numpy as np
import pytest

from gnnseg.core.paired_bootstrap import paired_bootstrap


def test_a_constant_shift_has_no_spread():
    rng = np.random.default_rng(1)
    first = {"EM": rng.random(50), "CT": rng.random(7)}
    second = {name: scores + 0.1 for name, scores in first.items()}
    result = paired_bootstrap(first, second, resamples=300)
    assert result.difference == pytest.approx(0.1)
    assert result.low == pytest.approx(0.1) and result.high == pytest.approx(0.1)
    assert result.per_stratum == pytest.approx({"EM": 0.1, "CT": 0.1})


def test_strata_weigh_alike_whatever_their_size():
    first = {"large": np.zeros(100), "small": np.zeros(2)}
    second = {"large": np.zeros(100), "small": np.ones(2)}
    assert paired_bootstrap(first, second, resamples=50).difference == pytest.approx(0.5)


def test_resamples_keep_each_stratum_whole():
    """A small stratum with a constant difference beside a large one with none: every stratified resample keeps both
    (pooled resampling would let the small one's share vary, and the interval widen)."""
    first = {"large": np.zeros(100), "small": np.zeros(2)}
    second = {"large": np.zeros(100), "small": np.ones(2)}
    result = paired_bootstrap(first, second, resamples=500)
    assert result.low == pytest.approx(0.5) and result.high == pytest.approx(0.5)


def test_the_order_strata_are_given_in_does_not_change_the_interval():
    rng = np.random.default_rng(5)
    first = {"a": rng.random(30), "b": rng.random(12)}
    second = {"a": rng.random(30), "b": rng.random(12)}
    forward = paired_bootstrap(first, second)
    backward = paired_bootstrap(dict(reversed(first.items())), dict(reversed(second.items())))
    assert (forward.low, forward.high) == (backward.low, backward.high)


def test_the_interval_matches_normal_theory_on_many_items():
    rng = np.random.default_rng(2)
    first = rng.random(2000)
    second = first + rng.normal(0.05, 0.1, size=first.size)
    result = paired_bootstrap({"only": first}, {"only": second}, resamples=4000)
    half_width = 1.96 * np.std(second - first) / np.sqrt(first.size)
    assert result.low < result.difference < result.high
    assert (result.high - result.low) / 2 == pytest.approx(half_width, rel=0.1)
    assert result.low > 0    # a 5-point gain on 2,000 items is told apart from none


def test_pairing_removes_what_both_models_share():
    """Items differ far more from each other than the models do: paired, the small gain still shows."""
    rng = np.random.default_rng(3)
    item_difficulty = rng.random(300)
    first = {"all": item_difficulty}
    second = {"all": item_difficulty + 0.01 + rng.normal(0, 0.005, size=300)}
    result = paired_bootstrap(first, second)
    assert 0.009 < result.low < result.high < 0.011


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    rng = np.random.default_rng(4)
    first, second = {"a": rng.random(40)}, {"a": rng.random(40)}
    one, again, other = (paired_bootstrap(first, second, seed=seed) for seed in (5, 5, 6))
    assert (one.low, one.high) == (again.low, again.high)
    assert (one.low, one.high) != (other.low, other.high)


@pytest.mark.parametrize(("first", "second", "message"), [
    ({}, {}, "no strata"),
    ({"a": [1.0]}, {"b": [1.0]}, "different strata"),
    ({"a": [1.0, 0.5]}, {"a": [1.0]}, "same items"),
    ({"a": []}, {"a": []}, "no scores"),
    ({"a": [np.nan]}, {"a": [1.0]}, "NaN"),
])
def test_mismatched_or_bad_scores_are_refused(first, second, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(first, second)


def test_bad_settings_are_refused():
    scores = {"a": [0.5, 0.6]}
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap(scores, scores, resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(scores, scores, confidence=1.0)
