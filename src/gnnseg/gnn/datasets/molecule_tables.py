"""Molecule property tables (CSV with a SMILES column and target columns) and their splits.

``load_molecule_csv`` reads any such table, e.g. the copies in ``../shared/datasets/molecules``:

=================================  ===============  ======================================  ===============
file                               SMILES column    targets                                 task
=================================  ===============  ======================================  ===============
moleculenet/BBBP.csv               ``smiles``       ``p_np``                                classification
moleculenet/delaney-processed.csv  ``smiles``       ``measured log solubility in mols       regression
                                                    per litre`` (ESOL)
moleculenet/tox21.csv              ``smiles``       the 12 ``NR-*`` / ``SR-*`` columns,     classification
                                                    blank = missing
stokes2020_ecoli/ecoli.csv         ``smiles``       ``activity``                            classification
=================================  ===============  ======================================  ===============

``featurizer="ogb"`` featurizes with OGB's ``smiles2graph`` (integer codes) instead of gnnseg's one-hot
features (``molecule_graphs``). Missing labels (blank cells) become NaN and are masked in losses and
metrics. Rows whose SMILES RDKit rejects are skipped and reported (row, file line, text, reason); a label
that is not a number, or a classification label other than 0/1, is a mistake in the table or the column
choice and raises.

Splits return index arrays into the dataset: ``random_split`` (seeded permutation), ``scaffold_split``
(Bemis-Murcko scaffold groups, largest first into train, as DeepChem's ``ScaffoldSplitter`` that
MoleculeNet and OGB use; deterministic, no seed) and ``balanced_scaffold_split`` (chemprop's seeded
variant).
"""

from __future__ import annotations

import csv
import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from gnnseg.gnn.graph import Graph
from gnnseg.gnn.molecule_graphs import (
    Featurizer,
    SkippedRow,
    check_featurizer,
    featurize_smiles,
    murcko_scaffold,
    require_rdkit,
)

TaskType = Literal["classification", "regression"]
TASK_TYPES = ("classification", "regression")

# Target columns of the shared copies, for convenience (benchmarks, docs, tests).
TOX21_TASKS = ("NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD", "NR-PPAR-gamma", "SR-ARE",
               "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53")
ESOL_TARGET = "measured log solubility in mols per litre"
SHARED_TABLES = {  # name -> (relative path, smiles column, targets, task)
    "bbbp": ("moleculenet/BBBP.csv", "smiles", ("p_np",), "classification"),
    "esol": ("moleculenet/delaney-processed.csv", "smiles", (ESOL_TARGET,), "regression"),
    "tox21": ("moleculenet/tox21.csv", "smiles", TOX21_TASKS, "classification"),
    "ecoli": ("stokes2020_ecoli/ecoli.csv", "smiles", ("activity",), "classification"),
}


class MoleculeTableError(ValueError):
    """A molecule table is unusable: a column is missing or a label is wrong (file, line and column named)."""


@dataclass
class MoleculeDataset:
    """Featurized molecules of one table.

    ``graphs[k]`` (with ``x``, ``edge_index``, ``edge_attr``) has labels ``targets[k]`` (``(G, T)`` float32,
    NaN where missing) and came from data row ``rows[k]`` of the file; ``skipped`` lists the rows left out.
    ``records[k]`` holds that row's original columns (used when screening writes them back out).
    ``featurizer`` says how the graphs were made (``"gnnseg"`` one-hot floats, ``"ogb"`` integer codes).
    ``name`` and ``official_split`` (train / validation / test indices) are set for a dataset that comes with its
    own split, such as an OGB folder (``datasets.ogb_molecules``).
    """

    graphs: list[Graph]
    smiles: list[str]
    targets: Tensor
    target_names: list[str]
    task: TaskType
    rows: list[int]
    skipped: list[SkippedRow] = field(default_factory=list)
    records: list[dict[str, str]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    source: str = ""
    featurizer: Featurizer = "gnnseg"
    name: str = ""
    official_split: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.graphs)

    @property
    def num_tasks(self) -> int:
        return int(self.targets.size(1))

    def summary(self) -> dict:
        """Counts for reports: molecules, tasks, labels present, and the skipped rows (as dicts)."""
        present = ~torch.isnan(self.targets)
        info = {"source": self.source, "name": self.name, "featurizer": self.featurizer, "molecules": len(self),
                "tasks": self.num_tasks, "task": self.task,
                "labels_present": int(present.sum()), "labels_missing": int((~present).sum()),
                "skipped": len(self.skipped), "skipped_rows": [vars(s) for s in self.skipped]}
        if self.task == "classification" and self.num_tasks:
            info["positives"] = int(torch.nan_to_num(self.targets, nan=0.0).sum())
        return info


