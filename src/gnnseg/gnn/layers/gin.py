"""Graph isomorphism network layer (Xu et al., ICLR 2019): ``MLP((1 + eps) h_i + sum_j h_j)``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gnnseg.gnn import ops
from gnnseg.gnn.layers.graph_layer import GraphLayer


class GINConv(GraphLayer):
    """Sum aggregation over incoming edges, then a learnable transform ``mlp``.

    Every edge is one message: duplicate edges count twice and an explicit self-loop adds ``h_i`` again,
    exactly as a multiset sum should. ``eps`` is fixed (GIN-0 when 0) or trained (``train_eps=True``, GIN-eps).
    Shapes: ``x (N, F)``, ``edge_index (2, E)`` -> ``mlp`` applied to ``(N, F)``.

    On a sampled block (``num_targets=block.num_targets``, ``x`` the source features, see
    ``gnnseg.gnn.sampling.blocks``) the root term is ``x[:num_targets]`` and ``mlp`` sees ``(num_targets, F)``.
    """

    has_block_form = True

    def __init__(self, mlp: nn.Module, *, eps: float = 0.0, train_eps: bool = False) -> None:
        super().__init__()
        self.mlp = mlp
        self.initial_eps = eps
        if train_eps:
            self.eps = nn.Parameter(torch.tensor([eps]))
        else:
            self.register_buffer("eps", torch.tensor([eps]))

    def reset_parameters(self) -> None:
        for module in self.mlp.modules():
            if module is not self.mlp and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        self.eps.data.fill_(self.initial_eps)

    @staticmethod
    def aggregate(x: Tensor, edge_index: Tensor, num_targets: int | None = None) -> Tensor:
        """``sum_{j -> i} x_j`` for every node ``i`` (every target ``i < num_targets`` on a block)."""
        source, target = edge_index
        rows = ops.target_count(x.size(0), num_targets)
        return x.new_zeros((rows, x.size(1))).index_add_(0, target, x.index_select(0, source))

    def forward(self, x: Tensor, edge_index: Tensor, *, num_targets: int | None = None) -> Tensor:
        x = ops.dense(x)
        root = x[:ops.target_count(x.size(0), num_targets)]
        return self.mlp((1 + self.eps) * root + self.aggregate(x, edge_index, num_targets))
