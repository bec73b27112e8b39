"""One rank's partition, memory-mapped: the owned nodes' incoming edges, features, labels and split, the
halo's global ids, and the partition book (who owns every node, at which row). Written by
:func:`gnnseg.gnn.distributed.partition.partition_graph`; nothing here holds the whole graph except the
book, ``N`` entries of 2 and 4 bytes."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gnnseg.gnn.distributed.partition import FORMAT, SPLIT_CODES

PART_ARRAYS = ("owned", "halo", "row_ptr", "sources", "x", "y", "split")


def read_partition_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """``partition.json`` of a partition folder, checked (``FileNotFoundError`` / ``ValueError`` naming it)."""
    path = Path(folder) / "partition.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a partition folder: {path} is missing (make one with "
                                f"`gnnseg gnn partition --out {folder}`)")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def _mapped(file: Path) -> Tensor:
    if not file.is_file():
        raise FileNotFoundError(f"partition file {file} is missing")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)         # a copy-on-write map is writable for numpy
        return torch.from_numpy(np.load(file, mmap_mode="c"))


@dataclass(frozen=True, eq=False)
class PartitionStore:
    """Partition ``part`` of the folder. Local ids: ``[0, num_owned)`` the owned nodes (ascending global
    ids), then the halo. ``owner (N,)`` and ``local_index (N,)``: the partition book."""

    folder: Path
    part: int
    meta: dict[str, Any]
    owner: Tensor
    local_index: Tensor
    owned: Tensor
    halo: Tensor
    row_ptr: Tensor
    sources: Tensor
    x: Tensor
    y: Tensor
    split: Tensor

    @classmethod
    def open(cls, folder: str | os.PathLike, part: int) -> PartitionStore:
        folder = Path(folder)
        meta = read_partition_meta(folder)
        if not 0 <= part < meta["num_parts"]:
            raise ValueError(f"{folder} has partitions 0..{meta['num_parts'] - 1}, not {part}")
        arrays = {name: _mapped(folder / f"part{part}" / f"{name}.npy") for name in PART_ARRAYS}
        book = {name: _mapped(folder / f"{name}.npy") for name in ("node_owner", "node_local")}
        n, owned = meta["num_nodes"], arrays["owned"].numel()
        expected = {"row_ptr": (owned + 1,), "x": (owned, meta["num_features"]), "y": (owned,), "split": (owned,)}
        for name, shape in expected.items():
            if tuple(arrays[name].shape) != shape:
                raise ValueError(f"{folder / f'part{part}' / (name + '.npy')} has shape "
                                 f"{tuple(arrays[name].shape)}, expected {shape}")
        for name, tensor in book.items():
            if tuple(tensor.shape) != (n,):
                raise ValueError(f"{folder / (name + '.npy')} has shape {tuple(tensor.shape)}, expected ({n},)")
        return cls(folder, part, meta, book["node_owner"], book["node_local"], **arrays)

    @property
    def num_nodes(self) -> int:
        """Nodes of the whole graph."""
        return int(self.meta["num_nodes"])

    @property
    def num_owned(self) -> int:
        return int(self.owned.numel())

    @property
    def local_to_global(self) -> Tensor:
        """``(num_owned + num_halo,)`` int64: the global id of every local id."""
        return torch.cat([self.owned, self.halo]).to(torch.int64)

    def split_nodes(self, split: str) -> Tensor:
        """Global ids of the owned nodes in ``split`` (train, val, test), ascending."""
        return self.owned.to(torch.int64)[self.split == SPLIT_CODES[split]]

    def identity(self) -> dict[str, Any]:
        """What makes two partitionings the same for resuming: dataset, parts, seed, edge cut."""
        return {"dataset": self.meta["dataset"], "num_parts": self.meta["num_parts"], "seed": self.meta["seed"],
                "edge_cut": self.meta["quality"]["edge_cut"], "num_nodes": self.num_nodes}
