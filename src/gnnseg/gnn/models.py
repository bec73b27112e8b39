"""Layer stacks for node classification, with the papers' architectures as builders.

Every model is a :class:`StackedGNN`: dropout, graph layer, activation, repeated; the last layer gives
class logits. ``forward(..., return_hidden=True)`` also returns every layer's output (node embeddings),
which the karate-club demo plots and the over-smoothing diagnostics measure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from gnnseg.gnn import ops
from gnnseg.gnn.layers import GATConv, GCNConv, GINConv, SGConv

Activation = Callable[[Tensor], Tensor]


class StackedGNN(nn.Module):
    """``layers[0] -> act -> ... -> layers[-1]`` with dropout before every layer.

    ``dropout`` is applied to each layer's input (the raw features included), as in Kipf & Welling and
    Veličković et al. No activation follows the last layer (it returns logits).
    """

    def __init__(self, layers: Sequence[nn.Module], *, activation: Activation = F.relu, dropout: float = 0.0,
                 final_activation: Activation | None = None) -> None:
        super().__init__()
        if not layers:
            raise ValueError("a StackedGNN needs at least one layer")
        self.layers = nn.ModuleList(layers)
        self.activation, self.dropout, self.final_activation = activation, dropout, final_activation

    def forward(self, x: Tensor, edge_index: Tensor, return_hidden: bool = False,
                output_nodes: Tensor | None = None):
        """``x (N, F)``, ``edge_index (2, E)`` -> logits ``(N, C)`` [, list of per-layer outputs].

        ``output_nodes`` (indices or a bool mask) asks for those rows of the logits only. A last layer that
        works row by row (``accepts_output_nodes``, e.g. SGC after its cached propagation) then computes only
        them: SGC's training becomes a logistic regression over the labeled nodes, as in Wu et al.
        """
        hidden = []
        for position, layer in enumerate(self.layers):
            x = ops.dropout(x, self.dropout, self.training)
            last = position == len(self.layers) - 1
            if last and output_nodes is not None:
                if getattr(layer, "accepts_output_nodes", False):
                    x = layer(x, edge_index, output_nodes=output_nodes)
                else:
                    x = layer(x, edge_index)[output_nodes]
            else:
                x = layer(x, edge_index)
            if not last:
                x = self.activation(x)
            elif self.final_activation is not None:
                x = self.final_activation(x)
            hidden.append(x)
        return (x, hidden) if return_hidden else x


def _widths(in_channels: int, hidden_channels: int, out_channels: int, num_layers: int) -> list[tuple[int, int]]:
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    sizes = [in_channels] + [hidden_channels] * (num_layers - 1) + [out_channels]
    return list(zip(sizes[:-1], sizes[1:]))


def gcn(in_channels: int, hidden_channels: int, out_channels: int, *, num_layers: int = 2, dropout: float = 0.5,
        normalization: ops.Normalization = "symmetric", cached: bool = True) -> StackedGNN:
    """Kipf & Welling's GCN: 2 layers, 16 hidden units, ReLU, dropout 0.5 (the paper's Cora setting)."""
    layers = [GCNConv(a, b, normalization=normalization, cached=cached)
              for a, b in _widths(in_channels, hidden_channels, out_channels, num_layers)]
    return StackedGNN(layers, dropout=dropout)


def gat(in_channels: int, hidden_channels: int, out_channels: int, *, heads: int = 8, output_heads: int = 1,
        num_layers: int = 2, dropout: float = 0.6, value_dropout: float = 0.0, cached: bool = True) -> StackedGNN:
    """Veličković et al.'s GAT: hidden layers of ``heads x hidden_channels`` concatenated with ELU, and an
    output layer averaging ``output_heads``; dropout 0.6 on inputs and on attention coefficients
    (``value_dropout`` adds the reference code's dropout on the aggregated values)."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    layers: list[nn.Module] = []
    width = in_channels
    for _ in range(num_layers - 1):
        layers.append(GATConv(width, hidden_channels, heads=heads, dropout=dropout, value_dropout=value_dropout,
                              cached=cached))
        width = heads * hidden_channels
    layers.append(GATConv(width, out_channels, heads=output_heads, concat=False, dropout=dropout,
                          value_dropout=value_dropout, cached=cached))
    return StackedGNN(layers, activation=F.elu, dropout=dropout)


def sgc(in_channels: int, out_channels: int, *, K: int = 2) -> StackedGNN:
    """Wu et al.'s SGC: ``A_hat^K X`` precomputed once, then logistic regression (no hidden layer)."""
    return StackedGNN([SGConv(in_channels, out_channels, K=K, cached=True)])


def gin_mlp(in_channels: int, out_channels: int) -> nn.Sequential:
    """GIN's 2-layer MLP with batch normalization (Xu et al. 2019, Section 7)."""
    return nn.Sequential(nn.Linear(in_channels, out_channels), nn.BatchNorm1d(out_channels), nn.ReLU(),
                         nn.Linear(out_channels, out_channels))


class NodeLinear(nn.Linear):
    """A per-node linear classifier that ignores the graph, so it can close a ``StackedGNN``."""

    accepts_output_nodes = True

    def forward(self, x: Tensor, edge_index: Tensor | None = None,  # noqa: ARG002
                output_nodes: Tensor | None = None) -> Tensor:
        if output_nodes is not None:
            x = ops.dense(x)[output_nodes]
        return ops.linear(x, self.weight, self.bias)


def gin(in_channels: int, hidden_channels: int, out_channels: int, *, num_layers: int = 2, dropout: float = 0.5,
        train_eps: bool = False) -> StackedGNN:
    """GIN for node classification: ``num_layers`` GIN layers (GIN-0, or GIN-eps with ``train_eps``) and a
    linear classifier."""
    widths = [in_channels] + [hidden_channels] * num_layers
    layers: list[nn.Module] = [GINConv(gin_mlp(a, b), train_eps=train_eps) for a, b in zip(widths, widths[1:])]
    layers.append(NodeLinear(hidden_channels, out_channels))
    return StackedGNN(layers, dropout=dropout)
