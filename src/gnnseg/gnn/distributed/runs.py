"""``gnnseg gnn train --partitions DIR`` under ``torchrun``: one rank per partition, a run directory written by
rank 0, the same summary on every rank.

The process group is joined here, once every rank has started, with a collective timeout (``timeout_s``), so a rank
that stalls ends the others' collectives with an error instead of a hang; a rank that dies closes its connections and
the others fail at their next exchange. Either way every rank stops with one line naming the phase
(:class:`~gnnseg.gnn.distributed.exchange.RankLostError`). The run folder has the mini-batch trainer's files;
``model.pt`` names the partitions' source dataset, so ``gnnseg gnn eval`` re-scores it on one machine.

Requests to other partitions go over ``transport``: ``rpc`` (the default, measured the faster:
``docs/gnn.md``) or ``collectives``. The RPC agents meet at torchrun's store (``MASTER_ADDR:MASTER_PORT``, where
every rank is a client, as for the process group) or, for ranks started without torchrun's agent, at rank 0's
store there, which the agents share with the process group (``--rpc-port`` names another port, served by rank 0).
No second port is needed, so none can be taken by another program between the ranks' start and the agents' meeting.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from gnnseg.core import new_run, progress, save_checkpoint
from gnnseg.core.distributed import DistributedContext, distributed_context
from gnnseg.core.runs import RunDirectory, reopen_run
from gnnseg.gnn.distributed.exchange import AllToAll, CollectiveRequests, OwnerRequests, guarded
from gnnseg.gnn.distributed.partition_store import PartitionStore, read_partition_meta
from gnnseg.gnn.distributed.training import PartitionedResult, train_partitioned
from gnnseg.gnn.tasks.minibatch import _config_dict, check_resumable, minibatch_config, summarize_minibatch
from gnnseg.gnn.tasks.minibatch_runs import MODEL_FORMAT

DEFAULT_TIMEOUT_S = 600.0
ARRIVAL_GRACE_S = 120.0      # the least time ranks wait for each other to start
TRANSPORTS = ("rpc", "collectives")


def open_requests(transport: str, exchange: AllToAll, rpc_port: int | None = None) -> OwnerRequests:
    """The transport for requests to other partitions (alone, the collectives' loopback: nothing to talk to)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}; choose one of {', '.join(TRANSPORTS)}")
    if transport == "collectives" or exchange.world_size == 1:
        return CollectiveRequests(exchange)
    from gnnseg.gnn.distributed.rpc_requests import RpcRequests

    master_port = os.environ.get("MASTER_PORT")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and rpc_port is not None \
            and str(rpc_port) != master_port:
        raise ValueError("under torchrun the RPC agents meet at torchrun's own store (MASTER_PORT); leave "
                         "--rpc-port out")
    if rpc_port is None:       # the process group's store: torchrun's agent, or rank 0's, shared in-process
        if master_port is None:
            raise ValueError("the RPC transport needs --rpc-port or MASTER_PORT (the agents meet at the process "
                             "group's store, MASTER_ADDR:MASTER_PORT, by default)")
        rpc_port = int(master_port)
    return RpcRequests(exchange, os.environ.get("MASTER_ADDR", "127.0.0.1"), rpc_port)


def join_with_timeout(timeout_s: float) -> DistributedContext:
    """torchrun's process group (gloo) with a collective timeout; a single-process context without torchrun.

    Ranks start at different times (imports on a busy machine or a shared file system), and a rank that has not
    started yet has not stalled: every rank first waits for all of them at the rendezvous store for at least
    :data:`ARRIVAL_GRACE_S`, then joins the group, whose operations wait ``timeout_s``."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        arrival_s = max(timeout_s, ARRIVAL_GRACE_S)
        store = guarded("set-up", rank, arrival_s, lambda: _all_arrived(rank, world_size, arrival_s))
        store.set_timeout(datetime.timedelta(seconds=timeout_s))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return distributed_context(backend="gloo")


def _all_arrived(rank: int, world_size: int, wait_s: float) -> dist.Store:
    """The rendezvous store (torchrun's agent store, or rank 0's at ``MASTER_ADDR:MASTER_PORT``), once every rank has
    reached it; keys are per torchrun restart, so a restarted job waits again."""
    wait = datetime.timedelta(seconds=wait_s)
    store, _, _ = next(dist.rendezvous("env://", rank, world_size, timeout=wait))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store.set(f"gnnseg/arrived/{attempt}/{rank}", "1")
    store.wait([f"gnnseg/arrived/{attempt}/{other}" for other in range(world_size)], wait)
    return store


def _per_rank(values: list[float], exchange: AllToAll) -> list[list[float]]:
    """Every rank's ``values`` (rows in rank order)."""
    tensor = torch.tensor(values, dtype=torch.float64)
    if exchange.world_size == 1:
        return [values]
    gathered = [torch.empty_like(tensor) for _ in range(exchange.world_size)]
    guarded("the summary", exchange.rank, exchange.timeout_s, lambda: dist.all_gather(gathered, tensor))
    return [g.tolist() for g in gathered]


def run_partitioned_classification(partitions: str | os.PathLike, model: str | None, sampler: str | None, *,
                                   seeds: int = 1, first_seed: int = 0, runs_root: str | os.PathLike = "runs",
                                   overrides: dict[str, Any] | None = None,
                                   resume_run: str | os.PathLike | None = None,
                                   timeout_s: float = DEFAULT_TIMEOUT_S, transport: str = "rpc",
                                   rpc_port: int | None = None,
                                   show_progress: bool | None = None) -> dict[str, Any]:
    """Train ``seeds`` models over the partitions in ``partitions`` (one rank per partition) and return the
    mini-batch summary plus the exchanges per batch, every rank's peak RSS, ``run_dir`` and ``checkpoint``."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if not timeout_s > 0:
        raise ValueError(f"the communication timeout must be positive, got {timeout_s}")
    folder_in = Path(partitions).resolve()
    meta = read_partition_meta(folder_in)
    context = join_with_timeout(timeout_s)
    if context.world_size != meta["num_parts"]:
        raise ValueError(f"{folder_in} holds {meta['num_parts']} partitions but {context.world_size} processes "
                         f"were started; run one process per partition (torchrun --nproc_per_node ... with "
                         f"{meta['num_parts']} in all)")
    store = PartitionStore.open(folder_in, context.rank)
    exchange = AllToAll(context.rank, context.world_size, timeout_s)
    config = minibatch_config(model, sampler, meta["dataset"], **(overrides or {}))
    settings = {"model": config.model, "sampler": config.sampler, "dataset": meta["name"],
                "partitions": str(folder_in), "partition_identity": store.identity(), "seeds": seeds,
                "first_seed": first_seed, "world_size": context.world_size, "config": _config_dict(config)}
    run: RunDirectory | None = None
    if resume_run is not None:
        folder = Path(resume_run)
        check_resumable(folder, settings, config, what="settings or partitions")
        if context.is_main:
            run = reopen_run(folder)
    elif context.is_main:
        run = new_run("gnn-train", runs_root)
        run.save_config(settings)
    if context.enabled:
        shared = [str(run.path) if run is not None else None]
        guarded("set-up", context.rank, timeout_s, lambda: dist.broadcast_object_list(shared, src=0))
        folder = Path(shared[0])
    else:
        folder = run.path

    results: list[PartitionedResult] = []
    requests = open_requests(transport, exchange, rpc_port)
    finished = False
    try:
        for seed in progress(range(first_seed, first_seed + seeds), desc=f"{config.model} on {meta['name']}",
                             total=seeds, enabled=show_progress if context.is_main else False):
            checkpoint = folder / f"checkpoint_seed{seed}.pt"
            decision = [resume_run is not None and checkpoint.is_file()]
            if context.enabled:        # rank 0 decides: ranks that saw other files must not train from other epochs
                guarded("set-up", context.rank, timeout_s,
                        lambda shared=decision: dist.broadcast_object_list(shared, src=0))
            resume = bool(decision[0])
            results.append(train_partitioned(store, config, seed, requests, context, checkpoint=checkpoint,
                                             resume=resume, show_progress=show_progress))
            if context.is_main and run is not None:
                run.log_metrics(per_seed=[r.summary() for r in results])
        finished = True
    finally:
        requests.close(graceful=finished)       # after a failure, leave without waiting for the lost rank
    averaged = ("sampled_nodes_per_batch_mean", "hop1_nodes_per_batch", "remote_nodes_per_batch",
                "remote_feature_rows_per_batch", "bytes_sent_per_batch")
    per_rank = _per_rank([max(r.peak_rss_mb for r in results),
                          *(sum(r.summary()[key] for r in results) / len(results) for key in averaged)], exchange)
    best = max(results, key=lambda r: (r.val_acc, -r.seed))
    summary = {"model": config.model, "sampler": config.sampler, "dataset": meta["name"],
               **summarize_minibatch(results), "partitions": str(folder_in),
               "peak_rss_mb": max(row[0] for row in per_rank), "peak_rss_mb_per_rank": [row[0] for row in per_rank],
               **{key: sum(row[1 + index] for row in per_rank) / len(per_rank) for index, key in enumerate(averaged)},
               "exchange_rounds_per_batch": results[0].exchange_rounds_per_batch, "transport": requests.name,
               "edge_cut_fraction": meta["quality"]["edge_cut_fraction"]}
    model_path = folder / "model.pt"
    if context.is_main and run is not None:
        save_checkpoint({"format": MODEL_FORMAT, "model": config.model, "dataset": meta["dataset"], "split": None,
                         "split_seed": 0, "config": _config_dict(config), "in_channels": meta["num_features"],
                         "num_classes": meta["num_classes"], "seed": best.seed, "state_dict": best.state_dict,
                         "metrics": best.summary()}, model_path)
        run.log_metrics(summary=summary)
    return {**summary, "run_dir": str(folder), "checkpoint": str(model_path)}
