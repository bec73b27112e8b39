"""Partitioned training against one process: peak RSS per rank, accuracy, what crosses between ranks, epoch time.

On a synthetic DC-SBM graph (``--nodes``, ogbn-products' size by default; generated once into ``--work-dir`` by
``gnnseg gnn synth``), in fresh processes of one thread each:

1. ``gnnseg gnn partition --parts P``: METIS partitions (time, peak RSS, edge cut, balance, halo);
2. ``gnnseg gnn train --model sage`` on the whole graph, one process (the baseline);
3. ``torchrun --nproc_per_node=P -m gnnseg.cli gnn train --model sage --partitions DIR --transport T``: one rank per
   partition, once per transport in ``--transports`` (RPC and the collectives: the same draws, so the same
   model; the epoch and evaluation times side by side decide the default).

Both trainings run the same preset (SAGE 25,10, batch 512, the large-graph settings) for ``--epochs`` epochs
with the exact evaluation after the last. Reported: ``peak_rss_per_rank_ratio`` (the largest rank's peak RSS
over the single process's), ``accuracy_delta_points`` (partitioned minus single, test accuracy in points),
remote neighbour requests and feature rows per batch, bytes each rank sends per batch, epoch times side by
side, and the cost model of ``docs/gnn.md`` (remote rows predicted from the measured edge cut and the batch's
layer sizes) beside the measured figures, all of the first transport's run. P ranks on a machine with fewer than
P cores share the cores, so the epoch time says little about a cluster; the memory and traffic figures and the
transports' ratio on the same machine are what carry over.

Writes ``benchmarks/results/gnn_distributed.{json,md}`` (``--out-dir`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gnnseg.core import machine_info, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def gnnseg_command(*arguments: str, torchrun: int = 0) -> tuple[dict[str, Any], float]:
    """``gnnseg ...`` in fresh processes of one thread each: ``(rank 0's last-line JSON, wall seconds)``."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}",
                "--local-ranks-filter=0", "-m", "gnnseg.cli"] if torchrun else [sys.executable, "-m", "gnnseg.cli"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    began = time.perf_counter()
    process = subprocess.run([*launcher, *arguments], capture_output=True, text=True, env=environment, check=False)
    seconds = time.perf_counter() - began
    if process.returncode != 0:
        raise RuntimeError(f"gnnseg {' '.join(arguments)} failed:\n{process.stderr[-3000:]}")
    lines = [line for line in process.stdout.strip().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]), seconds


def synthetic_folder(work: Path, nodes: int, avg_degree: float, seed: int) -> Path:
    """``gnnseg gnn synth`` output for these parameters, generated once (the folder name ``gnn_minibatch.py``
    uses, so the two benchmarks share the graph)."""
    folder = work / f"synth-{nodes}-{avg_degree:g}-{seed}"
    if not (folder / "meta.json").is_file():
        gnnseg_command("gnn", "synth", "--nodes", str(nodes), "--avg-degree", str(avg_degree), "--seed", str(seed),
                       "--out", str(folder), "--json")
    return folder


def remote_fraction_two_hops(cut: float, parts: int) -> float:
    """The cost model's share of second-hop nodes owned elsewhere, from the share ``cut`` of in-edges whose
    source is owned elsewhere: a neighbour of an own node is remote with probability ``cut``; a neighbour of a
    remote node comes back home with probability ``cut / (P - 1)``."""
    return (1 - cut) * cut + cut * (1 - cut / max(parts - 1, 1))


def cost_model(partitioned: dict[str, Any], cut: float, parts: int, features: int) -> dict[str, float]:
    """Remote rows per batch predicted from the cut and the measured layer sizes; bytes from the rows. ``cut``
    is the chance that a uniformly drawn in-neighbour of a node is owned elsewhere (the partition report's
    ``remote_neighbor_fraction_node_mean``; seeds are uniform training nodes and draws are uniform per node).

    Hop 1 draws for a rank's ``B = batch / P`` seeds (all owned): no request. Hop 2 draws for the new nodes of
    hop 1 (``n1 - B``), a share ``cut`` of them remote: each costs an 8-byte id, an 8-byte count and ``8 f_2``
    bytes of neighbours. Input features: the input layer's ``n0`` nodes, the hop-1 ones remote with ``cut`` and the
    hop-2 ones with :func:`remote_fraction_two_hops`: each an 8-byte id and a ``4 F`` byte row."""
    batch, fanouts = partitioned["batch_size"] / parts, partitioned["fanouts"]      # a rank's share of a step
    n0, n1 = partitioned["sampled_nodes_per_batch_mean"], partitioned["hop1_nodes_per_batch"]
    remote_nodes = cut * (n1 - batch)
    remote_rows = cut * (n1 - batch) + remote_fraction_two_hops(cut, parts) * (n0 - n1)
    return {"predicted_remote_nodes_per_batch": remote_nodes,
            "predicted_remote_feature_rows_per_batch": remote_rows,
            "predicted_bytes_per_batch": remote_nodes * (16 + 8 * fanouts[-1]) + remote_rows * (8 + 4 * features)}


