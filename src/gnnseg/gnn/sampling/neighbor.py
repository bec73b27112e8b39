"""Uniform neighbour sampling (GraphSAGE: Hamilton, Ying & Leskovec, NeurIPS 2017, Algorithm 2) into blocks.

Hop by hop from the seeds, every frontier node draws up to ``fanout`` of its incoming edges uniformly at
random, for all frontier nodes at once (no Python loop over nodes):

* **without replacement**: a node with ``degree <= fanout`` keeps all its edges; a node with more draws
  ``fanout`` distinct positions in its CSR row, each subset equally likely. Where those rows are short, by
  keeping the ``fanout`` smallest of a random key per edge (a few operations over their edges); otherwise with
  Floyd's algorithm (Bentley & Floyd, CACM 1987) vectorized over the nodes: ``fanout`` steps of
  ``O(nodes * fanout)`` work, whatever the degrees. Only the chosen positions are gathered, so a hub with
  millions of neighbours costs as much as any other node.
* **with replacement**: every node with at least one edge draws ``fanout`` positions ``floor(u * degree)``,
  so repeated draws give repeated edges (the mean over them is the usual unbiased estimate).

Nodes without incoming edges (isolated) get no edges but stay targets (their layer output is the root term).

Two backends draw the same distribution into the same block structure: ``"torch"`` (this module's vectorized
tensor code: the fallback and the oracle) and ``"numba"`` (:mod:`gnnseg.gnn.sampling.compiled`: one compiled
call per mini-batch, several times faster where a batch is small enough for per-operation overhead to dominate).
``"auto"`` takes numba when it imports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from gnnseg.gnn.graph import Graph
from gnnseg.gnn.sampling.blocks import (
    Block,
    FullNeighborhood,
    Generator,
    Relabeler,
    as_generator,
    check_seeds,
    check_sizes,
)

BACKENDS = ("auto", "numba", "torch")
# distinct_subsets draws by random keys over every edge of the rows while no row holds more than KEYS_LIMIT
# edges per draw (then at most KEYS_LIMIT * count keys per row), else by Floyd's algorithm
KEYS_LIMIT = 32


def distinct_offsets(degree: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """``count`` distinct offsets in ``[0, degree[r])`` for every row ``r``, each subset equally likely.

    Floyd's algorithm: for ``j = d - count, ..., d - 1`` draw ``t`` uniform in ``[0, j]`` and keep ``t``, or
    ``j`` when ``t`` is already kept. Vectorized over the rows; needs ``degree >= count``.
    Shapes: ``degree (R,)`` -> ``(R, count)``, in draw order. Time ``O(R * count^2)``, memory ``O(R * count)``.
    """
    rows = degree.numel()
    limits = (degree - count).unsqueeze(1) + torch.arange(count)       # j of every step: draw from [0, j]
    draws = torch.rand((rows, count), generator=generator, dtype=torch.float64)
    picks = torch.minimum((draws * (limits + 1)).long(), limits)       # every step's t, drawn at once
    chosen = picks.clone()
    for step in range(1, count):                                       # the first pick is never taken
        taken = (chosen[:, :step] == picks[:, step:step + 1]).any(dim=1)
        chosen[:, step] = torch.where(taken, limits[:, step], picks[:, step])
    return chosen


def padded_key_offsets(degree: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """The same distribution as :func:`distinct_offsets` from random keys: every offset of every row gets a
    uniform random key and each row keeps the ``count`` offsets with the smallest keys (``topk`` over a
    ``(R, max degree)`` key matrix, padding keyed above every real key). Needs ``degree >= count``.
    Time and memory ``O(R * max(degree))`` in a handful of operations. Shapes: ``(R,)`` -> ``(R, count)``."""
    width = int(degree.max())
    keys = torch.rand((degree.numel(), width), generator=generator, dtype=torch.float64)
    keys.masked_fill_(torch.arange(width) >= degree.unsqueeze(1), 2.0)        # padding: never among the smallest
    return keys.topk(count, dim=1, largest=False, sorted=False).indices


def sorted_key_offsets(degree: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """:func:`padded_key_offsets` without the padding, for rows of unequal lengths: the keys of all rows in one
    flat array, offset by their row, sorted once; each row's first ``count`` are its smallest. Time
    ``O(D log D)`` and memory ``O(D)`` for ``D = degree.sum()``."""
    row = torch.repeat_interleave(degree)
    first = torch.cumsum(degree, 0) - degree
    order = torch.argsort(torch.rand(row.numel(), generator=generator, dtype=torch.float64) + row)
    picks = order.index_select(0, (first.unsqueeze(1) + torch.arange(count)).flatten())  # sorted within rows
    return picks.view(-1, count) - first.unsqueeze(1)


def distinct_subsets(degree: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """``count`` distinct offsets per row (``degree >= count``), each subset equally likely. By random keys
    while no row holds more than ``KEYS_LIMIT`` edges per draw: in a padded matrix when the rows are of similar
    length, else sorted flat; beyond, by Floyd's algorithm, whose cost does not depend on the degrees."""
    widest = int(degree.max())
    if widest > KEYS_LIMIT * count:
        return distinct_offsets(degree, count, generator)
    if degree.numel() * widest <= 2 * int(degree.sum()):
        return padded_key_offsets(degree, count, generator)
    return sorted_key_offsets(degree, count, generator)


