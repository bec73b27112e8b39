"""Layer stacks for node classification, with the papers' architectures as builders.

Every model is a :class:`StackedGNN`: dropout, graph layer, activation, repeated; the last layer gives
class logits. ``forward(..., return_hidden=True)`` also returns every layer's output (node embeddings),
which the karate-club demo plots and the over-smoothing diagnostics measure.

The same model runs on a full graph (``model(x, edge_index)``), on sampled mini-batch blocks
(``model(x[blocks[0].source_nodes], blocks)``, :meth:`StackedGNN.forward_blocks`) and, for evaluation,
layer by layer over every node's whole neighbourhood in bounded memory (:meth:`StackedGNN.layerwise_inference`).

:data:`BUILDERS` maps each model's name to its builder; configs build models by name with :func:`build_model`.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnseg.gnn import ops
from gnnseg.gnn.layers import GATConv, GCNConv, GINConv, GraphLayer, SAGEConv, SGConv
from gnnseg.gnn.layers.sage import Aggregator

if TYPE_CHECKING:  # pragma: no cover
    from gnnseg.gnn.sampling.blocks import Block, FullNeighborhood

Activation = Callable[[Tensor], Tensor]


class StackedGNN(nn.Module):
    """``layers[0] -> act -> ... -> layers[-1]`` with dropout before every layer.

    ``dropout`` is applied to each layer's input (the raw features included), as in Kipf & Welling and
    Veličković et al.; a sequence gives one rate per layer (LADIES' reference model drops nothing from the
    raw features, 0.2 after every GCN layer and 0.5 before its classifier). No activation follows the last
    layer (it returns logits).

    Every layer is a :class:`~gnnseg.gnn.layers.GraphLayer`, whose declarations the model reads: layers with
    ``rowwise = True`` (:class:`NodeLinear`) transform every node on its own and take no edges; on blocks they
    consume no block.
    """

    def __init__(self, layers: Sequence[GraphLayer], *, activation: Activation = F.relu,
                 dropout: float | Sequence[float] = 0.0, final_activation: Activation | None = None) -> None:
        super().__init__()
        if not layers:
            raise ValueError("a StackedGNN needs at least one layer")
        for position, layer in enumerate(layers):
            if not isinstance(layer, GraphLayer):
                raise TypeError(f"layer {position} is a {type(layer).__name__}, not a GraphLayer "
                                f"(gnnseg.gnn.layers.GraphLayer declares what the model asks of its layers)")
        self.layers = nn.ModuleList(layers)
        rates = [float(dropout)] * len(layers) if isinstance(dropout, (int, float)) else [float(p) for p in dropout]
        if len(rates) != len(layers):
            raise ValueError(f"dropout needs one rate per layer ({len(layers)}), got {len(rates)}")
        for rate in rates:
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"dropout rates must be in [0, 1), got {rate}")
        self.dropouts = rates
        self.dropout = rates[0] if len(set(rates)) == 1 else rates
        self.activation, self.final_activation = activation, final_activation

    @property
    def num_message_passing_layers(self) -> int:
        """Layers that pass messages (one block each); row-wise layers are not counted."""
        return sum(not layer.rowwise for layer in self.layers)

    def _after(self, position: int, x: Tensor) -> Tensor:
        if position < len(self.layers) - 1:
            return self.activation(x)
        return x if self.final_activation is None else self.final_activation(x)

    def forward(self, x: Tensor, edge_index: Tensor | Sequence[Block], return_hidden: bool = False,
                output_nodes: Tensor | None = None):
        """``x (N, F)``, ``edge_index (2, E)`` -> logits ``(N, C)`` [, list of per-layer outputs].

        ``output_nodes`` (indices or a bool mask) asks for those rows of the logits only. A last layer that
        works row by row (``accepts_output_nodes``, e.g. SGC after its cached propagation) then computes only
        them: SGC's training becomes a logistic regression over the labeled nodes, as in Wu et al.

        Given a list of sampled blocks instead of ``edge_index``, this is :meth:`forward_blocks` (so that
        ``DistributedDataParallel(model)(x, blocks)`` synchronizes the gradients of a mini-batch step).
        """
        if isinstance(edge_index, (list, tuple)):
            if output_nodes is not None:
                raise ValueError("output_nodes applies to full graphs; on blocks the outputs are the seeds")
            return self.forward_blocks(x, edge_index, return_hidden=return_hidden)
        hidden = []
        for position, layer in enumerate(self.layers):
            x = ops.dropout(x, self.dropouts[position], self.training)
            last = position == len(self.layers) - 1
            if last and output_nodes is not None:
                if layer.accepts_output_nodes:
                    x = layer(x, edge_index, output_nodes=output_nodes)
                else:
                    x = layer(x, edge_index)[output_nodes]
            else:
                x = layer(x, edge_index)
            x = self._after(position, x)
            hidden.append(x)
        return (x, hidden) if return_hidden else x

    def forward_blocks(self, x: Tensor, blocks: Sequence[Block], return_hidden: bool = False):
        """Logits of a sampled mini-batch: ``x (blocks[0].num_sources, F)`` (the features of
        ``blocks[0].source_nodes``) -> ``(blocks[-1].num_targets, C)``, one row per seed.

        Message-passing layer ``k`` runs on ``blocks[k]`` (``layer(h, edge_index, [edge_weight],
        num_targets=...)``); row-wise layers take no block. A block's ``edge_weight`` (FastGCN / LADIES
        propagation weights) goes to layers that use it (``accepts_block_weights``: ``GCNConv`` with
        ``normalization="none", self_loops=False``, ``SAGEConv`` with the mean aggregator); any other layer
        refuses a weighted block instead of silently computing a different estimator.
        """
        if len(blocks) != self.num_message_passing_layers:
            raise ValueError(f"the model has {self.num_message_passing_layers} message-passing layers but got "
                             f"{len(blocks)} blocks; sample as many layers as the model has")
        if x.size(0) != blocks[0].num_sources:
            raise ValueError(f"x has {x.size(0)} rows but the input block has {blocks[0].num_sources} source nodes "
                             f"(pass x[blocks[0].source_nodes])")
        hidden, remaining = [], iter(blocks)
        for position, layer in enumerate(self.layers):
            x = ops.dropout(x, self.dropouts[position], self.training)
            x = layer(x) if layer.rowwise else apply_on_block(layer, x, next(remaining))
            x = self._after(position, x)
            hidden.append(x)
        return (x, hidden) if return_hidden else x

    @torch.no_grad()
    def layerwise_inference(self, x: Tensor, neighborhood: FullNeighborhood, *,
                            output_nodes: Tensor | None = None, max_nodes: int = 8192,
                            max_edges: int = 1 << 19, show_progress: bool | None = False) -> Tensor:
        """Exact full-neighbourhood outputs, one layer at a time over all nodes, in chunks (eval mode).

        Layer ``l`` is computed for every node from layer ``l - 1``'s outputs of its whole in-neighbourhood
        (``neighborhood.block(chunk)``), chunk by chunk; only the layer outputs ``(N, F_l)`` are kept whole.
        The result equals the full-graph forward (the blocks hold whole neighbourhoods), without ever building
        an ``L``-hop computation graph, and a chunk costs at most ``max_nodes`` targets and about ``max_edges``
        edges (a node with more in-edges is a chunk of its own). The last message-passing layer (and any
        row-wise layers after it) is computed for ``output_nodes`` only, when given (indices, in that order).
        Returns ``(len(output_nodes) or N, C)``. Sampler-weighted models get the sampler's exact propagation
        (e.g. ``FastGCNSampler.full_neighborhood()``: ``A_hat`` with its self-loops).
        """
        from gnnseg.core import progress

        was_training = self.training
        self.eval()
        try:
            num_nodes = neighborhood.num_nodes
            if x.size(0) != num_nodes:
                raise ValueError(f"x has {x.size(0)} rows but the graph has {num_nodes} nodes")
            message_positions = [p for p, layer in enumerate(self.layers) if not layer.rowwise]
            last_message = message_positions[-1] if message_positions else -1
            all_nodes = torch.arange(num_nodes)
            wanted = all_nodes if output_nodes is None else torch.as_tensor(output_nodes, dtype=torch.int64)
            if wanted.dim() != 1 or wanted.numel() == 0:
                raise ValueError(f"output_nodes must be a non-empty 1-D tensor of node ids, got shape "
                                 f"{tuple(wanted.shape)}")
            h, rows_are_all = x, True
            for position, layer in enumerate(self.layers):
                if layer.rowwise:                                # a per-node layer: no neighbourhood needed
                    if position > last_message and rows_are_all and output_nodes is not None:
                        h, rows_are_all = h[wanted], False
                    h = self._after(position, layer(ops.dense(h)))
                    continue
                targets = wanted if position == last_message else all_nodes
                out = None
                chunks = neighborhood.chunks(targets, max_nodes=max_nodes, max_edges=max_edges)
                for start, stop, block in progress(chunks, desc=f"inference layer {position + 1}",
                                                   total=neighborhood.num_chunks(targets, max_nodes, max_edges),
                                                   enabled=show_progress):
                    values = self._after(position, apply_on_block(layer, ops.dense(h[block.source_nodes]), block))
                    if out is None:
                        out = values.new_empty((targets.numel(), values.size(1)))
                    out[start:stop] = values
                h, rows_are_all = out, targets is all_nodes
            return h
        finally:
            self.train(was_training)


def apply_on_block(layer: GraphLayer, x: Tensor, block: Block) -> Tensor:
    """``layer`` on one block: ``x (num_sources, F)`` -> ``(num_targets, F')``, passing ``block.edge_weight``
    only to a layer that uses it (``accepts_block_weights``) and refusing a weighted block otherwise."""
    if not layer.has_block_form:
        raise ValueError(f"{layer.__class__.__name__} has no block form: it runs on whole graphs only (SGC's "
                         "propagation A_hat^K X has no parameters and is computed once over the whole graph; "
                         "train SGC on rows of it (output_nodes) instead)")
    if block.edge_weight is None:
        return layer(x, block.edge_index, num_targets=block.num_targets)
    if not layer.accepts_block_weights:
        raise ValueError(
            f"{layer.__class__.__name__} cannot use the propagation weights of this block (FastGCN / LADIES "
            f"importance weights): use GCNConv(normalization='none', self_loops=False) or SAGEConv with the "
            f"'mean' aggregator, or sample with NeighborSampler")
    return layer(x, block.edge_index, block.edge_weight, num_targets=block.num_targets)


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
    layers: list[GraphLayer] = []
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


class NodeLinear(nn.Linear, GraphLayer):
    """A per-node linear classifier that ignores the graph, so it can close a ``StackedGNN``."""

    accepts_output_nodes = True
    rowwise = True

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
    layers: list[GraphLayer] = [GINConv(gin_mlp(a, b), train_eps=train_eps) for a, b in zip(widths, widths[1:])]
    layers.append(NodeLinear(hidden_channels, out_channels))
    return StackedGNN(layers, dropout=dropout)


def sage(in_channels: int, hidden_channels: int = 256, out_channels: int = 2, *, num_layers: int = 2,
         aggregator: Aggregator = "mean", dropout: float = 0.0, normalize: bool = False) -> StackedGNN:
    """GraphSAGE for node classification (Hamilton, Ying & Leskovec, NeurIPS 2017): ``num_layers`` SAGE
    layers (``K = 2`` in the paper), ReLU between them, the last one giving the logits.

    Width: the reference code (``williamleif/GraphSAGE``, ``supervised_train.py``) uses ``dim_1 = dim_2 =
    128`` and concatenates a node's own transform with its neighbours', so each hidden layer is 256 wide;
    ``SAGEConv`` computes ``W [h_i, AGG]`` with one full ``W``, so 256 here matches that width (PyG's
    ``examples/reddit.py`` also uses 256). The reference trains with dropout 0; PyG's example uses 0.5.
    ``normalize`` L2-normalizes every layer's output (the paper's Algorithm 1, line 7).
    """
    widths = _widths(in_channels, hidden_channels, out_channels, num_layers)
    layers = [SAGEConv(a, b, aggregator=aggregator, normalize=normalize and position < num_layers - 1)
              for position, (a, b) in enumerate(widths)]
    return StackedGNN(layers, dropout=dropout)


def sampled_gcn(in_channels: int, hidden_channels: int = 256, out_channels: int = 2, *, num_layers: int = 5,
                input_dropout: float = 0.0, dropout: float = 0.2, classifier_dropout: float = 0.5) -> StackedGNN:
    """The GCN that FastGCN / LADIES blocks train (``acbull/LADIES``, ``pytorch_ladies.py``): ``num_layers``
    GCN layers that apply the block's propagation weights as given (``P (H W) + b``), ELU after each,
    dropout ``dropout`` after each, then dropout ``classifier_dropout`` and a linear classifier. Defaults are
    the reference's (5 layers of 256, dropout 0.2 / 0.5; an older revision of the file used 128 hidden).

    On full neighbourhoods (evaluation) the blocks must carry ``A_hat`` as weights
    (``sampler.full_neighborhood()``), as the reference evaluates with the full ``A_hat``.
    """
    widths = [in_channels] + [hidden_channels] * num_layers
    layers: list[GraphLayer] = [GCNConv(a, b, normalization="none", self_loops=False)
                                for a, b in itertools.pairwise(widths)]
    layers.append(NodeLinear(hidden_channels, out_channels))
    # the reference drops 0.2 after the last GCN layer and then 0.5 before the classifier: one dropout of
    # 1 - 0.8 * 0.5 = 0.6 has the same distribution
    rates = [input_dropout] + [dropout] * (num_layers - 1) + [1.0 - (1.0 - dropout) * (1.0 - classifier_dropout)]
    return StackedGNN(layers, activation=F.elu, dropout=rates)


BUILDERS: dict[str, Callable[..., StackedGNN]] = {"gcn": gcn, "gat": gat, "sgc": sgc, "gin": gin, "sage": sage,
                                                  "sampled_gcn": sampled_gcn}


def check_model(name: str, known: Iterable[str] = BUILDERS) -> None:
    """Refuse a model name that is not among ``known`` (the registry's names, or a config's choice of them)."""
    known = tuple(known)
    if name not in known:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(known)}")


def build_model(name: str, in_channels: int, out_channels: int, **settings: Any) -> StackedGNN:
    """The model ``name`` from its builder in :data:`BUILDERS`: ``in_channels`` features -> ``out_channels`` logits.

    ``settings`` are builder keywords (``hidden_channels``, ``num_layers``, ``dropout``, ``heads``, ``K``, ...);
    the builder gets those it takes and keeps its defaults for the rest, so a config passes every setting it has.
    """
    check_model(name)
    builder = BUILDERS[name]
    accepted = inspect.signature(builder).parameters
    return builder(in_channels=in_channels, out_channels=out_channels,
                   **{key: value for key, value in settings.items() if key in accepted})
