"""Uniform neighbour sampling compiled with numba: every hop of a mini-batch in one machine-code call.

The pure-torch sampler (:mod:`gnnseg.gnn.sampling.neighbor`) spends a mini-batch on Cora in some thirty torch
operations per hop, each a few microseconds of dispatch around a few microseconds of work; this kernel does the
same draws and the same relabelling in plain loops over the frontier, one call per batch. It draws from
the same distribution and returns the same block structure (tested against the torch path with chi-square
tests), so the torch path stays the fallback and the oracle:

* without replacement, a node with ``degree <= fanout`` keeps all its edges in CSR order; a node with more
  draws ``fanout`` distinct CSR positions by Floyd's algorithm (Bentley & Floyd, CACM 1987), every subset
  equally likely, in draw order;
* with replacement, every node with an edge draws ``fanout`` positions uniformly;
* local ids come from a node-indexed scratch table (``-1`` where unseen, left clean after every call): the
  seeds keep positions ``0..T-1``, new nodes follow in the order they first appear, and each hop's targets
  are all the nodes so far, so one table serves every hop.

Random numbers come from numba's own Mersenne Twister, seeded at every call from the caller's torch generator,
so the same generator state gives the same blocks (not the torch path's blocks: the two draw differently).
``cache=True`` writes the machine code next to this file (``__pycache__``): the first call in a fresh
environment compiles for a few seconds, later processes load it.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from gnnseg.gnn.sampling.blocks import Block, repeated_node_error

UNSEEN = -1
REPEATED_SEED = -1      # sample_hops returns this as edge_counts[0] when a seed appears twice


@numba.njit(cache=True, nogil=True)
def _grown(array: np.ndarray, needed: int) -> np.ndarray:
    """``array`` if it holds ``needed`` entries, else a copy of it at least twice as long."""
    if needed <= array.size:
        return array
    bigger = np.empty(max(needed, 2 * array.size), dtype=array.dtype)
    bigger[:array.size] = array
    return bigger


@numba.njit(cache=True, nogil=True)
def _draw_hop(row_ptr: np.ndarray, sources: np.ndarray, first: int, stop: int, fanout: int, replace: bool,
              chosen: np.ndarray, slots: np.ndarray, owner: np.ndarray, edges: int) -> int:
    """The CSR slots drawn by the targets at positions ``first..stop-1`` of ``sources``, written with their
    target's position from ``slots[edges]`` and ``owner[edges]`` on; returns the new edge count."""
    for target in range(first, stop):
        start = row_ptr[sources[target]]
        degree = row_ptr[sources[target] + 1] - start
        if replace:
            taken = fanout if degree > 0 else 0
        else:
            taken = min(degree, fanout)
        for k in range(taken):
            if replace:
                offset = np.random.randint(0, degree)
            elif degree <= fanout:
                offset = k
            else:                       # Floyd: step j = degree - fanout + k draws from [0, j]
                step = degree - fanout + k
                offset = np.random.randint(0, step + 1)
                for earlier in range(k):
                    if chosen[earlier] == offset:
                        offset = step
                        break
                chosen[k] = offset
            slots[edges] = start + offset
            owner[edges] = target
            edges += 1
    return edges


@numba.njit(cache=True, nogil=True)
def _relabel_hop(neighbors: np.ndarray, slots: np.ndarray, first: int, stop: int, table: np.ndarray,
                 sources: np.ndarray, count: int, local: np.ndarray) -> int:
    """``local[e]`` for the edges ``first..stop-1``: their neighbour's position in ``sources``, appending the
    nodes not seen yet (``count`` of them so far); returns the new count. The neighbours are gathered in a
    loop of their own first: independent loads the processor overlaps, where one loop that relabels each
    neighbour as it loads it would wait for every cache miss."""
    for edge in range(first, stop):
        local[edge] = neighbors[slots[edge]]
    for edge in range(first, stop):
        neighbor = local[edge]
        position = table[neighbor]
        if position == UNSEEN:
            position = count
            table[neighbor] = count
            sources[count] = neighbor
            count += 1
        local[edge] = position
    return count


