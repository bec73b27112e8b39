"""Depth sweeps: how accuracy and smoothness change as GCN stacks get deeper, with and without remedies.

For every depth, three variants are trained on a node-classification graph (Cora's public split) with the
full-batch trainer of :mod:`gnnseg.gnn.tasks.node`, and the representation after the last message-passing
layer is measured with :mod:`gnnseg.gnn.smoothing_metrics` (MAD, MADGap, both Dirichlet energies):

* ``gcn``: Kipf & Welling's GCN, ``depth`` GCN layers (the last one gives the logits), 64 hidden, ReLU.
* ``pairnorm``: the same with PairNorm after every hidden GCN layer (the official ``DeepGCN``:
  dropout -> conv -> PairNorm -> ReLU). Mode PN-SI, scale 1, the official README's choice for deep GCNs.
  At depth 1 there is no hidden layer, so it equals ``gcn``.
* ``gcnii``: Chen et al.'s GCNII: dropout -> linear -> ReLU gives ``H0``; ``depth`` GCNII layers with
  alpha 0.1 and lambda 0.5; dropout -> linear classifier.

Training settings: ``gcn``/``pairnorm`` use the PairNorm reference ``main.py`` defaults (hidden 64, Adam lr
0.005, L2 5e-4 on every parameter, at most 1500 epochs) except dropout, 0.2 instead of 0.6 (our choice: 0.6
before each of 16-32 layers left deep PairNorm stacks far less accurate; docs/gnn.md lists what was tried);
``gcnii`` the GCNII reference ``train.py`` defaults for Cora (hidden 64, dropout 0.6, lr 0.01, L2 0.01 on the
GCNII layers and 5e-4 on the two linear layers, at most 1500 epochs). Both references keep the model of the best
validation epoch; here every variant stops after 100 epochs without a better validation loss or accuracy and
reports the epoch of the lowest validation loss (the shared trainer's rules) — our choice, to bound CPU time.

"The representation after the last message-passing layer" is the logits for ``gcn`` and ``pairnorm``
(their last layer is a GCN layer) and the last GCNII layer's output (before the linear classifier) for
``gcnii``: in every variant it has gone through ``depth`` propagations.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnseg.core import new_run, progress, seed_everything
from gnnseg.gnn import models, ops
from gnnseg.gnn.datasets import load_node_dataset
from gnnseg.gnn.datasets.karate import CLUBS
from gnnseg.gnn.graph import GraphLike
from gnnseg.gnn.layers import GCNIIConv, GraphLayer, PairNorm
from gnnseg.gnn.plots import plot_embeddings
from gnnseg.gnn.smoothing_metrics import (
    DEFAULT_CHUNK_SIZE,
    dirichlet_energy,
    mean_average_distance,
    smoothness,
)
from gnnseg.gnn.tasks.karate_embeddings import karate_embeddings
from gnnseg.gnn.tasks.node import NodeConfig, prepare_graph, train_node_classifier, trainable_graph

VARIANTS = ("gcn", "pairnorm", "gcnii")
REMEDIES = ("pairnorm", "gcnii")
BASE_MODELS = ("gcn",)
DEFAULT_DEPTHS = (1, 2, 4, 8, 16, 32)
LABELS = {"gcn": "GCN", "pairnorm": "GCN + PairNorm (PN-SI)", "gcnii": "GCNII"}

# PairNorm reference main.py defaults (LingxiaoShawn/PairNorm): --hid 64 --lr 0.005 --dropout 0.6 --wd 5e-4
# --epochs 1500; README: "For GCN or GAT, we use PairNorm-SI or SCS", norm_scale 1. Dropout 0.2 is ours (module
# docstring).
DEEP_GCN_CONFIG = NodeConfig(model="gcn", hidden=64, dropout=0.2, lr=0.005, weight_decay=5e-4,
                             decay_first_layer_only=False, epochs=1500, stopping="patience", stopping_epochs=100,
                             select="val_loss")
PAIRNORM_MODE, PAIRNORM_SCALE = "PN-SI", 1.0
# GCNII reference train.py defaults, which semi.sh uses for Cora (chennnM/GCNII): --layer 64 --hidden 64
# --dropout 0.6 --lr 0.01 --wd1 0.01 (GCNII layers) --wd2 5e-4 (linear layers) --alpha 0.1 --lamda 0.5
# --epochs 1500 --patience 100. The GCNII layers get wd1 through the model's own parameter groups
# (GCNII.parameter_groups, which the trainer's optimizer_for uses).
GCNII_CONFIG = replace(DEEP_GCN_CONFIG, dropout=0.6, lr=0.01, weight_decay=5e-4)
GCNII_LAYER_WEIGHT_DECAY, GCNII_ALPHA, GCNII_LAMBDA = 0.01, 0.1, 0.5
SWEEP_CONFIGS = {"gcn": DEEP_GCN_CONFIG, "pairnorm": DEEP_GCN_CONFIG, "gcnii": GCNII_CONFIG}
METRICS = ("test_acc", "mad", "mad_gap", "mad_neighbor", "mad_remote", "dirichlet", "dirichlet_normalized",
           "epochs_run")


# ----------------------------------------------------------------------------------------------- models
class ConvThenNorm(GraphLayer):
    """A graph layer followed by a normalization of its output: ``norm(layer(x, edge_index))`` (full graphs)."""

    def __init__(self, layer: GraphLayer, norm: nn.Module) -> None:
        super().__init__()
        self.layer, self.norm = layer, norm

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.norm(self.layer(x, edge_index))


class GCNII(nn.Module):
    """Chen et al.'s GCNII network (the reference ``model.py``).

    ``dropout -> Linear -> ReLU`` gives ``H0``; then ``num_layers`` times ``dropout -> GCNIIConv(H, H0) ->
    ReLU`` (layer ``l`` uses ``beta_l = log(lambda_ / l + 1)``); then ``dropout -> Linear`` gives logits.
    ``forward`` follows :class:`gnnseg.gnn.models.StackedGNN`: ``return_hidden`` adds the list
    ``[H0, H1, ..., H_L, logits]`` and ``output_nodes`` restricts the classifier to those rows.
    """

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, *, num_layers: int = 64,
                 alpha: float = GCNII_ALPHA, lambda_: float = GCNII_LAMBDA, dropout: float = 0.6,
                 shared_weights: bool = True) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.dropout = dropout
        self.input = nn.Linear(in_channels, hidden_channels)
        self.convs = nn.ModuleList(GCNIIConv(hidden_channels, alpha=alpha, lambda_=lambda_, layer=layer,
                                             shared_weights=shared_weights, cached=True)
                                   for layer in range(1, num_layers + 1))
        self.output = nn.Linear(hidden_channels, out_channels)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Adam groups as in the reference: ``GCNII_LAYER_WEIGHT_DECAY`` on the GCNII layers, ``weight_decay`` on
        the input and output linear layers."""
        linear = [*self.input.parameters(), *self.output.parameters()]
        return [{"params": list(self.convs.parameters()), "weight_decay": GCNII_LAYER_WEIGHT_DECAY},
                {"params": linear, "weight_decay": weight_decay}]

    def forward(self, x: Tensor, edge_index: Tensor, return_hidden: bool = False,
                output_nodes: Tensor | None = None):
        x = ops.dropout(x, self.dropout, self.training)
        h0 = F.relu(ops.linear(x, self.input.weight, self.input.bias))
        hidden, h = [h0], h0
        for conv in self.convs:
            h = F.relu(conv(F.dropout(h, self.dropout, self.training), h0, edge_index))
            hidden.append(h)
        h = F.dropout(h, self.dropout, self.training)
        logits = self.output(h if output_nodes is None else h[output_nodes])
        hidden.append(logits)
        return (logits, hidden) if return_hidden else logits


