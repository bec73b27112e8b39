"""Bipartite blocks: one sampled layer of message passing, and what every sampler shares.

A :class:`Block` is the computation graph of one layer for a mini-batch: messages flow from its
``num_sources`` source nodes into its ``num_targets`` target nodes. **The first ``num_targets`` source nodes
are the targets themselves** (the convention of DGL's blocks and PyG's ``NeighborLoader``), so a layer finds
a target's own features at the same row of the source features, ``x[:num_targets]``, and a target's self-loop
is the local edge ``i -> i``. Every layer in :mod:`gnnseg.gnn.layers` that passes messages takes a block as

    layer(x, block.edge_index, [block.edge_weight,] num_targets=block.num_targets)

with ``x (num_sources, F)`` and returns ``(num_targets, F')``; without ``num_targets`` the same call is the
full-graph layer. A sampler returns a list of blocks from the input layer to the seed layer: ``blocks[0]``
takes the input features ``x[blocks[0].source_nodes]``, each block's sources are the previous block's
targets (``blocks[k].source_nodes == blocks[k - 1].target_nodes``), and ``blocks[-1].target_nodes`` are the
seeds in the order given. So every layer's nodes are a prefix of the input nodes.

Blocks hold plain tensors: they pickle to DataLoader workers and back, and ``pin_memory``/``to`` move them.
For results that do not depend on the number of workers, give each batch its own generator seed
(``sampler.sample(seeds, generator=batch_seed)``) instead of sharing one generator.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

Generator = torch.Generator | int | None


@dataclass(frozen=True, eq=False)
class Block:
    """One layer of a sampled mini-batch (see the module docstring for the conventions).

    ``source_nodes (S,)``: global ids of the source nodes; ``source_nodes[:num_targets]`` are the targets.
    ``edge_index (2, E)``: local ids, row 0 the source in ``[0, S)``, row 1 the target in ``[0, num_targets)``;
    samplers emit the edges grouped by target, in target order.
    ``edge_weight (E,)``: propagation weights where the sampler sets them (FastGCN / LADIES: ``1/q``
    reweighted and row-normalized); ``None`` for uniform neighbour sampling.
    ``edge_ids (E,)``: the column of each edge in the graph's ``edge_index`` (for edge features), where the
    edges are the graph's own (neighbour sampling).
    """

    source_nodes: Tensor
    num_targets: int
    edge_index: Tensor
    edge_weight: Tensor | None = None
    edge_ids: Tensor | None = None

    @property
    def target_nodes(self) -> Tensor:
        """Global ids of the targets, ``(num_targets,)``: the first source nodes."""
        return self.source_nodes[:self.num_targets]

    @property
    def num_sources(self) -> int:
        return int(self.source_nodes.numel())

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.size(1))

    @property
    def size(self) -> tuple[int, int]:
        """``(num_sources, num_targets)``, the shape PyG's ``size=`` argument takes."""
        return self.num_sources, self.num_targets

    def __repr__(self) -> str:
        weighted = "" if self.edge_weight is None else ", weighted"
        return f"Block(sources={self.num_sources}, targets={self.num_targets}, edges={self.num_edges}{weighted})"

    def validate(self, num_nodes: int | None = None) -> Block:
        """Check shapes, dtypes and ranges (and the global ids against ``num_nodes``); raise ``ValueError``
        naming the first problem. Returns self."""
        sources, edges = self.source_nodes, self.edge_index
        if sources.dim() != 1 or sources.dtype != torch.int64:
            raise ValueError(f"source_nodes must be a 1-D int64 tensor, got {sources.dtype} {tuple(sources.shape)}")
        if not 0 <= self.num_targets <= sources.numel():
            raise ValueError(f"num_targets must be between 0 and the {sources.numel()} source nodes, "
                             f"got {self.num_targets}")
        if sources.unique().numel() != sources.numel():
            raise ValueError("source_nodes holds a node more than once")
        if num_nodes is not None and sources.numel():
            low, high = int(sources.min()), int(sources.max())
            if low < 0 or high >= num_nodes:
                raise ValueError(f"source_nodes refers to node {low if low < 0 else high}, outside the graph's "
                                 f"nodes 0..{num_nodes - 1}")
        if edges.dim() != 2 or edges.size(0) != 2 or edges.dtype != torch.int64:
            raise ValueError(f"edge_index must be an int64 tensor of shape (2, E), "
                             f"got {edges.dtype} {tuple(edges.shape)}")
        if edges.numel():
            if int(edges.min()) < 0:
                raise ValueError(f"edge_index has a negative local id {int(edges.min())}")
            if int(edges[0].max()) >= sources.numel():
                raise ValueError(f"edge_index has source {int(edges[0].max())} but the block has "
                                 f"{sources.numel()} source nodes")
            if int(edges[1].max()) >= self.num_targets:
                raise ValueError(f"edge_index has target {int(edges[1].max())} but the block has "
                                 f"{self.num_targets} targets")
        for name in ("edge_weight", "edge_ids"):
            value = getattr(self, name)
            if value is not None and value.shape != (edges.size(1),):
                raise ValueError(f"{name} must have shape ({edges.size(1)},), got {tuple(value.shape)}")
        return self

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Block:
        """The block on ``device`` (a new block; this one is unchanged)."""
        return self._map(lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Block:
        """Page-locked copy, called by ``DataLoader(pin_memory=True)`` for faster host-to-GPU copies."""
        return self._map(Tensor.pin_memory)

    def _map(self, function: Callable[[Tensor], Tensor]) -> Block:
        def apply(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else function(tensor)
        return replace(self, source_nodes=apply(self.source_nodes), edge_index=apply(self.edge_index),
                       edge_weight=apply(self.edge_weight), edge_ids=apply(self.edge_ids))


# ------------------------------------------------------------------------------------- shared by the samplers
def repeated_node_error(nodes: Tensor) -> ValueError:
    """The error for seed nodes that hold a node twice (a node can be only one target row), naming it."""
    ordered = nodes.sort().values
    node = int(ordered[int((ordered[1:] == ordered[:-1]).nonzero()[0])])
    positions = (nodes == node).nonzero().flatten().tolist()
    return ValueError(f"seed node {node} appears more than once (positions {positions}); seeds must be unique")


def check_seeds(seeds: Tensor | Sequence[int], num_nodes: int, *, unique: bool = True) -> Tensor:
    """The seed nodes as a 1-D int64 tensor, or ``ValueError`` naming the problem: not 1-D, not integers,
    empty, out of ``[0, num_nodes)``, or repeated (a node can be only one target row). ``unique=False`` skips
    the repetition check (a sort) for callers whose :class:`Relabeler` makes it anyway."""
    seeds = torch.as_tensor(seeds)
    if seeds.dim() != 1:
        raise ValueError(f"seed nodes must be a 1-D tensor of node ids, got shape {tuple(seeds.shape)}")
    if seeds.is_floating_point() or seeds.is_complex() or seeds.dtype == torch.bool:
        raise ValueError(f"seed nodes must be integer node ids, got dtype {seeds.dtype}")
    if seeds.numel() == 0:
        raise ValueError("no seed nodes: a mini-batch needs at least one")
    seeds = seeds.to(torch.int64)
    low, high = torch.aminmax(seeds)
    if int(low) < 0 or int(high) >= num_nodes:
        position = int(((seeds < 0) | (seeds >= num_nodes)).nonzero()[0])
        raise ValueError(f"seed node {int(seeds[position])} (position {position}) is out of range for a graph "
                         f"of {num_nodes} nodes")
    if unique and seeds.unique().numel() != seeds.numel():
        raise repeated_node_error(seeds)
    return seeds


def check_sizes(sizes: Sequence[int], name: str) -> tuple[int, ...]:
    """Per-layer sample sizes (fanouts, nodes per layer): a non-empty sequence of positive integers."""
    if isinstance(sizes, (int, str)) or not isinstance(sizes, (Sequence, Tensor)):
        raise TypeError(f"{name} must be a sequence of positive integers, one per layer, got {sizes!r}")
    values = [size.item() if isinstance(size, Tensor) else size for size in sizes]
    if not values:
        raise ValueError(f"{name} must name at least one layer, got an empty sequence")
    for layer, size in enumerate(values):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{name}[{layer}] must be a positive integer, got {size!r}")
    return tuple(values)


def as_generator(generator: Generator) -> torch.Generator | None:
    """A ``torch.Generator`` from a seed (``int``), a generator as is, or ``None`` (torch's global RNG)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise ValueError(f"generator must be a torch.Generator, an int seed or None, got {generator!r}")


class Relabeler:
    """Local ids for blocks: ``relabeler(targets, neighbors) -> (source_nodes, neighbor_local)``.

    The ``targets`` keep positions ``0..T-1`` (they must be distinct: ``ValueError`` naming a repeated one, the
    table left clean); nodes of ``neighbors`` that are not targets follow in the order they first appear.
    ``neighbor_local[k]`` is the position of ``neighbors[k]`` in ``source_nodes``. A node-indexed scratch table,
    allocated once for the graph and left clean after every call, makes each call ``O(m)`` for
    ``m = T + len(neighbors)``, with no sort and nothing graph-sized allocated per call. One relabeler per
    sampler: the table is not shared between threads (DataLoader workers are processes, each with its own copy).
    """

    _UNSEEN = torch.iinfo(torch.int64).max

    def __init__(self, num_nodes: int) -> None:
        self._table = torch.full((num_nodes,), self._UNSEEN, dtype=torch.int64)
        self._range = torch.arange(0)

    def _positions(self, count: int) -> Tensor:
        """``arange(count)``, a view of one range kept for the calls (most calls need one of similar length)."""
        if self._range.numel() < count:
            self._range = torch.arange(max(count, 2 * self._range.numel()))
        return self._range[:count]

    def __call__(self, targets: Tensor, neighbors: Tensor, *, check_targets: bool = True) -> tuple[Tensor, Tensor]:
        """``check_targets=False`` skips the check that the targets are distinct (for targets that are the
        sources of an earlier call, distinct by construction)."""
        combined = torch.cat([targets, neighbors])
        positions = self._positions(combined.numel())
        table = self._table
        table.scatter_reduce_(0, combined, positions, reduce="amin")       # each node's first position
        first = table.index_select(0, combined) == positions
        if check_targets and not bool(first[:targets.numel()].all()):
            table.index_fill_(0, combined, self._UNSEEN)
            raise repeated_node_error(targets)
        source_nodes = combined.masked_select(first)                       # in order of first appearance
        table.scatter_(0, source_nodes, self._positions(source_nodes.numel()))   # now each node's local id
        local = table.index_select(0, neighbors)
        table.scatter_(0, source_nodes, self._UNSEEN)
        return source_nodes, local


def segment_slots(row_ptr: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Every CSR slot of the given rows: ``(slots, owner)`` with ``owner[k]`` the position in ``rows`` whose
    row holds ``slots[k]``; rows in the given order, each row's slots in CSR order. ``O(total degree)``."""
    start = row_ptr[rows]
    degree = row_ptr[rows + 1] - start
    owner = torch.repeat_interleave(torch.arange(rows.numel()), degree)
    first_slot = torch.cumsum(degree, 0) - degree
    slots = start[owner] + torch.arange(owner.numel()) - first_slot[owner]
    return slots, owner


class FullNeighborhood:
    """Whole incoming neighbourhoods as blocks: the exact layer a sampler estimates, for evaluation.

    ``row_ptr (N + 1,)`` and ``columns (E,)`` are a CSR with targets as rows (``columns[row_ptr[i]:
    row_ptr[i + 1]]`` are the sources of the edges into ``i``); ``values (E,)``, when given, become every
    block's ``edge_weight`` (a sampler's ``A_hat``, self-loops included). ``block(nodes)`` holds every
    in-edge of ``nodes`` (duplicates kept, as in the graph), following the block conventions (targets first;
    ``edge_ids`` is not set). Samplers give theirs with ``sampler.full_neighborhood()``.
    """

    def __init__(self, row_ptr: Tensor, columns: Tensor, values: Tensor | None = None) -> None:
        if row_ptr.dim() != 1 or row_ptr.numel() < 1:
            raise ValueError(f"row_ptr must be a 1-D tensor of N + 1 offsets, got shape {tuple(row_ptr.shape)}")
        if values is not None and values.shape != columns.shape:
            raise ValueError(f"values must match columns {tuple(columns.shape)}, got {tuple(values.shape)}")
        self.row_ptr, self.columns, self.values = row_ptr, columns, values
        self.num_nodes = int(row_ptr.numel()) - 1
        self.relabel = Relabeler(self.num_nodes)

    def __repr__(self) -> str:
        weighted = ", weighted" if self.values is not None else ""
        return f"FullNeighborhood(num_nodes={self.num_nodes}, num_edges={self.columns.numel()}{weighted})"

    def block(self, nodes: Tensor | Sequence[int]) -> Block:
        """One block with every in-edge of the (unique) ``nodes``: ``O(sum of their degrees)``."""
        targets = check_seeds(nodes, self.num_nodes, unique=False)     # the relabeler finds repeated nodes
        slots, owner = segment_slots(self.row_ptr, targets)
        source_nodes, local = self.relabel(targets, self.columns[slots].to(torch.int64))
        weight = None if self.values is None else self.values[slots]
        return Block(source_nodes, targets.numel(), torch.stack([local, owner]), edge_weight=weight)

    def boundaries(self, nodes: Tensor, max_nodes: int, max_edges: int) -> list[int]:
        """Chunk boundaries over ``nodes``: each chunk has at most ``max_nodes`` nodes and at most
        ``max_edges`` in-edges, except a single node with more edges, which is a chunk of its own."""
        if max_nodes < 1 or max_edges < 1:
            raise ValueError(f"max_nodes and max_edges must be positive, got {max_nodes} and {max_edges}")
        nodes = torch.as_tensor(nodes, dtype=torch.int64)
        cumulative = torch.cumsum(self.row_ptr[nodes + 1] - self.row_ptr[nodes], 0)
        bounds, start, total = [0], 0, nodes.numel()
        while start < total:
            before = int(cumulative[start - 1]) if start else 0
            stop = int(torch.searchsorted(cumulative, torch.tensor(before + max_edges), right=True))
            stop = min(max(stop, start + 1), start + max_nodes, total)
            bounds.append(stop)
            start = stop
        return bounds

    def num_chunks(self, nodes: Tensor, max_nodes: int, max_edges: int) -> int:
        return len(self.boundaries(nodes, max_nodes, max_edges)) - 1

    def chunks(self, nodes: Tensor, *, max_nodes: int = 8192,
               max_edges: int = 1 << 19) -> Iterator[tuple[int, int, Block]]:
        """``(start, stop, block of nodes[start:stop])`` over ``nodes`` in order (see :meth:`boundaries`)."""
        nodes = torch.as_tensor(nodes, dtype=torch.int64)
        bounds = self.boundaries(nodes, max_nodes, max_edges)
        for start, stop in itertools.pairwise(bounds):
            yield start, stop, self.block(nodes[start:stop])
