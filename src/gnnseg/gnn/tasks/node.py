"""Semi-supervised node classification: full-batch training with early stopping on the validation set.

The presets are the papers' settings (see ``docs/gnn.md`` for sources):

* GCN — Kipf & Welling 2017, Section 5.2: 16 hidden, dropout 0.5, Adam lr 0.01, L2 5e-4 on the first layer
  only, at most 200 epochs, stop when the validation loss exceeds the mean of the previous 10.
* GAT — Veličković et al. 2018, Section 3.3: 8 heads x 8 hidden, ELU, dropout 0.6 (inputs, attention
  coefficients, and, as the reference code's ``attn_head`` does, the aggregated values), lr 0.005,
  L2 5e-4, patience 100 on validation loss and accuracy.
* SGC — Wu et al. 2019: K = 2, lr 0.2, 100 epochs, no hidden layer; weight decay chosen on validation
  accuracy (the paper tunes it with hyperopt).
* GIN — Xu et al. 2019's layer used for node classification (no paper figure): 2 GIN-0 layers of 64,
  dropout 0.8 and L2 5e-3 (sum aggregation overfits 140 labels quickly), patience 50.

Model selection: the reported test accuracy is the one at the epoch with the lowest validation loss
(``select="val_loss"``), at the last epoch where validation accuracy and loss were both at least as good
as ever before (``"val_acc_and_loss"``, the rule of the GAT reference code), or after the last epoch
(``"last"``, SGC's protocol).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnseg.core import progress, seed_everything
from gnnseg.gnn import models, ops
from gnnseg.gnn.graph import Graph, GraphLike, GraphValidationError, as_graph
from gnnseg.gnn.node_splits import with_splits
from gnnseg.gnn.ogb_evaluation import node_accuracy

MODELS = ("gcn", "sgc", "gin", "gat")


@dataclass(frozen=True)
class NodeConfig:
    """Everything that defines one training run of a node classifier."""

    model: Literal["gcn", "sgc", "gin", "gat"] = "gcn"
    hidden: int = 16
    num_layers: int = 2
    dropout: float = 0.5
    lr: float = 0.01
    weight_decay: float = 5e-4
    decay_first_layer_only: bool = True
    epochs: int = 200
    stopping: Literal["window", "patience", "none"] = "window"
    stopping_epochs: int = 10
    select: Literal["val_loss", "val_acc_and_loss", "last"] = "val_loss"
    heads: int = 8
    value_dropout: float = 0.0
    K: int = 2
    normalization: Literal["symmetric", "mean"] = "symmetric"
    row_normalize_features: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        models.check_model(self.model, MODELS)
        for name in ("epochs", "hidden", "num_layers", "heads", "K", "stopping_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def build(self, in_channels: int, num_classes: int) -> models.StackedGNN:
        """The named model (:func:`gnnseg.gnn.models.build_model`) with this config's settings."""
        return models.build_model(self.model, in_channels, num_classes, hidden_channels=self.hidden,
                                  num_layers=self.num_layers, dropout=self.dropout, heads=self.heads,
                                  value_dropout=self.value_dropout, K=self.K, normalization=self.normalization)


# SGC weight decay per dataset: the best mean validation accuracy over 1e-7..1e-3 (5 seeds each), recorded by
# benchmarks/sgc_weight_decay.py in benchmarks/results/sgc_weight_decay.json. Test accuracy played no part.
SGC_WEIGHT_DECAY = {"cora": 5.6e-5, "citeseer": 1e-4}

PRESETS: dict[str, NodeConfig] = {
    "gcn": NodeConfig(model="gcn"),
    "gat": NodeConfig(model="gat", hidden=8, heads=8, dropout=0.6, value_dropout=0.6, lr=0.005,
                      weight_decay=5e-4,
                      decay_first_layer_only=False, epochs=1000, stopping="patience", stopping_epochs=100),
    "sgc": NodeConfig(model="sgc", dropout=0.0, lr=0.2, weight_decay=5e-6, decay_first_layer_only=False,
                      epochs=100, stopping="none", select="last"),
    "gin": NodeConfig(model="gin", hidden=64, dropout=0.8, lr=0.01, weight_decay=5e-3,
                      decay_first_layer_only=False, epochs=200, stopping="patience", stopping_epochs=50),
}


def preset(model: str, dataset: str | None = None, **overrides: Any) -> NodeConfig:
    """The paper preset for ``model`` (dataset-specific where the paper tunes per dataset), with overrides."""
    models.check_model(model, MODELS)
    config = PRESETS[model]
    if model == "sgc" and dataset in SGC_WEIGHT_DECAY:
        config = replace(config, weight_decay=SGC_WEIGHT_DECAY[dataset])
    return replace(config, **overrides)