def build_variant(variant: str, in_channels: int, num_classes: int, depth: int,
                  config: NodeConfig | None = None) -> nn.Module:
    """The ``variant`` network at ``depth`` message-passing layers (widths and dropout from ``config``)."""
    config = config or SWEEP_CONFIGS.get(variant, DEEP_GCN_CONFIG)
    if variant in ("gcn", "pairnorm"):
        model = models.gcn(in_channels, config.hidden, num_classes, num_layers=depth, dropout=config.dropout)
        if variant == "pairnorm":
            for k in range(depth - 1):
                model.layers[k] = ConvThenNorm(model.layers[k], PairNorm(PAIRNORM_MODE, PAIRNORM_SCALE))
        return model
    if variant == "gcnii":
        return GCNII(in_channels, config.hidden, num_classes, num_layers=depth, dropout=config.dropout)
    raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")


@torch.no_grad()
def final_representation(model: nn.Module, x: Tensor, edge_index: Tensor) -> Tensor:
    """The output of the last message-passing layer, in eval mode (see the module docstring)."""
    model.eval()
    _, hidden = model(x, edge_index, return_hidden=True)
    return hidden[-2] if isinstance(model, GCNII) else hidden[-1]


# ----------------------------------------------------------------------------------------------- the sweep
def _check_depths(depths: Sequence[int]) -> list[int]:
    depths = [int(d) for d in depths]
    if not depths or any(d < 1 for d in depths):
        raise ValueError(f"depths must be positive layer counts, got {depths}")
    return depths


