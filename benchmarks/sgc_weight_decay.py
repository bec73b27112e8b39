"""Choose SGC's weight decay per dataset on validation accuracy, as Wu et al. 2019 do (they use hyperopt).

Sweeps a log grid, trains SGC (K=2, lr 0.2, 100 epochs) from a few seeds per value, and picks the value
with the best mean *validation* accuracy; test accuracy is recorded but never used to choose.
Writes benchmarks/results/sgc_weight_decay.json.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from gnnseg.core import machine_info, write_json
from gnnseg.gnn.datasets import load_planetoid
from gnnseg.gnn.tasks.node import preset, train_node_classifier

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/datasets/planetoid")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    grid = [float(f"{v:.1e}") for v in np.logspace(-7, -3, 17)]
    report: dict = {"machine": machine_info(), "grid": grid, "datasets": {}}
    for dataset in ("cora", "citeseer"):
        graph = load_planetoid(dataset, args.root)
        rows = []
        for decay in grid:
            runs = [train_node_classifier(graph, preset("sgc", weight_decay=decay), seed=s) for s in range(args.seeds)]
            rows.append({"weight_decay": decay, "val_acc": statistics.fmean(r.val_acc for r in runs),
                         "test_acc": statistics.fmean(r.test_acc for r in runs)})
            print(f"{dataset:9s} wd={decay:.1e}  val={rows[-1]['val_acc']:.4f}  test={rows[-1]['test_acc']:.4f}")
        best = max(rows, key=lambda row: (row["val_acc"], -row["weight_decay"]))
        report["datasets"][dataset] = {"chosen_by_val": best, "sweep": rows}
        print(f"{dataset}: chosen weight decay {best['weight_decay']:.1e} (val {best['val_acc']:.4f})")
    write_json(RESULTS / "sgc_weight_decay.json", report)


if __name__ == "__main__":
    main()
