"""Simplified graph convolution (Wu et al., ICML 2019): ``softmax(A_hat^K X W)``, no nonlinearity between hops."""

from __future__ import annotations

from torch import Tensor, nn

from gnnseg.gnn import ops
from gnnseg.gnn.layers.graph_layer import GraphLayer


class SGConv(GraphLayer):
    """``K`` hops of symmetric-normalized propagation, then one linear map.

    Propagation has no parameters, so with ``cached=True`` (the paper's setting) ``A_hat^K X`` is computed
    once per graph and feature matrix, and every later step is a plain logistic regression. For the same
    reason there is no block form: mini-batches are rows of the propagation (``output_nodes``).
    Shapes: ``x (N, in_channels)``, ``edge_index (2, E)`` -> ``(N, out_channels)``.
    """

    accepts_output_nodes = True     # the linear map of the cached propagation, for the rows asked for

    def __init__(self, in_channels: int, out_channels: int, *, K: int = 2, cached: bool = True,
                 self_loops: bool = True, bias: bool = True) -> None:
        super().__init__()
        if K < 1:
            raise ValueError(f"K (number of propagation steps) must be >= 1, got {K}")
        self.in_channels, self.out_channels, self.K = in_channels, out_channels, K
        self.cached, self.self_loops = cached, self_loops
        self.linear = nn.Linear(in_channels, out_channels, bias=bias)

    def reset_parameters(self) -> None:
        self.linear.reset_parameters()
        self.reset_cache()

    def propagate(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        """``A_hat^K x``: the aggregation step, repeated ``K`` times; when cached, a constant (detached)."""
        key = (ops.graph_key(edge_index, x.size(0), edge_weight), ops.tensor_key(x))
        return self.cached_value(key, lambda: self._propagate(x, edge_index, edge_weight))

    def _propagate(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None) -> Tensor:
        adjacency = ops.normalized_adjacency(edge_index, x.size(0), edge_weight, "symmetric", self.self_loops)
        x = ops.dense(x)
        for _ in range(self.K):
            x = adjacency @ x
        return x.detach() if self.cached else x

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None,
                output_nodes: Tensor | None = None) -> Tensor:
        """``output_nodes`` (indices or bool mask) restricts the linear map to those rows."""
        features = self.propagate(x, edge_index, edge_weight)
        if output_nodes is not None:
            features = features[output_nodes]
        return self.linear(features)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, K={self.K}"