def depth_sweep(graph: GraphLike, depths: Sequence[int] = DEFAULT_DEPTHS, variants: Sequence[str] = VARIANTS, *,
                seeds: int = 1, first_seed: int = 0, epochs: int | None = None,
                chunk_size: int = DEFAULT_CHUNK_SIZE, show_progress: bool | None = None) -> list[dict[str, Any]]:
    """Train every ``variant`` at every depth from seeds ``first_seed..`` and measure its last representation.

    ``epochs`` caps the variants' maximum epochs (quick runs). Returns one row per (variant, depth, seed):
    accuracies, epochs, training seconds and the :func:`gnnseg.gnn.smoothing_metrics.smoothness` diagnostics.
    ``graph``: as :func:`~gnnseg.gnn.tasks.node.train_node_classifier` takes it (split once for every run).
    """
    graph = trainable_graph(graph)
    depths = _check_depths(depths)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    runs = [(v, d, s) for v in variants for d in depths for s in range(first_seed, first_seed + seeds)]
    rows = []
    for variant, depth, seed in progress(runs, desc=f"depth sweep on {graph.name}", total=len(runs),
                                         enabled=show_progress):
        config = SWEEP_CONFIGS[variant] if epochs is None else replace(SWEEP_CONFIGS[variant], epochs=epochs)
        prepared = prepare_graph(graph, config)
        seed_everything(seed)
        model = build_variant(variant, graph.num_features, graph.num_classes, depth, config)
        start = time.perf_counter()
        result = train_node_classifier(prepared, replace(config, row_normalize_features=False), seed, model=model,
                                       show_progress=False)
        seconds = time.perf_counter() - start
        model.load_state_dict(result.state_dict)
        representation = final_representation(model, ops.sparse_features(prepared.x), prepared.edge_index)
        rows.append({"variant": variant, "depth": depth, "seed": seed, "test_acc": result.test_acc,
                     "val_acc": result.val_acc, "train_acc": result.train_acc, "best_epoch": result.best_epoch,
                     "epochs_run": result.epochs_run, "train_seconds": seconds,
                     **smoothness(representation, prepared.edge_index, chunk_size=chunk_size)})
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    if any(math.isnan(v) for v in values):
        return math.nan, math.nan
    return statistics.fmean(values), statistics.pstdev(values)


def summarize_sweep(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (variant, depth): ``<metric>_mean`` and ``<metric>_std`` over seeds (population std)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["variant"], row["depth"]), []).append(row)
    summary = []
    for (variant, depth), members in groups.items():
        entry: dict[str, Any] = {"variant": variant, "depth": depth, "seeds": len(members)}
        for metric in METRICS:
            entry[f"{metric}_mean"], entry[f"{metric}_std"] = _mean_std([float(m[metric]) for m in members])
        entry["train_seconds_total"] = sum(m["train_seconds"] for m in members)
        summary.append(entry)
    return summary


def sweep_table(summary: list[dict[str, Any]]) -> str:
    """A Markdown table of the summary (accuracy in %, mean ± std over seeds)."""
    lines = ["| variant | depth | test acc (%) | MAD | MADGap | Dirichlet | Dirichlet (normalized) | epochs |",
             "|---|---|---|---|---|---|---|---|"]
    for row in summary:
        lines.append(
            f"| {LABELS.get(row['variant'], row['variant'])} | {row['depth']} | "
            f"{100 * row['test_acc_mean']:.1f} ± {100 * row['test_acc_std']:.1f} | "
            f"{row['mad_mean']:.3f} | {row['mad_gap_mean']:.3f} | {row['dirichlet_mean']:.3g} | "
            f"{row['dirichlet_normalized_mean']:.3g} | {row['epochs_run_mean']:.0f} |")
    return "\n".join(lines) + "\n"


