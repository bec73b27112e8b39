"""Simplified graph convolution (Wu et al., ICML 2019): ``softmax(A_hat^K X W)``, no nonlinearity between hops."""

from __future__ import annotations

from torch import Tensor, nn

from gnnseg.gnn import ops


class SGConv(nn.Module):
    """``K`` hops of symmetric-normalized propagation, then one linear map.

    Propagation has no parameters, so with ``cached=True`` (the paper's setting) ``A_hat^K X`` is computed
    once per graph and feature matrix, and every later step is a plain logistic regression.
    Shapes: ``x (N, in_channels)``, ``edge_index (2, E)`` -> ``(N, out_channels)``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, K: int = 2, cached: bool = True,
                 self_loops: bool = True, bias: bool = True) -> None:
        super().__init__()
        if K < 1:
            raise ValueError(f"K (number of propagation steps) must be >= 1, got {K}")
        self.in_channels, self.out_channels, self.K = in_channels, out_channels, K
        self.cached, self.self_loops = cached, self_loops
        self.linear = nn.Linear(in_channels, out_channels, bias=bias)
        self._cache: tuple[tuple, Tensor] | None = None

    def reset_parameters(self) -> None:
        self.linear.reset_parameters()
        self._cache = None

    def propagate(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        """``A_hat^K x``: the aggregation step, repeated ``K`` times."""
        key = (ops.graph_key(edge_index, x.size(0), edge_weight), ops.tensor_key(x))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        edge_index, weight = ops.normalize_edge_weights(edge_index, x.size(0), edge_weight, "symmetric",
                                                        self.self_loops)
        adjacency = ops.SparseMatrix.from_edges(edge_index, weight, (x.size(0), x.size(0)))
        x = ops.dense(x)
        for _ in range(self.K):
            x = adjacency @ x
        if self.cached:
            self._cache = (key, x.detach())
        return x

    accepts_output_nodes = True
    has_block_form = False      # A_hat^K X is computed once over the whole graph; blocks are refused

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None,
                output_nodes: Tensor | None = None) -> Tensor:
        """``output_nodes`` (indices or bool mask) restricts the linear map to those rows."""
        features = self.propagate(x, edge_index, edge_weight)
        if output_nodes is not None:
            features = features[output_nodes]
        return self.linear(features)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, K={self.K}"
