"""Graph convolution (Kipf & Welling, ICLR 2017): ``H' = A_hat (H W) + b``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gnnseg.gnn import ops
from gnnseg.gnn.layers.graph_layer import GraphLayer


class GCNConv(GraphLayer):
    """One GCN layer.

    The lecture's two steps: *aggregate* neighbor messages with the normalized adjacency ``A_hat``
    (``D^-1/2 (A+I) D^-1/2`` by default, or the mean ``(D+I)^-1 (A+I)``), and *transform* with a shared
    weight matrix. Both are linear, so ``A_hat (H W) = (A_hat H) W``: the layer takes the cheaper order; on a
    full graph it transforms first when that makes the sparse product narrower (``out_channels <
    in_channels``), as tkipf/gcn does.

    ``cached=True`` keeps ``A_hat`` for the graph it was computed from (transductive training on one
    fixed graph); a different ``edge_index`` (or node count or weights) recomputes it.
    ``x`` may be a sparse CSR tensor (bag-of-words features).
    Shapes: ``x (N, in_channels)``, ``edge_index (2, E)``, ``edge_weight (E,)`` -> ``(N, out_channels)``.

    On a sampled block (``num_targets=block.num_targets``, ``x`` the source features, see
    ``gnnseg.gnn.sampling.blocks``) the output has ``num_targets`` rows and nothing is cached. ``"mean"`` normalizes
    over each target's edges in the block plus its self-loop (exactly the full-graph layer when the block holds whole
    neighbourhoods); ``"none"`` uses the block's weights as given (FastGCN / LADIES blocks: build the layer
    with ``normalization="none", self_loops=False``); ``"symmetric"`` is refused on a block, because it
    needs every source's degree in the whole graph.
    Shapes on a block: ``x (num_sources, in_channels)``, ``edge_index (2, E)`` -> ``(num_targets, out_channels)``.
    """

    has_block_form = True

    def __init__(self, in_channels: int, out_channels: int, *, normalization: ops.Normalization = "symmetric",
                 self_loops: bool = True, cached: bool = False, bias: bool = True) -> None:
        super().__init__()
        if normalization not in ("symmetric", "mean", "none"):
            raise ValueError(f"normalization must be 'symmetric', 'mean' or 'none', got {normalization!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.normalization, self.self_loops, self.cached = normalization, self_loops, cached
        self.linear = nn.Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.linear.weight)  # Glorot, as in the paper
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self.reset_cache()

    @property
    def accepts_block_weights(self) -> bool:
        """Whether a sampler's propagation weights (FastGCN / LADIES blocks) can be used as this layer's
        ``A_hat``: only as given (``normalization="none"``) and without extra self-loops."""
        return self.normalization == "none" and not self.self_loops

    def normalized_adjacency(self, edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None,
                             num_targets: int | None = None) -> ops.SparseMatrix:
        """``A_hat`` of shape ``(num_targets, num_nodes)`` (``num_targets`` defaults to ``num_nodes``); a block
        (``num_targets`` given) is never cached."""
        key = ops.graph_key(edge_index, num_nodes, edge_weight) if num_targets is None else None
        return self.cached_value(key, lambda: ops.normalized_adjacency(
            edge_index, num_nodes, edge_weight, self.normalization, self.self_loops, num_targets=num_targets))

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None, *,
                num_targets: int | None = None) -> Tensor:
        adjacency = self.normalized_adjacency(edge_index, x.size(0), edge_weight, num_targets)
        if ops.is_sparse(x) or self._transform_first(adjacency):
            out = adjacency @ ops.linear(x, self.linear.weight)  # transform, then aggregate
        else:
            out = ops.linear(adjacency @ x, self.linear.weight)  # aggregate, then transform
        return out if self.bias is None else out + self.bias

    def _transform_first(self, adjacency: ops.SparseMatrix) -> bool:
        """The cheaper order: transforming first costs ``S*in*out + nnz*out``, aggregating first
        ``nnz*in + T*in*out`` for ``T`` targets and ``S`` sources. On a full graph (``S = T``) this is
        ``out < in``; on a block, aggregating first also saves transforming the ``S - T`` non-targets."""
        targets, sources = adjacency.shape
        width_in, width_out = self.in_channels, self.out_channels
        return (sources - targets) * width_in * width_out < adjacency.nnz * (width_in - width_out)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, normalization={self.normalization!r}"
