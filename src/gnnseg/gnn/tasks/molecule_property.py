"""Molecular property prediction: a GIN over atoms and bonds with one output per task.

Model (OGB's GIN baseline for molecules, Hu et al., "Open Graph Benchmark", NeurIPS 2020, with the
GINE layer of Hu et al., ICLR 2020): a linear atom encoder (= a sum of embeddings of the one-hot blocks),
``num_layers`` GINE layers (``MLP((1+eps) h_i + sum_j ReLU(h_j + W e_ji))``, gnnseg's 2-layer GIN MLP with
batch norm) each followed by batch norm, ReLU (not after the last) and dropout; a mean readout and one
linear head with ``T`` outputs (one per task). With ``bond_features=False`` the layers are plain GIN
(:class:`~gnnseg.gnn.layers.GINConv`) and the bonds only give the edges.

On OGB's integer-coded features (``featurizer="ogb"``) the atom encoder is OGB's ``AtomEncoder`` (a sum of one
embedding per atom column, :class:`~gnnseg.gnn.categorical_features.CategoricalEmbedding`) and every GINE
layer's edge map reads the bonds' one-hot columns (5 + 6 + 2), which makes it a per-layer ``BondEncoder`` as
in OGB's GIN (one learned vector per bond column's value, summed, plus a bias).

Training: Adam, mini-batches of molecules, a loss over the labels that are present (BCE with logits for
classification, MSE on standardized targets for regression; missing labels are masked out), early
stopping on the validation metric (mean ROC-AUC over tasks that have both classes, or RMSE), test scores
at the best validation epoch.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnseg.core import progress, seed_everything
from gnnseg.gnn.batch import GraphBatch, Readout, readout
from gnnseg.gnn.categorical_features import CategoricalEmbedding, categorical_one_hot
from gnnseg.gnn.datasets.molecule_tables import MoleculeDataset, TaskType
from gnnseg.gnn.graph import Graph
from gnnseg.gnn.layers.gin import GINConv
from gnnseg.gnn.layers.gine import GINEConv
from gnnseg.gnn.models import gin_mlp
from gnnseg.gnn.molecule_graphs import Featurizer, check_featurizer
from gnnseg.gnn.ogb_evaluation import per_task_ranking
from gnnseg.gnn.ogb_molecule_features import OGB_ATOM_VOCABULARY, OGB_BOND_VOCABULARY


class MoleculeGIN(nn.Module):
    """Atoms ``x (N, in_channels)``, bonds ``edge_attr (E, edge_channels)`` -> ``(G, num_tasks)`` outputs.

    ``featurizer`` says what ``x`` and ``edge_attr`` hold: gnnseg's one-hot floats, or OGB's integer codes
    (``"ogb"``: ``in_channels`` 9, ``edge_channels`` 3).
    For regression the outputs are standardized values; :meth:`predict` maps them back with the buffers
    ``target_mean`` / ``target_std`` (saved in the state dict, so a checkpoint is self-contained).
    """

    def __init__(self, in_channels: int, edge_channels: int, hidden: int, num_tasks: int, *, num_layers: int = 5,
                 dropout: float = 0.5, readout_kind: Readout = "mean", bond_features: bool = True,
                 train_eps: bool = False, featurizer: Featurizer = "gnnseg") -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if num_tasks < 1:
            raise ValueError(f"a molecule model needs at least one task, got {num_tasks}")
        check_featurizer(featurizer)
        if featurizer == "ogb":
            expected = (len(OGB_ATOM_VOCABULARY), len(OGB_BOND_VOCABULARY))
            if (in_channels, edge_channels) != expected:
                raise ValueError(f"OGB features have {expected[0]} atom and {expected[1]} bond columns, got "
                                 f"{in_channels} and {edge_channels}")
            self.atom_encoder: nn.Module = CategoricalEmbedding(OGB_ATOM_VOCABULARY, hidden)
            edge_channels = sum(OGB_BOND_VOCABULARY)
        else:
            self.atom_encoder = nn.Linear(in_channels, hidden)
        if bond_features:
            convs = [GINEConv(gin_mlp(hidden, hidden), hidden, edge_channels, train_eps=train_eps)
                     for _ in range(num_layers)]
        else:
            convs = [GINConv(gin_mlp(hidden, hidden), train_eps=train_eps) for _ in range(num_layers)]
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(nn.BatchNorm1d(hidden) for _ in range(num_layers))
        self.head = nn.Linear(hidden, num_tasks)
        self.dropout, self.readout_kind, self.bond_features = dropout, readout_kind, bond_features
        self.featurizer = featurizer
        self.register_buffer("target_mean", torch.zeros(num_tasks))
        self.register_buffer("target_std", torch.ones(num_tasks))

    def forward(self, batch: GraphBatch) -> Tensor:
        """Logits (classification) or standardized values (regression), ``(G, num_tasks)``."""
        h = self.atom_encoder(batch.x)
        bonds = batch.edge_attr
        if self.bond_features:
            if bonds is None:
                raise ValueError("this model uses bond features, but the batch has no edge_attr")
            if self.featurizer == "ogb":
                bonds = categorical_one_hot(bonds, OGB_BOND_VOCABULARY)
        for position, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            if self.bond_features:
                h = conv(h, batch.edge_index, bonds)
            else:
                h = conv(h, batch.edge_index)
            h = norm(h)
            if position < len(self.convs) - 1:
                h = F.relu(h)
            h = F.dropout(h, self.dropout, self.training)
        return self.head(readout(h, batch.batch, batch.num_graphs, self.readout_kind))

    def predict(self, batch: GraphBatch, task: TaskType) -> Tensor:
        """Probabilities (classification) or values in the targets' units (regression), ``(G, num_tasks)``."""
        out = self(batch)
        if task == "classification":
            return torch.sigmoid(out)
        return out * self.target_std + self.target_mean


