"""GIN with edge features (GINE; Hu et al., "Strategies for Pre-training Graph Neural Networks", ICLR 2020):
``MLP((1 + eps) h_i + sum_j ReLU(h_j + W e_ji + b))``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gnnseg.gnn import ops
from gnnseg.gnn.layers.gin import GINConv


class GINEConv(GINConv):
    """Sum aggregation of messages that mix the neighbour's state with the edge's features, then ``mlp``.

    Each edge ``j -> i`` sends ``ReLU(h_j + lin(e_ji))``; ``lin`` maps the ``edge_dim`` edge features to
    the ``in_channels`` node width (as PyG's ``GINEConv(nn, edge_dim=...)``, so the two agree exactly).
    ``eps`` is fixed (GINE-0 when 0) or trained (``train_eps=True``), as in :class:`GINConv`.
    Shapes: ``x (N, in_channels)``, ``edge_index (2, E)``, ``edge_attr (E, edge_dim)`` -> ``mlp`` on
    ``(N, in_channels)``. Full graphs only (no block form).
    """

    has_block_form = False

    def __init__(self, mlp: nn.Module, in_channels: int, edge_dim: int, *, eps: float = 0.0,
                 train_eps: bool = False) -> None:
        super().__init__(mlp, eps=eps, train_eps=train_eps)
        self.edge_lin = nn.Linear(edge_dim, in_channels)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.edge_lin.reset_parameters()

    def aggregate_with_edges(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """``sum_{j -> i} ReLU(x_j + lin(e_ji))`` for every node ``i``."""
        if edge_attr.size(0) != edge_index.size(1):
            raise ValueError(f"edge_attr has {edge_attr.size(0)} rows for {edge_index.size(1)} edges")
        source, target = edge_index
        messages = torch.relu(x.index_select(0, source) + self.edge_lin(edge_attr))
        return torch.zeros_like(x).index_add_(0, target, messages)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        x = ops.dense(x)
        return self.mlp((1 + self.eps) * x + self.aggregate_with_edges(x, edge_index, edge_attr))
