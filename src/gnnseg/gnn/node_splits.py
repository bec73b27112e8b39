"""Train / validation / test node splits: random ones, and the rule for graphs that come without theirs.

A graph keeps its own masks when its train and test masks each select a node; a graph without validation nodes
then trains for its full epochs and reports the last one (as Karate's demo does). A graph that lacks a train or
test mask, or whose train or test mask is empty, gets :data:`DEFAULT_FRACTIONS` at random from
:data:`DEFAULT_SEED` instead, with one :class:`DefaultSplitWarning` saying so, so that no run reports a test
accuracy of NaN. ``random:TRAIN,VAL,TEST`` (:func:`parse_split`) asks for a random split whatever masks the graph
has.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import replace

import torch

from gnnseg.gnn.graph import MASK_NAMES, Graph, GraphValidationError

DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
DEFAULT_SEED = 0
SPLIT_PREFIX = "random:"


class DefaultSplitWarning(UserWarning):
    """A graph without usable train / test masks was given a random split."""


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """``(train, val, test)`` as floats if each is positive and they sum to at most 1; ``ValueError`` otherwise."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3:
        raise ValueError(f"a split needs three fractions (train, val, test), got {len(values)}: {values}")
    if not all(math.isfinite(f) and f > 0 for f in values):
        raise ValueError(f"split fractions must be positive, got {values}")
    if sum(values) > 1 + 1e-9:
        raise ValueError(f"split fractions must sum to at most 1, got {values} (sum {sum(values):g})")
    return values  # type: ignore[return-value]


def parse_split(text: str) -> tuple[float, float, float]:
    """The fractions of ``random:TRAIN,VAL,TEST`` (e.g. ``random:0.6,0.2,0.2``), checked."""
    if not text.lower().startswith(SPLIT_PREFIX):
        raise ValueError(f"a split is written random:TRAIN,VAL,TEST (e.g. random:0.6,0.2,0.2), got {text!r}")
    try:
        fractions = [float(v) for v in text[len(SPLIT_PREFIX):].split(",")]
    except ValueError:
        raise ValueError(f"split fractions must be numbers, as in random:0.6,0.2,0.2; got {text!r}") from None
    return check_fractions(fractions)


def random_split(graph: Graph, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = DEFAULT_SEED) -> Graph:
    """A copy of ``graph`` with new train / val / test masks: a random permutation of all nodes from ``seed``,
    cut into ``round(fraction * N)`` nodes each (the test count capped so the three never overlap; fractions
    summing to less than 1 leave the rest in no split). Raises :class:`GraphValidationError` when the graph is
    too small for every split to get a node."""
    train, val, test = check_fractions(fractions)
    num_nodes = graph.num_nodes
    counts = [round(train * num_nodes), round(val * num_nodes)]
    counts.append(min(round(test * num_nodes), num_nodes - sum(counts)))
    if min(counts) < 1:
        empty = [name for name, count in zip(MASK_NAMES, counts) if count < 1]
        raise GraphValidationError(f"a {train:g}/{val:g}/{test:g} split of the {num_nodes} nodes of {graph.name!r} "
                                   f"leaves {', '.join(empty)} empty; give larger fractions or a larger graph")
    order = torch.randperm(num_nodes, generator=torch.Generator().manual_seed(seed))
    masks = {}
    for name, part in zip(MASK_NAMES, order.split([*counts, num_nodes - sum(counts)])):
        masks[name] = torch.zeros(num_nodes, dtype=torch.bool)
        masks[name][part] = True
    return replace(graph, **masks, _cache=graph._cache)


def missing_splits(graph: Graph) -> list[str]:
    """The train and test masks that are absent or select no node (the ones a trainer cannot do without)."""
    masks = {"train_mask": graph.train_mask, "test_mask": graph.test_mask}
    return [name for name, mask in masks.items() if mask is None or not bool(mask.any())]


def with_splits(graph: Graph, fractions: Sequence[float] | None = None, seed: int = DEFAULT_SEED) -> Graph:
    """The graph a trainer uses: ``fractions`` given, a :func:`random_split` with them; otherwise ``graph`` with
    its own masks, or, where its train or test mask is missing or empty, the default random split with a
    :class:`DefaultSplitWarning` naming what was missing."""
    if fractions is not None:
        return random_split(graph, fractions, seed)
    missing = missing_splits(graph)
    if not missing:
        return graph
    warnings.warn(f"{graph.name!r} has no usable {' or '.join(missing)}: training on a random "
                  f"{'/'.join(f'{f:g}' for f in DEFAULT_FRACTIONS)} train/val/test split of its nodes (seed "
                  f"{seed}); choose one with --split random:TRAIN,VAL,TEST or node_splits.random_split(), or give the "
                  f"graph its masks",
                  DefaultSplitWarning, stacklevel=2)
    return random_split(graph, DEFAULT_FRACTIONS, seed)
