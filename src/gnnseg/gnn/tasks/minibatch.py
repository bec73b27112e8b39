"""Mini-batch node classification on sampled blocks: one machine, DataLoader workers, or many processes.

One epoch is one pass over the training nodes in seed batches of ``batch_size`` (a fresh permutation per
epoch). Every batch is sampled by the configured sampler (uniform neighbours, FastGCN or LADIES) from its
own generator seed, derived from ``(seed, epoch, batch, rank)`` alone, so the blocks, and with them the whole
run, do not depend on how many DataLoader worker processes sample them (``num_workers = 0`` samples in the
training process; more workers sample ahead, ``prefetch_factor`` batches each). The workers also gather the
batch's input features and labels, so the training process only computes.

Evaluation is exact: after an epoch the model runs layer by layer over every node's whole neighbourhood
(:meth:`gnnseg.gnn.models.StackedGNN.layerwise_inference`, chunked, memory bounded by the chunk sizes),
the estimate the sampler's blocks are unbiased for. Training stops after ``patience`` epochs without a
better validation accuracy; the reported scores are those of the epoch with the best validation accuracy.

After every epoch the state is written atomically to ``checkpoint`` (model, optimizer, torch RNG, history,
best model, stopping state; loaded with ``weights_only=True``), and ``resume=True`` continues from it with the
same result as an uninterrupted run.

**Distributed data parallel.** Under ``torchrun`` (see :mod:`gnnseg.core.distributed`) every rank builds the
same model from the same seed (and takes rank 0's weights by broadcast), and each epoch's permutation of the
training nodes, the same on every rank, is cut into ``world_size`` disjoint equal shards (at most
``world_size - 1`` nodes of an epoch are left out, different ones each epoch): rank ``r`` samples and trains on
shard ``r``. ``DistributedDataParallel`` averages the gradients, so the ranks' parameters stay identical.
Rank 0 evaluates and writes checkpoints; the scores reach the other ranks by broadcast, so every rank stops
at the same epoch. Everything runs on the CPU (the process group uses ``gloo``); placing models and blocks on
GPUs is not implemented here.

Presets (``PRESETS``; sources in ``docs/gnn.md``):

* ``sage`` — GraphSAGE, Hamilton et al. 2017 and ``williamleif/GraphSAGE/graphsage/supervised_train.py``:
  K = 2, fanouts 25 and 10, batch 512, Adam lr 0.01, no dropout or weight decay, 10 epochs; width 256 (the
  reference's 2 x 128 concatenation).
* ``fastgcn`` / ``ladies`` — ``acbull/LADIES/pytorch_ladies.py``: 5 GCN layers of 256 with ELU, 64 nodes
  sampled per layer, batch 512, dropout 0.2 (0.5 before the classifier), Adam lr 1e-3, gradient norm clipped
  at 0.2, early stopping after 200 batches without a better validation F1.
"""

from __future__ import annotations

import copy
import json
import os
import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnseg.core import (
    CheckpointError,
    load_checkpoint,
    progress,
    save_checkpoint,
    seed_everything,
)
from gnnseg.core.distributed import DistributedContext, distributed_context
from gnnseg.gnn import models, ops
from gnnseg.gnn.graph import Graph, GraphLike
from gnnseg.gnn.sampling import FastGCNSampler, LADIESSampler, NeighborSampler
from gnnseg.gnn.sampling.blocks import Block, check_sizes
from gnnseg.gnn.sampling.neighbor import BACKENDS as SAMPLER_BACKENDS
from gnnseg.gnn.tasks.node import accuracy, summarize, trainable_graph

SAMPLERS = ("neighbor", "fastgcn", "ladies")
MINIBATCH_MODELS = ("sage", "gcn", "gat", "gin")
CHECKPOINT_FORMAT = "gnnseg.minibatch/1"


