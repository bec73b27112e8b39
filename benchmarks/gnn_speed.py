"""Per-epoch training time of our GCN, GAT and SGC beside PyG's equivalents, same run, same machine.

An epoch is forward + backward + optimizer step of full-batch training with the papers' hyperparameters,
once as the papers run it ("paper": dropout included) and once without dropout ("no dropout"), which
isolates the graph kernels from the cost of drawing dropout masks. Both sides get the same row-normalized features,
graph, Adam settings and threads; we report the median of ``--epochs`` epochs after ``--warmup``, alternating
blocks of ours and theirs so that drift in machine load hits both. Also profiles where our time goes.
Writes benchmarks/results/gnn_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gnnseg.core import machine_info, write_json
from gnnseg.gnn import ops
from gnnseg.gnn.datasets import load_planetoid
from gnnseg.gnn.tasks.node import optimizer_for, preset

RESULTS = Path(__file__).resolve().parent / "results"


class PygModel(nn.Module):
    """PyG's examples/gcn.py, gat.py and sgc.py architectures."""

    def __init__(self, model: str, in_channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        from torch_geometric.nn import GATConv, GCNConv, SGConv

        self.dropout = dropout
        if model == "gcn":
            self.layers = nn.ModuleList([GCNConv(in_channels, 16, cached=True), GCNConv(16, num_classes, cached=True)])
            self.act = F.relu
        elif model == "gat":
            self.layers = nn.ModuleList([GATConv(in_channels, 8, heads=8, dropout=dropout),
                                         GATConv(64, num_classes, heads=1, concat=False, dropout=dropout)])
            self.act = F.elu
        else:
            self.layers = nn.ModuleList([SGConv(in_channels, num_classes, K=2, cached=True)])
            self.act = None

    def forward(self, x, edge_index):
        for position, layer in enumerate(self.layers):
            x = F.dropout(x, p=self.dropout, training=self.training)
            x = layer(x, edge_index)
            if position < len(self.layers) - 1:
                x = self.act(x)
        return x


def pyg_optimizer(model: PygModel, config) -> torch.optim.Optimizer:
    if config.decay_first_layer_only:
        return torch.optim.Adam([dict(params=model.layers[0].parameters(), weight_decay=config.weight_decay),
                                 dict(params=model.layers[1].parameters(), weight_decay=0.0)], lr=config.lr)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def make_step(model, optimizer, x, edge_index, y, mask, ours: bool):
    """One training epoch as each library's own examples write it (ours: the trainer's call)."""
    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        logits = model(x, edge_index, output_nodes=mask) if ours else model(x, edge_index)[mask]
        F.cross_entropy(logits, y[mask]).backward()
        optimizer.step()
        return (time.perf_counter() - start) * 1e3
    return step


def profile_breakdown(step, repeats: int = 30) -> dict[str, float]:
    """Share of self CPU time per operator family for our model (top entries)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            step()
    families: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        families[event.key] += event.self_cpu_time_total
    total = sum(families.values())
    top = sorted(families.items(), key=lambda kv: -kv[1])[:6]
    return {name: round(100 * value / total, 1) for name, value in top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/datasets/planetoid")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=4, help="alternating blocks per side")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for dataset in ("cora", "citeseer"):
        graph = load_planetoid(dataset, args.root).row_normalize_features()
        mask, y = graph.train_mask, graph.y
        for model_name, setting in [(m, s) for m in ("gcn", "gat", "sgc") for s in ("paper", "no dropout")]:
            if model_name == "sgc" and setting == "no dropout":
                continue  # SGC has no dropout
            config = preset(model_name, dataset)
            if setting == "no dropout":
                config = replace(config, dropout=0.0)
            torch.manual_seed(0)
            ours = config.build(graph.num_features, graph.num_classes).train()
            theirs = PygModel(model_name, graph.num_features, graph.num_classes, config.dropout).train()
            steps = {
                "ours": make_step(ours, optimizer_for(ours, config), ops.sparse_features(graph.x),
                                  graph.edge_index, y, mask, ours=True),
                "pyg": make_step(theirs, pyg_optimizer(theirs, config), graph.x, graph.edge_index, y, mask,
                                 ours=False),
            }
            times: dict[str, list[float]] = {"ours": [], "pyg": []}
            for step in steps.values():
                for _ in range(args.warmup):
                    step()
            per_block = args.epochs // args.blocks
            for _ in range(args.blocks):
                for side, step in steps.items():
                    times[side].extend(step() for _ in range(per_block))
            medians = {side: statistics.median(values) for side, values in times.items()}
            row = {"model": model_name, "dataset": dataset, "setting": setting, "ours_ms": medians["ours"],
                   "pyg_ms": medians["pyg"], "ratio": medians["ours"] / medians["pyg"], "epochs": len(times["ours"]),
                   "ours_profile_percent": profile_breakdown(steps["ours"]),
                   "pyg_profile_percent": profile_breakdown(steps["pyg"])}
            rows.append(row)
            print(f"{model_name:4s} {dataset:9s} {setting:10s} ours {row['ours_ms']:7.2f} ms  "
                  f"PyG {row['pyg_ms']:7.2f} ms  ratio {row['ratio']:.2f}", flush=True)

    import torch_geometric

    report = {"benchmark": "gnn_speed", "machine": machine_info(), "torch_geometric": torch_geometric.__version__,
              "definition": "median ms of forward+backward+Adam step, full batch, paper hyperparameters; "
                            "ratio = ours / PyG (below 1 means we are faster)", "rows": rows}
    write_json(RESULTS / "gnn_speed.json", report)
    lines = ["| model | dataset | setting | ours (ms/epoch) | PyG (ms/epoch) | ours / PyG |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model'].upper()} | {r['dataset']} | {r['setting']} | {r['ours_ms']:.2f} | {r['pyg_ms']:.2f} | "
              f"{r['ratio']:.2f} |" for r in rows]
    (RESULTS / "gnn_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
