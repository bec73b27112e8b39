"""Test accuracy of GCN, GAT and SGC on the public Planetoid split over many seeds, beside the papers.

Writes benchmarks/results/gnn_node_classification.{json,md}. Accuracy does not depend on speed, so this
may run with one thread while other work uses the second core (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gnnseg.core import machine_info, progress, write_json
from gnnseg.gnn.datasets import load_planetoid
from gnnseg.gnn.tasks.node import preset, summarize, train_node_classifier

RESULTS = Path(__file__).resolve().parent / "results"
DATASET_ORDER, MODEL_ORDER = ["cora", "citeseer"], ["gcn", "sgc", "gat"]

# Paper numbers on the public split: GCN Kipf & Welling 2017 Table 2; GAT Veličković et al. 2018 Table 2
# (mean +- std of 100 runs); SGC Wu et al. 2019 Table 2 (mean +- std of 10 runs).
PAPER = {
    ("gcn", "cora"): (81.5, None), ("gcn", "citeseer"): (70.3, None),
    ("gat", "cora"): (83.0, 0.7), ("gat", "citeseer"): (72.5, 0.7),
    ("sgc", "cora"): (81.0, 0.0), ("sgc", "citeseer"): (71.9, 0.1),
}
TARGET = {
    ("gcn", "cora"): 81.0, ("gcn", "citeseer"): 70.3,
    ("gat", "cora"): 82.5, ("gat", "citeseer"): 71.5,
    ("sgc", "cora"): 80.5, ("sgc", "citeseer"): 71.0,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/datasets/planetoid")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--models", nargs="+", default=["gcn", "sgc", "gat"])
    parser.add_argument("--datasets", nargs="+", default=["cora", "citeseer"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--merge", action="store_true",
                        help="replace only the rerun (model, dataset) rows of an existing result file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for dataset in args.datasets:
        graph = load_planetoid(dataset, args.root)
        for model in args.models:
            config = preset(model, dataset)
            start = time.perf_counter()
            results = [train_node_classifier(graph, config, seed)
                       for seed in progress(range(args.seeds), desc=f"{model}/{dataset}", total=args.seeds)]
            summary = summarize(results)
            paper_mean, paper_std = PAPER[(model, dataset)]
            mean = 100 * summary["test_acc_mean"]
            rows.append({"model": model, "dataset": dataset, **summary,
                         "test_acc_min": min(r.test_acc for r in results),
                         "test_acc_max": max(r.test_acc for r in results),
                         "paper_mean": paper_mean, "paper_std": paper_std, "target": TARGET[(model, dataset)],
                         "meets_target": mean >= TARGET[(model, dataset)],
                         "wall_seconds": time.perf_counter() - start, "config": vars(config)})
            print(f"{model:4s} {dataset:9s} {mean:5.2f} +- {100 * summary['test_acc_std']:.2f}  "
                  f"(paper {paper_mean}, target {TARGET[(model, dataset)]})", flush=True)

    output = RESULTS / "gnn_node_classification.json"
    if args.merge and output.is_file():
        rerun = {(row["model"], row["dataset"]) for row in rows}
        kept = [row for row in json.loads(output.read_text())["rows"] if (row["model"], row["dataset"]) not in rerun]
        rows = sorted(kept + rows,
                      key=lambda row: (DATASET_ORDER.index(row["dataset"]), MODEL_ORDER.index(row["model"])))
    report = {"benchmark": "gnn_node_classification", "seeds": args.seeds, "machine": machine_info(),
              "protocol": "public Planetoid split; test accuracy at the selected epoch (lowest validation loss "
                          "for GCN and GAT, last epoch for SGC); population std over seeds",
              "rows": rows}
    write_json(output, report)
    lines = [f"| model | dataset | ours (mean ± std, {args.seeds} seeds) | paper | target | met |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        paper = f"{row['paper_mean']}" + (f" ± {row['paper_std']}" if row["paper_std"] is not None else "")
        lines.append(f"| {row['model'].upper()} | {row['dataset']} | {100 * row['test_acc_mean']:.1f} ± "
                     f"{100 * row['test_acc_std']:.1f} | {paper} | ≥ {row['target']} | "
                     f"{'yes' if row['meets_target'] else 'no'} |")
    (RESULTS / "gnn_node_classification.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
