"""Uniform neighbour sampling over partitions: each rank expands its seeds and asks the owning ranks for the
neighbours of the nodes it does not own.

At every hop the nodes that draw neighbours are grouped by owner (the partition book) and sent to their owners
as one request each (collectives or RPC: :mod:`gnnseg.gnn.distributed.exchange`); each owner draws their
neighbours from its own CSR with the single-machine code (:func:`~gnnseg.gnn.sampling.neighbor.sample_slots`:
the same per-node distribution, every subset of ``f`` in-edges equally likely) and replies with the counts and
the neighbours' global ids. The blocks are then built by the single-machine assembly
(:func:`~gnnseg.gnn.sampling.neighbor.assemble_blocks`), so they follow the same conventions and both modes
(``reuse``) hold. A rank's own nodes take the same path, answered in place at no communication cost.

Draws are deterministic and the same over either transport: a request carries its own seed, drawn from the
asking rank's batch generator, so a reply does not depend on when or in which thread the owner answers it.
The draws differ from the single-machine sampler's (other generators), the distribution does not (tested by
chi-square). ``edge_ids`` are not set: partitions do not hold the graph's edge order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gnnseg.gnn.distributed.exchange import OwnerRequests, group_by_owner
from gnnseg.gnn.distributed.partition_store import PartitionStore
from gnnseg.gnn.sampling.blocks import Block, Generator, Relabeler, as_generator, check_seeds, check_sizes
from gnnseg.gnn.sampling.neighbor import assemble_blocks, sample_slots


class DistributedNeighborSampler:
    """:class:`~gnnseg.gnn.sampling.NeighborSampler` over a partitioned graph. Over the collectives every rank
    calls :meth:`sample` the same number of times (each call is a sequence of them); registers its answer to
    other ranks' requests with ``requests`` on construction.

    ``remote_nodes`` counts the drawing nodes this rank asked other ranks about (for the cost report).
    """

    def __init__(self, store: PartitionStore, fanouts: Sequence[int], requests: OwnerRequests, *,
                 replace: bool = False, reuse: bool = False) -> None:
        self.fanouts = check_sizes(fanouts, "fanouts")
        self.store, self.requests = store, requests
        self.replace, self.reuse = bool(replace), bool(reuse)
        self.relabel = Relabeler(store.num_nodes)
        self.global_ids = store.local_to_global
        self.remote_nodes = 0
        requests.answer("neighbours", self.answer)

    def __repr__(self) -> str:
        return (f"DistributedNeighborSampler(part={self.store.part}, fanouts={list(self.fanouts)}, "
                f"replace={self.replace}, reuse={self.reuse})")

    def sample(self, seeds: Tensor | Sequence[int], generator: Generator = None) -> list[Block]:
        """Blocks for the (unique) ``seeds`` (global ids, any owner), input layer first."""
        targets = check_seeds(seeds, self.store.num_nodes, unique=False)
        return assemble_blocks(targets, self.fanouts, self.reuse, self.relabel, self._draw, as_generator(generator))

    def answer(self, request: Tensor) -> Tensor:
        """An owner's reply to ``[seed, fanout, *nodes]`` (global ids it owns): the number of neighbours each node
        drew, then their global ids, in one int64 vector (empty for an empty request)."""
        if not request.numel():
            return request
        seed, fanout = request[:2].tolist()
        nodes = request[2:]
        store = self.store
        local = store.local_index.index_select(0, nodes).to(torch.int64)
        slots, owner = sample_slots(store.row_ptr, local, fanout, self.replace, torch.Generator().manual_seed(seed))
        sources = store.sources.index_select(0, slots).to(torch.int64)
        return torch.cat([torch.bincount(owner, minlength=nodes.numel()), self.global_ids.index_select(0, sources)])

    def _draw(self, drawing: Tensor, fanout: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor, None]:
        world = self.requests.world_size
        order, nodes, counts = group_by_owner(drawing, self.store.owner, world)
        self.remote_nodes += drawing.numel() - counts[self.requests.rank]
        seeds = torch.randint(0, 2**62, (world,), generator=generator).tolist()
        requests = [torch.cat([torch.tensor([seed, fanout]), block]) if block.numel() else block
                    for seed, block in zip(seeds, nodes)]
        replies = self.requests.ask("neighbours", requests, phase="neighbour")
        got_counts = [reply[:count] for reply, count in zip(replies, counts)]
        got_neighbors = [reply[count:] for reply, count in zip(replies, counts)]
        position = order.repeat_interleave(torch.cat(got_counts))        # which drawing node drew each edge
        regroup = torch.argsort(position, stable=True)                   # grouped by node, in drawing order
        return torch.cat(got_neighbors).index_select(0, regroup), position.index_select(0, regroup), None
