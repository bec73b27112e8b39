"""Graph classification with GIN and the GIN paper's 10-fold cross-validation protocol.

Model (Xu et al., ICLR 2019, Sections 4-7): ``num_layers - 1`` GIN layers (sum aggregation, 2-layer MLPs
with batch norm, then batch norm and ReLU), and a prediction from *every* layer's readout, input
included, summed: ``score = sum_k Linear_k(READOUT(h^(k)))`` with dropout on each. GIN-0 fixes eps at 0,
GIN-eps learns it. Training: Adam lr 0.01 halved every 50 epochs, 350 epochs of 50 random mini-batches
of 32 graphs (the reference code's ``iters_per_epoch``).

Protocol: 10-fold stratified cross-validation; after each epoch every fold's test accuracy is recorded;
the reported number is the mean +- std over folds at the single epoch whose mean is best (the paper's
"best-mean-epoch" rule, which reads the test folds to pick the epoch, as the paper states).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnseg.core import progress, seed_everything
from gnnseg.gnn.batch import GraphBatch, Readout, readout
from gnnseg.gnn.graph import Graph, GraphsLike, GraphValidationError, as_graphs
from gnnseg.gnn.layers import GINConv
from gnnseg.gnn.models import gin_mlp


class GINClassifier(nn.Module):
    def __init__(self, in_channels: int, hidden: int, num_classes: int, *, num_layers: int = 5,
                 dropout: float = 0.5, train_eps: bool = False, readout_kind: Readout = "sum") -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"num_layers counts the input layer and must be >= 2, got {num_layers}")
        widths = [in_channels] + [hidden] * (num_layers - 1)
        self.convs = nn.ModuleList(GINConv(gin_mlp(a, b), train_eps=train_eps) for a, b in zip(widths, widths[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(num_layers - 1))
        self.heads = nn.ModuleList(nn.Linear(width, num_classes) for width in widths)
        self.dropout, self.readout_kind = dropout, readout_kind

    def forward(self, batch: GraphBatch) -> Tensor:
        """Class logits ``(G, num_classes)``."""
        h = batch.x
        layers = [h]
        for conv, norm in zip(self.convs, self.norms):
            h = F.relu(norm(conv(h, batch.edge_index)))
            layers.append(h)
        score = 0
        for head, h in zip(self.heads, layers):
            pooled = readout(h, batch.batch, batch.num_graphs, self.readout_kind)
            score = score + F.dropout(head(pooled), self.dropout, self.training)
        return score


@dataclass(frozen=True)
class GraphConfig:
    hidden: int = 32
    num_layers: int = 5
    dropout: float = 0.5
    train_eps: bool = False
    readout: Readout = "sum"
    lr: float = 0.01
    epochs: int = 350
    iterations_per_epoch: int = 50
    batch_size: int = 32
    folds: int = 10

    def __post_init__(self) -> None:
        for name in ("hidden", "epochs", "iterations_per_epoch", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Test indices of each fold: every class shuffled and dealt round-robin, so folds keep the class mix."""
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        assignment[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    if np.bincount(assignment, minlength=folds).min() == 0:
        raise ValueError(f"{len(labels)} graphs cannot fill {folds} folds")
    return [np.flatnonzero(assignment == k) for k in range(folds)]


@torch.no_grad()
def accuracy(model: GINClassifier, graphs: list[Graph], batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(graphs), batch_size):
        batch = GraphBatch.collate(graphs[start:start + batch_size])
        correct += int((model(batch).argmax(1) == batch.y).sum())
    return correct / len(graphs)


def train_fold(graphs: list[Graph], train_index: np.ndarray, test_index: np.ndarray, config: GraphConfig,
               seed: int) -> list[float]:
    """Train on ``train_index``; return the test accuracy after every epoch."""
    generator = seed_everything(seed)
    num_classes = int(max(int(g.y) for g in graphs)) + 1
    model = GINClassifier(graphs[0].num_features, config.hidden, num_classes, num_layers=config.num_layers,
                          dropout=config.dropout, train_eps=config.train_eps, readout_kind=config.readout)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=50, gamma=0.5)
    train_graphs = [graphs[i] for i in train_index]
    test_graphs = [graphs[i] for i in test_index]
    curve = []
    for _ in range(config.epochs):
        model.train()
        for _ in range(config.iterations_per_epoch):
            chosen = torch.randperm(len(train_graphs), generator=generator)[:config.batch_size]
            batch = GraphBatch.collate([train_graphs[i] for i in chosen.tolist()])
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(batch), batch.y).backward()
            optimizer.step()
        scheduler.step()
        curve.append(accuracy(model, test_graphs))
    return curve


def graph_labels(graphs: list[Graph]) -> np.ndarray:
    """Each graph's one class label; a graph without features or without exactly one label is named."""
    labels = []
    for k, graph in enumerate(graphs):
        if graph.x is None:
            raise GraphValidationError(f"graph {k} ({graph.name}) has no node features x; give every node some "
                                       f"(e.g. PyG's OneHotDegree transform) before classifying graphs")
        if graph.y is None or graph.y.numel() != 1:
            shape = None if graph.y is None else tuple(graph.y.shape)
            raise GraphValidationError(f"graph {k} ({graph.name}) has y of shape {shape}; graph classification "
                                       f"needs one class label per graph")
        labels.append(int(graph.y.reshape(())))
    if min(labels) < 0:
        raise GraphValidationError(f"class labels must be >= 0, got {min(labels)}")
    return np.array(labels)


def cross_validate(graphs: GraphsLike, config: GraphConfig = GraphConfig(), seed: int = 0,
                   show_progress: bool | None = None) -> dict:
    """The GIN paper's protocol; returns the best-mean-epoch accuracy and the per-fold curves. ``graphs``: a list
    of :class:`Graph` or PyG ``Data``, or a PyG dataset of many graphs (:func:`gnnseg.gnn.graph.as_graphs`)."""
    graphs = as_graphs(graphs)
    labels = graph_labels(graphs)
    folds = stratified_folds(labels, config.folds, seed)
    curves = []
    for k in progress(range(config.folds), desc="folds", enabled=show_progress):
        train_index = np.concatenate([folds[j] for j in range(config.folds) if j != k])
        curves.append(train_fold(graphs, train_index, folds[k], config, seed + k))
    curves = np.array(curves)                      # (folds, epochs)
    best_epoch = int(curves.mean(0).argmax())
    return {"cv_acc_mean": float(curves[:, best_epoch].mean()), "cv_acc_std": float(curves[:, best_epoch].std()),
            "best_epoch": best_epoch + 1, "folds": config.folds, "curves": curves.tolist()}
