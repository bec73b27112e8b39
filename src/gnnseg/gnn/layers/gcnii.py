"""GCNII layer (Chen et al., ICML 2020, eq. 5): graph convolution with an initial residual and identity mapping."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gnnseg.gnn import ops
from gnnseg.gnn.layers.graph_layer import GraphLayer


class GCNIIConv(GraphLayer):
    """``H' = ((1 - alpha) A_hat H + alpha H0) ((1 - beta) I + beta W)``, ``beta = log(lambda_ / layer + 1)``.

    *Aggregate*: ``A_hat H`` with ``A_hat = D^-1/2 (A + I) D^-1/2``, mixed with a fraction ``alpha`` of the
    first layer's representation ``H0`` (initial residual), so every layer keeps part of the node's own
    input however deep the stack. *Transform*: ``(1 - beta) I + beta W``, close to the identity in deep
    layers (identity mapping; ``beta`` shrinks like ``lambda_ / layer``). No bias, no activation (the
    network applies ReLU), as in the reference ``model.py`` (chennnM/GCNII) and PyG's ``GCN2Conv``.

    ``shared_weights=False`` is GCNII*, in PyG's form: ``(1 - alpha) A_hat H`` and ``alpha H0`` get their
    own maps ``(1 - beta) I + beta W1`` and ``(1 - beta) I + beta W2``. Without ``layer``, ``beta = 1``.
    Weights are stored ``(in, out)`` and used as ``H @ W`` (PyG's ``weight1``/``weight2`` layout); they start
    uniform in ``+-1/sqrt(channels)`` as in the reference code.
    Shapes: ``x, x0 (N, channels)``, ``edge_index (2, E)``, ``edge_weight (E,)`` -> ``(N, channels)``.
    """

    def __init__(self, channels: int, *, alpha: float = 0.1, lambda_: float = 0.5, layer: int | None = None,
                 shared_weights: bool = True, self_loops: bool = True, cached: bool = False) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha (initial residual strength) must be in [0, 1], got {alpha}")
        if layer is not None and layer < 1:
            raise ValueError(f"layer counts from 1, got {layer}")
        self.channels, self.alpha, self.lambda_, self.layer = channels, alpha, lambda_, layer
        self.beta = 1.0 if layer is None else math.log(lambda_ / layer + 1.0)
        self.self_loops, self.cached = self_loops, cached
        self.weight = nn.Parameter(torch.empty(channels, channels))
        self.weight_initial = None if shared_weights else nn.Parameter(torch.empty(channels, channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.channels)
        for weight in (self.weight, self.weight_initial):
            if weight is not None:
                nn.init.uniform_(weight, -bound, bound)
        self.reset_cache()

    def normalized_adjacency(self, edge_index: Tensor, num_nodes: int,
                             edge_weight: Tensor | None = None) -> ops.SparseMatrix:
        key = ops.graph_key(edge_index, num_nodes, edge_weight)
        return self.cached_value(key, lambda: ops.normalized_adjacency(edge_index, num_nodes, edge_weight,
                                                                       "symmetric", self.self_loops))

    def _identity_mapped(self, h: Tensor, weight: Tensor) -> Tensor:
        """``h ((1 - beta) I + beta W)``."""
        return torch.addmm(h, h, weight, beta=1.0 - self.beta, alpha=self.beta)

    def forward(self, x: Tensor, x0: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        if x.shape != x0.shape or x.size(1) != self.channels:
            raise ValueError(f"x and x0 must both have shape (N, {self.channels}), got {tuple(x.shape)} and "
                             f"{tuple(x0.shape)}")
        smoothed = (1.0 - self.alpha) * (self.normalized_adjacency(edge_index, x.size(0), edge_weight) @ x)
        initial = self.alpha * x0
        if self.weight_initial is None:
            return self._identity_mapped(smoothed + initial, self.weight)
        return self._identity_mapped(smoothed, self.weight) + self._identity_mapped(initial, self.weight_initial)

    def extra_repr(self) -> str:
        return (f"{self.channels}, alpha={self.alpha}, beta={self.beta:.4f}, "
                f"shared_weights={self.weight_initial is None}")
