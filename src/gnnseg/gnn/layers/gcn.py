"""Graph convolution (Kipf & Welling, ICLR 2017): ``H' = A_hat (H W) + b``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gnnseg.gnn import ops


class GCNConv(nn.Module):
    """One GCN layer.

    The lecture's two steps: *aggregate* neighbor messages with the normalized adjacency ``A_hat``
    (``D^-1/2 (A+I) D^-1/2`` by default, or the mean ``(D+I)^-1 (A+I)``), and *transform* with a shared
    weight matrix. Both are linear, so ``A_hat (H W) = (A_hat H) W``: the layer transforms first when that
    makes the sparse product narrower (``out_channels < in_channels``), as tkipf/gcn does.

    ``cached=True`` keeps ``A_hat`` for the graph it was computed from (transductive training on one
    fixed graph); a different ``edge_index`` (or node count or weights) recomputes it.
    ``x`` may be a sparse CSR tensor (bag-of-words features).
    Shapes: ``x (N, in_channels)``, ``edge_index (2, E)``, ``edge_weight (E,)`` -> ``(N, out_channels)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, normalization: ops.Normalization = "symmetric",
                 self_loops: bool = True, cached: bool = False, bias: bool = True) -> None:
        super().__init__()
        if normalization not in ("symmetric", "mean"):
            raise ValueError(f"normalization must be 'symmetric' or 'mean', got {normalization!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.normalization, self.self_loops, self.cached = normalization, self_loops, cached
        self.linear = nn.Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self._cache: tuple[tuple, ops.SparseMatrix] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.linear.weight)  # Glorot, as in the paper
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self._cache = None

    def normalized_adjacency(self, edge_index: Tensor, num_nodes: int,
                             edge_weight: Tensor | None = None) -> ops.SparseMatrix:
        key = ops.graph_key(edge_index, num_nodes, edge_weight)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        edge_index, weight = ops.normalize_edge_weights(edge_index, num_nodes, edge_weight,
                                                        self.normalization, self.self_loops)
        matrix = ops.SparseMatrix.from_edges(edge_index, weight, (num_nodes, num_nodes))
        if self.cached:
            self._cache = (key, matrix)
        return matrix

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        adjacency = self.normalized_adjacency(edge_index, x.size(0), edge_weight)
        if self.out_channels < self.in_channels or ops.is_sparse(x):
            out = adjacency @ ops.linear(x, self.linear.weight)  # transform, then aggregate
        else:
            out = ops.linear(adjacency @ x, self.linear.weight)  # aggregate, then transform
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, normalization={self.normalization!r}"
