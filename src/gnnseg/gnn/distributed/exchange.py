"""Variable-size all-to-all exchanges between the ranks, the one way partitions talk to each other.

Every remote operation (neighbour requests, feature fetch, halo rows in evaluation) is the same pattern: each
rank has a list of row blocks, one per destination rank, and receives one block from every rank. Collectives
over ``gloo`` make this deterministic and hang-free: every rank takes part in every exchange in the same order,
and a rank that dies or stalls ends the others' exchange with an error (connection closed, or the process
group's timeout) instead of a hang. :class:`ExchangeStats` counts the rounds and the bytes that left the rank,
the figures the cost model in ``docs/gnn.md`` starts from.

``torch.distributed.rpc`` lets an owner answer requests without taking part in a collective. Measured on one
host (``benchmarks/gnn_distributed_transport.py``, 4 ranks on 2 cores): a fetch of 1,000 / 14,000 feature rows
took 6.7 / 64 ms by these collectives and 3.8 / 19 ms by RPC, whose TensorPipe agent moves tensors through shared
memory between processes of one host; across machines both go through TCP and the comparison is still to be made.
The trainer keeps the collectives: every rank takes part in every exchange in the same order, so draws are
deterministic, a lost rank is detected at the next exchange, and DDP shares the process group.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")


class RankLostError(RuntimeError):
    """Another rank died or stalled: the distributed job cannot continue (one line, naming the phase)."""


def guarded(phase: str, rank: int, timeout_s: float | None, action: Callable[[], T]) -> T:
    """Run ``action`` (which talks to the other ranks); a communication failure becomes one
    :class:`RankLostError` line naming this rank, the phase and how long it waited."""
    began = time.monotonic()
    try:
        return action()
    except RuntimeError as error:
        if isinstance(error, RankLostError):
            raise
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        first = first.split(". ")[0]                              # gloo appends advice after the cause
        limit = f"the {timeout_s:.0f} s collective timeout" if timeout_s else "the collective timeout"
        raise RankLostError(f"rank {rank} lost contact with the other ranks during {phase} after "
                            f"{time.monotonic() - began:.1f} s (a rank died, or stalled beyond {limit}); "
                            f"the job stops: {first[:300]}") from None


@dataclass
class ExchangeStats:
    """Rounds of all-to-all and what left this rank for other ranks (bytes, rows)."""

    rounds: int = 0
    bytes_sent: int = 0
    rows_sent: int = 0

    def snapshot(self) -> tuple[int, int, int]:
        return self.rounds, self.bytes_sent, self.rows_sent


class AllToAll:
    """``exchange(outgoing) -> incoming``: ``outgoing[r]`` (rows for rank ``r``) goes to rank ``r``, and
    ``incoming[r]`` is what rank ``r`` sent here. All blocks of one call share dtype and trailing shape. Alone
    (``world_size == 1``) it hands the block back. ``incoming_rows``, when the caller knows them, saves the
    round that exchanges the sizes."""

    def __init__(self, rank: int, world_size: int, timeout_s: float | None = None) -> None:
        self.rank, self.world_size, self.timeout_s = rank, world_size, timeout_s
        self.stats = ExchangeStats()

    def exchange(self, outgoing: Sequence[Tensor], incoming_rows: Sequence[int] | None = None,
                 phase: str = "an exchange") -> list[Tensor]:
        if len(outgoing) != self.world_size:
            raise ValueError(f"exchange needs one block per rank ({self.world_size}), got {len(outgoing)}")
        if self.world_size == 1:
            return [outgoing[0]]
        return guarded(phase, self.rank, self.timeout_s, lambda: self._exchange(outgoing, incoming_rows))

    def _exchange(self, outgoing: Sequence[Tensor], incoming_rows: Sequence[int] | None) -> list[Tensor]:
        send_rows = [int(block.size(0)) for block in outgoing]
        if incoming_rows is None:
            received = torch.empty(self.world_size, dtype=torch.int64)
            dist.all_to_all_single(received, torch.tensor(send_rows, dtype=torch.int64))
            incoming_rows = received.tolist()
            self.stats.rounds += 1
            self.stats.bytes_sent += 8 * (self.world_size - 1)
        payload = torch.cat([block.contiguous() for block in outgoing])
        incoming = payload.new_empty((sum(incoming_rows), *payload.shape[1:]))
        dist.all_to_all_single(incoming, payload, output_split_sizes=list(incoming_rows),
                               input_split_sizes=send_rows)
        row_bytes = payload.element_size() * math.prod(payload.shape[1:])
        remote_rows = sum(send_rows) - send_rows[self.rank]
        self.stats.rounds += 1
        self.stats.rows_sent += remote_rows
        self.stats.bytes_sent += remote_rows * row_bytes
        return list(incoming.split(list(incoming_rows)))


def group_by_owner(nodes: Tensor, owner: Tensor, world_size: int) -> tuple[Tensor, list[Tensor], list[int]]:
    """``(order, blocks, counts)``: ``nodes[order]`` grouped by owning rank (stable), ``blocks[r]`` the nodes
    rank ``r`` owns (in their order in ``nodes``), ``counts[r]`` how many."""
    owners = owner.index_select(0, nodes).to(torch.int64)
    order = torch.argsort(owners, stable=True)
    counts = torch.bincount(owners, minlength=world_size).tolist()
    return order, list(nodes.index_select(0, order).split(counts)), counts