def sample_slots(row_ptr: Tensor, nodes: Tensor, fanout: int, replace: bool = False,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """One hop: CSR slots of the sampled incoming edges of ``nodes``, and which node drew each.

    Returns ``(slots, owner)``, both ``(E,)``: ``slots`` index the CSR arrays (``sources[slots]`` are the
    sampled neighbours) and ``owner[k]`` is the position in ``nodes`` of the node that drew ``slots[k]``;
    grouped by node in the order of ``nodes``. Work and memory ``O(E)`` for the ``E`` edges taken, plus
    :func:`distinct_subsets` for the nodes with more than ``fanout`` edges: no node's whole neighbour list is
    materialized unless it is short.
    """
    start = row_ptr.index_select(0, nodes)
    degree = row_ptr.index_select(0, nodes + 1) - start
    if replace:
        count = nodes.numel()
        draws = torch.rand((count, fanout), generator=generator, dtype=torch.float64)
        offsets = torch.minimum((draws * degree.unsqueeze(1)).long(), (degree - 1).clamp_min(0).unsqueeze(1))
        owner = torch.arange(count).repeat_interleave(fanout)
        kept = (degree > 0).repeat_interleave(fanout).nonzero().flatten()
        return (start.unsqueeze(1) + offsets).flatten()[kept], owner[kept]
    taken = degree.clamp_max(fanout)
    owner = torch.repeat_interleave(taken)                      # node k repeated taken[k] times
    first = torch.cumsum(taken, 0) - taken
    # short rows: every edge in CSR order, output position first[k] + j holding slot start[k] + j
    slots = torch.arange(owner.numel()) + (start - first).index_select(0, owner)
    large = (degree > fanout).nonzero().flatten()
    if large.numel():
        rows = (first.index_select(0, large).unsqueeze(1) + torch.arange(fanout)).flatten()
        chosen = start.index_select(0, large).unsqueeze(1) + distinct_subsets(degree.index_select(0, large), fanout,
                                                                                generator)
        slots.index_copy_(0, rows, chosen.flatten())
    return slots, owner


HopDraw = Callable[[Tensor, int, torch.Generator | None], tuple[Tensor, Tensor, Tensor | None]]


def assemble_blocks(targets: Tensor, fanouts: Sequence[int], reuse: bool, relabel: Relabeler, draw: HopDraw,
                    generator: torch.Generator | None = None) -> list[Block]:
    """The blocks of uniform neighbour sampling from one hop-drawing function: the block structure that every
    neighbour sampler shares, whatever holds the graph (one machine's CSR, or partitions on several machines).

    ``draw(drawing, fanout, generator) -> (neighbors, owner, edge_ids)`` samples up to ``fanout`` incoming
    edges of each node of ``drawing`` (global ids): ``neighbors (E,)`` int64 global ids, ``owner (E,)`` the
    position in ``drawing`` of the node that drew each edge, grouped by node in the order of ``drawing``, and
    ``edge_ids (E,)`` or ``None``. ``relabel`` gives local ids over the same global id space. Returns
    ``len(fanouts)`` blocks, input layer first, as :meth:`NeighborSampler.sample` describes (``reuse``: each
    node draws once and every layer shares its edges).
    """
    hops = []                      # per hop: source nodes, targets, local sources, local targets, edge ids
    drawing = targets              # the nodes that draw neighbours at this hop
    for fanout in fanouts:
        neighbors, owner, edge_ids = draw(drawing, fanout, generator)
        source_nodes, local = relabel(targets, neighbors, check_targets=not hops)   # later targets: earlier sources
        hops.append((source_nodes, targets.numel(), local, owner + (targets.numel() - drawing.numel()), edge_ids))
        drawing = source_nodes[targets.numel():] if reuse else source_nodes
        targets = source_nodes
    if not reuse:
        return [Block(sources, num_targets, torch.stack([local, owner]), edge_ids=ids)
                for sources, num_targets, local, owner, ids in reversed(hops)]
    # reusing: each block's local ids hold in the blocks below (their targets begin with its sources), so
    # every block's edges are the first edges of the input block's, views of one edge list
    edge_index = torch.stack([torch.cat([hop[2] for hop in hops]), torch.cat([hop[3] for hop in hops])])
    edge_ids = None if hops[0][4] is None else torch.cat([hop[4] for hop in hops])
    blocks, edges = [], 0
    for sources, num_targets, local, _, _ in hops:
        edges += local.numel()
        blocks.append(Block(sources, num_targets, edge_index[:, :edges],
                            edge_ids=None if edge_ids is None else edge_ids[:edges]))
    return blocks[::-1]


def resolve_backend(backend: str) -> str:
    """``"numba"`` or ``"torch"``: the backend a sampler runs for the requested one (``"auto"``: numba when it
    imports, else torch). ``ValueError`` for an unknown name; ``ImportError`` naming the fix for ``"numba"``
    where numba does not import."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown sampler backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return backend
    try:
        import gnnseg.gnn.sampling.compiled  # noqa: F401
    except ImportError as error:
        if backend == "numba":
            raise ImportError(f"sampler backend 'numba' needs numba, which does not import here ({error}); "
                              f"install it with pip install 'gnnseg[fast]', or choose backend 'torch' or "
                              f"'auto'") from error
        return "torch"
    return "numba"


class NeighborSampler:
    """Per-layer uniform neighbour sampling over the graph's cached incoming-edge CSR.

    ``fanouts[k]`` is the number of neighbours drawn per node at hop ``k + 1`` from the seeds (PyG's
    ``num_neighbors`` order; ``[25, 10]`` draws 25 neighbours of every seed, then 10 of each of those).
    The reference GraphSAGE code reads its ``samples_1, samples_2`` the other way round (its hop 1 uses
    ``samples_2``). Messages flow along ``edge_index[0] -> edge_index[1]``, so a node's sampled neighbours
    are the sources of its incoming edges (for an undirected graph, its neighbours).

    ``sample(seeds, generator)`` returns ``len(fanouts)`` blocks, input layer first (see
    :mod:`gnnseg.gnn.sampling.blocks`); each block's targets are all the nodes of the layer above. The same
    generator state gives the same blocks. Two ways to give the layers their edges:

    * ``reuse=False`` (GraphSAGE, Algorithm 2; DGL's blocks): every layer draws its own neighbours for each of
      its targets, so a node gets fresh neighbours at every layer it is a target of.
    * ``reuse=True`` (PyG's ``NeighborLoader``): a node's neighbours are drawn once, at the hop where it first
      appears, and every layer uses them; a block's edges are then the first edges of the block below, the
      input block holds every sampled edge (PyG's one subgraph), and each hop draws only for its new nodes.

    Cost per hop: ``O(F * f^2)`` at most for the draws (``F`` frontier nodes, fanout ``f``) and ``O(m)`` to
    relabel the ``m <= F * (f + 1)`` nodes; independent of any node's degree. Gathers use ``index_select``,
    which is faster than tensor indexing on 1-D tensors (a sampler is mostly gathers).

    ``backend``: ``"torch"`` (the code below), ``"numba"`` (:mod:`gnnseg.gnn.sampling.compiled`, the same
    distribution and block structure from one compiled call per batch) or ``"auto"`` (numba when it imports);
    ``self.backend`` is the one that runs. The two draw different blocks from the same generator state.
    """

    def __init__(self, graph: Graph, fanouts: Sequence[int], *, replace: bool = False, reuse: bool = False,
                 backend: str = "auto") -> None:
        self.fanouts = check_sizes(fanouts, "fanouts")
        self.replace, self.reuse = bool(replace), bool(reuse)
        self.backend = resolve_backend(backend)
        self.num_nodes = graph.num_nodes
        self.row_ptr, self.neighbors, self.edge_ids = graph.csr()
        if self.backend == "numba":
            from gnnseg.gnn.sampling.compiled import CompiledNeighborSampling

            self.compiled = CompiledNeighborSampling(self.row_ptr, self.neighbors, self.edge_ids, self.fanouts,
                                                     replace=self.replace, reuse=self.reuse)
        else:
            self.relabel = Relabeler(self.num_nodes)

    def __repr__(self) -> str:
        return (f"NeighborSampler(fanouts={list(self.fanouts)}, replace={self.replace}, reuse={self.reuse}, "
                f"backend={self.backend!r}, num_nodes={self.num_nodes})")

    def sample(self, seeds: Tensor | Sequence[int], generator: Generator = None) -> list[Block]:
        """Blocks for the (unique) ``seeds``, input layer first; ``blocks[-1].target_nodes`` equals ``seeds``.
        ``generator``: a ``torch.Generator``, an int seed, or ``None`` for torch's global RNG."""
        targets = check_seeds(seeds, self.num_nodes, unique=False)     # the relabeler finds repeated seeds
        generator = as_generator(generator)
        if self.backend == "numba":
            return self.compiled.sample(targets, generator)
        return assemble_blocks(targets, self.fanouts, self.reuse, self.relabel, self._draw_local, generator)

    def _draw_local(self, drawing: Tensor, fanout: int,
                    generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        slots, owner = sample_slots(self.row_ptr, drawing, fanout, self.replace, generator)
        # no edge ids: the CSR holds the edges in the graph's order
        edge_ids = slots if self.edge_ids is None else self.edge_ids.index_select(0, slots)
        return self.neighbors.index_select(0, slots).to(torch.int64), owner, edge_ids

    def full_neighborhood(self) -> FullNeighborhood:
        """The layer this sampler estimates: every node's whole in-neighbourhood, unweighted (for exact
        layer-wise evaluation, :meth:`gnnseg.gnn.models.StackedGNN.layerwise_inference`)."""
        return FullNeighborhood(self.row_ptr, self.neighbors)

    __call__ = sample
