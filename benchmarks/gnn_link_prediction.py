"""GAE and VGAE link prediction on Cora (and CiteSeer) over several seeds, beside the GAE paper.

Writes benchmarks/results/gnn_link_prediction.json. Paper: Kipf & Welling 2016, "Variational Graph
Auto-Encoders", Table 1 (Cora GAE 91.0 / 92.0, VGAE 91.4 / 92.6 AUC / AP; CiteSeer GAE 89.5 / 89.9,
VGAE 90.8 / 92.0).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

import torch

from gnnseg.core import machine_info, progress, write_json
from gnnseg.gnn.datasets import load_planetoid
from gnnseg.gnn.tasks.link import LinkConfig, summarize_links, train_link_predictor

RESULTS = Path(__file__).resolve().parent / "results"
PAPER = {("gae", "cora"): (91.0, 92.0), ("vgae", "cora"): (91.4, 92.6),
         ("gae", "citeseer"): (89.5, 89.9), ("vgae", "citeseer"): (90.8, 92.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/datasets/planetoid")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--datasets", nargs="+", default=["cora"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for dataset in args.datasets:
        graph = load_planetoid(dataset, args.root)
        for model in ("gae", "vgae"):
            config = LinkConfig(variational=model == "vgae")
            began = time.perf_counter()
            results = [train_link_predictor(graph, config, seed)
                       for seed in progress(range(args.seeds), desc=f"{model}/{dataset}", total=args.seeds)]
            summary = summarize_links(results)
            paper_auc, paper_ap = PAPER[(model, dataset)]
            rows.append({"model": model, "dataset": dataset, **summary, "paper_auc": paper_auc, "paper_ap": paper_ap,
                         "seconds": time.perf_counter() - began, "config": asdict(config)})
            print(f"{model:4s} {dataset:9s} AUC {100 * summary['test_auc_mean']:.1f} +- "
                  f"{100 * summary['test_auc_std']:.1f}  AP {100 * summary['test_ap_mean']:.1f} +- "
                  f"{100 * summary['test_ap_std']:.1f}  (paper {paper_auc} / {paper_ap})", flush=True)
    write_json(RESULTS / "gnn_link_prediction.json",
               {"benchmark": "gnn_link_prediction", "machine": machine_info(), "seeds": args.seeds,
                "targets": {"cora": {"auc": 0.91, "ap": 0.92}}, "rows": rows})


if __name__ == "__main__":
    main()