@dataclass(frozen=True)
class MiniBatchConfig:
    """Everything that defines one mini-batch training run.

    ``fanouts`` (neighbour sampling, per hop from the seeds, PyG's order) or ``num_samples`` (FastGCN /
    LADIES, nodes per layer from the seeds down) set the number of message-passing layers; ``reuse_samples``
    shares each node's drawn neighbours between the layers and ``sampler_backend`` picks the code that draws them
    (``"auto"``: numba where it imports; see :class:`NeighborSampler`). ``patience`` is
    in epochs without a better validation accuracy (``None``: run all epochs). ``row_normalize_features``
    ``None`` normalizes rows only when every feature is non-negative (bag-of-words data such as Cora).
    ``compile`` trains through ``torch.compile(model, dynamic=True)`` (evaluation stays eager); off by default:
    on this CPU the block models ran 0.99-1.33x their eager step time compiled (``benchmarks/gnn_compile.py``).
    """

    model: Literal["sage", "gcn", "gat", "gin"] = "sage"
    sampler: Literal["neighbor", "fastgcn", "ladies"] = "neighbor"
    fanouts: tuple[int, ...] = (25, 10)
    replace: bool = False
    reuse_samples: bool = False
    sampler_backend: Literal["auto", "numba", "torch"] = "auto"
    num_samples: tuple[int, ...] = (64, 64, 64, 64, 64)
    importance_normalization: Literal["mean", "symmetric"] = "mean"
    batch_size: int = 512
    hidden: int = 256
    aggregator: Literal["mean", "max", "pool"] = "mean"
    normalize: bool = False
    heads: int = 8
    dropout: float = 0.0
    classifier_dropout: float = 0.5
    lr: float = 0.01
    weight_decay: float = 0.0
    grad_clip: float | None = None
    epochs: int = 10
    patience: int | None = None
    eval_every: int = 1
    num_workers: int = 0
    prefetch_factor: int = 2
    eval_max_nodes: int = 8192
    eval_max_edges: int = 1 << 19
    row_normalize_features: bool | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "fanouts", check_sizes(tuple(self.fanouts), "fanouts"))
        object.__setattr__(self, "num_samples", check_sizes(tuple(self.num_samples), "num_samples"))
        models.check_model(self.model, MINIBATCH_MODELS)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.sampler_backend not in SAMPLER_BACKENDS:
            raise ValueError(f"unknown sampler backend {self.sampler_backend!r}; choose one of "
                             f"{', '.join(SAMPLER_BACKENDS)}")
        if self.sampler != "neighbor" and not (self.model == "gcn" or (self.model == "sage"
                                                                         and self.aggregator == "mean")):
            raise ValueError(f"the {self.sampler} sampler's blocks carry importance weights, which only GCN "
                             f"(model 'gcn') and SAGE with the mean aggregator use; got model {self.model!r}"
                             + (f" with aggregator {self.aggregator!r}" if self.model == "sage" else ""))
        for name in ("batch_size", "hidden", "epochs", "eval_every", "heads", "prefetch_factor",
                     "eval_max_nodes", "eval_max_edges"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 epoch or None, got {self.patience}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("dropout", "classifier_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")

    @property
    def num_layers(self) -> int:
        return len(self.fanouts) if self.sampler == "neighbor" else len(self.num_samples)

    def build(self, in_channels: int, num_classes: int) -> models.StackedGNN:
        """The model (:func:`gnnseg.gnn.models.build_model`): one message-passing layer per sampled layer.

        GCN on FastGCN / LADIES blocks is ``sampled_gcn`` (the blocks' weights as given); on uniform blocks it
        averages a node and its sampled neighbours (``"mean"``). Blocks change every batch: nothing is cached.
        """
        name = "sampled_gcn" if self.model == "gcn" and self.sampler != "neighbor" else self.model
        return models.build_model(name, in_channels, num_classes, hidden_channels=self.hidden,
                                  num_layers=self.num_layers, dropout=self.dropout, heads=self.heads,
                                  aggregator=self.aggregator, normalize=self.normalize,
                                  classifier_dropout=self.classifier_dropout, normalization="mean", cached=False)

    def build_sampler(self, graph: Graph) -> NeighborSampler | FastGCNSampler | LADIESSampler:
        if self.sampler == "neighbor":
            return NeighborSampler(graph, self.fanouts, replace=self.replace, reuse=self.reuse_samples,
                                   backend=self.sampler_backend)
        sampler_type = FastGCNSampler if self.sampler == "fastgcn" else LADIESSampler
        return sampler_type(graph, self.num_samples, normalization=self.importance_normalization)


_LADIES_CODE: dict[str, Any] = {"model": "gcn", "batch_size": 512, "hidden": 256, "dropout": 0.2,
                                 "classifier_dropout": 0.5, "lr": 1e-3, "grad_clip": 0.2, "epochs": 100,
                                 "patience": 20}
PRESETS: dict[str, MiniBatchConfig] = {
    # Hamilton et al. 2017 / williamleif/GraphSAGE supervised_train.py defaults (width: 2 x 128 concatenated)
    "sage": MiniBatchConfig(model="sage", sampler="neighbor", fanouts=(25, 10), batch_size=512, hidden=256,
                            dropout=0.0, lr=0.01, weight_decay=0.0, epochs=10),
    # acbull/LADIES pytorch_ladies.py: 5 layers, 64 nodes per layer
    "ladies": MiniBatchConfig(sampler="ladies", num_samples=(64,) * 5, **_LADIES_CODE),
    # the same training code with FastGCN's own depth and sample size (matenure/FastGCN: 2 layers, 400 nodes
    # per layer); with LADIES's 5 x 64, most rows of a FastGCN layer are empty and it barely learns
    "fastgcn": MiniBatchConfig(sampler="fastgcn", num_samples=(400, 400), **_LADIES_CODE),
}
# Planetoid graphs label only 20 nodes per class, so one epoch is one batch: the presets then run many more
# (much shorter) epochs; SAGE gets the regularization of the full-batch GCN preset (our choice, docs/gnn.md).
SMALL_LABELED_OVERRIDES: dict[str, dict[str, Any]] = {
    "sage": {"dropout": 0.5, "weight_decay": 5e-4, "epochs": 200, "patience": 50},
    "fastgcn": {"epochs": 1000, "patience": 200},
    "ladies": {"epochs": 1000, "patience": 200},
}
# Large graphs (synth:..., ogb:...): PyG's examples/ogbn_products_sage.py trains SAGE with dropout 0.5 and
# lr 0.003 (20 epochs); the paper's lr 0.01 without dropout overfits the synthetic graphs' noisy labels.
LARGE_GRAPH_OVERRIDES: dict[str, dict[str, Any]] = {
    "sage": {"dropout": 0.5, "lr": 0.003, "epochs": 20, "patience": 5},
    "fastgcn": {},
    "ladies": {},
}
PLANETOID = ("cora", "citeseer", "pubmed")


def minibatch_preset(name: str, dataset: str | None = None, **overrides: Any) -> MiniBatchConfig:
    """The preset ``name`` (sage, fastgcn, ladies), adapted to ``dataset``: Planetoid names get
    :data:`SMALL_LABELED_OVERRIDES`, ``synth:`` and ``ogb:`` datasets :data:`LARGE_GRAPH_OVERRIDES`; then
    ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown mini-batch preset {name!r}; choose one of {', '.join(PRESETS)}")
    config = PRESETS[name]
    key = (dataset or "").lower()
    if key in PLANETOID:
        config = replace(config, **SMALL_LABELED_OVERRIDES[name])
    elif key.startswith(("synth:", "ogb:")):
        config = replace(config, **LARGE_GRAPH_OVERRIDES[name])
    return replace(config, **overrides)


def minibatch_config(model: str | None, sampler: str | None, dataset: str | None = None,
                     **overrides: Any) -> MiniBatchConfig:
    """The config for ``gnnseg gnn train --model M --sampler S``: the preset of the sampler (``sage`` for
    neighbour sampling), with the model replaced when another is asked for (e.g. GCN on uniform blocks, or
    SAGE on LADIES blocks)."""
    sampler = sampler or "neighbor"
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    config = minibatch_preset("sage" if sampler == "neighbor" else sampler, dataset, **overrides)
    if model is not None and model != config.model:
        config = replace(config, model=model)
    return config


# ------------------------------------------------------------------------------------------- batches of seeds
def batch_generator_seed(seed: int, epoch: int, batch: int, rank: int, purpose: int = 1) -> int:
    """The generator seed of one batch: a function of ``(seed, epoch, batch, rank)`` only (``purpose`` 0 is
    the epoch's permutation)."""
    entropy = [seed, purpose, epoch, batch, rank]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def epoch_shard(train_nodes: Tensor, seed: int, epoch: int, rank: int, world_size: int) -> Tensor:
    """Rank ``rank``'s share of epoch ``epoch``: the epoch's permutation of ``train_nodes`` (the same on every
    rank) cut into ``world_size`` disjoint, equal, contiguous shards."""
    generator = torch.Generator().manual_seed(batch_generator_seed(seed, epoch, 0, 0, purpose=0))
    permuted = train_nodes[torch.randperm(train_nodes.numel(), generator=generator)]
    share = train_nodes.numel() // world_size
    return permuted[rank * share:(rank + 1) * share]


class SeedBatches(torch.utils.data.Dataset):
    """Item ``i`` is batch ``i % batches_per_epoch`` of epoch ``first_epoch + i // batches_per_epoch``:
    ``(epoch, seeds, generator seed)``. Pure functions of the index, so any worker can produce any batch."""

    def __init__(self, train_nodes: Tensor, batch_size: int, seed: int, first_epoch: int, last_epoch: int,
                 rank: int = 0, world_size: int = 1) -> None:
        self.train_nodes, self.batch_size, self.seed = train_nodes, batch_size, seed
        self.first_epoch, self.last_epoch, self.rank, self.world_size = first_epoch, last_epoch, rank, world_size
        share = train_nodes.numel() // world_size
        if share < 1:
            raise ValueError(f"{train_nodes.numel()} training nodes cannot be shared by {world_size} ranks")
        self.batches_per_epoch = -(-share // batch_size)
        self._cached: tuple[int, Tensor] | None = None

    def __len__(self) -> int:
        return (self.last_epoch - self.first_epoch) * self.batches_per_epoch

    def __getitem__(self, index: int) -> tuple[int, Tensor, int]:
        epoch = self.first_epoch + index // self.batches_per_epoch
        batch = index % self.batches_per_epoch
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, epoch_shard(self.train_nodes, self.seed, epoch, self.rank, self.world_size))
        seeds = self._cached[1][batch * self.batch_size:(batch + 1) * self.batch_size]
        return epoch, seeds, batch_generator_seed(self.seed, epoch, batch, self.rank)


@dataclass
class SampledBatch:
    epoch: int
    seeds: Tensor
    blocks: list[Block]
    x: Tensor               # (blocks[0].num_sources, F): the input features
    y: Tensor               # (len(seeds),): the seeds' labels


class SampleBatch:
    """DataLoader ``collate_fn``: samples the blocks of one ``(epoch, seeds, generator seed)`` item and gathers
    their input features and labels (in the worker, when there are workers)."""

    def __init__(self, sampler: Any, x: Tensor, y: Tensor) -> None:
        self.sampler, self.x, self.y = sampler, x, y

    def __call__(self, item: tuple[int, Tensor, int]) -> SampledBatch:
        epoch, seeds, generator_seed = item
        blocks = self.sampler.sample(seeds, generator=generator_seed)
        features = ops.dense(self.x[blocks[0].source_nodes]).to(torch.float32)
        return SampledBatch(epoch, seeds, blocks, features, self.y[seeds])


# ---------------------------------------------------------------------------------------------- the trainer
@dataclass
class MiniBatchResult:
    """What one seed's mini-batch training produced (accuracies are fractions in [0, 1])."""

    seed: int
    test_acc: float
    val_acc: float
    train_acc: float
    best_epoch: int
    epochs_run: int
    epoch_times_ms: list[float]
    sampled_nodes_per_batch_mean: float
    sampled_edges_per_batch_mean: float
    batches: int
    train_seconds: float
    eval_seconds: float
    peak_rss_mb: float
    world_size: int
    history: dict[str, list[float]] = field(repr=False)
    state_dict: dict[str, Tensor] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        return {"seed": self.seed, "test_acc": self.test_acc, "val_acc": self.val_acc, "train_acc": self.train_acc,
                "best_epoch": self.best_epoch, "epochs_run": self.epochs_run,
                "epoch_time_ms_median": statistics.median(self.epoch_times_ms) if self.epoch_times_ms else None,
                "sampled_nodes_per_batch_mean": self.sampled_nodes_per_batch_mean,
                "sampled_edges_per_batch_mean": self.sampled_edges_per_batch_mean, "batches": self.batches,
                "train_seconds": self.train_seconds, "eval_seconds": self.eval_seconds,
                "peak_rss_mb": self.peak_rss_mb, "world_size": self.world_size}


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (``getrusage``; Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def prepare_minibatch_graph(data: GraphLike, config: MiniBatchConfig) -> Graph:
    """:func:`~gnnseg.gnn.tasks.node.trainable_graph`; then feature rows normalized as configured."""
    graph = trainable_graph(data)
    normalize = config.row_normalize_features
    if normalize is None:
        normalize = not ops.is_sparse(graph.x) and bool((graph.x >= 0).all())
    return graph.row_normalize_features() if normalize else graph


@torch.no_grad()
def evaluate_layerwise(model: models.StackedGNN, graph: Graph, neighborhood: Any, x: Tensor,
                       config: MiniBatchConfig, show_progress: bool | None = False) -> dict[str, float]:
    """Exact full-neighbourhood loss and accuracy on every split the graph has."""
    splits = {split: getattr(graph, f"{split}_mask") for split in ("train", "val", "test")}
    splits = {split: mask.nonzero().flatten() for split, mask in splits.items() if mask is not None and mask.any()}
    nodes = torch.cat(list(splits.values())).unique()
    logits = model.layerwise_inference(x, neighborhood, output_nodes=nodes, max_nodes=config.eval_max_nodes,
                                       max_edges=config.eval_max_edges, show_progress=show_progress)
    scores = {}
    for split, index in splits.items():
        rows = torch.searchsorted(nodes, index)
        labels = graph.y[index]
        scores[f"{split}_loss"] = float(F.cross_entropy(logits[rows], labels))
        scores[f"{split}_acc"] = accuracy(logits[rows], labels, graph.name)
    return scores


SCORE_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")


def _share_scores(scores: dict[str, float] | None, context: DistributedContext) -> dict[str, float]:
    """Rank 0's scores on every rank (NaN marks a missing split)."""
    if not context.enabled:
        return scores or {}
    values = torch.tensor([float("nan") if scores is None else scores.get(k, float("nan")) for k in SCORE_KEYS],
                          dtype=torch.float64)
    torch.distributed.broadcast(values, src=0)
    return {k: float(v) for k, v in zip(SCORE_KEYS, values.tolist()) if not np.isnan(v)}


# settings that change how fast a run goes, never its numbers: a run may resume with other values
EXECUTION_SETTINGS = ("num_workers", "prefetch_factor", "compile")
# settings whose default differs from what runs did before the setting existed (they sampled with torch)
SETTINGS_BEFORE_THEY_EXISTED: dict[str, Any] = {"sampler_backend": "torch"}


def _config_dict(config: MiniBatchConfig) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def same_run_settings(saved: dict[str, Any], config: MiniBatchConfig) -> bool:
    """Whether a saved config describes the same computation as ``config`` (worker settings aside). A setting
    the saved config lacks (written before the setting existed) counts as what such runs did: its default, or
    its value in :data:`SETTINGS_BEFORE_THEY_EXISTED`."""
    current, defaults = _config_dict(config), {**_config_dict(MiniBatchConfig()), **SETTINGS_BEFORE_THEY_EXISTED}
    return all(saved.get(k, defaults[k]) == v for k, v in current.items() if k not in EXECUTION_SETTINGS)


def check_resumable(folder: Path, settings: dict[str, Any], config: MiniBatchConfig, *, what: str = "settings",
                    older_defaults: dict[str, Any] | None = None) -> None:
    """Refuse to resume the run in ``folder`` unless its ``config.json`` records ``settings`` (``older_defaults``
    stand in for settings that runs written before them lack) and the same computation as ``config``."""
    file = folder / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"cannot resume: {file} does not exist")
    saved = json.loads(file.read_text())
    others = {k: v for k, v in settings.items() if k != "config"}
    recorded = {k: saved.get(k, (older_defaults or {}).get(k)) for k in others}
    if recorded != others or not same_run_settings(saved.get("config", {}), config):
        raise ValueError(f"{folder} was started with other {what} ({saved.get('config')}); resume it with the same "
                         f"command, or start a new run")


def config_from_dict(values: dict[str, Any]) -> MiniBatchConfig:
    known = {f.name for f in fields(MiniBatchConfig)}
    return MiniBatchConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in known})


