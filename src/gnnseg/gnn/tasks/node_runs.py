"""Node classification as a user runs it: many seeds, a run directory, a checkpoint, and re-evaluation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from gnnseg.core import (
    CheckpointError,
    load_checkpoint,
    new_run,
    progress,
    save_checkpoint,
)
from gnnseg.core.atomic import atomic_path
from gnnseg.gnn import ops
from gnnseg.gnn.datasets import dataset_spec, load_node_dataset
from gnnseg.gnn.graph import Graph
from gnnseg.gnn.node_splits import DEFAULT_SEED, with_splits
from gnnseg.gnn.plots import plot_training_curves
from gnnseg.gnn.tasks.node import (
    NodeConfig,
    evaluate,
    prepare_graph,
    preset,
    summarize,
    train_node_classifier,
)

CHECKPOINT_FORMAT = "gnnseg.node_classifier/1"


def load_split_dataset(dataset: str, root: str | os.PathLike | None, split: Sequence[float] | None = None,
                       split_seed: int = DEFAULT_SEED) -> Graph:
    """The dataset a run trains on, loaded and split once for all its seeds
    (:func:`gnnseg.gnn.node_splits.with_splits`: ``split`` fractions at random, else its own masks or the
    default random split, from ``split_seed``)."""
    return with_splits(load_node_dataset(dataset, root), split, split_seed)


def check_new_file(path: str | os.PathLike | None) -> None:
    """Refuse, before any training, to write over an existing file."""
    if path is not None and Path(path).exists():
        raise FileExistsError(f"{path} exists; gnnseg never overwrites a file: choose a new name")


def write_predictions(predictions: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save ``predictions (N,)`` int64, one class per node in the input's node order, as a plain tensor
    (``torch.load(path, weights_only=True)`` reads it), atomically."""
    with atomic_path(path) as temporary:
        torch.save(predictions.to(torch.int64).contiguous(), temporary)
    return Path(path)


def run_node_classification(model: str, dataset: str, root: str | os.PathLike | None, *, seeds: int = 1,
                            first_seed: int = 0, runs_root: str | os.PathLike = "runs",
                            overrides: dict[str, Any] | None = None, split: Sequence[float] | None = None,
                            split_seed: int = DEFAULT_SEED, save_predictions: str | os.PathLike | None = None,
                            show_progress: bool | None = None) -> dict[str, Any]:
    """Train ``seeds`` models (seeds ``first_seed..``) and write ``runs/gnn-train/<time>/``:
    ``config.json``, ``metrics.json`` (per seed and summary), ``curves.png`` and ``model.pt`` (the seed with
    the best validation accuracy). ``split``: train / val / test fractions of a random split from ``split_seed``
    instead of the dataset's masks (:func:`load_split_dataset`). ``save_predictions``: a new file for the saved
    seed's class of every node (:func:`write_predictions`). Returns the summary, including ``run_dir`` and
    ``checkpoint``."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    check_new_file(save_predictions)
    config = preset(model, dataset, **(overrides or {}))
    graph = load_split_dataset(dataset, root, split, split_seed)
    splitting = {"split": None if split is None else list(split), "split_seed": split_seed}
    run = new_run("gnn-train", runs_root)
    run.save_config({"model": model, "dataset": graph.name, "root": str(root), "seeds": seeds,
                     "first_seed": first_seed, **splitting, "config": asdict(config)})
    results = []
    for seed in progress(range(first_seed, first_seed + seeds), desc=f"{model} on {graph.name}", total=seeds,
                         enabled=show_progress):
        results.append(train_node_classifier(graph, config, seed))
        run.log_metrics(per_seed=[r.summary() for r in results])
    best = max(results, key=lambda r: (r.val_acc, -r.seed))
    checkpoint = save_checkpoint({
        "format": CHECKPOINT_FORMAT, "model": model, "dataset": dataset_spec(dataset), **splitting,
        "config": asdict(config),
        "in_channels": graph.num_features, "num_classes": graph.num_classes, "seed": best.seed,
        "state_dict": best.state_dict, "metrics": best.summary(),
    }, run.path / "model.pt")
    plot_training_curves(best.history, run.figure_path("curves"),
                         f"{model.upper()} on {graph.name}, seed {best.seed}")
    summary = {"model": model, "dataset": graph.name, **summarize(results)}
    if save_predictions is not None:
        summary["predictions"] = str(write_predictions(best.predictions, save_predictions))
    run.log_metrics(summary=summary)
    return {**summary, "run_dir": str(run.path), "checkpoint": str(checkpoint)}


def rebuild_classifier(payload: dict[str, Any], config: Any, graph: Graph,
                       path: str | os.PathLike) -> torch.nn.Module:
    """The model of a node-classifier checkpoint, checked against the graph it is about to score."""
    if (graph.num_features, graph.num_classes) != (payload["in_channels"], payload["num_classes"]):
        raise CheckpointError(
            f"{path} was trained on {payload['in_channels']} features / {payload['num_classes']} classes, "
            f"but {graph.name} has {graph.num_features} / {graph.num_classes}")
    model = config.build(payload["in_channels"], payload["num_classes"])
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit the {config.model} model: missing {missing}, "
                              f"unexpected {unexpected}")
    return model


def evaluate_checkpoint(path: str | os.PathLike, root: str | os.PathLike | None,
                        dataset: str | None = None) -> dict[str, Any]:
    """Rebuild the model saved by :func:`run_node_classification` and score it on its dataset's splits."""
    payload = load_checkpoint(path, required_keys=("format", "config", "state_dict", "dataset", "in_channels",
                                                   "num_classes"))
    if payload["format"] != CHECKPOINT_FORMAT:  # a mini-batch model: gnnseg.gnn.tasks.saved_models
        raise CheckpointError(f"{path} is a {payload['format']!r} checkpoint, not a full-batch node classifier")
    known = {f.name for f in fields(NodeConfig)}
    config = NodeConfig(**{k: v for k, v in payload["config"].items() if k in known})
    graph = prepare_graph(load_split_dataset(dataset or payload["dataset"], root, payload.get("split"),
                                             payload.get("split_seed", DEFAULT_SEED)), config)
    model = rebuild_classifier(payload, config, graph, path)
    with torch.no_grad():
        scores = evaluate(model, graph, ops.sparse_features(graph.x))
    return {"model": config.model, "dataset": graph.name, "checkpoint": str(Path(path)), **scores}