def _parse_label(text: str, task: TaskType, where: str) -> float:
    text = text.strip()
    if not text:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise MoleculeTableError(f"{where}: label {text!r} is not a number") from None
    if math.isnan(value):
        return math.nan
    if task == "classification" and value not in (0.0, 1.0):
        raise MoleculeTableError(f"{where}: classification labels must be 0 or 1, got {text!r} "
                                 "(use --task regression for a continuous target)")
    if not math.isfinite(value):
        raise MoleculeTableError(f"{where}: label {text!r} is not finite")
    return value


def load_molecule_csv(path: str | os.PathLike, smiles_column: str = "smiles",
                      target_columns: Sequence[str] = (), task: TaskType = "classification",
                      featurizer: Featurizer = "gnnseg") -> MoleculeDataset:
    """Read ``path`` and featurize its SMILES with ``featurizer`` (see the module docstring).
    ``target_columns`` may be empty (a library to score): ``targets`` then has shape ``(G, 0)``."""
    require_rdkit()
    check_featurizer(featurizer)
    if task not in TASK_TYPES:
        raise ValueError(f"task must be one of {TASK_TYPES}, got {task!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"molecule table not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        wanted = [smiles_column, *target_columns]
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise MoleculeTableError(f"{path}: no column {', '.join(map(repr, missing))}; "
                                     f"the columns are {columns}")
        records, lines = [], []
        for record in reader:
            records.append({key: (value if value is not None else "") for key, value in record.items()
                            if key is not None})
            lines.append(reader.line_num)
    labels = np.full((len(records), len(target_columns)), np.nan, dtype=np.float32)
    for row, record in enumerate(records):
        for column, name in enumerate(target_columns):
            labels[row, column] = _parse_label(record.get(name, ""), task,
                                               f"{path} line {lines[row]}, column {name!r}")
    smiles = [record.get(smiles_column, "") for record in records]
    graphs, kept, skipped = featurize_smiles(smiles, lines=lines, featurizer=featurizer)
    if not graphs:
        raise MoleculeTableError(f"{path}: none of its {len(records)} rows holds a valid SMILES in column "
                                 f"{smiles_column!r}" + (f" (first problem: {skipped[0]})" if skipped else ""))
    return MoleculeDataset(graphs=graphs, smiles=[smiles[k].strip() for k in kept],
                           targets=torch.from_numpy(labels[kept]), target_names=list(target_columns), task=task,
                           rows=kept, skipped=skipped, records=[records[k] for k in kept], columns=columns,
                           source=str(path), featurizer=featurizer)


def load_shared_table(name: str, root: str | os.PathLike, featurizer: Featurizer = "gnnseg") -> MoleculeDataset:
    """One of ``SHARED_TABLES`` (bbbp, esol, tox21, ecoli) from ``root`` (``../shared/datasets/molecules``)."""
    if name not in SHARED_TABLES:
        raise ValueError(f"unknown molecule table {name!r}; choose one of {', '.join(SHARED_TABLES)}")
    relative, smiles_column, targets, task = SHARED_TABLES[name]
    return load_molecule_csv(Path(root) / relative, smiles_column, targets, task, featurizer)


# ------------------------------------------------------------------------------------------------- splits
def _split_sizes(count: int, fractions: Sequence[float]) -> tuple[float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    if count < 3:
        raise ValueError(f"cannot split {count} molecules into train / validation / test")
    return fractions[0] * count, (fractions[0] + fractions[1]) * count


def random_split(count: int, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train / validation / test indices from a permutation seeded with ``seed``."""
    train_end, val_end = _split_sizes(count, fractions)
    order = np.random.default_rng(seed).permutation(count)
    train_end, val_end = round(train_end), round(val_end)
    return order[:train_end], order[train_end:val_end], order[val_end:]


def scaffold_groups(smiles: Sequence[str], include_chirality: bool = False) -> dict[str, list[int]]:
    """Bemis-Murcko scaffold -> indices of the molecules that have it (acyclic molecules share ``""``)."""
    groups: dict[str, list[int]] = {}
    for index, text in enumerate(smiles):
        groups.setdefault(murcko_scaffold(text, include_chirality), []).append(index)
    return groups


def scaffold_split(smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                   include_chirality: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic Bemis-Murcko scaffold split (DeepChem's ``ScaffoldSplitter``, used by MoleculeNet and
    OGB): scaffold groups sorted by (size, first index), largest first; each whole group goes to train
    while train stays within its share, else to validation while train + validation stay within theirs,
    else to test. No scaffold is in two parts; the test part holds the rarest scaffolds."""
    train_cutoff, val_cutoff = _split_sizes(len(smiles), fractions)
    groups = sorted(scaffold_groups(smiles, include_chirality).values(), key=lambda g: (len(g), g[0]), reverse=True)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for group in groups:
        if len(train) + len(group) > train_cutoff:
            if len(train) + len(val) + len(group) > val_cutoff:
                test += group
            else:
                val += group
        else:
            train += group
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(val), dtype=np.int64), \
        np.array(sorted(test), dtype=np.int64)


def balanced_scaffold_split(smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                            include_chirality: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """chemprop's balanced scaffold split (Yang et al. 2019, ``scaffold_balanced``): scaffold groups larger
    than half the validation or test share go first, then the others, each list shuffled with ``seed``;
    each whole group goes to train while it fits, else to validation while it fits, else to test.

    No scaffold is in two parts, but unlike :func:`scaffold_split` the result does not depend on the
    order of the file (the deterministic split gives the rarest scaffolds to test in first-index order,
    which on a table sorted by label can leave validation without a single positive)."""
    train_size, val_cutoff = _split_sizes(len(smiles), fractions)
    val_size, test_size = val_cutoff - train_size, len(smiles) - val_cutoff
    groups = list(scaffold_groups(smiles, include_chirality).values())
    big = [g for g in groups if len(g) > val_size / 2 or len(g) > test_size / 2]
    small = [g for g in groups if not (len(g) > val_size / 2 or len(g) > test_size / 2)]
    shuffler = random.Random(seed)
    shuffler.shuffle(big)
    shuffler.shuffle(small)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for group in big + small:
        if len(train) + len(group) <= train_size:
            train += group
        elif len(val) + len(group) <= val_size:
            val += group
        else:
            test += group
    return np.array(sorted(train), dtype=np.int64), np.array(sorted(val), dtype=np.int64), \
        np.array(sorted(test), dtype=np.int64)


SplitKind = Literal["random", "scaffold", "scaffold_balanced", "official"]
SPLITS = ("random", "scaffold", "scaffold_balanced", "official")


def split_dataset(dataset: MoleculeDataset, how: SplitKind, seed: int = 0,
                  fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of the train / validation / test molecules; ``seed`` matters for the random and the
    balanced scaffold split, not for the deterministic scaffold split. ``"official"`` is the split the dataset
    came with (an OGB folder's)."""
    if how == "official":
        if dataset.official_split is None:
            raise ValueError(f"{dataset.source or 'this dataset'} has no official split (OGB folders have one); "
                             f"choose one of {', '.join(s for s in SPLITS if s != 'official')}")
        return dataset.official_split
    if how == "random":
        return random_split(len(dataset), fractions, seed)
    if how == "scaffold":
        return scaffold_split(dataset.smiles, fractions)
    if how == "scaffold_balanced":
        return balanced_scaffold_split(dataset.smiles, fractions, seed)
    raise ValueError(f"split must be one of {SPLITS}, got {how!r}")
