"""Graph attention (Veličković et al., ICLR 2018): neighbors weighted by learned, per-target softmax scores."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnseg.gnn import ops
from gnnseg.gnn.layers.graph_layer import GraphLayer


class GATConv(GraphLayer):
    """Multi-head graph attention.

    Transform: ``z = x W`` split into ``heads`` of ``out_channels``. Score every edge ``j -> i`` with
    ``e_ij = LeakyReLU(a_src . z_j + a_dst . z_i)``, normalize over the edges into ``i`` (self-loop included)
    to get ``alpha_ij``, drop some scores out (``dropout``), and aggregate ``sum_j alpha_ij z_j``.
    Heads are concatenated (hidden layers) or averaged (output layer).

    ``dropout`` acts on the attention coefficients (as in PyG). ``value_dropout`` also drops the transformed
    features before they are aggregated (not where the scores are computed), as the GAT reference code
    does (PetarV-/GAT ``attn_head``); it is 0 by default, which matches PyG's ``GATConv``.

    Duplicate edges are separate messages, each with its own score. ``cached=True`` keeps the
    self-looped edge list for a fixed graph. ``x`` may be a sparse CSR tensor.
    Shapes: ``x (N, in_channels)``, ``edge_index (2, E)`` -> ``(N, heads * out_channels)`` when
    ``concat`` else ``(N, out_channels)``.

    On a sampled block (``num_targets=block.num_targets``, ``x`` the source features, see
    ``gnnseg.gnn.sampling.blocks``) every target ``i`` gets its self-loop from source ``i`` (itself, as the
    first ``num_targets`` sources are the targets) and the output has ``num_targets`` rows; this equals PyG's
    ``GATConv((x, x[:num_targets]), edge_index, size=(num_sources, num_targets))``. Blocks are never cached.
    """

    has_block_form = True

    def __init__(self, in_channels: int, out_channels: int, *, heads: int = 1, concat: bool = True,
                 negative_slope: float = 0.2, dropout: float = 0.0, value_dropout: float = 0.0,
                 self_loops: bool = True, bias: bool = True, cached: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.heads, self.concat = in_channels, out_channels, heads, concat
        self.negative_slope, self.dropout, self.self_loops, self.cached = negative_slope, dropout, self_loops, cached
        self.value_dropout = value_dropout
        self.linear = nn.Linear(in_channels, heads * out_channels, bias=False)
        self.att_src = nn.Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_channels))
        self.bias = nn.Parameter(torch.empty(heads * out_channels if concat else out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.xavier_uniform_(self.att_src)
        nn.init.xavier_uniform_(self.att_dst)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.reset_cache()

    def attention_edges(self, edge_index: Tensor, num_nodes: int, *, cache: bool = True) -> Tensor:
        """The edges attention runs over: the input's, with exactly one self-loop per node (per target,
        ``num_nodes`` of them, on a block). ``cache=False`` (blocks) neither reads nor fills the cache."""
        key = ops.graph_key(edge_index, num_nodes) if cache else None
        return self.cached_value(key, lambda: self._with_self_loops(edge_index, num_nodes))

    def _with_self_loops(self, edge_index: Tensor, num_nodes: int) -> Tensor:
        if not self.self_loops:
            return edge_index
        edge_index, _ = ops.remove_self_loops(edge_index)
        return ops.add_self_loops(edge_index, num_nodes)[0]

    def forward(self, x: Tensor, edge_index: Tensor, return_attention: bool = False, *,
                num_targets: int | None = None):
        num_sources = x.size(0)
        block = num_targets is not None
        num_targets = ops.target_count(num_sources, num_targets)
        source, target = self.attention_edges(edge_index, num_targets, cache=not block)
        z = ops.linear(x, self.linear.weight).view(num_sources, self.heads, self.out_channels)         # transform
        score_src = (z * self.att_src).sum(-1)                                      # (S, H)
        score_dst = (z[:num_targets] * self.att_dst).sum(-1)                        # (T, H)
        scores = F.leaky_relu(score_src.index_select(0, source) + score_dst.index_select(0, target),
                              self.negative_slope)                                   # (E, H)
        alpha = ops.segment_softmax(scores, target, num_targets)
        alpha_dropped = F.dropout(alpha, p=self.dropout, training=self.training)
        values = F.dropout(z, p=self.value_dropout, training=self.training)
        messages = values.index_select(0, source) * alpha_dropped.unsqueeze(-1)      # (E, H, C)
        out = z.new_zeros((num_targets, *z.shape[1:])).index_add_(0, target, messages)  # aggregate
        out = out.reshape(num_targets, -1) if self.concat else out.mean(dim=1)
        if self.bias is not None:
            out = out + self.bias
        if return_attention:
            return out, (torch.stack([source, target]), alpha)
        return out

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, heads={self.heads}, concat={self.concat}"
