"""``gnnseg demo``: the main job on embedded data, no network, a few minutes on two cores.

Writes ``runs/demo/<time>/`` with ``config.json``, ``metrics.json`` and the pictures.
"""

from __future__ import annotations

import os
from typing import Any

from gnnseg.core import new_run
from gnnseg.gnn.datasets.karate import CLUBS
from gnnseg.gnn.plots import plot_embeddings
from gnnseg.gnn.tasks.karate import KARATE_CONFIG, karate_embeddings


def run_demo(runs_root: str | os.PathLike = "runs", seed: int = 0) -> dict[str, Any]:
    run = new_run("demo", runs_root)
    run.save_config({"seed": seed, "karate": {"depths": [1, 2, 3, 4, 5], "labeled_nodes": [0, 33],
                                              "training": vars(KARATE_CONFIG)}})
    outcomes, graph = karate_embeddings(range(1, 6), seed)
    figure = plot_embeddings(
        [(f"{o.num_layers} layer{'s' if o.num_layers > 1 else ''}: acc {o.accuracy:.2f}", o.embedding)
         for o in outcomes],
        graph.y, graph.train_mask, run.figure_path("karate_embeddings"),
        "GCN embeddings of Zachary's karate club, 2 labeled members (stars)", CLUBS)
    metrics = {"karate": {f"layers_{o.num_layers}": {"unlabeled_accuracy": o.accuracy, "train_loss": o.final_loss}
                          for o in outcomes}}
    run.log_metrics(**metrics)
    return {"run_dir": str(run.path), "figures": [str(figure)], **metrics}
