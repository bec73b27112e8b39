"""Exact layer-wise evaluation over partitions: each rank computes every layer for the nodes it owns, over
their whole in-neighbourhoods, fetching the previous layer's rows of the halo nodes each chunk needs from
their owners.

This is :meth:`~gnnseg.gnn.models.StackedGNN.layerwise_inference` cut by ownership: the same chunks
(:class:`~gnnseg.gnn.sampling.blocks.FullNeighborhood`, budgeted in nodes and edges) and the same
:func:`~gnnseg.gnn.models.apply_on_block` per chunk. A rank keeps only its own nodes' layer outputs
``(n_k, F_l)``; halo rows come per chunk (ranks take part in as many rounds as the rank with the most chunks,
with empty requests when done); the trainer gives each rank ``1 / P`` of the chunk budget, so a rank's memory
is ``1 / P`` of one process's. Scores are sums over
each rank's owned nodes, summed over the ranks: every rank gets the same numbers, equal to the single-machine
evaluation up to float rounding.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from gnnseg.gnn import models, ops
from gnnseg.gnn.distributed.exchange import guarded
from gnnseg.gnn.distributed.feature_fetch import FeatureFetcher, fetch_owned_rows
from gnnseg.gnn.distributed.partition import SPLIT_CODES
from gnnseg.gnn.distributed.partition_store import PartitionStore
from gnnseg.gnn.sampling.blocks import FullNeighborhood


def local_neighborhood(store: PartitionStore) -> FullNeighborhood:
    """The owned nodes' whole in-neighbourhoods over local ids (the halo as rows without edges)."""
    row_ptr = store.row_ptr.to(torch.int64)
    padded = torch.cat([row_ptr, row_ptr[-1:].expand(store.halo.numel())])
    return FullNeighborhood(padded, store.sources)


def _most_over_ranks(value: int, fetcher: FeatureFetcher) -> int:
    exchange = fetcher.exchange
    if exchange.world_size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.int64)
    guarded("evaluation", exchange.rank, exchange.timeout_s, partial(dist.all_reduce, tensor, op=dist.ReduceOp.MAX))
    return int(tensor)


@torch.no_grad()
def partitioned_logits(model: models.StackedGNN, fetcher: FeatureFetcher, neighborhood: FullNeighborhood, *,
                       max_nodes: int, max_edges: int) -> Tensor:
    """``(num_owned, C)``: the model's exact outputs for this rank's nodes (eval mode; every rank calls it)."""
    store, exchange = fetcher.store, fetcher.exchange
    owned_count = store.num_owned
    halo = store.halo.to(torch.int64)
    owned = torch.arange(owned_count)
    rounds = _most_over_ranks(neighborhood.num_chunks(owned, max_nodes, max_edges), fetcher)
    was_training = model.training
    model.eval()
    try:
        h = fetcher.all_owned_rows()
        for position, layer in enumerate(model.layers):
            if layer.rowwise:
                h = model._after(position, layer(ops.dense(h)))
                continue
            chunks = neighborhood.chunks(owned, max_nodes=max_nodes, max_edges=max_edges)
            out = None
            for _ in range(rounds):
                start, stop, block = next(chunks, (0, 0, None))
                sources = torch.zeros(0, dtype=torch.int64) if block is None else block.source_nodes
                remote = sources >= owned_count
                halo_rows, _ = fetch_owned_rows(store, exchange, halo.index_select(0, sources[remote] - owned_count),
                                                partial(torch.index_select, h, 0), h.size(1), h.dtype,
                                                phase="halo row")
                if block is None:
                    continue
                inputs = h.new_empty((sources.numel(), h.size(1)))
                inputs[~remote] = h.index_select(0, sources[~remote])
                inputs[remote] = halo_rows
                values = model._after(position, models.apply_on_block(layer, inputs, block))
                if out is None:
                    out = values.new_empty((owned_count, values.size(1)))
                out[start:stop] = values
            h = out
        return h
    finally:
        model.train(was_training)


def evaluate_partitioned(model: models.StackedGNN, fetcher: FeatureFetcher, neighborhood: FullNeighborhood, *,
                         max_nodes: int, max_edges: int) -> dict[str, float]:
    """Loss and accuracy of every split over the whole graph (the same on every rank)."""
    store, exchange = fetcher.store, fetcher.exchange
    logits = partitioned_logits(model, fetcher, neighborhood, max_nodes=max_nodes, max_edges=max_edges)
    labels = store.y.to(torch.int64)
    sums = torch.zeros(3 * len(SPLIT_CODES), dtype=torch.float64)
    for index, code in enumerate(SPLIT_CODES.values()):
        rows = (store.split == code).nonzero().flatten()
        if rows.numel():
            sums[3 * index] = float(F.cross_entropy(logits[rows], labels[rows], reduction="sum"))
            sums[3 * index + 1] = float((logits[rows].argmax(-1) == labels[rows]).sum())
            sums[3 * index + 2] = rows.numel()
    if exchange.world_size > 1:
        guarded("evaluation", exchange.rank, exchange.timeout_s, partial(dist.all_reduce, sums))
    scores = {}
    for index, split in enumerate(SPLIT_CODES):
        loss, correct, count = sums[3 * index:3 * index + 3].tolist()
        if count:
            scores[f"{split}_loss"], scores[f"{split}_acc"] = loss / count, correct / count
    return scores
