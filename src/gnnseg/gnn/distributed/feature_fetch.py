"""Rows of per-node tables from the ranks that own the nodes: requests of node ids, replies of rows.

Only owned rows are stored, so every rank answers for its own nodes. Training fetches input features through
the trainer's transport (collectives or RPC; the trainer's feature preprocessing, row normalization decided from
the whole graph at partitioning time, is applied by the owner as it reads); evaluation fetches the previous
layer's outputs of the halo in lock-step (:func:`fetch_owned_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from gnnseg.gnn.distributed.exchange import AllToAll, OwnerRequests, ask_in_lockstep, group_by_owner
from gnnseg.gnn.distributed.partition_store import PartitionStore


def _place(nodes: Tensor, order: Tensor, replies: Sequence[Tensor], width: int, dtype: torch.dtype) -> Tensor:
    rows = torch.empty((nodes.numel(), width), dtype=dtype)
    rows.index_copy_(0, order, torch.cat(list(replies)).to(dtype))
    return rows


def fetch_owned_rows(store: PartitionStore, exchange: AllToAll, nodes: Tensor, read_rows: Callable[[Tensor], Tensor],
                     width: int, dtype: torch.dtype = torch.float32, phase: str = "row") -> tuple[Tensor, int]:
    """``(rows (len(nodes), width), remote)``: row ``i`` is ``read_rows(local ids)`` on the rank owning
    ``nodes[i]``; ``remote`` counts the rows asked of other ranks. Every rank calls it the same number of
    times (with empty ``nodes`` when it needs nothing)."""
    order, requests, counts = group_by_owner(nodes, store.owner, exchange.world_size)
    replies = ask_in_lockstep(exchange, requests,
                              lambda ids: read_rows(store.local_index.index_select(0, ids).to(torch.int64)).to(dtype),
                              counts, phase)
    return _place(nodes, order, replies, width, dtype), nodes.numel() - counts[exchange.rank]


class FeatureFetcher:
    """``fetch(nodes) -> (len(nodes), F)`` float32 input features for global ids owned anywhere, over
    ``requests`` (whose ``features`` requests it answers). ``remote_rows`` counts the rows this rank asked
    other ranks for."""

    def __init__(self, store: PartitionStore, requests: OwnerRequests, *, normalize_rows: bool) -> None:
        self.store, self.requests, self.normalize_rows = store, requests, normalize_rows
        self.remote_rows = 0
        requests.answer("features", self.answer)

    @property
    def exchange(self) -> AllToAll:
        """The lock-step exchanges (evaluation)."""
        return self.requests.exchange

    def owned_rows(self, local: Tensor) -> Tensor:
        """Feature rows of owned nodes by local id, preprocessed as the trainer expects."""
        rows = self.store.x.index_select(0, local).to(torch.float32)
        if self.normalize_rows:
            sums = rows.sum(dim=1, keepdim=True)
            rows = rows / sums.masked_fill(sums == 0, 1.0)
        return rows

    def all_owned_rows(self) -> Tensor:
        """``(num_owned, F)``: every owned row, preprocessed; the memory map itself when there is nothing to do."""
        if not self.normalize_rows and self.store.x.dtype == torch.float32:
            return self.store.x
        return self.owned_rows(torch.arange(self.store.num_owned))

    def answer(self, nodes: Tensor) -> Tensor:
        """An owner's reply: the rows of ``nodes`` (global ids it owns)."""
        return self.owned_rows(self.store.local_index.index_select(0, nodes).to(torch.int64))

    def fetch(self, nodes: Tensor) -> Tensor:
        order, requests, counts = group_by_owner(nodes, self.store.owner, self.requests.world_size)
        replies = self.requests.ask("features", requests, reply_rows=counts, phase="feature")
        self.remote_rows += nodes.numel() - counts[self.requests.rank]
        return _place(nodes, order, replies, self.store.x.size(1), torch.float32)