@dataclass
class NodeResult:
    """What one seed's training produced."""

    seed: int
    test_acc: float
    val_acc: float
    train_acc: float
    best_epoch: int
    epochs_run: int
    epoch_times_ms: list[float]
    history: dict[str, list[float]] = field(repr=False)
    state_dict: dict[str, Tensor] = field(repr=False)
    predictions: Tensor = field(repr=False)   # (N,) int64: the selected model's class for every node, input order

    def summary(self) -> dict[str, Any]:
        return {"seed": self.seed, "test_acc": self.test_acc, "val_acc": self.val_acc, "train_acc": self.train_acc,
                "best_epoch": self.best_epoch, "epochs_run": self.epochs_run,
                "epoch_time_ms_median": statistics.median(self.epoch_times_ms)}


class _StoppingRule:
    """Kipf's window rule or GAT's patience rule, fed one validation result per epoch."""

    def __init__(self, kind: str, epochs: int) -> None:
        self.kind, self.epochs = kind, epochs
        self.losses: list[float] = []
        self.best_loss, self.best_acc, self.waited = float("inf"), 0.0, 0

    def should_stop(self, val_loss: float, val_acc: float) -> bool:
        self.losses.append(val_loss)
        if self.kind == "window":
            window = self.losses[-(self.epochs + 1):-1]
            return len(self.losses) > self.epochs and val_loss > sum(window) / len(window)
        if self.kind == "patience":
            if val_loss <= self.best_loss or val_acc >= self.best_acc:
                self.best_loss, self.best_acc = min(val_loss, self.best_loss), max(val_acc, self.best_acc)
                self.waited = 0
                return False
            self.waited += 1
            return self.waited >= self.epochs
        return False


