"""Mini-batch training over partitions: each rank holds one partition, samples and fetches across ranks,
and ``DistributedDataParallel`` keeps the weights identical.

**Seeds by ownership.** Rank ``r`` trains on the training nodes its partition owns, a fresh permutation per
epoch (generator seed from ``(seed, epoch, rank)``). ``batch_size`` is the *global* batch, the seeds of one step
over all ranks: an epoch has ``B = ceil(T / batch_size)`` steps for ``T`` training nodes, as in one process, and
rank ``r`` cuts its ``T_r`` nodes into ``B`` nearly equal batches (partitions balanced on training nodes make
them about ``batch_size / P``). A rank's loss is its sum over its seeds times ``world_size / (seeds of step b
over all ranks)``, so the gradient DDP averages is the gradient of the mean loss over the global batch, however
the seeds are spread, and a partitioned run follows one process's optimisation (same steps per epoch, same
batch): with whole neighbourhoods as fanouts and no dropout it computes what one process computes (tested).
(The replicated-graph DDP trainer in :mod:`gnnseg.gnn.tasks.minibatch` keeps ``batch_size`` per rank instead.)

Batches are drawn from generator seed ``f(seed, epoch, batch, rank)``; evaluation is exact and distributed
(:mod:`gnnseg.gnn.distributed.evaluation`); after every epoch rank 0 writes the state (model, optimizer,
every rank's torch RNG, history) atomically, and ``resume=True`` continues on the same partitions and ranks.
Communication failures end the job on every rank with one :class:`~gnnseg.gnn.distributed.exchange.RankLostError`.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from gnnseg.core import CheckpointError, load_checkpoint, progress, save_checkpoint, seed_everything
from gnnseg.core.distributed import DistributedContext
from gnnseg.gnn.distributed.distributed_sampler import DistributedNeighborSampler
from gnnseg.gnn.distributed.evaluation import evaluate_partitioned, local_neighborhood
from gnnseg.gnn.distributed.exchange import AllToAll, OwnerRequests, guarded
from gnnseg.gnn.distributed.feature_fetch import FeatureFetcher
from gnnseg.gnn.distributed.partition_store import PartitionStore
from gnnseg.gnn.tasks.minibatch import (
    SCORE_KEYS,
    MiniBatchConfig,
    MiniBatchResult,
    _config_dict,
    batch_generator_seed,
    record_evaluation,
    result_fields,
    same_run_settings,
)

CHECKPOINT_FORMAT = "gnnseg.partitioned_minibatch/1"


@dataclass
class PartitionedResult(MiniBatchResult):
    """:class:`MiniBatchResult` plus what crossed between ranks, per training batch of this rank."""

    hop1_nodes_per_batch: float
    remote_nodes_per_batch: float
    remote_feature_rows_per_batch: float
    exchange_rounds_per_batch: float
    bytes_sent_per_batch: float

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "hop1_nodes_per_batch": self.hop1_nodes_per_batch,
                "remote_nodes_per_batch": self.remote_nodes_per_batch,
                "remote_feature_rows_per_batch": self.remote_feature_rows_per_batch,
                "exchange_rounds_per_batch": self.exchange_rounds_per_batch,
                "bytes_sent_per_batch": self.bytes_sent_per_batch}


def batch_sizes(train_counts: list[int], batch_size: int) -> list[list[int]]:
    """Per rank, the sizes of its batches in an epoch: ``B = ceil(sum / batch_size)`` steps (the global batch
    is ``batch_size``), each rank's nodes cut into ``B`` nearly equal parts. ``ValueError`` when a rank owns
    fewer training nodes than there are steps."""
    batches = max(1, math.ceil(sum(train_counts) / batch_size))
    if min(train_counts) < batches:
        rank = train_counts.index(min(train_counts))
        raise ValueError(f"partition {rank} owns {min(train_counts)} training nodes, fewer than the {batches} "
                         f"steps per epoch ({sum(train_counts)} training nodes in batches of {batch_size}); "
                         f"raise the batch size or repartition (training nodes per partition: {train_counts})")
    return [[count // batches + (1 if b < count % batches else 0) for b in range(batches)] for count in train_counts]


def _all_gather_rows(tensor: Tensor, exchange: AllToAll, phase: str) -> Tensor:
    """``(world_size, *tensor.shape)``: every rank's ``tensor``."""
    if exchange.world_size == 1:
        return tensor.unsqueeze(0)
    gathered = [torch.empty_like(tensor) for _ in range(exchange.world_size)]
    guarded(phase, exchange.rank, exchange.timeout_s, lambda: dist.all_gather(gathered, tensor))
    return torch.stack(gathered)


