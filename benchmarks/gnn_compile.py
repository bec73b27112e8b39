"""Training-step time of GCN, GAT and SAGE eager and under ``torch.compile``, same run, same machine.

Three settings, each model eager and compiled from the same initial weights:

* ``cora / full graph``: one epoch of full-batch training (forward over the whole graph, loss on the training
  nodes, backward, Adam step) with the Cora presets (GCN and GAT: ``gnnseg.gnn.tasks.node.preset``; SAGE:
  the mini-batch ``sage`` preset's model, 2 layers of 256), sparse bag-of-words features as the trainer
  gives them;
* ``cora / blocks`` and ``synthetic / blocks``: one mini-batch step on sampled blocks (uniform neighbours,
  fanouts ``--fanouts``, ``--batch-size`` seeds; models as the mini-batch trainer builds them), cycling over
  ``--batches`` batches sampled once beforehand, so only the model is timed. The synthetic graph is the DC-SBM
  of ``benchmarks/gnn_sampling.py`` (``--nodes``, default ogbn-products' 2,449,029, mean degree 50.5); its
  input features are random (100 per node, drawn per batch outside the timing: the values do not change the
  time). The block models are compiled with ``dynamic=True`` (every batch has other shapes).

Full-graph training on the large graph is left out: GAT's messages over its 124M edges (8 heads of 8 channels,
float32) alone would take some 32 GB.
Reported per row: the median step time of ``--epochs`` steps after ``--warmup``, eager and compiled timed in
alternating blocks (drift in the machine's load hits both), their ratio (compiled / eager: below 1 means
compiling pays), and the compiled model's first call in seconds (not timed): compiling it, less where
inductor's on-disk cache or an earlier row of the same run already holds the code (near 0 then).
Writes ``benchmarks/results/gnn_compile.{json,md}`` (``--out-dir`` to change).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gnnseg.core import machine_info, write_json
from gnnseg.gnn import ops
from gnnseg.gnn.datasets import load_planetoid
from gnnseg.gnn.datasets.synthetic import SyntheticConfig, make_synthetic_parts
from gnnseg.gnn.graph import Graph
from gnnseg.gnn.sampling import NeighborSampler
from gnnseg.gnn.tasks.minibatch import MiniBatchConfig, minibatch_preset
from gnnseg.gnn.tasks.node import optimizer_for, preset

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("gcn", "gat", "sage")
SYNTHETIC_FEATURES, SYNTHETIC_CLASSES = 100, 47
Step = Callable[[], float]


def adam(model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, inputs: Sequence[tuple]) -> Step:
    """A step that trains ``model`` on the next ``(x, graph, y, output_nodes)`` of ``inputs`` (in a cycle);
    returns its milliseconds."""
    cycle = itertools.cycle(inputs)

    def step() -> float:
        x, graph, y, output_nodes = next(cycle)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        logits = model(x, graph, output_nodes=output_nodes)
        F.cross_entropy(logits, y).backward()
        optimizer.step()
        return (time.perf_counter() - start) * 1e3
    return step


def eager_and_compiled(model: nn.Module, make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
                       inputs: Sequence[tuple], dynamic: bool) -> tuple[Step, Step, float]:
    """Steps for ``model`` and for a compiled copy of it (same initial weights), and the seconds of the
    compiled copy's first step (compilation)."""
    twin = copy.deepcopy(model)
    compiled = torch.compile(twin, dynamic=dynamic)
    eager_step = training_step(model, make_optimizer(model), inputs)
    compiled_step = training_step(compiled, make_optimizer(twin), inputs)
    began = time.perf_counter()
    compiled_step()
    return eager_step, compiled_step, time.perf_counter() - began


