"""OGB molecule datasets (ogbg-molhiv, ogbg-molbbbp, ogbg-moltox21, ...) from their on-disk layout.

The layout is the one ``ogb.graphproppred`` downloads and reads (``ogb/io/read_graph_raw.py``): a folder
(``ogbg_molhiv``, or ``hiv`` as the zip unpacks) holding

    raw/num-node-list.csv.gz, raw/num-edge-list.csv.gz   atoms and bonds per molecule, one line each
    raw/node-feat.csv.gz      9 integer codes per atom, molecules one after another
    raw/edge.csv.gz           one line per bond, "i,j" in the molecule's own atom numbers
    raw/edge-feat.csv.gz      3 integer codes per bond
    raw/graph-label.csv.gz    one row of labels per molecule (blank or nan: missing)
    split/scaffold/{train,valid,test}.csv.gz   molecule indices
    mapping/mol.csv.gz        (optional) the SMILES and label names, with a header

OGB stores each bond once and adds its reverse when reading (``add_inverse_edge``): bond ``k`` becomes edges
``2k: i -> j`` and ``2k + 1: j -> i`` with the same codes. Loading does the same, so a molecule here is exactly
the graph ``ogb.utils.smiles2graph`` makes of its SMILES (``featurizer="ogb"``), and the official split comes
with it (``MoleculeDataset.official_split``, the split ``"official"``): the figures are OGB's leaderboard setting.

OGB scores these datasets by ROC-AUC (classification) or RMSE (regression), which gnnseg's molecule metrics equal
(``ogb_evaluation``); ogbg-molpcba and ogbg-molmuv are scored by average precision, which model selection here
does not use, and are refused with that reason.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
from pathlib import Path

import numpy as np
import torch

from gnnseg.gnn.datasets.molecule_tables import MoleculeDataset
from gnnseg.gnn.datasets.ogb import OGBError, ogb_split_folder, read_ogb_csv
from gnnseg.gnn.graph import Graph
from gnnseg.gnn.ogb_evaluation import OGB_EVAL_METRICS
from gnnseg.gnn.ogb_molecule_features import OGB_ATOM_VOCABULARY, OGB_BOND_VOCABULARY

TASKS = {"rocauc": "classification", "rmse": "regression"}


def ogb_molecule_name(folder: Path) -> str | None:
    """``ogbg-molhiv`` for a folder named ``ogbg_molhiv``, ``ogbg-molhiv`` or ``hiv``; None if unknown."""
    stem = folder.name.replace("_", "-")
    for name in (stem, f"ogbg-mol{stem}"):
        if name.startswith("ogbg-mol") and name in OGB_EVAL_METRICS:
            return name
    return None


def load_ogb_molecules(root: str | os.PathLike, *, name: str | None = None) -> MoleculeDataset:
    """The OGB molecule dataset in folder ``root`` with OGB's integer atom and bond codes and its split.

    ``name`` defaults to what the folder's name says. Every count, code and index is checked against the
    others, and a bad file is named in a one-line error.
    """
    root = Path(root)
    raw = root / "raw"
    if not raw.is_dir():
        raise FileNotFoundError(f"{root} is not an OGB dataset folder: {raw} is missing")
    name = name or ogb_molecule_name(root)
    if name is None or name not in OGB_EVAL_METRICS or not name.startswith("ogbg-mol"):
        raise ValueError(f"cannot tell which OGB molecule dataset {root} holds; name it (e.g. name='ogbg-molhiv')"
                         if name is None else f"{name!r} is not an OGB molecule dataset")
    metric, num_tasks = OGB_EVAL_METRICS[name]
    if metric not in TASKS:
        raise ValueError(f"{name} is scored by {metric}, which gnnseg's molecule training does not select on "
                         f"(it supports the ROC-AUC and RMSE datasets)")
    atoms = read_ogb_csv(raw / "num-node-list.csv.gz", np.int64, 1)[:, 0]
    bonds = read_ogb_csv(raw / "num-edge-list.csv.gz", np.int64, 1)[:, 0]
    if atoms.shape != bonds.shape or (atoms < 1).any() or (bonds < 0).any():
        raise OGBError(f"{raw}: num-node-list ({atoms.size} molecules) and num-edge-list ({bonds.size}) must list "
                       f"one positive atom count and one bond count per molecule")
    node_codes = _codes(raw / "node-feat.csv.gz", OGB_ATOM_VOCABULARY, int(atoms.sum()), "atom")
    bond_codes = _codes(raw / "edge-feat.csv.gz", OGB_BOND_VOCABULARY, int(bonds.sum()), "bond")
    pairs = read_ogb_csv(raw / "edge.csv.gz", np.int64, 2)
    if pairs.shape[0] != bonds.sum():
        raise OGBError(f"{raw / 'edge.csv.gz'} has {pairs.shape[0]} bonds, num-edge-list says {int(bonds.sum())}")
    labels = _labels(raw / "graph-label.csv.gz", atoms.size, num_tasks)
    smiles, target_names = _mapping(root / "mapping" / "mol.csv.gz", atoms.size, num_tasks)

    graphs = []
    atom_starts = np.concatenate([[0], np.cumsum(atoms)])
    bond_starts = np.concatenate([[0], np.cumsum(bonds)])
    for k in range(atoms.size):
        local = pairs[bond_starts[k]:bond_starts[k + 1]]
        if local.size and (local.min() < 0 or local.max() >= atoms[k]):
            raise OGBError(f"{raw / 'edge.csv.gz'}: molecule {k} has a bond to an atom outside 0..{atoms[k] - 1}")
        edges = np.empty((2, 2 * local.shape[0]), dtype=np.int64)
        edges[:, 0::2], edges[:, 1::2] = local.T, local.T[::-1]
        graphs.append(Graph(edge_index=torch.from_numpy(edges), num_nodes=int(atoms[k]),
                            x=torch.from_numpy(node_codes[atom_starts[k]:atom_starts[k + 1]].copy()),
                            edge_attr=torch.from_numpy(np.repeat(bond_codes[bond_starts[k]:bond_starts[k + 1]], 2,
                                                                 axis=0)),
                            name=smiles[k] or f"{name}[{k}]"))
    return MoleculeDataset(graphs=graphs, smiles=smiles, targets=torch.from_numpy(labels), target_names=target_names,
                           task=TASKS[metric], rows=list(range(atoms.size)), source=str(root), featurizer="ogb",
                           name=name, official_split=_split(root, atoms.size))


def _codes(path: Path, vocabulary: tuple[int, ...], rows: int, what: str) -> np.ndarray:
    codes = read_ogb_csv(path, np.int64, len(vocabulary))
    if codes.shape[0] != rows:
        raise OGBError(f"{path} has {codes.shape[0]} rows for {rows} {what}s")
    outside = (codes < 0) | (codes >= np.asarray(vocabulary))
    if outside.any():
        row, column = (int(i[0]) for i in np.nonzero(outside))
        raise OGBError(f"{path} row {row + 1}: {what} code {int(codes[row, column])} in column {column} is outside "
                       f"OGB's vocabulary 0..{vocabulary[column] - 1}")
    return codes


def _labels(path: Path, molecules: int, num_tasks: int) -> np.ndarray:
    """``(molecules, num_tasks)`` float32; blank and ``nan`` cells are missing labels (NaN)."""
    if not path.is_file():
        raise FileNotFoundError(f"OGB file missing: {path}")
    labels = np.full((molecules, num_tasks), math.nan, dtype=np.float32)
    with gzip.open(path, "rt") as handle:
        lines = handle.read().splitlines()
    if len(lines) != molecules:
        raise OGBError(f"{path} has {len(lines)} rows for {molecules} molecules")
    for row, line in enumerate(lines):
        cells = line.split(",")
        if len(cells) != num_tasks:
            raise OGBError(f"{path} row {row + 1} has {len(cells)} label(s), the dataset has {num_tasks} task(s)")
        for column, cell in enumerate(cells):
            try:
                labels[row, column] = float(cell) if cell.strip() else math.nan
            except ValueError:
                raise OGBError(f"{path} row {row + 1}: label {cell!r} is not a number") from None
    return labels


def _mapping(path: Path, molecules: int, num_tasks: int) -> tuple[list[str], list[str]]:
    """SMILES and label names from ``mapping/mol.csv.gz``; without it, empty SMILES and ``task_k`` names."""
    if not path.is_file():
        return [""] * molecules, [f"task_{k}" for k in range(num_tasks)]
    with gzip.open(path, "rt", newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    if "smiles" not in header or len(body) != molecules:
        raise OGBError(f"{path} must have a 'smiles' column and {molecules} rows, found columns {header} and "
                       f"{len(body)} rows")
    smiles_column = header.index("smiles")
    names = [column for column in header if column not in ("smiles", "mol_id")]
    if len(names) != num_tasks:
        names = [f"task_{k}" for k in range(num_tasks)]
    return [row[smiles_column] for row in body], names


def _split(root: Path, molecules: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    folder = ogb_split_folder(root, None)
    parts = []
    for part in ("train", "valid", "test"):
        index = read_ogb_csv(folder / f"{part}.csv.gz", np.int64, 1)[:, 0]
        if index.size and (index.min() < 0 or index.max() >= molecules):
            raise OGBError(f"{folder / (part + '.csv.gz')} refers to a molecule outside 0..{molecules - 1}")
        parts.append(index)
    if np.unique(np.concatenate(parts)).size != sum(p.size for p in parts):
        raise OGBError(f"{folder}: a molecule is in more than one of train / valid / test")
    return parts[0], parts[1], parts[2]