def train_partitioned(store: PartitionStore, config: MiniBatchConfig, seed: int, requests: OwnerRequests,
                      context: DistributedContext, *, checkpoint: str | Path | None = None, resume: bool = False,
                      show_progress: bool | None = None) -> PartitionedResult:
    """Train one model with rank ``context.rank`` holding partition ``store`` (one rank per partition); other
    partitions' neighbours and features come over ``requests`` (collectives or RPC)."""
    if config.sampler != "neighbor":
        raise ValueError(f"partitioned training samples uniform neighbours; the {config.sampler} sampler needs "
                         f"the whole graph's importance distribution (use --sampler neighbor)")
    if config.num_workers:
        raise ValueError("partitioned training samples in the training process (its requests go to the other "
                         "ranks): leave --num-workers at 0")
    meta = store.meta
    exchange = requests.exchange
    world = exchange.world_size
    seed_everything(seed)
    model = config.build(meta["num_features"], meta["num_classes"])
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sampler = DistributedNeighborSampler(store, config.fanouts, requests, replace=config.replace,
                                         reuse=config.reuse_samples)
    normalize = config.row_normalize_features
    fetcher = FeatureFetcher(store, requests,
                             normalize_rows=meta["features_nonnegative"] if normalize is None else normalize)
    requests.ready()                                      # every rank answers before any rank asks
    neighborhood = local_neighborhood(store)
    train_nodes = store.split_nodes("train")
    counts = _all_gather_rows(torch.tensor([train_nodes.numel()]), exchange, "set-up").flatten().tolist()
    sizes = batch_sizes(counts, config.batch_size)
    global_batch = [sum(per_rank[b] for per_rank in sizes) for b in range(len(sizes[0]))]
    mine = sizes[context.rank]
    # the evaluation chunk budget is the cluster's: each of the P ranks computes chunks 1 / P the size, so a
    # rank's memory is 1 / P of one process's (the chunk, 256 wide, is ~1.5 GB at the default budget)
    eval_max_nodes, eval_max_edges = (max(1, budget // world) for budget in (config.eval_max_nodes,
                                                                               config.eval_max_edges))

    history: dict[str, list[float]] = {key: [] for key in ("epoch", "loss", "eval_epoch", *SCORE_KEYS)}
    state = {"epoch": 0, "best_epoch": -1, "best_val": -1.0, "best_scores": {}, "waited": 0, "stopped": False,
             "epoch_times_ms": [], "nodes": 0.0, "edges": 0.0, "batches": 0, "train_seconds": 0.0,
             "eval_seconds": 0.0, "hop1_nodes": 0.0, "remote_nodes": 0, "remote_rows": 0, "rounds": 0, "bytes": 0}
    best_state: dict[str, Tensor] | None = None
    checkpoint = None if checkpoint is None else Path(checkpoint)
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs the checkpoint file to continue from")
        saved = load_checkpoint(checkpoint, required_keys=("format", "config", "seed", "partitions", "model",
                                                            "optimizer", "rng", "history", "state", "best_state"))
        if saved["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{checkpoint} is a {saved['format']!r} checkpoint, not {CHECKPOINT_FORMAT!r}")
        if not same_run_settings(saved["config"], config) or saved["seed"] != seed or \
                saved["partitions"] != store.identity():
            raise CheckpointError(f"{checkpoint} was written by another run (config, seed {saved['seed']} or "
                                  f"partitions {saved['partitions']} differ); start a new run instead")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"][context.rank].clone())      # its own storage: set_rng_state needs it
        history, state, best_state = saved["history"], saved["state"], saved["best_state"]
    training_model: nn.Module = model
    if world > 1:                      # DDP broadcasts rank 0's weights and averages every gradient
        training_model = guarded("set-up", context.rank, exchange.timeout_s,
                                 lambda: torch.nn.parallel.DistributedDataParallel(model))
    if config.compile:
        training_model = torch.compile(training_model, dynamic=True)

    first_epoch = state["epoch"]
    last_epoch = first_epoch if state["stopped"] else config.epochs
    total = (last_epoch - first_epoch) * len(mine)
    bar = progress(range(total), desc=f"{config.model} on partition {store.part}, seed {seed}", total=total,
                   enabled=show_progress if context.is_main else False)
    steps = iter(bar)
    for epoch in range(first_epoch, last_epoch):
        epoch_began = time.perf_counter()
        generator = torch.Generator().manual_seed(batch_generator_seed(seed, epoch, 0, context.rank, purpose=0))
        shard = train_nodes.index_select(0, torch.randperm(train_nodes.numel(), generator=generator))
        loss_sum = torch.zeros(2, dtype=torch.float64)                  # summed loss, seeds
        before = (sampler.remote_nodes, fetcher.remote_rows, *requests.stats.snapshot()[:2])
        for batch, seeds in enumerate(shard.split(mine)):
            next(steps, None)
            model.train()
            blocks = sampler.sample(seeds, generator=batch_generator_seed(seed, epoch, batch, context.rank))
            x = fetcher.fetch(blocks[0].source_nodes)
            y = store.y.index_select(0, store.local_index.index_select(0, seeds).to(torch.int64)).to(torch.int64)
            optimizer.zero_grad(set_to_none=True)
            logits = guarded("the model's forward pass (DDP)", context.rank, exchange.timeout_s,
                             partial(training_model, x, blocks))
            summed = F.cross_entropy(logits, y, reduction="sum")
            scaled = summed * (world / global_batch[batch])        # DDP's average: the global batch's mean
            guarded("the gradient all-reduce", context.rank, exchange.timeout_s, scaled.backward)
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            loss_sum += torch.tensor([float(summed.detach()), seeds.numel()], dtype=torch.float64)
            state["nodes"] += blocks[0].num_sources
            state["edges"] += sum(block.num_edges for block in blocks)
            state["hop1_nodes"] += blocks[-1].num_sources
            state["batches"] += 1
        after = (sampler.remote_nodes, fetcher.remote_rows, *requests.stats.snapshot()[:2])
        for key, old, new in zip(("remote_nodes", "remote_rows", "rounds", "bytes"), before, after):
            state[key] += new - old
        elapsed = time.perf_counter() - epoch_began
        if world > 1:
            guarded("the epoch's loss", context.rank, exchange.timeout_s, partial(dist.all_reduce, loss_sum))
        state["epoch_times_ms"].append(elapsed * 1e3)
        state["train_seconds"] += elapsed
        history["epoch"].append(epoch)
        history["loss"].append(float(loss_sum[0] / loss_sum[1]))
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
            began = time.perf_counter()
            scores = evaluate_partitioned(model, fetcher, neighborhood, max_nodes=eval_max_nodes,
                                          max_edges=eval_max_edges)
            state["eval_seconds"] += time.perf_counter() - began
            if record_evaluation(state, history, scores, epoch, "val_acc" in scores, config.patience):
                best_state = copy.deepcopy(model.state_dict())
        state["epoch"] = epoch + 1
        if checkpoint is not None:
            rng = _all_gather_rows(torch.get_rng_state(), exchange, "checkpoint")
            if context.is_main:
                save_checkpoint({"format": CHECKPOINT_FORMAT, "config": _config_dict(config), "seed": seed,
                                 "partitions": store.identity(), "model": model.state_dict(),
                                 "optimizer": optimizer.state_dict(), "rng": rng, "history": history,
                                 "state": state, "best_state": best_state}, checkpoint)
        if state["stopped"]:
            break
    for _ in steps:
        pass
    fields = result_fields(seed, state, history, best_state, world)
    batches = max(state["batches"], 1)
    return PartitionedResult(
        **fields, hop1_nodes_per_batch=state["hop1_nodes"] / batches,
        remote_nodes_per_batch=state["remote_nodes"] / batches,
        remote_feature_rows_per_batch=state["remote_rows"] / batches,
        exchange_rounds_per_batch=state["rounds"] / batches, bytes_sent_per_batch=state["bytes"] / batches)