@dataclass(frozen=True)
class MoleculeConfig:
    """One training run. Defaults follow OGB's molecule GIN (5 layers, dropout 0.5, mean readout, batch 32,
    Adam lr 1e-3, 100 epochs) with a narrower width (128 instead of 300) for 2-core CPUs."""

    hidden: int = 128
    num_layers: int = 5
    dropout: float = 0.5
    readout: Readout = "mean"
    bond_features: bool = True
    train_eps: bool = False
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 100
    patience: int = 20

    def __post_init__(self) -> None:
        for name in ("hidden", "num_layers", "batch_size", "epochs", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def build(self, in_channels: int, edge_channels: int, num_tasks: int,
              featurizer: Featurizer = "gnnseg") -> MoleculeGIN:
        return MoleculeGIN(in_channels, edge_channels, self.hidden, num_tasks, num_layers=self.num_layers,
                           dropout=self.dropout, readout_kind=self.readout, bond_features=self.bond_features,
                           train_eps=self.train_eps, featurizer=featurizer)


# ------------------------------------------------------------------------------------------ loss and metrics
def masked_loss(outputs: Tensor, targets: Tensor, task: TaskType) -> Tensor:
    """Mean loss over the present labels only: ``outputs``, ``targets`` ``(G, T)``, NaN = missing.

    BCE with logits for classification, squared error for regression. A batch without any label gives a
    zero loss that still depends on ``outputs`` (so ``backward`` works and changes nothing).
    """
    if outputs.shape != targets.shape:
        raise ValueError(f"outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} differ in shape")
    present = ~torch.isnan(targets)
    if not bool(present.any()):
        return outputs.sum() * 0.0
    if task == "classification":
        return F.binary_cross_entropy_with_logits(outputs[present], targets[present])
    return F.mse_loss(outputs[present], targets[present])


def task_metrics(predictions: np.ndarray, targets: np.ndarray, task: TaskType,
                 target_names: list[str] | None = None) -> dict[str, Any]:
    """Per-task scores over the present labels and their mean.

    Classification: ROC-AUC per task (``None`` for a task whose present labels hold one class only), and
    ``auc`` = the mean over the tasks that have both classes (NaN if none does; ``auc_tasks`` counts them):
    OGB's rule (``ogb_evaluation.per_task_ranking``), equal to ``Evaluator("ogbg-moltox21")``'s ``rocauc``.
    Regression: RMSE per task and ``rmse`` = their mean. Arrays are ``(G, T)``.
    """
    predictions, targets = np.asarray(predictions, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    names = target_names or [str(k) for k in range(targets.shape[1])]
    if task == "classification":
        per_task: dict[str, float | None] = dict(zip(names, per_task_ranking(targets, predictions)))
    else:
        per_task = {}
        for column, name in enumerate(names):
            present = ~np.isnan(targets[:, column])
            labels, scores = targets[present, column], predictions[present, column]
            per_task[name] = float(np.sqrt(np.mean((scores - labels) ** 2))) if labels.size else None
    defined = [v for v in per_task.values() if v is not None]
    mean = float(np.mean(defined)) if defined else math.nan
    if task == "classification":
        return {"auc": mean, "auc_tasks": len(defined), "auc_per_task": per_task}
    return {"rmse": mean, "rmse_per_task": per_task}


def metric_name(task: TaskType) -> str:
    """``auc`` (higher is better) or ``rmse`` (lower is better)."""
    return "auc" if task == "classification" else "rmse"


# ------------------------------------------------------------------------------------------------- training
@dataclass
class MoleculeResult:
    seed: int
    task: TaskType
    best_epoch: int
    epochs_run: int
    selection: str
    val: dict[str, Any]
    test: dict[str, Any]
    history: dict[str, list[float]]
    seconds: float
    state_dict: dict[str, Tensor] = field(repr=False, default_factory=dict)

    @property
    def val_score(self) -> float:
        return self.val[metric_name(self.task)]

    @property
    def test_score(self) -> float:
        return self.test[metric_name(self.task)]

    def summary(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("state_dict")
        return values


def _batches(graphs: list[Graph], targets: Tensor, order: list[int], size: int):
    for start in range(0, len(order), size):
        chosen = order[start:start + size]
        yield GraphBatch.collate([graphs[i] for i in chosen], y=targets[chosen])


@torch.no_grad()
def predict_graphs(model: MoleculeGIN, graphs: list[Graph], task: TaskType, batch_size: int = 256) -> Tensor:
    """Predictions ``(G, T)`` (probabilities or values in target units) for many molecules, in order."""
    model.eval()
    outputs = []
    empty = torch.empty((len(graphs), 0))
    for batch in _batches(graphs, empty, list(range(len(graphs))), batch_size):
        outputs.append(model.predict(batch, task))
    return torch.cat(outputs) if outputs else torch.empty((0, model.head.out_features))


def _loss_on(model: MoleculeGIN, graphs: list[Graph], targets: Tensor, task: TaskType) -> float:
    """Masked loss on standardized targets, in eval mode (for selection when no metric is defined)."""
    model.eval()
    with torch.no_grad():
        total, count = 0.0, 0
        for batch in _batches(graphs, targets, list(range(len(graphs))), 256):
            present = int((~torch.isnan(batch.y)).sum())
            if present:
                total += float(masked_loss(model(batch), batch.y, task)) * present
                count += present
    return total / max(count, 1)


def train_molecule_model(dataset: MoleculeDataset, split: tuple[np.ndarray, np.ndarray, np.ndarray],
                         config: MoleculeConfig = MoleculeConfig(), seed: int = 0,
                         show_progress: bool | None = None) -> MoleculeResult:
    """Train on ``split[0]``, stop early on ``split[1]``, score ``split[2]`` at the best validation epoch.

    Selection: the validation ROC-AUC (classification) or RMSE (regression); when no validation task has
    both classes the validation loss is used instead (``selection`` in the result says which).
    """
    train_index, val_index, test_index = (np.asarray(part, dtype=np.int64) for part in split)
    if not len(train_index) or not len(val_index) or not len(test_index):
        raise ValueError(f"every split part needs molecules, got train {len(train_index)}, val {len(val_index)}, "
                         f"test {len(test_index)}")
    began = time.perf_counter()
    generator = seed_everything(seed)
    task, targets = dataset.task, dataset.targets
    scaled = targets.clone()
    model = config.build(dataset.graphs[0].num_features, dataset.graphs[0].num_edge_features, dataset.num_tasks,
                         dataset.featurizer)
    if task == "regression":
        train_targets = targets[train_index]
        mean = torch.nanmean(train_targets, dim=0).nan_to_num(0.0)
        centered = torch.where(torch.isnan(train_targets), torch.zeros_like(train_targets), train_targets - mean)
        count = (~torch.isnan(train_targets)).sum(0).clamp_min(1)
        std = (centered.pow(2).sum(0) / count).sqrt()
        std = torch.where(std > 0, std, torch.ones_like(std))
        model.target_mean.copy_(mean)
        model.target_std.copy_(std)
        scaled = (targets - mean) / std
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    train_graphs = [dataset.graphs[i] for i in train_index]
    val_graphs = [dataset.graphs[i] for i in val_index]
    train_targets, val_targets = scaled[train_index], scaled[val_index]
    val_labels = targets[val_index].numpy()
    name = metric_name(task)
    use_metric = task == "regression" or task_metrics(np.zeros_like(val_labels), val_labels, task)["auc_tasks"] > 0
    selection = f"val_{name}" if use_metric else "val_loss"

    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], f"val_{name}": []}
    best_value, best_epoch, best_state, stale = -math.inf, 0, copy.deepcopy(model.state_dict()), 0
    epochs_run = 0
    for epoch in progress(range(1, config.epochs + 1), desc=f"seed {seed}", total=config.epochs,
                          enabled=show_progress):
        model.train()
        order = torch.randperm(len(train_graphs), generator=generator).tolist()
        losses = []
        for batch in _batches(train_graphs, train_targets, order, config.batch_size):
            if batch.x.size(0) < 2:   # batch norm needs two atoms; a lone single-atom molecule is skipped
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = masked_loss(model(batch), batch.y, task)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        epochs_run = epoch
        history["train_loss"].append(float(np.mean(losses)) if losses else math.nan)
        val_loss = _loss_on(model, val_graphs, val_targets, task)
        val_scores = task_metrics(predict_graphs(model, val_graphs, task).numpy(), val_labels, task)
        history["val_loss"].append(val_loss)
        history[f"val_{name}"].append(val_scores[name])
        if use_metric:
            value = val_scores[name] if task == "classification" else -val_scores[name]
        else:
            value = -val_loss
        if value > best_value:
            best_value, best_epoch, stale = value, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    test_graphs = [dataset.graphs[i] for i in test_index]
    val = task_metrics(predict_graphs(model, val_graphs, task).numpy(), val_labels, task, dataset.target_names)
    test = task_metrics(predict_graphs(model, test_graphs, task).numpy(), targets[test_index].numpy(), task,
                        dataset.target_names)
    return MoleculeResult(seed=seed, task=task, best_epoch=best_epoch, epochs_run=epochs_run, selection=selection,
                          val=val, test=test, history=history, seconds=time.perf_counter() - began,
                          state_dict=best_state)


def summarize_molecules(results: list[MoleculeResult]) -> dict[str, Any]:
    """Mean and population standard deviation over seeds of the test and validation scores
    (``test_auc_mean`` ... or ``test_rmse_mean`` ...); seeds whose score is undefined (NaN) are left out
    and counted in ``seeds_without_score``."""
    if not results:
        raise ValueError("no results to summarize")
    name = metric_name(results[0].task)
    summary: dict[str, Any] = {"seeds": len(results)}
    for part in ("test", "val"):
        values = np.array([getattr(r, part)[name] for r in results], dtype=np.float64)
        finite = values[np.isfinite(values)]
        summary[f"{part}_{name}_mean"] = float(finite.mean()) if finite.size else math.nan
        summary[f"{part}_{name}_std"] = float(finite.std()) if finite.size else math.nan
        if part == "test":
            summary["seeds_without_score"] = int(values.size - finite.size)
    summary["best_epoch_mean"] = float(np.mean([r.best_epoch for r in results]))
    summary["seconds_per_seed"] = float(np.mean([r.seconds for r in results]))
    return summary
