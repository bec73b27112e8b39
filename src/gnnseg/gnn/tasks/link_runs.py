"""Link prediction as a user runs it: several seeds into a run directory with per-seed metrics."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from gnnseg.core import new_run, progress
from gnnseg.gnn.datasets import load_node_dataset
from gnnseg.gnn.tasks.link import LinkConfig, summarize_links, train_link_predictor


def run_link_prediction(dataset: str, root: str | os.PathLike | None, *, seeds: int = 1, first_seed: int = 0,
                        variational: bool = False, objective: str = "full", epochs: int = 200,
                        runs_root: str | os.PathLike = "runs") -> dict[str, Any]:
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    config = LinkConfig(variational=variational, objective=objective, epochs=epochs)
    graph = load_node_dataset(dataset, root)
    run = new_run("gnn-linkpred", runs_root)
    run.save_config({"dataset": graph.name, "seeds": seeds, "first_seed": first_seed, "config": asdict(config)})
    results = []
    for seed in progress(range(first_seed, first_seed + seeds), desc=f"linkpred on {graph.name}", total=seeds):
        results.append(train_link_predictor(graph, config, seed))
        run.log_metrics(per_seed=[asdict(r) for r in results])
    summary = {"model": "vgae" if variational else "gae", "dataset": graph.name, **summarize_links(results)}
    run.log_metrics(summary=summary)
    return {**summary, "run_dir": str(run.path)}