def train_minibatch(graph: GraphLike, config: MiniBatchConfig, seed: int = 0, *,
                    checkpoint: str | os.PathLike | None = None, resume: bool = False,
                    show_progress: bool | None = None, context: DistributedContext | None = None,
                    eval_progress: bool = False) -> MiniBatchResult:
    """Train one model on ``graph`` with sampled mini-batches: a :class:`Graph`, a PyG ``Data`` or a one-graph
    PyG dataset with ``x`` and ``y`` (:func:`~gnnseg.gnn.tasks.node.trainable_graph`: its masks, or a random split).

    ``checkpoint``: file written after every epoch (rank 0 only); ``resume=True`` continues from it (it must
    exist and hold the same config, seed and world size). ``context``: the distributed context (default:
    read from torchrun's environment, a single process without it).
    """
    context = context or distributed_context(backend="gloo")      # the trainer computes on the CPU
    graph = prepare_minibatch_graph(graph, config)
    x = graph.x if not ops.is_sparse(graph.x) else ops.dense(graph.x)
    num_classes = graph.num_classes
    train_nodes = graph.train_mask.nonzero().flatten()
    has_val = graph.val_mask is not None and bool(graph.val_mask.any())

    seed_everything(seed)
    model = config.build(graph.num_features, num_classes)
    if context.enabled:                          # every rank starts from rank 0's weights
        for tensor in model.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sampler = config.build_sampler(graph)
    neighborhood = sampler.full_neighborhood()

    history: dict[str, list[float]] = {key: [] for key in ("epoch", "loss", "eval_epoch", *SCORE_KEYS)}
    state = {"epoch": 0, "best_epoch": -1, "best_val": -1.0, "best_scores": {}, "waited": 0, "stopped": False,
             "epoch_times_ms": [], "nodes": 0.0, "edges": 0.0, "batches": 0, "train_seconds": 0.0,
             "eval_seconds": 0.0}
    best_state: dict[str, Tensor] | None = None
    checkpoint = None if checkpoint is None else Path(checkpoint)
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs the checkpoint file to continue from")
        saved = load_checkpoint(checkpoint, required_keys=("format", "config", "seed", "model", "optimizer", "rng",
                                                            "history", "state", "best_state", "world_size"))
        if saved["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{checkpoint} is a {saved['format']!r} checkpoint, not {CHECKPOINT_FORMAT!r}")
        if not same_run_settings(saved["config"], config) or (saved["seed"], saved["world_size"]) != (
                seed, context.world_size):
            raise CheckpointError(f"{checkpoint} was written by another run (config, seed {saved['seed']} or "
                                  f"world size {saved['world_size']} differ); start a new run instead")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        history, state, best_state = saved["history"], saved["state"], saved["best_state"]
    training_model: nn.Module = model
    if context.enabled:
        training_model = torch.nn.parallel.DistributedDataParallel(model)
    if config.compile:                   # blocks change shape every batch: compiled once for dynamic shapes
        training_model = torch.compile(training_model, dynamic=True)

    first_epoch = state["epoch"]
    last_epoch = first_epoch if state["stopped"] else config.epochs
    dataset = SeedBatches(train_nodes, config.batch_size, seed, first_epoch, max(last_epoch, first_epoch),
                          context.rank, context.world_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=config.num_workers,
        collate_fn=SampleBatch(sampler, x, graph.y), generator=torch.Generator().manual_seed(seed),
        prefetch_factor=config.prefetch_factor if config.num_workers else None)
    bar = progress(loader, desc=f"{config.model}/{config.sampler} seed {seed}", total=len(dataset),
                   enabled=show_progress if context.is_main else False)
    losses: list[float] = []
    epoch_began = time.perf_counter()
    for position, batch in enumerate(bar):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(training_model(batch.x, batch.blocks), batch.y)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        losses.append(float(loss.detach()))
        state["nodes"] += batch.blocks[0].num_sources
        state["edges"] += sum(block.num_edges for block in batch.blocks)
        state["batches"] += 1
        if (position + 1) % dataset.batches_per_epoch:
            continue
        # ------------------------------------------------------------------ end of an epoch
        epoch = batch.epoch
        elapsed = time.perf_counter() - epoch_began
        state["epoch_times_ms"].append(elapsed * 1e3)
        state["train_seconds"] += elapsed
        history["epoch"].append(epoch)
        history["loss"].append(statistics.fmean(losses))
        losses = []
        evaluate_now = (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
        if evaluate_now:
            began = time.perf_counter()
            scores = None
            if context.is_main:
                scores = evaluate_layerwise(model, graph, neighborhood, x, config, eval_progress)
            scores = _share_scores(scores, context)
            state["eval_seconds"] += time.perf_counter() - began
            if record_evaluation(state, history, scores, epoch, has_val, config.patience):
                best_state = copy.deepcopy(model.state_dict())
        state["epoch"] = epoch + 1
        if checkpoint is not None and context.is_main:
            save_checkpoint({"format": CHECKPOINT_FORMAT, "config": _config_dict(config), "seed": seed,
                             "world_size": context.world_size, "model": model.state_dict(),
                             "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "history": history,
                             "state": state, "best_state": best_state}, checkpoint)
        if state["stopped"]:
            break
        epoch_began = time.perf_counter()
    return MiniBatchResult(**result_fields(seed, state, history, best_state, context.world_size))


def record_evaluation(state: dict[str, Any], history: dict[str, list[float]], scores: dict[str, float], epoch: int,
                      has_val: bool, patience: int | None) -> bool:
    """Note the evaluation after ``epoch`` in ``history`` and ``state``; whether it is the best so far (by validation
    accuracy; without validation nodes the latest is). ``state["stopped"]`` is set once ``patience`` evaluations in a
    row have not beaten the best."""
    history["eval_epoch"].append(epoch)
    for key in SCORE_KEYS:
        history[key].append(scores.get(key, float("nan")))
    val = scores.get("val_acc", 0.0) if has_val else float(epoch)
    best = val > state["best_val"]
    if best:
        state.update(best_val=val, best_epoch=epoch, best_scores=scores, waited=0)
    else:
        state["waited"] += 1
    if has_val and patience is not None and state["waited"] >= patience:
        state["stopped"] = True
    return best


def result_fields(seed: int, state: dict[str, Any], history: dict[str, list[float]],
                  best_state: dict[str, Tensor] | None, world_size: int) -> dict[str, Any]:
    """The :class:`MiniBatchResult` fields a finished training loop's state gives (partitioned training adds its
    own to them)."""
    if best_state is None:
        raise RuntimeError("no epoch was evaluated; raise epochs or lower eval_every")
    scores = state["best_scores"]
    batches = max(state["batches"], 1)
    return dict(
        seed=seed, test_acc=scores.get("test_acc", float("nan")), val_acc=scores.get("val_acc", float("nan")),
        train_acc=scores.get("train_acc", float("nan")), best_epoch=state["best_epoch"], epochs_run=state["epoch"],
        epoch_times_ms=list(state["epoch_times_ms"]), sampled_nodes_per_batch_mean=state["nodes"] / batches,
        sampled_edges_per_batch_mean=state["edges"] / batches, batches=state["batches"],
        train_seconds=state["train_seconds"], eval_seconds=state["eval_seconds"], peak_rss_mb=peak_rss_mb(),
        world_size=world_size, history=history, state_dict=best_state)


def summarize_minibatch(results: Sequence[MiniBatchResult]) -> dict[str, Any]:
    """:func:`~gnnseg.gnn.tasks.node.summarize` plus the mean batch size in sampled nodes and edges, peak RSS."""
    return {
        **summarize(results),
        "sampled_nodes_per_batch_mean": statistics.fmean(r.sampled_nodes_per_batch_mean for r in results),
        "sampled_edges_per_batch_mean": statistics.fmean(r.sampled_edges_per_batch_mean for r in results),
        "train_seconds_mean": statistics.fmean(r.train_seconds for r in results),
        "eval_seconds_mean": statistics.fmean(r.eval_seconds for r in results),
        "peak_rss_mb": max(r.peak_rss_mb for r in results),
        "world_size": results[0].world_size,
    }
