"""Uniform neighbour sampling over partitions: each rank expands its seeds and asks the owning ranks for the
neighbours of the nodes it does not own.

At every hop the nodes that draw neighbours are grouped by owner (the partition book) and sent to their owners
in one all-to-all; each owner draws their neighbours from its own CSR with the single-machine code
(:func:`~gnnseg.gnn.sampling.neighbor.sample_slots`: the same per-node distribution, every subset of ``f``
in-edges equally likely) and returns the counts and the neighbours' global ids in two more. The blocks are
then built by the single-machine assembly (:func:`~gnnseg.gnn.sampling.neighbor.assemble_blocks`), so they
follow the same conventions and both modes (``reuse``) hold. A rank's own nodes take the same path through
the loopback part of the exchange, which costs no communication.

Draws are deterministic: each rank answers requests with the generator of its own batch, in rank order.
The draws differ from the single-machine sampler's (another generator, another order), the distribution does
not (tested by chi-square). ``edge_ids`` are not set: partitions do not hold the graph's edge order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gnnseg.gnn.distributed.exchange import AllToAll, group_by_owner
from gnnseg.gnn.distributed.partition_store import PartitionStore
from gnnseg.gnn.sampling.blocks import Block, Generator, Relabeler, as_generator, check_seeds, check_sizes
from gnnseg.gnn.sampling.neighbor import assemble_blocks, sample_slots


class DistributedNeighborSampler:
    """:class:`~gnnseg.gnn.sampling.NeighborSampler` over a partitioned graph; every rank calls
    :meth:`sample` the same number of times (each call is a sequence of collectives).

    ``remote_nodes`` counts the drawing nodes this rank asked other ranks about (for the cost report).
    """

    def __init__(self, store: PartitionStore, fanouts: Sequence[int], exchange: AllToAll, *,
                 replace: bool = False, reuse: bool = False) -> None:
        self.fanouts = check_sizes(fanouts, "fanouts")
        self.store, self.exchange = store, exchange
        self.replace, self.reuse = bool(replace), bool(reuse)
        self.relabel = Relabeler(store.num_nodes)
        self.global_ids = store.local_to_global
        self.remote_nodes = 0

    def __repr__(self) -> str:
        return (f"DistributedNeighborSampler(part={self.store.part}, fanouts={list(self.fanouts)}, "
                f"replace={self.replace}, reuse={self.reuse})")

    def sample(self, seeds: Tensor | Sequence[int], generator: Generator = None) -> list[Block]:
        """Blocks for the (unique) ``seeds`` (global ids, any owner), input layer first."""
        targets = check_seeds(seeds, self.store.num_nodes, unique=False)
        return assemble_blocks(targets, self.fanouts, self.reuse, self.relabel, self._draw, as_generator(generator))

    def _draw(self, drawing: Tensor, fanout: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor, None]:
        store, exchange = self.store, self.exchange
        order, requests, counts = group_by_owner(drawing, store.owner, exchange.world_size)
        self.remote_nodes += drawing.numel() - counts[exchange.rank]
        asked = exchange.exchange(requests, phase="neighbour requests")
        reply_counts, reply_neighbors = [], []
        for nodes in asked:                                   # answer every rank, in rank order
            local = store.local_index.index_select(0, nodes).to(torch.int64)
            slots, owner = sample_slots(store.row_ptr, local, fanout, self.replace, generator)
            sources = store.sources.index_select(0, slots).to(torch.int64)
            reply_neighbors.append(self.global_ids.index_select(0, sources))
            reply_counts.append(torch.bincount(owner, minlength=nodes.numel()))
        got_counts = exchange.exchange(reply_counts, incoming_rows=counts, phase="neighbour replies")
        got_neighbors = exchange.exchange(reply_neighbors, incoming_rows=[int(c.sum()) for c in got_counts],
                                          phase="neighbour replies")
        position = order.repeat_interleave(torch.cat(got_counts))        # which drawing node drew each edge
        regroup = torch.argsort(position, stable=True)                   # grouped by node, in drawing order
        return torch.cat(got_neighbors).index_select(0, regroup), position.index_select(0, regroup), None