class _Selection:
    """Decides, epoch by epoch, whether the current model becomes the reported one."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.best_loss, self.best_acc = float("inf"), -1.0

    def improved(self, scores: dict[str, float]) -> bool:
        if self.rule == "last":
            return True
        loss, acc = scores["val_loss"], scores["val_acc"]
        if self.rule == "val_loss":
            better = loss < self.best_loss
        elif self.rule == "val_acc_and_loss":
            better = acc >= self.best_acc and loss <= self.best_loss
        else:
            raise ValueError(f"unknown selection rule {self.rule!r}")
        self.best_loss, self.best_acc = min(loss, self.best_loss), max(acc, self.best_acc)
        return better


def accuracy(logits: Tensor, labels: Tensor, dataset: str | None = None) -> float:
    """Share of rows whose largest logit is the label; OGB's Evaluator's for an OGB ``dataset`` (by name)."""
    return node_accuracy(dataset, logits.argmax(-1), labels)


def optimizer_for(model: models.StackedGNN, config: NodeConfig) -> torch.optim.Optimizer:
    """Adam; with ``decay_first_layer_only`` the L2 penalty touches only the first layer (Kipf & Welling).

    A model with its own ``parameter_groups(weight_decay)`` (GCNII's two decay rates) defines the groups itself.
    """
    if hasattr(model, "parameter_groups"):
        return torch.optim.Adam(model.parameter_groups(config.weight_decay), lr=config.lr)
    if config.decay_first_layer_only:
        first = list(model.layers[0].parameters())
        first_ids = {id(p) for p in first}
        rest = [p for p in model.parameters() if id(p) not in first_ids]
        groups = [{"params": first, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def trainable_graph(data: GraphLike) -> Graph:
    """The entrance of every node-classification trainer: ``data`` (a :class:`Graph`, a PyG ``Data`` or a
    one-graph PyG dataset) as a validated :class:`Graph` with features, integer labels ``(N,)`` (PyG's ``(N, 1)``
    flattened) and a train and test split (:func:`gnnseg.gnn.node_splits.with_splits`: its own masks, or a
    random split with a warning)."""
    graph = as_graph(data)
    if graph.y is not None and graph.y.dim() == 2 and graph.y.size(1) == 1:
        graph = replace(graph, y=graph.y.flatten(), _cache=graph._cache)
    graph.validate()
    for name in ("x", "y"):
        if getattr(graph, name) is None:
            raise GraphValidationError(f"node classification needs graph.{name}, but it is None")
    if graph.y.is_floating_point() or graph.y.dim() != 1:
        raise GraphValidationError(f"node classification needs one integer class label per node, but y is "
                                   f"{graph.y.dtype} of shape {tuple(graph.y.shape)}")
    return with_splits(graph)


def prepare_graph(data: GraphLike, config: NodeConfig) -> Graph:
    """:func:`trainable_graph`, then the feature preprocessing of the config."""
    graph = trainable_graph(data)
    return graph.row_normalize_features() if config.row_normalize_features else graph


def train_node_classifier(graph: GraphLike, config: NodeConfig = PRESETS["gcn"], seed: int = 0, *,
                          model: models.StackedGNN | None = None,
                          show_progress: bool | None = None) -> NodeResult:
    """Train one model on ``graph`` from seed ``seed`` and return its selected-epoch accuracies and predictions.

    ``graph``: a :class:`Graph`, a PyG ``Data`` or a one-graph PyG dataset with ``x`` and ``y``
    (:func:`trainable_graph`; without train / test masks it gets a random split, with a warning). Without
    validation nodes no early stopping or selection happens (the last epoch counts). Accuracies are fractions in
    [0, 1]. ``config`` defaults to the GCN preset. ``model`` replaces the one the config would build (the optimizer
    and schedule still come from the config); it is trained in place. ``config.compile`` runs the training steps
    through ``torch.compile`` (the graph's shapes are fixed, so it compiles once; evaluation stays eager).
    """
    graph = prepare_graph(graph, config)
    seed_everything(seed)
    if model is None:
        model = config.build(graph.num_features, graph.num_classes)
    optimizer = optimizer_for(model, config)
    training_model = torch.compile(model) if config.compile else model
    x, y, edge_index = ops.sparse_features(graph.x), graph.y, graph.edge_index
    masks = {split: getattr(graph, f"{split}_mask") for split in ("train", "val", "test")}
    has_val = masks["val"] is not None and bool(masks["val"].any())
    rule = _StoppingRule(config.stopping if has_val else "none", config.stopping_epochs)
    selection = _Selection(config.select if has_val else "last")

    history: dict[str, list[float]] = {key: [] for key in ("train_loss", "val_loss", "train_acc", "val_acc",
                                                          "test_acc")}
    epoch_times, best = [], None
    epochs = progress(range(config.epochs), desc=f"{config.model} seed {seed}", enabled=show_progress)
    for epoch in epochs:
        model.train()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        logits = training_model(x, edge_index, output_nodes=masks["train"])
        loss = F.cross_entropy(logits, y[masks["train"]])
        loss.backward()
        optimizer.step()
        epoch_times.append((time.perf_counter() - start) * 1e3)

        logits = predict(model, graph, x)
        scores = split_scores(logits, graph)
        history["train_loss"].append(float(loss.detach()))
        for key, value in scores.items():
            if key in history:
                history[key].append(value)
        if selection.improved(scores):
            best = (epoch, scores, copy.deepcopy(model.state_dict()), logits.argmax(-1))
        if rule.should_stop(scores.get("val_loss", 0.0), scores.get("val_acc", 0.0)):
            break
    assert best is not None  # at least one epoch ran
    best_epoch, scores, state, predictions = best
    return NodeResult(seed=seed, test_acc=scores["test_acc"], val_acc=scores.get("val_acc", float("nan")),
                      train_acc=scores["train_acc"], best_epoch=best_epoch, epochs_run=epoch + 1,
                      epoch_times_ms=epoch_times, history=history, state_dict=state, predictions=predictions)


@torch.no_grad()
def predict(model: nn.Module, graph: Graph, features: Tensor | None = None) -> Tensor:
    """Logits ``(N, C)`` of every node in eval mode; ``features`` replaces ``graph.x`` (e.g. its sparse form)."""
    model.eval()
    return model(graph.x if features is None else features, graph.edge_index)


def evaluate(model: nn.Module, graph: Graph, features: Tensor | None = None) -> dict[str, float]:
    """Loss and accuracy on every split the graph has (``{split}_loss``, ``{split}_acc``).

    ``features`` replaces ``graph.x`` (for instance its sparse form) when given.
    """
    return split_scores(predict(model, graph, features), graph)


@torch.no_grad()
def split_scores(logits: Tensor, graph: Graph) -> dict[str, float]:
    """Loss and accuracy of ``logits (N, C)`` on every split the graph has."""
    scores = {}
    for split in ("train", "val", "test"):
        mask = getattr(graph, f"{split}_mask")
        if mask is not None and bool(mask.any()):
            scores[f"{split}_loss"] = float(F.cross_entropy(logits[mask], graph.y[mask]))
            scores[f"{split}_acc"] = accuracy(logits[mask], graph.y[mask], graph.name)
    return scores


def summarize(results: Sequence[NodeResult]) -> dict[str, float]:
    """Mean and standard deviation over seeds (population std, as the papers report).

    Any results with ``test_acc``, ``val_acc``, ``epoch_times_ms`` and ``epochs_run`` will do (the mini-batch
    trainer's too)."""
    test = torch.tensor([r.test_acc for r in results], dtype=torch.float64)
    val = torch.tensor([r.val_acc for r in results], dtype=torch.float64)
    times = [t for r in results for t in r.epoch_times_ms]
    return {
        "seeds": len(results),
        "test_acc_mean": float(test.mean()), "test_acc_std": float(test.std(unbiased=False)),
        "val_acc_mean": float(val.mean()), "val_acc_std": float(val.std(unbiased=False)),
        "epoch_time_ms_median": statistics.median(times) if times else None,
        "epochs_run_mean": statistics.fmean(r.epochs_run for r in results),
    }
