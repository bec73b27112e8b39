"""Requests to the ranks that own nodes over ``torch.distributed.rpc``: an owner answers as soon as a request
arrives, without taking part in a collective.

:class:`RpcRequests` has the interface of :class:`~gnnseg.gnn.distributed.exchange.CollectiveRequests`
(``answer`` / ``ready`` / ``ask`` / ``close``). ``ask`` sends one ``rpc_async`` to each other owner with a
non-empty request and waits for them together; the owner's TensorPipe agent runs the registered handler in one
of its threads and sends the reply back. Against the collectives this saves the size rounds and the lock-step
(a rank waits for its owners, not for the slowest rank). The agent uses TensorPipe's TCP transport (libuv): its
shared-memory transport polls, and ranks that share cores lose the time it burns.

The handlers must give the same reply whichever thread runs them and whenever: the trainer's are read-only
(owned feature rows; neighbour draws seeded by the request itself). Evaluation stays on the collectives: its
requests read a layer's outputs, which exist only once every rank has computed that layer.

The agents meet at ``MASTER_ADDR:rpc_port`` (:func:`~gnnseg.gnn.distributed.runs.open_requests` chooses it); a
rank that dies closes its pipes, and the others' pending requests fail at once, a rank that stalls makes them fail
at ``timeout_s``: either way :func:`~gnnseg.gnn.distributed.exchange.guarded` turns it into one line. An owner's own
failure comes back as one :class:`OwnerError` line.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import partial

import torch.distributed as dist
import torch.distributed.rpc as rpc
from torch import Tensor

from gnnseg.gnn.distributed.exchange import AllToAll, Answer, ExchangeStats, RanksOfExchange, guarded

_HANDLERS: dict[str, Answer] = {}          # what this process answers (the RPC threads look them up here)
_SERVED = ExchangeStats()                  # replies this process sent to other ranks
_SERVED_LOCK = threading.Lock()


def _wait(future) -> Tensor:
    """The reply of ``future``. An owner's :class:`OwnerError` comes back with the remote traceback in its text: it is
    raised again as its one line; transport failures stay RuntimeErrors for ``guarded``."""
    try:
        return future.wait()
    except Exception as error:
        text = str(error)
        if not isinstance(error, OwnerError) and "could not answer a" not in text:
            raise
        line = next((part for part in text.splitlines() if "could not answer a" in part), text)
        raise OwnerError(line[line.find("rank "):].strip().rstrip("')\"")) from None


def worker_name(rank: int) -> str:
    return f"gnnseg-rank{rank}"


class OwnerError(ValueError):
    """A request the owner could not answer (a bug or bad data there, not a lost rank): one line, naming the owner."""


def serve_request(kind: str, request: Tensor) -> Tensor:
    """The RPC entry point, run on the owner: the reply of its ``kind`` handler (counted as sent). A failure of the
    handler itself comes back to the asking rank as one :class:`OwnerError` line (not as a lost rank)."""
    try:
        reply = _HANDLERS[kind](request)
    except Exception as error:        # any handler failure: the asking rank reports it, one line
        first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise OwnerError(f"rank {rpc.get_worker_info().id} could not answer a {kind} request: "
                         f"{type(error).__name__}: {first[:300]}") from None
    with _SERVED_LOCK:
        _SERVED.rows_sent += int(reply.size(0)) if reply.dim() else 1
        _SERVED.bytes_sent += reply.element_size() * reply.numel()
    return reply


class RpcRequests(RanksOfExchange):
    """Requests answered by their owners' RPC threads (see the module text). Joins the RPC group on
    construction: every rank constructs it together, after the process group."""

    name = "rpc"

    def __init__(self, exchange: AllToAll, master_addr: str, rpc_port: int, threads: int = 4) -> None:
        super().__init__(exchange)
        self._asked = ExchangeStats()
        timeout = exchange.timeout_s or rpc.constants.DEFAULT_RPC_TIMEOUT_SEC
        # TensorPipe's shared-memory transport polls: each idle agent burns about half a core (measured: 3.8-4.5
        # CPU-seconds per 8 idle seconds per rank), which ranks sharing cores pay in every step; libuv's TCP
        # transport waits in epoll (0.00 s)
        options = rpc.TensorPipeRpcBackendOptions(init_method=f"tcp://{master_addr}:{rpc_port}",
                                                  num_worker_threads=threads, rpc_timeout=timeout,
                                                  _transports=["uv"], _channels=["basic"])
        guarded("the RPC set-up", self.rank, exchange.timeout_s,
                lambda: rpc.init_rpc(worker_name(self.rank), rank=self.rank, world_size=self.world_size,
                                     rpc_backend_options=options))

    @property
    def stats(self) -> ExchangeStats:
        """Rounds this rank asked in, and what left it: its requests plus the replies its threads sent."""
        with _SERVED_LOCK:
            return ExchangeStats(rounds=self._asked.rounds, bytes_sent=self._asked.bytes_sent + _SERVED.bytes_sent,
                                 rows_sent=self._asked.rows_sent + _SERVED.rows_sent)

    def answer(self, kind: str, handler: Answer) -> None:
        _HANDLERS[kind] = handler

    def ready(self) -> None:
        """Wait until every rank has registered its handlers (no request may reach an owner before)."""
        guarded("the RPC set-up", self.rank, self.exchange.timeout_s, dist.barrier)

    def ask(self, kind: str, requests: Sequence[Tensor], reply_rows: Sequence[int] | None = None,
            phase: str = "a request") -> list[Tensor]:
        """Every owner's reply to ``requests`` (``reply_rows`` is not needed: replies carry their size)."""
        if len(requests) != self.world_size:
            raise ValueError(f"ask needs one request per rank ({self.world_size}), got {len(requests)}")
        remote = [rank for rank, request in enumerate(requests) if rank != self.rank and request.numel()]
        pending = {rank: rpc.rpc_async(worker_name(rank), serve_request, args=(kind, requests[rank]))
                   for rank in remote}
        handler = _HANDLERS[kind]
        replies = [None if rank in pending else handler(request) for rank, request in enumerate(requests)]
        if pending:
            self._asked.rounds += 1
            for rank in remote:
                self._asked.rows_sent += int(requests[rank].size(0))
                self._asked.bytes_sent += requests[rank].element_size() * requests[rank].numel()
            for rank, future in pending.items():
                replies[rank] = guarded(phase, self.rank, self.exchange.timeout_s, partial(_wait, future))
        return replies

    def close(self, graceful: bool = True) -> None:
        """Leave the RPC group: ``graceful`` waits, at most the communication timeout, until every rank has no
        request left to answer (all ranks call it); after a failure, ``graceful=False`` leaves at once."""
        try:
            if graceful:
                timeout = self.exchange.timeout_s or rpc.constants.DEFAULT_RPC_TIMEOUT_SEC
                guarded("the RPC shutdown", self.rank, self.exchange.timeout_s,
                        partial(rpc.shutdown, graceful=True, timeout=timeout))
            else:
                rpc.shutdown(graceful=False)
        finally:
            _HANDLERS.clear()
            with _SERVED_LOCK:
                _SERVED.rounds = _SERVED.rows_sent = _SERVED.bytes_sent = 0