def plot_depth_sweep(summary: list[dict[str, Any]], path: str | os.PathLike, title: str) -> Path:
    """Accuracy, MAD, MADGap, both Dirichlet energies and epochs trained against depth, one line per variant
    (error bars: std over seeds)."""
    panels = [("test_acc", "test accuracy", False), ("mad", "MAD (all pairs)", False),
              ("mad_gap", "MADGap (>= 8 hops minus <= 3 hops)", False), ("dirichlet", "Dirichlet energy", True),
              ("dirichlet_normalized", "Dirichlet energy, degree-normalized", True),
              ("epochs_run", "epochs trained", False)]
    figure, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    variants = list(dict.fromkeys(row["variant"] for row in summary))
    for axis, (metric, caption, logarithmic) in zip(axes.flat, panels):
        for variant in variants:
            rows = sorted((r for r in summary if r["variant"] == variant), key=lambda r: r["depth"])
            axis.errorbar([r["depth"] for r in rows], [r[f"{metric}_mean"] for r in rows],
                          yerr=[r[f"{metric}_std"] for r in rows], marker="o", capsize=3,
                          label=LABELS.get(variant, variant))
        axis.set_xscale("log", base=2)
        depths = sorted({row["depth"] for row in summary})
        axis.set_xticks(depths, [str(d) for d in depths])
        axis.minorticks_off()
        if logarithmic:
            axis.set_yscale("log", nonpositive="mask")
        axis.set(xlabel="layers", title=caption)
        axis.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


# ----------------------------------------------------------------------------------------------- karate club
KARATE_PROPAGATION_DEPTHS = (1, 2, 4, 8, 16, 32)


def _embedding_metrics(embedding: Tensor, edge_index: Tensor) -> dict[str, float]:
    return {"mad": mean_average_distance(embedding),
            "dirichlet": float(dirichlet_energy(embedding, edge_index)),
            "dirichlet_normalized": float(dirichlet_energy(embedding, edge_index, normalized=True))}


def _caption(depth: int, metrics: dict[str, float], accuracy: float | None = None) -> str:
    text = f"{depth} layer{'s' if depth > 1 else ''}: "
    return text + (f"acc {accuracy:.2f}, " if accuracy is not None else "") + f"MAD {metrics['mad']:.2f}"


def karate_smoothing(depths: Sequence[int] = range(1, 6),
                     propagation_depths: Sequence[int] = KARATE_PROPAGATION_DEPTHS, seed: int = 0,
                     folder: str | os.PathLike | None = None) -> dict[str, Any]:
    """The lecture's karate-club pictures with MAD and both Dirichlet energies of every 2D embedding.

    ``trained``: one GCN per depth learns 2D embeddings from the two leaders' labels
    (:func:`gnnseg.gnn.tasks.karate_embeddings.karate_embeddings`, the demo's figure; Li, Han & Wu 2018, Fig. 2).
    Training pulls the two clubs apart, so smoothing shows mostly in accuracy.
    ``propagation``: the same graph with no training at all, ``A_hat^k X W`` for one random ``W (34, 2)``:
    pure Laplacian smoothing, where MAD and the normalized energy fall towards 0 with ``k`` (the unnormalized
    energy does not: the limit is proportional to ``sqrt(1 + d_i)``, not constant).
    With ``folder``, writes ``karate_embeddings.png`` and ``karate_propagation.png`` there.
    Returns ``{"trained": {"layers_<L>": {...}}, "propagation": {"layers_<k>": {...}}[, "figures": [...]]}``.
    (The club is 5 hops wide, so MADGap with its >= 8-hop remote pairs is undefined here.)
    """
    outcomes, graph = karate_embeddings(_check_depths(depths), seed)
    trained = {f"layers_{o.num_layers}": {"unlabeled_accuracy": o.accuracy,
                                          **_embedding_metrics(o.embedding.detach(), graph.edge_index)}
               for o in outcomes}
    a_hat = ops.normalized_adjacency(graph.edge_index, graph.num_nodes)
    x = graph.x @ torch.randn(graph.num_features, 2, generator=torch.Generator().manual_seed(seed))
    propagated, done = {}, 0
    for depth in sorted(_check_depths(propagation_depths)):
        for _ in range(depth - done):
            x = a_hat @ x
        propagated[depth], done = x, depth
    propagation = {f"layers_{k}": _embedding_metrics(e, graph.edge_index) for k, e in propagated.items()}
    result: dict[str, Any] = {"trained": trained, "propagation": propagation}
    if folder is not None:
        folder = Path(folder)
        result["figures"] = [
            str(plot_embeddings([(_caption(o.num_layers, trained[f"layers_{o.num_layers}"], o.accuracy), o.embedding)
                                 for o in outcomes], graph.y, graph.train_mask, folder / "karate_embeddings.png",
                                "Trained GCN embeddings of Zachary's karate club by depth "
                                "(stars: the 2 labeled members)", CLUBS)),
            str(plot_embeddings([(_caption(k, propagation[f"layers_{k}"]), e) for k, e in propagated.items()],
                                graph.y, graph.train_mask, folder / "karate_propagation.png",
                                "No training: A_hat^k X W for one random W (repeated GCN smoothing)", CLUBS))]
    return result