def markdown(report: dict[str, Any]) -> str:
    r = report["result"]
    lines = [f"# Partitioned training ({r['parts']} ranks) against one process",
             "",
             f"Synthetic graph of {r['nodes']:,} nodes, {r['undirected_edges']:,} undirected edges; SAGE 25,10, "
             f"batch 512, {r['epochs']} epoch(s), one thread per process. {report['machine']['cpu_count']} cores.",
             "",
             "| | one process | partitioned |",
             "|---|---|---|",
             f"| peak RSS | {r['single_peak_rss_mb']:.0f} MB | {max(r['peak_rss_per_rank_mb']):.0f} MB per rank "
             f"(ratio {r['peak_rss_per_rank_ratio']:.2f}) |",
             f"| test accuracy | {100 * r['single_test_acc']:.2f} % | {100 * r['partitioned_test_acc']:.2f} % "
             f"({r['accuracy_delta_points']:+.2f} points) |",
             f"| epoch (training) | {r['single_epoch_seconds']:.1f} s | {r['partitioned_epoch_seconds']:.1f} s |",
             f"| evaluation | {r['single_eval_seconds']:.1f} s | {r['partitioned_eval_seconds']:.1f} s |",
             "",
             f"Partitioning: {r['partition_seconds']:.1f} s, peak RSS {r['partition_peak_rss_mb']:.0f} MB; edge cut "
             f"{100 * r['edge_cut_fraction']:.1f} % of the edges, balance nodes {r['node_balance']:.3f} / training "
             f"nodes {r['train_balance']:.3f} / edges {r['edge_balance']:.3f}, halo {r['halo_to_owned_ratio']:.2f} "
             f"x the nodes.",
             "",
             "| per batch and rank | measured | cost model |",
             "|---|---|---|",
             f"| remote neighbour requests | {r['remote_nodes_per_batch']:.0f} | "
             f"{r['predicted_remote_nodes_per_batch']:.0f} |",
             f"| remote feature rows | {r['remote_feature_rows_per_batch']:.0f} | "
             f"{r['predicted_remote_feature_rows_per_batch']:.0f} |",
             f"| bytes sent | {r['bytes_sent_per_batch'] / 1e6:.2f} MB | "
             f"{r['predicted_bytes_per_batch'] / 1e6:.2f} MB |",
             f"| communication rounds ({r['transport']}) | {r['exchange_rounds_per_batch']:.0f} | |"]
    if len(r["transports"]) > 1:
        lines += ["", "| transport | epoch (training) | evaluation | rounds per batch | bytes sent per batch |",
                  "|---|---|---|---|---|"]
        lines += [f"| {name} | {row['epoch_seconds']:.1f} s | {row['eval_seconds']:.1f} s | "
                  f"{row['exchange_rounds_per_batch']:.0f} | {row['bytes_sent_per_batch'] / 1e6:.2f} MB |"
                  for name, row in r["transports"].items()]
        lines += ["", f"RPC / collectives, training epoch: {r['rpc_over_collectives_epoch']:.2f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2_449_029, help="synthetic graph size (ogbn-products')")
    parser.add_argument("--avg-degree", type=float, default=50.5, help="50.5 gives ogbn-products' ~62M edges")
    parser.add_argument("--parts", type=int, default=4, help="partitions = ranks (default 4)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of both runs (default 1)")
    parser.add_argument("--transports", default="rpc,collectives",
                        help="partitioned runs, one per transport (comma-separated; the first gives the headline)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic graph seed")
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "gnnseg-bench"))
    parser.add_argument("--out-dir", default=str(RESULTS))
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    graph = synthetic_folder(work, args.nodes, args.avg_degree, args.seed)
    meta = json.loads((graph / "meta.json").read_text())
    partitions = work / f"{graph.name}-parts{args.parts}"
    if not (partitions / "partition.json").is_file():
        gnnseg_command("gnn", "partition", "--dataset", f"synth:{graph}", "--parts", str(args.parts),
                       "--out", str(partitions), "--json")
    layout = json.loads((partitions / "partition.json").read_text())
    common = ("gnn", "train", "--model", "sage", "--epochs", str(args.epochs), "--runs-dir", str(work / "runs"),
              "--json")
    single, single_wall = gnnseg_command(*common, "--dataset", f"synth:{graph}")
    runs = {}
    for transport in args.transports.split(","):
        printed, wall = gnnseg_command(*common, "--partitions", str(partitions), "--transport", transport,
                                       torchrun=args.parts)
        run_dir = Path(printed["run_dir"])        # every rank prints; rank 0's summary averages over the ranks
        runs[transport] = (json.loads((run_dir / "metrics.json").read_text())["summary"], wall)
    config = json.loads((run_dir / "config.json").read_text())["config"]
    partitioned, partitioned_wall = next(iter(runs.values()))
    transports = {name: {"epoch_seconds": summary["epoch_time_ms_median"] / 1e3,
                         "eval_seconds": summary["eval_seconds_mean"], "wall_seconds": wall,
                         "test_acc": summary["test_acc_mean"],
                         "exchange_rounds_per_batch": summary["exchange_rounds_per_batch"],
                         "bytes_sent_per_batch": summary["bytes_sent_per_batch"]}
                  for name, (summary, wall) in runs.items()}
    quality = layout["quality"]
    measured = {**partitioned, "batch_size": config["batch_size"], "fanouts": config["fanouts"]}
    result = {
        "nodes": args.nodes, "undirected_edges": meta.get("undirected_edges"), "parts": args.parts,
        "epochs": args.epochs,
        "single_peak_rss_mb": single["peak_rss_mb"], "peak_rss_per_rank_mb": partitioned["peak_rss_mb_per_rank"],
        "peak_rss_per_rank_ratio": max(partitioned["peak_rss_mb_per_rank"]) / single["peak_rss_mb"],
        "single_test_acc": single["test_acc_mean"], "partitioned_test_acc": partitioned["test_acc_mean"],
        "accuracy_delta_points": 100 * (partitioned["test_acc_mean"] - single["test_acc_mean"]),
        "single_epoch_seconds": single["epoch_time_ms_median"] / 1e3,
        "partitioned_epoch_seconds": partitioned["epoch_time_ms_median"] / 1e3,
        "single_eval_seconds": single["eval_seconds_mean"],
        "partitioned_eval_seconds": partitioned["eval_seconds_mean"],
        "single_wall_seconds": single_wall, "partitioned_wall_seconds": partitioned_wall,
        "remote_nodes_per_batch": partitioned["remote_nodes_per_batch"],
        "remote_feature_rows_per_batch": partitioned["remote_feature_rows_per_batch"],
        "bytes_sent_per_batch": partitioned["bytes_sent_per_batch"],
        "exchange_rounds_per_batch": partitioned["exchange_rounds_per_batch"],
        "transport": partitioned["transport"], "transports": transports,
        **({"rpc_over_collectives_epoch": transports["rpc"]["epoch_seconds"]
            / transports["collectives"]["epoch_seconds"]} if {"rpc", "collectives"} <= transports.keys() else {}),
        "sampled_nodes_per_batch_mean": partitioned["sampled_nodes_per_batch_mean"],
        "hop1_nodes_per_batch": partitioned["hop1_nodes_per_batch"],
        "partition_seconds": layout["partition_seconds"], "partition_peak_rss_mb": layout["peak_rss_mb"],
        **{key: quality[key] for key in ("edge_cut_fraction", "remote_in_edge_fraction",
                                         "remote_neighbor_fraction_node_mean", "node_balance",
                                         "train_balance", "edge_balance", "halo_to_owned_ratio")},
        **cost_model(measured, quality["remote_neighbor_fraction_node_mean"], args.parts, layout["num_features"]),
    }
    report = {"benchmark": "gnn_distributed", "machine": machine_info(), "arguments": vars(args),
              "seconds": time.perf_counter() - began, "result": result, **result,
              "notes": "one thread per process; accuracies are fractions except accuracy_delta_points; bytes are "
                       "what one rank sends to other ranks per training batch (ids, counts, neighbours, rows)"}
    out = Path(args.out_dir)
    write_json(out / "gnn_distributed.json", report)
    text = markdown(report)
    (out / "gnn_distributed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
