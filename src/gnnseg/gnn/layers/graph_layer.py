"""What a graph layer declares to the models that stack it, and the cache of its per-graph values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

Value = TypeVar("Value")


class GraphLayer(nn.Module):
    """A layer of a :class:`~gnnseg.gnn.models.StackedGNN`; a subclass overrides the declarations that differ.

    * ``has_block_form``: runs on a sampled block, ``layer(x_sources, edge_index, ..., num_targets=T)`` ->
      ``(T, F')`` (conventions in :mod:`gnnseg.gnn.sampling.blocks`).
    * ``accepts_block_weights``: uses a block's propagation weights (FastGCN / LADIES) as its ``edge_weight``.
    * ``accepts_output_nodes``: ``forward(..., output_nodes=...)`` computes only those rows.
    * ``rowwise``: transforms every node on its own and takes no edges (no block on the sampled path).

    With ``cached = True`` a layer keeps one value per graph (a normalized adjacency, an edge list, a
    propagation) through :meth:`cached_value`; ``reset_parameters`` drops it with :meth:`reset_cache`.
    """

    has_block_form: bool = False
    accepts_block_weights: bool = False
    accepts_output_nodes: bool = False
    rowwise: bool = False
    cached: bool = False
    _cache: tuple[tuple, Any] | None = None

    def cached_value(self, key: tuple | None, compute: Callable[[], Value]) -> Value:
        """``compute()``, kept for ``key`` (:func:`gnnseg.gnn.ops.graph_key`) when ``cached``: the same key
        returns the kept value, another recomputes it. ``key=None`` (a sampled block) is never kept: every batch
        brings a new block, and a key made of a tensor's address could match one allocated where a freed one was."""
        if not self.cached or key is None:
            return compute()
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, compute())
        return self._cache[1]

    def reset_cache(self) -> None:
        self._cache = None