# ----------------------------------------------------------------------------------------------- the command
@dataclass(frozen=True)
class SweepSettings:
    """What a ``gnnseg gnn oversmooth`` run records in its ``config.json``."""

    dataset: str
    model: str
    variants: tuple[str, ...]
    depths: tuple[int, ...]
    seeds: int
    first_seed: int
    epochs: int | None
    karate: bool


def run_oversmoothing(dataset: str, root: str | os.PathLike | None, *, model: str = "gcn",
                      depths: Sequence[int] = DEFAULT_DEPTHS, remedies: Sequence[str] = REMEDIES, seeds: int = 1,
                      first_seed: int = 0, epochs: int | None = None, runs_root: str | os.PathLike = "runs",
                      karate: bool = True, show_progress: bool | None = None) -> dict[str, Any]:
    """Run :func:`depth_sweep` for ``model`` and each remedy and write ``runs/gnn-oversmooth/<time>/``:
    ``config.json``, ``metrics.json`` (per run and summary), ``table.md``, ``oversmoothing.png`` and, with
    ``karate``, ``karate_embeddings.png`` and ``karate_propagation.png``. Returns the summary with the paths."""
    if model not in BASE_MODELS:
        raise ValueError(f"the depth sweep supports the base model(s) {', '.join(BASE_MODELS)}, got {model!r}")
    unknown = [r for r in remedies if r not in REMEDIES]
    if unknown:
        raise ValueError(f"unknown remedies {unknown}; choose from {', '.join(REMEDIES)}")
    variants = tuple(dict.fromkeys([model, *remedies]))
    depths = tuple(_check_depths(depths))
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    graph = load_node_dataset(dataset, root)
    run = new_run("gnn-oversmooth", runs_root)
    settings = SweepSettings(graph.name, model, variants, depths, seeds, first_seed, epochs, karate)
    run.save_config({**asdict(settings), "root": str(root),
                     "training": {v: asdict(SWEEP_CONFIGS[v]) for v in variants},
                     "pairnorm": {"mode": PAIRNORM_MODE, "scale": PAIRNORM_SCALE},
                     "gcnii": {"alpha": GCNII_ALPHA, "lambda": GCNII_LAMBDA,
                               "layer_weight_decay": GCNII_LAYER_WEIGHT_DECAY}})
    rows = depth_sweep(graph, depths, variants, seeds=seeds, first_seed=first_seed, epochs=epochs,
                       show_progress=show_progress)
    summary = summarize_sweep(rows)
    run.log_metrics(per_run=rows, summary=summary)
    table = run.path / "table.md"
    table.write_text(sweep_table(summary))
    figure = plot_depth_sweep(summary, run.figure_path("oversmoothing"),
                              f"Over-smoothing on {graph.name}: {seeds} seed{'s' if seeds > 1 else ''} per point")
    result: dict[str, Any] = {"dataset": graph.name, "model": model, "variants": list(variants),
                              "depths": list(depths), "seeds": seeds,
                              "summary": [{k: v for k, v in row.items() if k.endswith("_mean") or k in
                                           ("variant", "depth")} for row in summary]}
    if karate:
        karate_metrics = karate_smoothing(seed=first_seed, folder=run.path)
        run.log_metrics(karate=karate_metrics)
        result["karate_figures"] = karate_metrics["figures"]
    return {**result, "run_dir": str(run.path), "table": str(table), "figure": str(figure)}
