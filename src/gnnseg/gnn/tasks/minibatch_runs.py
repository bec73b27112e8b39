"""Mini-batch node classification as a user runs it: seeds, a run directory, checkpoints, resume, torchrun.

``runs/gnn-train/<time>/`` gets ``config.json``, ``metrics.json`` (per seed and summary, rewritten after each
seed), ``checkpoint_seed<k>.pt`` (after every epoch, for resuming), ``model.pt`` (the seed with the best
validation accuracy, loadable by ``gnnseg gnn eval``) and ``curves.png``. Under ``torchrun`` only rank 0
writes; every rank returns the same summary.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
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
from gnnseg.core.distributed import distributed_context
from gnnseg.core.runs import RunDirectory, reopen_run
from gnnseg.gnn import ops
from gnnseg.gnn.datasets import dataset_spec
from gnnseg.gnn.graph import Graph
from gnnseg.gnn.node_splits import DEFAULT_SEED
from gnnseg.gnn.plots import plot_training_curves
from gnnseg.gnn.tasks.minibatch import (
    MiniBatchConfig,
    _config_dict,
    check_resumable,
    config_from_dict,
    evaluate_layerwise,
    minibatch_config,
    prepare_minibatch_graph,
    summarize_minibatch,
    train_minibatch,
)
from gnnseg.gnn.tasks.node_runs import check_new_file, load_split_dataset, rebuild_classifier, write_predictions

MODEL_FORMAT = "gnnseg.minibatch_classifier/1"
SPLIT_DEFAULTS = {"split": None, "split_seed": DEFAULT_SEED}


def run_minibatch_classification(model: str | None, sampler: str | None, dataset: str,
                                 root: str | os.PathLike | None, *, seeds: int = 1, first_seed: int = 0,
                                 runs_root: str | os.PathLike = "runs", overrides: dict[str, Any] | None = None,
                                 resume_run: str | os.PathLike | None = None, split: Sequence[float] | None = None,
                                 split_seed: int = DEFAULT_SEED, save_predictions: str | os.PathLike | None = None,
                                 show_progress: bool | None = None) -> dict[str, Any]:
    """Train ``seeds`` mini-batch models (seeds ``first_seed..``) and return the summary with ``run_dir``,
    ``checkpoint``, ``sampled_nodes_per_batch_mean`` and ``peak_rss_mb``. ``resume_run`` continues an
    interrupted run in that folder (same arguments), each seed from its last checkpoint. ``split``, ``split_seed``
    and ``save_predictions`` as in :func:`~gnnseg.gnn.tasks.node_runs.run_node_classification` (predictions are
    the saved model's, computed exactly over whole neighbourhoods)."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    check_new_file(save_predictions)
    context = distributed_context(backend="gloo")        # the mini-batch trainer computes on the CPU
    config = minibatch_config(model, sampler, dataset, **(overrides or {}))
    graph = load_split_dataset(dataset, root, split, split_seed)
    spec = dataset_spec(dataset)               # folders as absolute paths, so the checkpoint finds its data
    splitting = {"split": None if split is None else list(split), "split_seed": split_seed}
    settings = {"model": config.model, "sampler": config.sampler, "dataset": graph.name, "root": str(root),
                "seeds": seeds, "first_seed": first_seed, "world_size": context.world_size, **splitting,
                "config": _config_dict(config)}
    run: RunDirectory | None = None
    if resume_run is not None:
        folder = Path(resume_run)
        check_resumable(folder, settings, config, older_defaults=SPLIT_DEFAULTS)    # runs from before splits
        if context.is_main:     # one rank writes the run's files: a rank closing it late would undo rank 0's metrics
            run = reopen_run(folder)
    elif context.is_main:
        run = new_run("gnn-train", runs_root)
        run.save_config(settings)
    if context.enabled:        # every rank needs the folder (to resume); rank 0 made it
        shared = [str(run.path) if run is not None else None]
        torch.distributed.broadcast_object_list(shared, src=0)
        folder = Path(shared[0])
    else:
        folder = run.path if run is not None else Path(runs_root)

    results = []
    for seed in progress(range(first_seed, first_seed + seeds), desc=f"{config.model} on {graph.name}",
                         total=seeds, enabled=show_progress if context.is_main else False):
        checkpoint = folder / f"checkpoint_seed{seed}.pt"
        resume = resume_run is not None and checkpoint.is_file()
        results.append(train_minibatch(graph, config, seed, checkpoint=checkpoint, resume=resume,
                                       show_progress=show_progress, context=context))
        if context.is_main and run is not None:
            run.log_metrics(per_seed=[r.summary() for r in results])
    best = max(results, key=lambda r: (r.val_acc, -r.seed))
    summary = {"model": config.model, "sampler": config.sampler, "dataset": graph.name,
               **summarize_minibatch(results)}
    model_path = folder / "model.pt"
    if context.is_main and run is not None:
        save_checkpoint({"format": MODEL_FORMAT, "model": config.model, "dataset": spec, **splitting,
                         "config": _config_dict(config), "in_channels": graph.num_features,
                         "num_classes": graph.num_classes, "seed": best.seed, "state_dict": best.state_dict,
                         "metrics": best.summary()}, model_path)
        curves = {key: best.history[key] for key in ("train_loss", "val_loss", "train_acc", "val_acc", "test_acc")}
        plot_training_curves(curves, run.figure_path("curves"),
                             f"{config.model.upper()} ({config.sampler} sampling) on {graph.name}, seed {best.seed}")
        if save_predictions is not None:
            predictions = minibatch_predictions(best.state_dict, graph, config)
            summary["predictions"] = str(write_predictions(predictions, save_predictions))
        run.log_metrics(summary=summary)
    return {**summary, "run_dir": str(folder), "checkpoint": str(model_path)}


def minibatch_predictions(state_dict: dict[str, torch.Tensor], graph: Graph, config: MiniBatchConfig) -> torch.Tensor:
    """The class ``(N,)`` of every node by the model with ``state_dict``, computed exactly (whole neighbourhoods,
    layer by layer)."""
    graph = prepare_minibatch_graph(graph, config)
    model = config.build(graph.num_features, graph.num_classes)
    model.load_state_dict(state_dict)
    neighborhood = config.build_sampler(graph).full_neighborhood()
    x = ops.dense(graph.x) if ops.is_sparse(graph.x) else graph.x
    return model.layerwise_inference(x, neighborhood, max_nodes=config.eval_max_nodes,
                                     max_edges=config.eval_max_edges).argmax(-1)


def evaluate_minibatch_checkpoint(path: str | os.PathLike, root: str | os.PathLike | None,
                                  dataset: str | None = None) -> dict[str, Any]:
    """Rebuild the model saved by :func:`run_minibatch_classification` and score it exactly (full
    neighbourhoods, layer by layer) on its dataset's splits."""
    payload = load_checkpoint(path, required_keys=("format", "config", "state_dict", "dataset", "in_channels",
                                                   "num_classes"))
    if payload["format"] != MODEL_FORMAT:
        raise CheckpointError(f"{path} is a {payload['format']!r} checkpoint, not a mini-batch node classifier")
    config = replace(config_from_dict(payload["config"]), num_workers=0)
    graph = prepare_minibatch_graph(load_split_dataset(dataset or payload["dataset"], root, payload.get("split"),
                                                       payload.get("split_seed", DEFAULT_SEED)), config)
    model = rebuild_classifier(payload, config, graph, path)
    neighborhood = config.build_sampler(graph).full_neighborhood()
    scores = evaluate_layerwise(model, graph, neighborhood, graph.x, config)
    return {"model": config.model, "sampler": config.sampler, "dataset": graph.name, "checkpoint": str(Path(path)),
            **scores}
