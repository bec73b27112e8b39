"""Link prediction, the unsupervised setting: the graph's own edges are the labels.

An encoder (two GCN layers, Kipf & Welling 2016 "Variational Graph Auto-Encoders": 32 then 16 units)
embeds the nodes of the *training* graph; the decoder scores a pair by the inner product ``z_u . z_v``;
the loss is binary cross-entropy ``L = sum CE(y_uv, sigmoid(z_u . z_v))`` over

* ``objective="full"`` (the GAE paper's): every node pair of the training adjacency (plus self-loops),
  positives up-weighted by ``#non-edges / #edges``. Exact and low-variance; costs ``N^2`` per epoch.
* ``objective="sampled"`` (the lecture's and PyG's ``GAE.recon_loss``): the training edges and as many
  freshly sampled non-edges each epoch. Scales to graphs where ``N^2`` does not fit.

The variational variant (VGAE) adds a Gaussian posterior per node and its KL term. Edges are split
85/5/10 into train/validation/test; validation and test pairs come with the same number of non-edges,
scored by ROC-AUC and average precision; the test score is taken after the last epoch (the paper's
protocol) or at the epoch of best validation AUC (``select="val_auc"``).
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnseg.core import progress, seed_everything
from gnnseg.core.ranking import average_precision, roc_auc
from gnnseg.gnn import ops
from gnnseg.gnn.graph import Graph, GraphLike, GraphValidationError, as_graph
from gnnseg.gnn.layers import GCNConv


@dataclass(frozen=True)
class EdgeSplit:
    """Undirected edges as ``(2, E)`` pairs with ``u < v``; negatives are non-edges of the full graph."""

    train: Tensor
    val: Tensor
    val_negative: Tensor
    test: Tensor
    test_negative: Tensor
    num_nodes: int

    def train_edge_index(self) -> Tensor:
        """Training edges in both directions, the graph the encoder is allowed to see."""
        return torch.cat([self.train, self.train.flip(0)], dim=1)


def undirected_pairs(edge_index: Tensor) -> Tensor:
    """Unique ``u < v`` pairs, self-loops dropped."""
    source, target = edge_index
    low, high = torch.minimum(source, target), torch.maximum(source, target)
    keep = low != high
    pairs = torch.stack([low[keep], high[keep]])
    return torch.unique(pairs, dim=1)


def negative_sampling(num_nodes: int, forbidden: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` distinct pairs ``u < v`` that are neither self-loops nor in ``forbidden`` (``(2, F)``, any
    direction). Vectorised rejection sampling; raises when the graph is too dense to find them."""
    if count <= 0:
        return torch.empty(2, 0, dtype=torch.int64)
    forbidden_pairs = undirected_pairs(forbidden) if forbidden.numel() else forbidden.new_empty(2, 0)
    possible = num_nodes * (num_nodes - 1) // 2 - forbidden_pairs.size(1)
    if possible < count:
        raise GraphValidationError(f"cannot sample {count} non-edges: only {possible} node pairs are not edges")
    forbidden_keys = torch.sort(forbidden_pairs[0] * num_nodes + forbidden_pairs[1]).values
    found = torch.empty(0, dtype=torch.int64)
    while found.numel() < count:
        draw = torch.randint(0, num_nodes, (2, 2 * (count - found.numel()) + 16), generator=generator)
        low, high = draw.min(0).values, draw.max(0).values
        keys = (low * num_nodes + high)[low != high]
        if forbidden_keys.numel():
            position = torch.searchsorted(forbidden_keys, keys).clamp_max(forbidden_keys.numel() - 1)
            keys = keys[forbidden_keys[position] != keys]
        found = torch.unique(torch.cat([found, keys]))
    chosen = found[torch.randperm(found.numel(), generator=generator)[:count]]
    return torch.stack([chosen // num_nodes, chosen % num_nodes])


def split_edges(graph: Graph, val_fraction: float = 0.05, test_fraction: float = 0.10, seed: int = 0) -> EdgeSplit:
    """Random 85/5/10 split of the undirected edges, with one non-edge per validation and test edge."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"fractions must be in (0, 1) and sum below 1, got {val_fraction}, {test_fraction}")
    pairs = undirected_pairs(graph.edge_index)
    if pairs.size(1) < 3:
        raise GraphValidationError(f"{graph.name} has {pairs.size(1)} undirected edges; need at least 3 to split")
    generator = torch.Generator().manual_seed(seed)
    pairs = pairs[:, torch.randperm(pairs.size(1), generator=generator)]
    num_val = max(1, int(round(val_fraction * pairs.size(1))))
    num_test = max(1, int(round(test_fraction * pairs.size(1))))
    val, test, train = pairs[:, :num_val], pairs[:, num_val:num_val + num_test], pairs[:, num_val + num_test:]
    negatives = negative_sampling(graph.num_nodes, graph.edge_index, num_val + num_test, generator)
    return EdgeSplit(train=train, val=val, val_negative=negatives[:, :num_val], test=test,
                     test_negative=negatives[:, num_val:], num_nodes=graph.num_nodes)


class GraphAutoEncoder(nn.Module):
    """GCN encoder + inner-product decoder; ``variational=True`` gives VGAE."""

    def __init__(self, in_channels: int, hidden: int = 32, latent: int = 16, variational: bool = False) -> None:
        super().__init__()
        self.variational = variational
        self.hidden = GCNConv(in_channels, hidden, cached=True, bias=False)   # no biases, as in the GAE paper
        self.mean = GCNConv(hidden, latent, cached=True, bias=False)
        self.log_std = GCNConv(hidden, latent, cached=True, bias=False) if variational else None
        self.kl = torch.zeros(())

    def encode(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """Node embeddings ``(N, latent)``; VGAE samples them while training (reparameterisation)."""
        h = F.relu(self.hidden(x, edge_index))
        mean = self.mean(h, edge_index)
        if not self.variational:
            return mean
        log_std = self.log_std(h, edge_index).clamp(max=10)
        self.kl = -0.5 / x.size(0) * torch.mean(torch.sum(1 + 2 * log_std - mean ** 2 - log_std.exp() ** 2, dim=1))
        return mean + torch.randn_like(mean) * log_std.exp() if self.training else mean

    @staticmethod
    def decode(z: Tensor, pairs: Tensor) -> Tensor:
        """Logits ``z_u . z_v`` for pairs ``(2, P)``."""
        return (z[pairs[0]] * z[pairs[1]]).sum(-1)


@dataclass(frozen=True)
class LinkConfig:
    hidden: int = 32
    latent: int = 16
    lr: float = 0.01
    epochs: int = 200
    variational: bool = False
    objective: Literal["full", "sampled"] = "full"
    row_normalize_features: bool = False      # the GAE paper feeds the raw binary features
    select: Literal["last", "val_auc"] = "last"   # the GAE paper reports the final epoch
    val_fraction: float = 0.05
    test_fraction: float = 0.10

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.hidden < 1 or self.latent < 1:
            raise ValueError(f"epochs, hidden and latent must be >= 1, got {self.epochs}, {self.hidden}, {self.latent}")


@dataclass
class LinkResult:
    seed: int
    test_auc: float
    test_ap: float
    val_auc: float
    val_ap: float
    best_epoch: int


def _scores(z: Tensor, positive: Tensor, negative: Tensor) -> tuple[float, float]:
    logits = torch.cat([GraphAutoEncoder.decode(z, positive), GraphAutoEncoder.decode(z, negative)])
    labels = torch.cat([torch.ones(positive.size(1)), torch.zeros(negative.size(1))])
    return roc_auc(logits.numpy(), labels.numpy()), average_precision(logits.numpy(), labels.numpy())


def full_reconstruction_loss(train_edges: Tensor, num_nodes: int):
    """The GAE paper's objective: weighted BCE of ``Z Z^T`` against ``A_train + I`` over all ``N^2`` pairs.

    As in the reference code (tkipf/gae ``train.py``), the positive weight and the normalization count the
    training edges without the self-loops: ``pos_weight = (N^2 - |A|) / |A|``,
    ``norm = N^2 / (2 (N^2 - |A|))``."""
    target = torch.eye(num_nodes)
    target[train_edges[0], train_edges[1]] = 1.0
    positives = float(train_edges.size(1))
    pos_weight = torch.tensor((num_nodes ** 2 - positives) / positives)
    norm = num_nodes ** 2 / (2 * (num_nodes ** 2 - positives))

    def loss(z: Tensor) -> Tensor:
        return norm * F.binary_cross_entropy_with_logits(z @ z.t(), target, pos_weight=pos_weight)

    return loss


def train_link_predictor(graph: GraphLike, config: LinkConfig = LinkConfig(), seed: int = 0,
                         show_progress: bool | None = None) -> LinkResult:
    """Split, train, and report test AUC/AP at the selected epoch (``config.select``). ``graph``: a
    :class:`Graph`, a PyG ``Data`` or a one-graph PyG dataset, with node features."""
    graph = as_graph(graph).validate()
    if graph.x is None:
        raise GraphValidationError("link prediction needs node features x (use an identity matrix if none)")
    if config.objective not in ("full", "sampled"):
        raise ValueError(f"objective must be 'full' or 'sampled', got {config.objective!r}")
    split = split_edges(graph, config.val_fraction, config.test_fraction, seed)
    generator = seed_everything(seed)
    x = ops.sparse_features(graph.row_normalize_features().x if config.row_normalize_features else graph.x)
    train_edges = split.train_edge_index()
    model = GraphAutoEncoder(graph.num_features, config.hidden, config.latent, config.variational)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    if config.objective == "full":
        reconstruction = full_reconstruction_loss(train_edges, graph.num_nodes)
    best = (-1.0, None, 0)
    for epoch in progress(range(config.epochs), desc=f"link prediction seed {seed}", enabled=show_progress):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        z = model.encode(x, train_edges)
        if config.objective == "full":
            loss = reconstruction(z)
        else:
            negative = negative_sampling(graph.num_nodes, train_edges, split.train.size(1), generator)
            logits = torch.cat([model.decode(z, split.train), model.decode(z, negative)])
            labels = torch.cat([torch.ones(split.train.size(1)), torch.zeros(negative.size(1))])
            loss = F.binary_cross_entropy_with_logits(logits, labels)
        if config.variational:
            loss = loss + model.kl
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            val_auc, _ = _scores(model.encode(x, train_edges), split.val, split.val_negative)
        if config.select == "last" or val_auc > best[0]:
            best = (val_auc, copy.deepcopy(model.state_dict()), epoch)
    model.load_state_dict(best[1])
    model.eval()
    with torch.no_grad():
        z = model.encode(x, train_edges)
        val_auc, val_ap = _scores(z, split.val, split.val_negative)
        test_auc, test_ap = _scores(z, split.test, split.test_negative)
    return LinkResult(seed, test_auc, test_ap, val_auc, val_ap, best[2])


def summarize_links(results: list[LinkResult]) -> dict[str, float]:
    def mean_std(values):
        return statistics.fmean(values), statistics.pstdev(values)

    auc_mean, auc_std = mean_std([r.test_auc for r in results])
    ap_mean, ap_std = mean_std([r.test_ap for r in results])
    return {"seeds": len(results), "test_auc_mean": auc_mean, "test_auc_std": auc_std, "test_ap_mean": ap_mean,
            "test_ap_std": ap_std, "val_auc_mean": statistics.fmean(r.val_auc for r in results)}
