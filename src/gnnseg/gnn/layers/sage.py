"""GraphSAGE (Hamilton, Ying & Leskovec, NeurIPS 2017): ``W_l AGG({h_j}) + W_r h_i``, optionally L2-normalized."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnseg.gnn import ops
from gnnseg.gnn.layers.graph_layer import GraphLayer

Aggregator = Literal["mean", "max", "pool"]
AGGREGATORS = ("mean", "max", "pool")


class SAGEConv(GraphLayer):
    """One GraphSAGE layer: *aggregate* the neighbours, then *transform* them and the node itself.

    ``h_i' = lin_l(AGG_{j -> i} m_j) + lin_r(h_i)``, then ``h_i' / ||h_i'||_2`` when ``normalize``
    (Algorithm 1, lines 4-7). ``lin_l`` and ``lin_r`` applied to the two parts is the paper's
    ``W . CONCAT(h_i, AGG)`` with ``W`` split in two; only ``lin_l`` has a bias. The paper's nonlinearity
    comes before the normalization; here, as in PyG, the model applies it after the layer. The aggregators:

    * ``"mean"``: ``m_j = h_j`` averaged over the edges into ``i`` (the paper's mean aggregator, in its
      concatenating form, Sec. 3.3). With ``edge_weight`` it is the weighted mean ``sum w_ji h_j / sum w_ji``
      (for FastGCN / LADIES blocks, whose rows already sum to one, that is ``sum w_ji h_j``).
    * ``"pool"``: ``m_j = ReLU(W_pool h_j + b)``, then the elementwise max (the paper's pooling aggregator,
      eq. 3); ``W_pool`` maps to ``pool_channels`` (default ``in_channels``).
    * ``"max"``: the elementwise max of ``h_j`` itself, without the projection.

    Duplicate edges are separate messages; a target with no incoming edge aggregates to zeros (so only its
    root term remains). ``root_weight=False`` drops ``lin_r``. The parameter names and the semantics are PyG's
    ``SAGEConv``: ``"mean"`` is ``SAGEConv(aggr="mean")``, ``"pool"`` is ``SAGEConv(aggr="max", project=True)``
    (``pool_linear`` is its ``lin``), ``"max"`` is ``SAGEConv(aggr="max")``; equal within 1e-5, tested.

    On a sampled block (``num_targets=block.num_targets``, ``x`` the source features, see
    ``gnnseg.gnn.sampling.blocks``) the root features are ``x[:num_targets]`` and the output has
    ``num_targets`` rows. ``x`` may be sparse (it is densified).
    Shapes: ``x (N, in_channels)``, ``edge_index (2, E)``, ``edge_weight (E,)`` -> ``(N, out_channels)``;
    on a block ``x (num_sources, in_channels)`` -> ``(num_targets, out_channels)``.
    """

    has_block_form = True

    def __init__(self, in_channels: int, out_channels: int, *, aggregator: Aggregator = "mean",
                 normalize: bool = False, root_weight: bool = True, bias: bool = True,
                 pool_channels: int | None = None) -> None:
        super().__init__()
        if aggregator not in AGGREGATORS:
            raise ValueError(f"aggregator must be one of {', '.join(AGGREGATORS)}, got {aggregator!r}")
        if pool_channels is not None and aggregator != "pool":
            raise ValueError(f"pool_channels applies to the 'pool' aggregator only, not {aggregator!r}")
        self.in_channels, self.out_channels, self.aggregator = in_channels, out_channels, aggregator
        self.normalize = normalize
        aggregated_channels = in_channels
        self.pool_linear: nn.Linear | None = None
        if aggregator == "pool":
            aggregated_channels = in_channels if pool_channels is None else pool_channels
            self.pool_linear = nn.Linear(in_channels, aggregated_channels, bias=True)
        self.lin_l = nn.Linear(aggregated_channels, out_channels, bias=bias)   # aggregated neighbours
        self.lin_r = nn.Linear(in_channels, out_channels, bias=False) if root_weight else None  # the node itself

    @property
    def accepts_block_weights(self) -> bool:
        """Whether a sampler's propagation weights (FastGCN / LADIES blocks) can be used: the mean aggregator
        takes them as a weighted mean; a max cannot be reweighted."""
        return self.aggregator == "mean"

    def reset_parameters(self) -> None:
        for module in (self.pool_linear, self.lin_l, self.lin_r):
            if module is not None:
                module.reset_parameters()

    def aggregate(self, x: Tensor, edge_index: Tensor, num_targets: int,
                  edge_weight: Tensor | None = None) -> Tensor:
        """``AGG_{j -> i} m_j`` for every target ``i < num_targets``: ``(num_targets, channels)``."""
        source, target = edge_index
        if self.pool_linear is not None:
            x = torch.relu(self.pool_linear(x))
        messages = x.index_select(0, source)                                         # (E, F)
        if self.aggregator == "mean":
            if edge_weight is None:      # plain mean: no (E, F) product with ones (full-neighbourhood inference)
                total = x.new_zeros((num_targets, x.size(1))).index_add_(0, target, messages)
                norm = torch.bincount(target, minlength=num_targets).to(x.dtype)
            else:
                weight = edge_weight.to(x.dtype)
                total = x.new_zeros((num_targets, x.size(1))).index_add_(0, target, messages * weight.unsqueeze(1))
                norm = x.new_zeros(num_targets).index_add_(0, target, weight)
            return total / norm.masked_fill(norm == 0, 1.0).unsqueeze(1)
        if edge_weight is not None:
            raise ValueError(f"edge_weight applies to the 'mean' aggregator only; the {self.aggregator!r} "
                             f"aggregator takes an elementwise max, which weights cannot rescale")
        index = target.unsqueeze(1).expand_as(messages)
        return x.new_zeros((num_targets, x.size(1))).scatter_reduce(0, index, messages, reduce="amax",
                                                                   include_self=False)

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None, *,
                num_targets: int | None = None) -> Tensor:
        x = ops.dense(x)
        num_targets = ops.target_count(x.size(0), num_targets)
        out = self.lin_l(self.aggregate(x, edge_index, num_targets, edge_weight))   # neighbours
        if self.lin_r is not None:
            out = out + self.lin_r(x[:num_targets])                                   # the node itself
        return F.normalize(out, p=2.0, dim=-1) if self.normalize else out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, aggregator={self.aggregator!r}, "
                f"normalize={self.normalize}")
