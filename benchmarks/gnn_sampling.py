"""Uniform neighbour sampling throughput, ours beside PyG's NeighborLoader, same run, same seeds, same machine.

For each graph (Cora, and a synthetic DC-SBM graph of ``--nodes`` nodes, by default ogbn-products' 2,449,029
with about 62M undirected edges) and each fanout list ([15, 10, 5] and [25, 10]), ``--batches`` batches of
``--batch-size`` (1024) seed nodes, taken in order from random permutations of all nodes, are sampled
without replacement by ``NeighborSampler.sample`` and by PyG's ``NeighborLoader`` (``num_workers=0``, no node
features attached, so both sides only sample and relabel). Reported: seed nodes per second, sampled edges per
second and sampled (input) nodes per batch, and ours / PyG ratios of seeds per second.

Ours runs in both of its modes, each on both backends: ``torch`` (the vectorized tensor code, the columns
headed "ours") and ``numba`` (the compiled kernel of ``gnnseg.gnn.sampling.compiled``, skipped with a message
when numba is not installed); the time of the numba kernel's first call (compiling it, or loading it from
numba's cache) is reported apart and not timed. By default (``reuse=False``, GraphSAGE's Algorithm 2, DGL's
blocks) *every* node of the layer above draws again for each layer, so it draws more edges for the same seeds
than PyG, whose one subgraph has each hop draw only for the nodes new at that hop; ``reuse=True`` does what PyG
does (each node draws once, every layer shares its edges), the like-for-like comparison. Seeds per second is
the figure a training step needs, edges per second the raw sampling rate. Each configuration is timed
``--rounds`` times, every side in turn, and the fastest round of each is kept (the machine's other load only
slows a round).

PyG's NeighborLoader needs ``pyg-lib`` or ``torch-sparse``. Neither installs from a wheel for this torch, so
the PyG side is skipped (with that message in the report) unless one of them is importable; build it in a
benchmark-only environment: ``pip install --no-build-isolation torch-scatter torch-sparse`` (20-30 minutes
on 2 cores). Writes ``benchmarks/results/gnn_sampling.{json,md}`` (``--out-dir`` to change).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import time
from functools import partial
from pathlib import Path

import torch

from gnnseg.core import machine_info, write_json
from gnnseg.gnn.datasets import load_planetoid
from gnnseg.gnn.datasets.synthetic import (
    SyntheticConfig,
    load_synthetic,
    make_synthetic_parts,
)
from gnnseg.gnn.graph import Graph
from gnnseg.gnn.sampling import NeighborSampler
from gnnseg.gnn.sampling.neighbor import resolve_backend

RESULTS = Path(__file__).resolve().parent / "results"
# (side, against, row key): the seeds-per-second ratios a row gets when both sides were timed
RATIOS = (("ours", "pyg", "ratio_seeds_per_s"), ("ours_reuse", "pyg", "ratio_reuse_seeds_per_s"),
          ("numba", "pyg", "ratio_numba_seeds_per_s"), ("numba_reuse", "pyg", "ratio_numba_reuse_seeds_per_s"),
          ("numba", "ours", "ratio_numba_to_torch_seeds_per_s"),
          ("numba_reuse", "ours_reuse", "ratio_numba_to_torch_reuse_seeds_per_s"))
FANOUTS = ([15, 10, 5], [25, 10])
NUMBA_MISSING = "numba is not installed (pip install 'gnnseg[fast]'): the numba backend's columns are skipped"
PYG_MISSING = ("PyG's NeighborLoader needs pyg-lib or torch-sparse, neither of which is importable here; build "
               "one in a benchmark-only environment: pip install --no-build-isolation torch-scatter torch-sparse "
               "(20-30 minutes on 2 cores)")


def pyg_backend() -> str | None:
    """``"pyg-lib"`` or ``"torch-sparse"`` when PyG can sample, else ``None``."""
    try:
        import torch_geometric.typing as pyg_typing
    except ImportError:
        return None
    if getattr(pyg_typing, "WITH_PYG_LIB", False):
        return "pyg-lib"
    if getattr(pyg_typing, "WITH_TORCH_SPARSE", False):
        return "torch-sparse"
    return None


def synthetic_graph(args: argparse.Namespace) -> tuple[Graph, dict]:
    """The synthetic graph's structure only (sampling needs no features)."""
    if args.synthetic:
        graph = load_synthetic(args.synthetic)
        return graph, {"source": str(args.synthetic)}
    config = SyntheticConfig(num_nodes=args.nodes, avg_degree=args.avg_degree, num_classes=47, num_features=1,
                             seed=args.seed)
    began = time.perf_counter()
    parts = make_synthetic_parts(config)
    seconds = time.perf_counter() - began
    graph = Graph.from_csr(parts.row_ptr, parts.sources, name=f"synthetic-{args.nodes}")
    del parts
    return graph, {"generated_seconds": seconds, "avg_degree": args.avg_degree}


