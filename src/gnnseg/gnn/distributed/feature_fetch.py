"""Rows of per-node tables from the ranks that own the nodes: one all-to-all of node ids, one of rows.

Only owned rows are stored, so every rank answers for its own nodes. Training fetches input features this
way (the trainer's feature preprocessing, row normalization decided from the whole graph at partitioning
time, is applied by the owner as it reads); evaluation fetches the previous layer's outputs of the halo.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from gnnseg.gnn.distributed.exchange import AllToAll, group_by_owner
from gnnseg.gnn.distributed.partition_store import PartitionStore


def fetch_owned_rows(store: PartitionStore, exchange: AllToAll, nodes: Tensor, read_rows: Callable[[Tensor], Tensor],
                     width: int, dtype: torch.dtype = torch.float32, phase: str = "row") -> tuple[Tensor, int]:
    """``(rows (len(nodes), width), remote)``: row ``i`` is ``read_rows(local ids)`` on the rank owning
    ``nodes[i]``; ``remote`` counts the rows asked of other ranks. Every rank calls it the same number of
    times (with empty ``nodes`` when it needs nothing)."""
    order, requests, counts = group_by_owner(nodes, store.owner, exchange.world_size)
    asked = exchange.exchange(requests, phase=f"{phase} requests")
    replies = [read_rows(store.local_index.index_select(0, ids).to(torch.int64)).to(dtype) for ids in asked]
    got = exchange.exchange(replies, incoming_rows=counts, phase=f"{phase} replies")
    rows = torch.empty((nodes.numel(), width), dtype=dtype)
    rows.index_copy_(0, order, torch.cat(got))
    return rows, nodes.numel() - counts[exchange.rank]


class FeatureFetcher:
    """``fetch(nodes) -> (len(nodes), F)`` float32 input features for global ids owned anywhere; every rank
    calls it the same number of times. ``remote_rows`` counts the rows this rank asked other ranks for."""

    def __init__(self, store: PartitionStore, exchange: AllToAll, *, normalize_rows: bool) -> None:
        self.store, self.exchange, self.normalize_rows = store, exchange, normalize_rows
        self.remote_rows = 0

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

    def fetch(self, nodes: Tensor) -> Tensor:
        rows, remote = fetch_owned_rows(self.store, self.exchange, nodes, self.owned_rows, self.store.x.size(1),
                                        phase="feature")
        self.remote_rows += remote
        return rows
