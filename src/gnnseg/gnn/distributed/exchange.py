"""Variable-size all-to-all exchanges between the ranks, and requests to the ranks that own nodes answered by them.

Every remote operation (neighbour requests, feature fetch, halo rows in evaluation) is the same pattern: each
rank has a list of requests, one per owning rank, and gets one reply from every owner. :class:`AllToAll` moves
row blocks between all ranks in one collective over ``gloo``: deterministic and hang-free, every rank takes part
in every exchange in the same order, and a rank that dies or stalls ends the others' exchange with an error
(connection closed, or the process group's timeout) instead of a hang. :class:`CollectiveRequests` answers
requests with two such exchanges (requests out, replies back), the lock-step transport; its twin over
``torch.distributed.rpc`` is :class:`~gnnseg.gnn.distributed.rpc_requests.RpcRequests`, where an owner answers
whenever a request arrives. :class:`ExchangeStats` counts the rounds and the bytes that left the rank, the figures
the cost model in ``docs/gnn.md`` starts from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

T = TypeVar("T")


class RankLostError(RuntimeError):
    """Another rank died or stalled: the distributed job cannot continue (one line, naming the phase)."""


def guarded(phase: str, rank: int, timeout_s: float | None, action: Callable[[], T]) -> T:
    """Run ``action`` (which talks to the other ranks); a communication failure (gloo's or RPC's) becomes one
    :class:`RankLostError` line naming this rank, the phase and how long it waited."""
    began = time.monotonic()
    try:
        return action()
    except RuntimeError as error:
        if isinstance(error, RankLostError):
            raise
        first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        first = first.split(". ")[0]                              # gloo appends advice after the cause
        limit = f"the {timeout_s:.0f} s communication timeout" if timeout_s else "the communication timeout"
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


Answer = Callable[[Tensor], Tensor]


class OwnerRequests(Protocol):
    """A transport for requests to the ranks that own nodes (:class:`CollectiveRequests` or
    :class:`~gnnseg.gnn.distributed.rpc_requests.RpcRequests`)."""

    name: str
    exchange: AllToAll          # the lock-step exchanges, for what only the collectives can do (evaluation)

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    @property
    def stats(self) -> ExchangeStats: ...

    def answer(self, kind: str, handler: Answer) -> None:
        """Register how this rank answers requests of ``kind``."""

    def ready(self) -> None:
        """Return once every rank has registered its handlers."""

    def ask(self, kind: str, requests: Sequence[Tensor], reply_rows: Sequence[int] | None = None,
            phase: str = "a request") -> list[Tensor]:
        """``requests[r]`` to rank ``r``; every rank's reply, in rank order."""

    def close(self, graceful: bool = True) -> None:
        """Release what the transport holds."""


class RanksOfExchange:
    """What both transports take from the lock-step exchange they are built beside: this rank and the world size."""

    def __init__(self, exchange: AllToAll) -> None:
        self.exchange = exchange

    @property
    def rank(self) -> int:
        return self.exchange.rank

    @property
    def world_size(self) -> int:
        return self.exchange.world_size


class CollectiveRequests(RanksOfExchange):
    """Requests to the owning ranks in lock-step: ``ask(kind, requests)`` sends ``requests[r]`` to rank ``r`` and
    returns every rank's reply, computed there by the handler registered with ``answer(kind, handler)``. Every
    rank calls ``ask`` the same number of times, in the same order (with empty requests when it needs nothing):
    one exchange of requests, one of replies (``reply_rows``, when the caller knows them, saves a size round)."""

    name = "collectives"

    def __init__(self, exchange: AllToAll) -> None:
        super().__init__(exchange)
        self.handlers: dict[str, Answer] = {}

    @property
    def stats(self) -> ExchangeStats:
        return self.exchange.stats

    def answer(self, kind: str, handler: Answer) -> None:
        self.handlers[kind] = handler

    def ready(self) -> None:
        """Nothing to wait for: a request is answered inside the collective that carries it."""

    def ask(self, kind: str, requests: Sequence[Tensor], reply_rows: Sequence[int] | None = None,
            phase: str = "a request") -> list[Tensor]:
        return ask_in_lockstep(self.exchange, requests, self.handlers[kind], reply_rows, phase)

    def close(self, graceful: bool = True) -> None:
        """Nothing to release: the process group is the caller's."""


def ask_in_lockstep(exchange: AllToAll, requests: Sequence[Tensor], handler: Answer,
                    reply_rows: Sequence[int] | None, phase: str) -> list[Tensor]:
    """Every rank's reply to ``requests``: requests exchanged, answered by ``handler`` on their owner, replies
    exchanged back (every rank calls it together)."""
    asked = exchange.exchange(requests, phase=f"{phase} requests")
    return exchange.exchange([handler(request) for request in asked], incoming_rows=reply_rows,
                             phase=f"{phase} replies")