@numba.njit(cache=True, nogil=True)
def sample_hops(row_ptr: np.ndarray, neighbors: np.ndarray, seeds: np.ndarray, fanouts: np.ndarray, reuse: bool,
                replace: bool, rng_seed: int, table: np.ndarray) -> tuple[np.ndarray, ...]:
    """All hops of one mini-batch.

    ``row_ptr (N + 1,)`` and ``neighbors (E,)``: the incoming-edge CSR; ``seeds (T,)`` int64; ``fanouts (H,)``
    int64, hop 1 first; ``reuse``: each node draws once (PyG), else every node of the layer above draws at
    every hop (GraphSAGE); ``table (N,)`` int64 all ``-1``, left so. Returns ``(sources, source_counts,
    edge_counts, local, owner, slots)``: ``sources[:source_counts[h]]`` are the nodes known before hop
    ``h + 1`` (``source_counts (H + 1,)``), hop ``h + 1``'s edges are ``edge_counts[h]:edge_counts[h + 1]``
    of ``local`` (the neighbour's position in ``sources``), ``owner`` (the drawing target's position) and
    ``slots`` (the CSR slot). A repeated seed gives ``edge_counts[0] == REPEATED_SEED`` (the table left
    clean).
    """
    np.random.seed(rng_seed)
    hops = fanouts.size
    source_counts = np.zeros(hops + 1, dtype=np.int64)
    edge_counts = np.zeros(hops + 1, dtype=np.int64)
    sources = np.empty(max(seeds.size, 16), dtype=np.int64)
    count = 0
    for position in range(seeds.size):
        node = seeds[position]
        if table[node] != UNSEEN:
            for k in range(count):
                table[sources[k]] = UNSEEN
            edge_counts[0] = REPEATED_SEED
            return sources[:0], source_counts, edge_counts, sources[:0], sources[:0], sources[:0]
        table[node] = count
        sources[count] = node
        count += 1
    source_counts[0] = count
    local = np.empty(16, dtype=np.int64)
    owner = np.empty(16, dtype=np.int64)
    slots = np.empty(16, dtype=np.int64)
    chosen = np.empty(int(fanouts.max()), dtype=np.int64)
    edges = 0
    for hop in range(hops):
        targets = count
        first = source_counts[hop - 1] if reuse and hop > 0 else 0      # reusing: only the new nodes draw
        bound = edges + (targets - first) * fanouts[hop]
        local, owner, slots = _grown(local, bound), _grown(owner, bound), _grown(slots, bound)
        sources = _grown(sources, bound - edges + count)
        hop_start = edges
        edges = _draw_hop(row_ptr, sources, first, targets, fanouts[hop], replace, chosen, slots, owner, edges)
        count = _relabel_hop(neighbors, slots, hop_start, edges, table, sources, count, local)
        source_counts[hop + 1] = count
        edge_counts[hop + 1] = edges
    for k in range(count):
        table[sources[k]] = UNSEEN
    return sources[:count], source_counts, edge_counts, local[:edges], owner[:edges], slots[:edges]


class CompiledNeighborSampling:
    """:func:`sample_hops` over one graph's CSR, as blocks: what ``NeighborSampler(..., backend="numba")`` runs.

    Holds the CSR tensors (shared, not copied: the kernel reads them as numpy views) and the scratch table
    (``N`` int64, allocated once; like the torch backend's relabeller, not to be shared between threads).
    ``sample(seeds, generator)`` takes checked int64 seeds and a
    ``torch.Generator`` or ``None`` and returns the blocks, input layer first, laid out as the torch path lays
    them out (for ``reuse=True``, every block's edges are the first edges of the input block's).
    """

    def __init__(self, row_ptr: Tensor, neighbors: Tensor, edge_ids: Tensor | None, fanouts: tuple[int, ...],
                 *, replace: bool, reuse: bool) -> None:
        self.row_ptr, self.neighbors, self.edge_ids = row_ptr, neighbors, edge_ids
        self.fanouts = np.asarray(fanouts, dtype=np.int64)
        self.replace, self.reuse = replace, reuse
        self.table = np.full(row_ptr.numel() - 1, UNSEEN, dtype=np.int64)

    def sample(self, seeds: Tensor, generator: torch.Generator | None) -> list[Block]:
        rng_seed = int(torch.randint(1 << 32, (1,), generator=generator))
        sources, source_counts, edge_counts, local, owner, slots = sample_hops(
            self.row_ptr.numpy(), self.neighbors.numpy(), seeds.contiguous().numpy(), self.fanouts, self.reuse,
            self.replace, rng_seed, self.table)
        if edge_counts[0] == REPEATED_SEED:
            raise repeated_node_error(seeds)
        source_nodes = torch.from_numpy(sources)
        edge_index = torch.stack([torch.from_numpy(local), torch.from_numpy(owner)])
        slots = torch.from_numpy(slots)
        edge_ids = slots if self.edge_ids is None else self.edge_ids.index_select(0, slots)
        source_counts, edge_counts = source_counts.tolist(), edge_counts.tolist()
        blocks = []
        for hop in range(1, len(source_counts)):
            first = 0 if self.reuse else edge_counts[hop - 1]       # reusing: the edges of every hop so far
            edges = slice(first, edge_counts[hop])
            blocks.append(Block(source_nodes[:source_counts[hop]], source_counts[hop - 1], edge_index[:, edges],
                                edge_ids=edge_ids[edges]))
        return blocks[::-1]
