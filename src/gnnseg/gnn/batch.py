"""Many small graphs as one: block-diagonal edges and a graph-index vector, plus readouts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from gnnseg.gnn.graph import Graph, GraphValidationError

Readout = Literal["sum", "mean", "max"]


@dataclass
class GraphBatch:
    """``x (N_total, F)``, ``edge_index (2, E_total)`` with node ids offset per graph, ``batch (N_total,)``
    giving each node's graph, ``y (G,)`` (or ``(G, T)`` for several tasks), and ``edge_attr (E_total, D)``
    when the graphs have edge features."""

    x: Tensor
    edge_index: Tensor
    batch: Tensor
    y: Tensor
    num_graphs: int
    edge_attr: Tensor | None = None

    @classmethod
    def collate(cls, graphs: Sequence[Graph], y: Tensor | None = None) -> GraphBatch:
        """Batch ``graphs``; their scalar ``y`` become ``y (G,)`` unless labels ``y (G, ...)`` are given
        (multi-task labels kept beside the graphs, e.g. molecules with missing values)."""
        if not graphs:
            raise GraphValidationError("cannot batch an empty list of graphs")
        widths = {g.num_features for g in graphs}
        if len(widths) != 1:
            raise GraphValidationError(f"graphs have different feature widths {sorted(widths)}")
        edge_widths = {g.num_edge_features if g.edge_attr is not None else None for g in graphs}
        if len(edge_widths) != 1:
            raise GraphValidationError(f"graphs have different edge feature widths {sorted(map(str, edge_widths))} "
                                       "(None: no edge_attr)")
        if y is None:
            y = torch.stack([torch.as_tensor(g.y).reshape(()) for g in graphs])
        elif y.size(0) != len(graphs):
            raise GraphValidationError(f"y has {y.size(0)} rows for {len(graphs)} graphs")
        sizes = torch.tensor([g.num_nodes for g in graphs])
        offsets = torch.cumsum(sizes, 0) - sizes
        edge_index = torch.cat([g.edge_index + offset for g, offset in zip(graphs, offsets.tolist())], dim=1)
        edge_attr = None if edge_widths == {None} else torch.cat([g.edge_attr for g in graphs])
        return cls(x=torch.cat([g.x for g in graphs]), edge_index=edge_index,
                   batch=torch.repeat_interleave(torch.arange(len(graphs)), sizes), y=y, num_graphs=len(graphs),
                   edge_attr=edge_attr)


def readout(x: Tensor, batch: Tensor, num_graphs: int, how: Readout = "sum") -> Tensor:
    """Pool node rows ``(N, F)`` into graph rows ``(G, F)`` by sum, mean or max (empty graphs give 0)."""
    out = x.new_zeros((num_graphs, x.size(1)))
    if how == "sum":
        return out.index_add_(0, batch, x)
    if how == "mean":
        counts = torch.bincount(batch, minlength=num_graphs).clamp_min(1).unsqueeze(1).to(x.dtype)
        return out.index_add_(0, batch, x) / counts
    if how == "max":
        index = batch.unsqueeze(1).expand_as(x)
        pooled = x.new_full((num_graphs, x.size(1)), float("-inf")).scatter_reduce(0, index, x, "amax")
        return torch.where(torch.isinf(pooled), torch.zeros_like(pooled), pooled)
    raise ValueError(f"readout must be 'sum', 'mean' or 'max', got {how!r}")
