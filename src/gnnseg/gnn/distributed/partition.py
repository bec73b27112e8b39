"""METIS edge-cut partitions of a node-classification graph, written for training on several machines.

``partition_graph(dataset, root, parts, out)`` splits the nodes into ``parts`` sets with METIS (Karypis & Kumar
1998, k-way) minimizing the edges cut, and writes one folder per partition holding what its rank needs and
nothing more:

``out/partition.json``   format, dataset, sizes, ``features_nonnegative`` (the trainer's row-normalization rule
                         needs the whole graph's answer) and the quality report (edge cut, balance, halo sizes)
``out/node_owner.npy``   ``(N,)`` the partition that owns each global node: the partition book
``out/node_local.npy``   ``(N,)`` each node's row among its owner's nodes (global -> local id map)
``out/part<k>/``         ``owned.npy (n_k,)`` global ids of the owned nodes, ascending (local -> global);
                         ``halo.npy (h_k,)`` global ids of the 1-hop halo (in-neighbours owned elsewhere);
                         ``row_ptr.npy (n_k + 1,)``, ``sources.npy (e_k,)``: the incoming-edge CSR of the owned
                         nodes, every in-edge of each, sources as local ids over ``[owned, halo]``;
                         ``x.npy (n_k, F)``, ``y.npy (n_k,)``, ``split.npy (n_k,)`` (0 none, 1 train, 2
                         validation, 3 test) of the owned nodes

**Balance.** DistDGL balances each partition's training nodes and edges besides its nodes (METIS's
multi-constraint partitioning). pymetis 2025.2.2 passes a single constraint to METIS (its wrapper fixes
``ncon = 1``), so the three criteria are combined into one vertex weight, each scaled to sum to ``N`` over
the graph: ``w_v = 1 + round(deg_v N / E) + train_v round(N / T)``. METIS balances the sum within 3 %; the
report gives each criterion's own balance (largest partition / mean), which the trainer's seed sharding
needs (every rank runs the same number of batches per epoch).

**Memory.** The graph is read once, memory-mapped where its loader maps it (``synth:``, ``ogb:``); METIS
needs the symmetric adjacency without self-loops (:func:`symmetric_adjacency`, about 16 bytes per directed
edge besides the graph), then each partition is cut out of the global CSR and its features are written in row
chunks. The folder is written under a temporary name and renamed when complete, so an
interrupted run never leaves a folder that looks finished, and an existing ``out`` is never touched.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from gnnseg.core import progress
from gnnseg.core.atomic import atomic_folder
from gnnseg.core.jsonable import jsonable
from gnnseg.gnn import ops

FORMAT = "gnnseg.partitions/1"
SPLIT_CODES = {"train": 1, "val": 2, "test": 3}
ROW_CHUNK = 1 << 16


def _metis():
    try:
        import pymetis
    except ImportError as error:
        raise ImportError(f"partitioning needs pymetis, which does not import here ({error}); install it with "
                          f"pip install 'gnnseg[distributed]'") from error
    return pymetis


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """The distinct values, ascending, by one sort (``np.unique`` hashes first in numpy >= 2.3, which took 5x
    longer on edge keys here)."""
    ordered = np.sort(values)
    if ordered.size < 2:
        return ordered
    keep = np.empty(ordered.size, dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def symmetric_adjacency(row_ptr: np.ndarray, sources: np.ndarray, num_nodes: int,
                        chunk_edges: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """METIS's input: ``(xadj (N + 1,), adjncy (2M,))`` of the undirected simple graph under the given
    incoming-edge CSR (each node's in- and out-neighbours, self-loops and repeated edges dropped).

    The out-neighbours come from one stable sort of the sources (the transpose's order, 8 bytes per edge);
    rows are then merged in chunks of about ``chunk_edges`` edges, and the result is written into an array
    whose untouched tail never becomes resident: about 16 bytes per directed edge in all for a graph that
    stores both directions (``synth:``, ``ogb:``), instead of sorting every edge key of both directions."""
    in_ptr = np.asarray(row_ptr, dtype=np.int64)
    order = np.argsort(sources, kind="stable")               # edge positions grouped by source
    out_ptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(sources, minlength=num_nodes), out=out_ptr[1:])
    adjncy = np.empty(2 * int(in_ptr[-1]), dtype=np.int64)
    xadj = np.zeros(num_nodes + 1, dtype=np.int64)
    filled, first = 0, 0
    reach = in_ptr + out_ptr                                   # edges of rows [0, v): both directions
    while first < num_nodes:
        last = int(np.searchsorted(reach, reach[first] + chunk_edges, side="right")) - 1
        last = min(max(last, first + 1), num_nodes)
        rows = np.arange(first, last)
        in_rows = np.repeat(rows, np.diff(in_ptr[first:last + 1]))
        out_rows = np.repeat(rows, np.diff(out_ptr[first:last + 1]))
        in_neighbors = np.asarray(sources[in_ptr[first]:in_ptr[last]], dtype=np.int64)
        out_neighbors = np.searchsorted(in_ptr, order[out_ptr[first]:out_ptr[last]], side="right") - 1
        row = np.concatenate([in_rows, out_rows])
        neighbor = np.concatenate([in_neighbors, out_neighbors])
        keep = row != neighbor
        keys = sorted_unique((row[keep] - first) * num_nodes + neighbor[keep])
        local_row = keys // num_nodes
        adjncy[filled:filled + keys.size] = keys - local_row * num_nodes
        xadj[first + 1:last + 1] = filled + np.cumsum(np.bincount(local_row, minlength=last - first))
        filled += keys.size
        first = last
    return xadj, adjncy[:filled]


def balance_weights(in_degree: np.ndarray, train: np.ndarray) -> np.ndarray:
    """One METIS vertex weight per node combining nodes, edges and training nodes, each summing to about N."""
    num_nodes = in_degree.size
    edges, trained = max(int(in_degree.sum()), 1), max(int(train.sum()), 1)
    edge_part = np.rint(in_degree * (num_nodes / edges)).astype(np.int64)
    return 1 + edge_part + train.astype(np.int64) * int(round(num_nodes / trained))


def metis_parts(xadj: np.ndarray, adjncy: np.ndarray, weights: np.ndarray, parts: int,
                seed: int) -> tuple[np.ndarray, int]:
    """``(partition (N,) of every node, undirected edges cut)`` by METIS k-way (edge cut objective), seeded."""
    if parts == 1:
        return np.zeros(xadj.size - 1, dtype=np.int64), 0
    pymetis = _metis()
    options = pymetis.Options()
    options.seed = seed
    cut, membership = pymetis.part_graph(parts, adjacency=pymetis.CSRAdjacency(xadj, adjncy), vweights=weights,
                                         options=options, recursive=False)
    return np.asarray(membership, dtype=np.int64), int(cut)


def _balance(counts: np.ndarray) -> float:
    mean = counts.mean()
    return float(counts.max() / mean) if mean > 0 else 1.0


def _write_rows(path: Path, source: Any, rows: np.ndarray, dtype: np.dtype) -> None:
    """``source[rows]`` into a new ``.npy`` file, in chunks of rows (``source`` may be memory-mapped)."""
    shape = (rows.size, *source.shape[1:])
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    for start in range(0, rows.size, ROW_CHUNK):
        stop = min(start + ROW_CHUNK, rows.size)
        out[start:stop] = np.asarray(source[rows[start:stop]], dtype=dtype)
    out.flush()
    del out


def partition_graph(dataset: str, root: str | os.PathLike | None, parts: int, out: str | os.PathLike, *,
                    seed: int = 0, show_progress: bool | None = None) -> dict[str, Any]:
    """Partition ``dataset`` (any name :func:`~gnnseg.gnn.datasets.load_node_dataset` reads) into ``parts`` METIS
    partitions under the new folder ``out``; returns (and saves in ``partition.json``) the quality report."""
    from gnnseg.gnn.datasets import dataset_spec, load_node_dataset
    from gnnseg.gnn.tasks.node import trainable_graph

    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ValueError(f"parts must be a positive integer, got {parts!r}")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; partitions are written to a new folder (choose another "
                              f"--out or remove it)")
    began = time.perf_counter()
    steps = progress(range(parts + 3), desc=f"partition into {parts}", total=parts + 3, enabled=show_progress)
    next(steps)                                                                 # load
    graph = trainable_graph(load_node_dataset(dataset, root))
    num_nodes = graph.num_nodes
    if parts > num_nodes:
        raise ValueError(f"cannot cut {num_nodes} nodes into {parts} partitions")
    row_ptr, sources, _ = graph.csr()
    row_ptr = row_ptr.numpy()
    # 4 bytes per edge instead of the loaded graph's int64 edge_index (16), which is released below
    sources = sources.numpy().astype(np.int32 if num_nodes < np.iinfo(np.int32).max else np.int64)
    train = graph.train_mask.numpy()
    split = np.zeros(num_nodes, dtype=np.int8)
    for split_name, code in SPLIT_CODES.items():
        mask = getattr(graph, f"{split_name}_mask")
        if mask is not None:
            split[mask.numpy()] = code
    in_degree = np.diff(row_ptr)
    sparse_features = ops.is_sparse(graph.x)
    x = ops.dense(graph.x).numpy()                                              # a memory map stays one
    labels = graph.y.numpy()
    name, num_classes = graph.name, graph.num_classes
    del graph

    next(steps)                                                                 # METIS
    xadj, adjncy = symmetric_adjacency(row_ptr, sources, num_nodes)
    membership, cut = metis_parts(xadj, adjncy, balance_weights(in_degree, train), parts, seed)
    undirected_edges = adjncy.size // 2
    del xadj, adjncy

    next(steps)                                                                 # partition book
    order = np.argsort(membership, kind="stable")                              # owned nodes ascending per part
    offsets = np.zeros(parts + 1, dtype=np.int64)
    np.cumsum(np.bincount(membership, minlength=parts), out=offsets[1:])
    if (np.diff(offsets) == 0).any():
        empty = int(np.flatnonzero(np.diff(offsets) == 0)[0])
        raise ValueError(f"METIS left partition {empty} empty: {num_nodes} nodes are too few for {parts} parts")
    local_index = np.empty(num_nodes, dtype=np.int64)
    local_index[order] = np.arange(num_nodes) - np.repeat(offsets[:-1], np.diff(offsets))
    owner_dtype = np.int16 if parts < np.iinfo(np.int16).max else np.int32
    local_dtype = np.int32 if int(np.diff(offsets).max()) < np.iinfo(np.int32).max else np.int64

    # the single-machine trainer's rule (minibatch.prepare_minibatch_graph): rows normalized only for dense,
    # non-negative features, so a partitioned run and `gnn eval` of its model read the same inputs
    features_nonnegative = not sparse_features and bool(all((x[start:start + ROW_CHUNK] >= 0).all()
                                                                   for start in range(0, num_nodes, ROW_CHUNK)))

    with atomic_folder(out) as staging:
        np.save(staging / "node_owner.npy", membership.astype(owner_dtype))
        np.save(staging / "node_local.npy", local_index.astype(local_dtype))
        per_part = []
        for part in range(parts):
            next(steps)
            owned = order[offsets[part]:offsets[part + 1]]
            degree = in_degree[owned]
            local_row_ptr = np.zeros(owned.size + 1, dtype=np.int64)
            np.cumsum(degree, out=local_row_ptr[1:])
            slots = np.repeat(row_ptr[owned] - local_row_ptr[:-1], degree) + np.arange(local_row_ptr[-1])
            neighbors = np.asarray(sources[slots], dtype=np.int64)
            del slots
            remote = membership[neighbors] != part
            halo = sorted_unique(neighbors[remote])
            local_sources = np.where(remote, owned.size + np.searchsorted(halo, neighbors), local_index[neighbors])
            source_dtype = np.int32 if owned.size + halo.size < np.iinfo(np.int32).max else np.int64
            folder = staging / f"part{part}"
            folder.mkdir()
            np.save(folder / "owned.npy", owned)
            np.save(folder / "halo.npy", halo)
            np.save(folder / "row_ptr.npy", local_row_ptr)
            np.save(folder / "sources.npy", local_sources.astype(source_dtype))
            _write_rows(folder / "x.npy", x, owned, np.float32)
            np.save(folder / "y.npy", labels[owned].astype(np.int64))
            np.save(folder / "split.npy", split[owned])
            edge_owner = np.repeat(np.arange(owned.size), degree)
            remote_share = np.bincount(edge_owner, weights=remote, minlength=owned.size) / np.maximum(degree, 1)
            del edge_owner
            per_part.append({"part": part, "nodes": int(owned.size), "train_nodes": int(train[owned].sum()),
                             "in_edges": int(local_row_ptr[-1]), "remote_in_edges": int(remote.sum()),
                             "remote_share_sum": float(remote_share.sum()), "halo_nodes": int(halo.size)})
            del neighbors, remote, local_sources
        # a uniformly drawn in-neighbour of a uniformly chosen node is remote with this probability (x N)
        remote_share_total = sum(p.pop("remote_share_sum") for p in per_part)
        counts = {key: np.array([p[key] for p in per_part], dtype=np.float64)
                  for key in ("nodes", "train_nodes", "in_edges", "halo_nodes")}
        quality = {
            "edge_cut": cut, "undirected_edges": int(undirected_edges),
            "edge_cut_fraction": cut / max(undirected_edges, 1),
            "remote_in_edge_fraction": float(sum(p["remote_in_edges"] for p in per_part)
                                             / max(int(in_degree.sum()), 1)),
            "remote_neighbor_fraction_node_mean": remote_share_total / num_nodes,
            "node_balance": _balance(counts["nodes"]), "train_balance": _balance(counts["train_nodes"]),
            "edge_balance": _balance(counts["in_edges"]),
            "halo_nodes_total": int(counts["halo_nodes"].sum()),
            "halo_to_owned_ratio": float(counts["halo_nodes"].sum() / num_nodes),
            "parts": per_part,
        }
        meta = {"format": FORMAT, "dataset": dataset_spec(dataset), "name": name, "num_parts": parts,
                "num_nodes": num_nodes, "num_edges": int(in_degree.sum()), "num_features": int(x.shape[1]),
                "num_classes": num_classes, "features_nonnegative": features_nonnegative, "seed": seed,
                "balance_weights": "1 + round(deg N / E) + train round(N / T)",
                "partition_seconds": time.perf_counter() - began,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "quality": quality}
        (staging / "partition.json").write_text(json.dumps(jsonable(meta), indent=2) + "\n")
    for _ in steps:                                                             # closes the bar
        pass
    return {**meta, "out": str(out)}