def timed(eager_step: Step, compiled_step: Step, warmup: int, epochs: int, blocks: int = 4) -> dict[str, float]:
    for step in (eager_step, compiled_step):
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    per_block = max(1, epochs // blocks)
    for _ in range(blocks):
        for side, step in (("eager", eager_step), ("compiled", compiled_step)):
            times[side].extend(step() for _ in range(per_block))
    eager_ms, compiled_ms = (statistics.median(times[side]) for side in ("eager", "compiled"))
    return {"eager_ms": eager_ms, "compiled_ms": compiled_ms, "ratio": compiled_ms / eager_ms,
            "steps": len(times["eager"])}


def full_graph_rows(graph: Graph, args: argparse.Namespace) -> list[dict]:
    x, mask = ops.sparse_features(graph.x), graph.train_mask
    inputs = [(x, graph.edge_index, graph.y[mask], mask)]
    rows = []
    for name in MODELS:
        config = minibatch_preset("sage", "cora") if name == "sage" else preset(name, "cora")
        torch.manual_seed(args.seed)
        model = config.build(graph.num_features, graph.num_classes).train()
        make_optimizer = (partial(adam, lr=config.lr, weight_decay=config.weight_decay) if name == "sage"
                          else partial(optimizer_for, config=config))
        eager_step, compiled_step, compile_seconds = eager_and_compiled(model, make_optimizer, inputs, dynamic=False)
        rows.append({"graph": "cora", "setting": "full graph", "model": name, "compile_seconds": compile_seconds,
                     **timed(eager_step, compiled_step, args.warmup, args.epochs)})
        print_row(rows[-1])
    return rows


def block_rows(graph_name: str, graph: Graph, features: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor,
               num_classes: int, args: argparse.Namespace, epochs: int) -> list[dict]:
    """Mini-batch steps on ``--batches`` pre-sampled batches, ``epochs`` timed per side; ``features(nodes)`` gives
    their input rows."""
    sampler = NeighborSampler(graph, args.fanouts)
    generator = torch.Generator().manual_seed(args.seed)
    batches = []
    for k in range(args.batches):
        seeds = torch.randperm(graph.num_nodes, generator=generator)[:args.batch_size]
        blocks = sampler.sample(seeds, generator=k)
        batches.append((features(blocks[0].source_nodes), blocks, y[seeds], None))
    rows = []
    for name in MODELS:
        config = MiniBatchConfig(model=name, fanouts=tuple(args.fanouts), batch_size=args.batch_size, hidden=256,
                                 dropout=0.5)
        torch.manual_seed(args.seed)
        model = config.build(batches[0][0].size(1), num_classes).train()
        eager_step, compiled_step, compile_seconds = eager_and_compiled(model, partial(adam, lr=0.003), batches,
                                                                        dynamic=True)
        rows.append({"graph": graph_name, "setting": f"blocks {list(args.fanouts)}, batch {args.batch_size}",
                     "model": name, "compile_seconds": compile_seconds,
                     **timed(eager_step, compiled_step, args.warmup, epochs)})
        print_row(rows[-1])
    return rows


def synthetic_graph(args: argparse.Namespace) -> Graph:
    config = SyntheticConfig(num_nodes=args.nodes, avg_degree=args.avg_degree, num_classes=SYNTHETIC_CLASSES,
                             num_features=1, seed=args.seed)
    parts = make_synthetic_parts(config)
    return Graph.from_csr(parts.row_ptr, parts.sources, name=f"synthetic-{args.nodes}")


def random_features(nodes: torch.Tensor) -> torch.Tensor:
    """Input rows for the synthetic graph's nodes: random (their values do not change the time)."""
    return torch.randn(nodes.numel(), SYNTHETIC_FEATURES)


def print_row(row: dict) -> None:
    print(f"{row['graph']:9s} {row['setting']:28s} {row['model']:4s} eager {row['eager_ms']:9.2f} ms  compiled "
          f"{row['compiled_ms']:9.2f} ms  compiled / eager {row['ratio']:.2f}  (compiling "
          f"{row['compile_seconds']:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/datasets/planetoid", help="folder with the Planetoid files")
    parser.add_argument("--nodes", type=int, default=2_449_029, help="synthetic graph size (ogbn-products: 2449029)")
    parser.add_argument("--avg-degree", type=float, default=50.5)
    parser.add_argument("--fanouts", type=int, nargs="+", default=[25, 10])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=8, help="pre-sampled batches the block steps cycle over")
    parser.add_argument("--epochs", type=int, default=20, help="timed steps per side")
    parser.add_argument("--synthetic-epochs", type=int, default=None,
                        help="timed steps per side on the synthetic graph (default: --epochs; GAT takes ~16 s a step)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=str(RESULTS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cora = load_planetoid("cora", args.root).row_normalize_features()
    rows = full_graph_rows(cora, args)
    rows += block_rows("cora", cora, partial(torch.index_select, ops.dense(cora.x), 0), cora.y, cora.num_classes, args,
                       args.epochs)
    del cora
    synthetic = synthetic_graph(args)
    labels = torch.randint(0, SYNTHETIC_CLASSES, (synthetic.num_nodes,), generator=torch.Generator().manual_seed(1))
    rows += block_rows("synthetic", synthetic, random_features, labels, SYNTHETIC_CLASSES, args,
                       args.synthetic_epochs or args.epochs)

    report = {"benchmark": "gnn_compile", "machine": machine_info(), "threads": torch.get_num_threads(),
              "graphs": {"synthetic": {"nodes": synthetic.num_nodes, "directed_edges": synthetic.num_edges}},
              "definition": "median ms of one training step (forward, loss, backward, Adam step): a full-graph "
                            "epoch, or one mini-batch step on pre-sampled blocks; ratio = compiled / eager "
                            "(below 1: torch.compile pays); compile_seconds: the compiled model's first step",
              "rows": rows}
    out = Path(args.out_dir)
    write_json(out / "gnn_compile.json", report)
    lines = ["| graph | setting | model | eager (ms/step) | compiled (ms/step) | compiled / eager | compiling (s) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['graph']} | {r['setting']} | {r['model'].upper()} | {r['eager_ms']:.2f} | {r['compiled_ms']:.2f} "
              f"| {r['ratio']:.2f} | {r['compile_seconds']:.0f} |" for r in rows]
    (out / "gnn_compile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
