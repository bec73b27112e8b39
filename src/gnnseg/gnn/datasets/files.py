"""A node-classification graph from plain files in one folder: ``files:DIR``.

- ``edges.csv``: two integer columns ``source,target`` (node ids from 0), an optional header line; or
  ``edges.npy``: integers of shape ``(2, E)`` or ``(E, 2)`` (a 2 x 2 array is read as ``(2, E)``);
- ``features.npy``: numbers of shape ``(N, F)``, one row per node (``N`` is the number of nodes); or
  ``features.csv``: ``N`` rows of ``F`` comma-separated numbers, an optional header line;
- ``labels.csv``: ``N`` integer class labels (0, 1, ...), one per line in node order, an optional header line;
- optional ``train.txt``, ``val.txt``, ``test.txt``: the node ids of each split, separated by whitespace, commas
  or newlines.

Edges are made undirected (listing each once is enough; duplicates are merged) unless ``directed=True``.
Without split files (or without a train or test file) the trainers make a random split and say so
(:mod:`gnnseg.gnn.node_splits`). Every problem is one :class:`GraphFilesError` naming the file and what is wrong:
a missing file, a ragged CSV line, a value that is not a number, a node id out of range, a non-finite feature, a
label count other than the node count. ``.npy`` files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from gnnseg.gnn.graph import Graph

EDGE_FILES = ("edges.csv", "edges.npy")
FEATURE_FILES = ("features.npy", "features.csv")
LABEL_FILE = "labels.csv"
SPLIT_FILES = {"train_mask": "train.txt", "val_mask": "val.txt", "test_mask": "test.txt"}


class GraphFilesError(ValueError):
    """A file of a ``files:DIR`` folder is missing or malformed; the message names the file and the problem."""


def load_graph_files(folder: str | os.PathLike, *, directed: bool = False) -> Graph:
    """The graph in ``folder`` (the layout in this module's docstring), named after the folder, validated."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GraphFilesError(f"files:{folder}: no such folder")
    features_file = _one_of(folder, FEATURE_FILES, "node features")
    features = _read_features(features_file)
    num_nodes = features.shape[0]
    labels = _read_labels(folder / LABEL_FILE, num_nodes, features_file.name)
    edge_index = _read_edges(_one_of(folder, EDGE_FILES, "edge list"), num_nodes, features_file.name)
    masks = _read_splits(folder, num_nodes, features_file.name)
    graph = Graph(edge_index=torch.from_numpy(edge_index), num_nodes=num_nodes, x=torch.from_numpy(features),
                  y=torch.from_numpy(labels), name=folder.resolve().name, **masks)
    return (graph if directed else graph.to_undirected()).validate()


def _one_of(folder: Path, names: tuple[str, ...], what: str) -> Path:
    present = [folder / name for name in names if (folder / name).is_file()]
    if not present:
        raise GraphFilesError(f"{folder}: missing {' or '.join(names)} (the {what})")
    if len(present) > 1:
        raise GraphFilesError(f"{folder}: both {' and '.join(names)} are there (the {what}); keep one")
    return present[0]


def _read_csv(path: Path, integers: bool, columns: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(values (rows, columns), line numbers (rows,))`` of a comma-separated file of numbers. A first line that
    is not all numbers is a header; blank lines are skipped; every row must have the first row's width."""
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as exc:
        raise GraphFilesError(f"{path}: not a text CSV file ({exc.reason} at byte {exc.start})") from None
    rows = [(number, [field.strip() for field in line.split(",")])
            for number, line in enumerate(lines, 1) if line.strip()]
    if rows and not all(_parses(float, field) for field in rows[0][1]):
        rows = rows[1:]
    if not rows:
        raise GraphFilesError(f"{path}: no data rows")
    width = columns or len(rows[0][1])
    convert, kind = (int, "an integer") if integers else (float, "a number")
    values = []
    for number, fields in rows:
        if len(fields) != width:
            raise GraphFilesError(f"{path}: line {number} has {len(fields)} comma-separated values, expected "
                                  f"{width} (ragged CSV)")
        try:
            values.append([convert(field) for field in fields])
        except ValueError:
            bad = next(field for field in fields if not _parses(convert, field))
            raise GraphFilesError(f"{path}: line {number}: {bad!r} is not {kind}") from None
    dtype = np.int64 if integers else np.float32
    return np.array(values, dtype=dtype).reshape(len(rows), width), np.array([n for n, _ in rows])


def _parses(convert: type, text: str) -> bool:
    try:
        convert(text)
    except ValueError:
        return False
    return True


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise GraphFilesError(f"{path}: not a plain .npy array ({exc})") from None
    except OSError as exc:
        raise GraphFilesError(f"{path}: cannot read it as .npy ({exc})") from None


def _read_features(path: Path) -> np.ndarray:
    """``(N, F)`` float32, finite."""
    if path.suffix == ".npy":
        features = _read_npy(path)
        if features.dtype.kind not in "biuf":
            raise GraphFilesError(f"{path}: features must be numbers, got dtype {features.dtype}")
        if features.ndim != 2:
            raise GraphFilesError(f"{path}: features must have shape (nodes, features), got {features.shape}")
        features = features.astype(np.float32)
    else:
        features = _read_csv(path, integers=False)[0]
    if not np.isfinite(features).all():
        node, column = np.argwhere(~np.isfinite(features))[0]
        raise GraphFilesError(f"{path}: feature {features[node, column]} (not finite) at node {node}, "
                              f"column {column}")
    return features


def _read_labels(path: Path, num_nodes: int, nodes_from: str) -> np.ndarray:
    """``(N,)`` int64, one non-negative class per node."""
    if not path.is_file():
        raise GraphFilesError(f"{path.parent}: missing {path.name} (one class label per node)")
    labels, lines = _read_csv(path, integers=True, columns=1)
    labels = labels[:, 0]
    if labels.size != num_nodes:
        raise GraphFilesError(f"{path}: {labels.size} labels, but {nodes_from} has {num_nodes} rows; give one "
                              f"label per node, in node order")
    if labels.min() < 0:
        row = int(np.argmin(labels))
        raise GraphFilesError(f"{path}: line {lines[row]}: label {labels[row]} is negative; classes are 0, 1, ...")
    return labels


def _read_edges(path: Path, num_nodes: int, nodes_from: str) -> np.ndarray:
    """``(2, E)`` int64 with every id in ``[0, N)``."""
    if path.suffix == ".npy":
        edges = _read_npy(path)
        if edges.dtype.kind not in "iu":
            raise GraphFilesError(f"{path}: node ids must be integers, got dtype {edges.dtype}")
        if edges.ndim != 2 or 2 not in edges.shape:
            raise GraphFilesError(f"{path}: edges must have shape (2, E) or (E, 2), got {edges.shape}")
        edges = edges.astype(np.int64)
        edges = edges if edges.shape[0] == 2 else edges.T
        where = [f"column {k}" for k in range(edges.shape[1])]
    else:
        pairs, lines = _read_csv(path, integers=True, columns=2)
        edges = pairs.T
        where = [f"line {n}" for n in lines]
    bad = np.flatnonzero(((edges < 0) | (edges >= num_nodes)).any(0))
    if bad.size:
        edge = int(bad[0])
        node = int(edges[0, edge] if not 0 <= edges[0, edge] < num_nodes else edges[1, edge])
        raise GraphFilesError(f"{path}: {where[edge]}: node id {node} is out of range 0..{num_nodes - 1} "
                              f"({nodes_from} has {num_nodes} rows, one per node)")
    return np.ascontiguousarray(edges)


def _read_splits(folder: Path, num_nodes: int, nodes_from: str) -> dict[str, torch.Tensor]:
    """Bool masks ``(N,)`` of the split files present; ids in range, no node in two splits."""
    masks, members = {}, {}
    for mask_name, file_name in SPLIT_FILES.items():
        path = folder / file_name
        if not path.is_file():
            continue
        tokens = path.read_text().replace(",", " ").split()
        bad = next((token for token in tokens if not _parses(int, token)), None)
        if bad is not None:
            raise GraphFilesError(f"{path}: {bad!r} is not an integer node id")
        ids = np.array([int(token) for token in tokens], dtype=np.int64)
        outside = ids[(ids < 0) | (ids >= num_nodes)]
        if outside.size:
            raise GraphFilesError(f"{path}: node id {outside[0]} is out of range 0..{num_nodes - 1} "
                                  f"({nodes_from} has {num_nodes} rows, one per node)")
        for other, other_ids in members.items():
            shared = np.intersect1d(ids, other_ids)
            if shared.size:
                raise GraphFilesError(f"{path} and {other} share {shared.size} nodes (e.g. node {shared[0]}); "
                                      f"a node belongs to one split")
        members[file_name] = ids
        masks[mask_name] = torch.zeros(num_nodes, dtype=torch.bool)
        masks[mask_name][torch.from_numpy(ids)] = True
    return masks