def seed_batches(num_nodes: int, batch_size: int, batches: int, seed: int) -> list[torch.Tensor]:
    """``batches`` batches of distinct seeds, each a slice of a random permutation of the nodes; a graph with
    fewer than ``batches * batch_size`` nodes (Cora: 2 batches per permutation) gets fresh permutations, so
    every configuration is timed over the same number of batches."""
    generator = torch.Generator().manual_seed(seed)
    per_order = max(1, num_nodes // batch_size)
    result = []
    while len(result) < batches:
        order = torch.randperm(num_nodes, generator=generator)
        result += [order[k * batch_size:(k + 1) * batch_size] for k in range(min(per_order, batches - len(result)))]
    return result


def first_numba_call_seconds(graph: Graph) -> float:
    """Seconds of the numba kernel's first call in this process: compiling it, or loading numba's cache."""
    began = time.perf_counter()
    NeighborSampler(graph, [2], backend="numba").sample(torch.tensor([0]), generator=0)
    return time.perf_counter() - began


def time_ours(graph: Graph, fanouts: list[int], batches: list[torch.Tensor], warmup: int,
              reuse: bool = False, backend: str = "torch") -> dict[str, float]:
    sampler = NeighborSampler(graph, fanouts, reuse=reuse, backend=backend)
    for k in range(warmup):
        sampler.sample(batches[k % len(batches)], generator=k)
    edges = nodes = 0
    began = time.perf_counter()
    for k, seeds in enumerate(batches):
        blocks = sampler.sample(seeds, generator=1000 + k)
        edges += blocks[0].num_edges if reuse else sum(block.num_edges for block in blocks)   # edges drawn
        nodes += blocks[0].num_sources
    seconds = time.perf_counter() - began
    seeds_total = sum(b.numel() for b in batches)
    return {"seconds": seconds, "seeds_per_s": seeds_total / seconds, "edges_per_s": edges / seconds,
            "edges_per_batch": edges / len(batches), "nodes_per_batch": nodes / len(batches)}


def time_pyg(graph: Graph, fanouts: list[int], batches: list[torch.Tensor], warmup: int) -> dict[str, float]:
    from torch_geometric.data import Data
    from torch_geometric.loader import NeighborLoader

    data = Data(edge_index=graph.edge_index, num_nodes=graph.num_nodes)
    seeds = torch.cat(batches)
    loader = NeighborLoader(data, num_neighbors=fanouts, batch_size=batches[0].numel(), input_nodes=seeds,
                            shuffle=False, num_workers=0)
    for _ in zip(range(warmup), loader):       # the first batches build PyG's CSC: warm-up, not timed
        pass
    iterator = iter(loader)
    edges = nodes = count = 0
    began = time.perf_counter()
    for batch in iterator:
        edges += int(batch.edge_index.size(1))
        nodes += int(batch.num_nodes)
        count += 1
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "seeds_per_s": seeds.numel() / seconds, "edges_per_s": edges / seconds,
            "edges_per_batch": edges / count, "nodes_per_batch": nodes / count}


def numba_table(rows: list[dict], graph_info: dict) -> str:
    """The numba backend's rows: seeds per second and its ratios to the torch backend and to PyG."""
    lines = ["| graph | fanouts | numba seeds/s (per layer) | numba seeds/s (reuse) | numba edges/s (reuse) | "
             "numba / torch (per layer) | numba / torch (reuse) | numba / PyG (per layer) | numba / PyG (reuse) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        n, u = r["numba"], r["numba_reuse"]
        versus_pyg = (f"{r['ratio_numba_seeds_per_s']:.2f} | {r['ratio_numba_reuse_seeds_per_s']:.2f}"
                      if "pyg" in r else "skipped | skipped")
        lines.append(f"| {r['graph']} | {r['fanouts']} | {n['seeds_per_s']:.0f} | {u['seeds_per_s']:.0f} | "
                     f"{u['edges_per_s']:.0f} | {r['ratio_numba_to_torch_seeds_per_s']:.2f} | "
                     f"{r['ratio_numba_to_torch_reuse_seeds_per_s']:.2f} | {versus_pyg} |")
    first_calls = ", ".join(f"{name} {info['numba_first_call_seconds']:.2f} s" for name, info in graph_info.items())
    lines.append(f"\nFirst call of the numba kernel (compiling it, or loading numba's cache; not timed): "
                 f"{first_calls}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/datasets/planetoid", help="folder with the Planetoid files")
    parser.add_argument("--nodes", type=int, default=2_449_029, help="synthetic graph size (ogbn-products: 2449029)")
    parser.add_argument("--avg-degree", type=float, default=50.5, help="synthetic mean degree (50.5: 61.8M edges)")
    parser.add_argument("--synthetic", help="use this `gnnseg gnn synth` folder instead of generating a graph")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=50, help="timed batches per configuration")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="timings per configuration; the fastest is kept")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: sampling is serial)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backend = pyg_backend()
    if backend is None:
        print(f"PyG side skipped: {PYG_MISSING}", flush=True)
    with_numba = resolve_backend("auto") == "numba"
    if not with_numba:
        print(NUMBA_MISSING, flush=True)

    graphs = [("cora", lambda: (load_planetoid("cora", args.root), {})), ("synthetic", lambda: synthetic_graph(args))]
    rows, graph_info = [], {}
    for name, load in graphs:
        graph, info = load()
        graph_info[name] = {"nodes": graph.num_nodes, "directed_edges": graph.num_edges, **info}
        print(f"{name}: {graph.num_nodes} nodes, {graph.num_edges} directed edges", flush=True)
        batches = seed_batches(graph.num_nodes, args.batch_size, args.batches, args.seed)
        if with_numba:
            graph_info[name]["numba_first_call_seconds"] = first_numba_call_seconds(graph)
        for fanouts in FANOUTS:
            job = (graph, fanouts, batches, args.warmup)
            timers = {"ours": partial(time_ours, *job), "ours_reuse": partial(time_ours, *job, reuse=True)}
            if with_numba:
                timers["numba"] = partial(time_ours, *job, backend="numba")
                timers["numba_reuse"] = partial(time_ours, *job, reuse=True, backend="numba")
            if backend is not None:
                timers["pyg"] = partial(time_pyg, *job)
            best: dict[str, dict[str, float]] = {}
            for _ in range(args.rounds):
                for side, timer in timers.items():
                    timing = timer()
                    if side not in best or timing["seconds"] < best[side]["seconds"]:
                        best[side] = timing
            row = {"graph": name, "fanouts": fanouts, "batch_size": args.batch_size, "batches": len(batches),
                   "rounds": args.rounds, **best}
            for ours, theirs, key in RATIOS:
                if ours in row and theirs in row:
                    row[key] = row[ours]["seeds_per_s"] / row[theirs]["seeds_per_s"]
            rows.append(row)
            pyg = row.get("pyg")
            print(f"{name:9s} {fanouts!s:12s} ours {row['ours']['seeds_per_s']:10.0f} seeds/s, reusing "
                  f"{row['ours_reuse']['seeds_per_s']:10.0f} seeds/s"
                  + (f" | PyG {pyg['seeds_per_s']:10.0f} seeds/s | ours/PyG {row['ratio_seeds_per_s']:.2f}, "
                     f"reusing {row['ratio_reuse_seeds_per_s']:.2f}" if pyg else " | PyG skipped"), flush=True)
            if with_numba:
                print(f"{'':22s} numba {row['numba']['seeds_per_s']:10.0f} seeds/s, reusing "
                      f"{row['numba_reuse']['seeds_per_s']:10.0f} seeds/s | numba/torch "
                      f"{row['ratio_numba_to_torch_seeds_per_s']:.2f}, reusing "
                      f"{row['ratio_numba_to_torch_reuse_seeds_per_s']:.2f}"
                      + (f" | numba/PyG {row['ratio_numba_seeds_per_s']:.2f}, reusing "
                         f"{row['ratio_numba_reuse_seeds_per_s']:.2f}" if pyg else ""), flush=True)
        del graph

    import torch_geometric

    report = {"benchmark": "gnn_sampling", "machine": machine_info(), "threads": args.threads,
              "torch_geometric": torch_geometric.__version__, "pyg_backend": backend,
              "pyg_skipped_reason": None if backend else PYG_MISSING,
              "numba": importlib.metadata.version("numba") if with_numba else None,
              "numba_skipped_reason": None if with_numba else NUMBA_MISSING, "graphs": graph_info,
              "definition": "uniform neighbour sampling without replacement, batch of seed nodes -> per-layer "
                            "blocks (ours: every layer draws afresh, or with reuse each node draws once) / one "
                            "sampled subgraph (PyG NeighborLoader, num_workers=0, no features); "
                            "ratio = ours / PyG seeds per second (above 1: ours is faster); ours / numba: the "
                            "torch / numba backends of NeighborSampler", "rows": rows}
    out = Path(args.out_dir)
    write_json(out / "gnn_sampling.json", report)
    lines = [("| graph | fanouts | ours seeds/s (per layer) | ours nodes/batch | ours seeds/s (reuse) | ours edges/s "
              "(reuse) | PyG seeds/s | PyG edges/s | PyG nodes/batch | ours / PyG (per layer) | ours / PyG (reuse) |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, u, p = r["ours"], r["ours_reuse"], r.get("pyg")
        theirs = "skipped | - | - | - | -" if not p else (
            f"{p['seeds_per_s']:.0f} | {p['edges_per_s']:.0f} | {p['nodes_per_batch']:.0f} | "
            f"{r['ratio_seeds_per_s']:.2f} | {r['ratio_reuse_seeds_per_s']:.2f}")
        lines.append(f"| {r['graph']} | {r['fanouts']} | {o['seeds_per_s']:.0f} | {o['nodes_per_batch']:.0f} | "
                     f"{u['seeds_per_s']:.0f} | {u['edges_per_s']:.0f} | {theirs} |")
    if backend is None:
        lines.append(f"\nPyG skipped: {PYG_MISSING}.")
    lines += ["", numba_table(rows, graph_info) if with_numba else f"{NUMBA_MISSING}."]
    (out / "gnn_sampling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
