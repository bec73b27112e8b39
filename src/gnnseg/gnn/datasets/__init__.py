"""Dataset loaders that return :class:`gnnseg.gnn.Graph` objects."""

from __future__ import annotations

import os

from gnnseg.gnn.datasets.karate import load_karate
from gnnseg.gnn.datasets.planetoid import NAMES as PLANETOID_NAMES
from gnnseg.gnn.datasets.planetoid import download_planetoid, load_planetoid
from gnnseg.gnn.graph import Graph

NODE_DATASETS = (*PLANETOID_NAMES, "karate")


def load_node_dataset(name: str, root: str | os.PathLike | None = None) -> Graph:
    """A node-classification dataset by name: ``cora``, ``citeseer``, ``pubmed`` (need ``root``) or ``karate``."""
    key = name.lower()
    if key == "karate":
        return load_karate()
    if key in PLANETOID_NAMES:
        if root is None:
            raise ValueError(f"dataset {name!r} needs --root, the folder holding the ind.{key}.* files")
        return load_planetoid(key, root)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(NODE_DATASETS)}")


__all__ = ["NODE_DATASETS", "download_planetoid", "load_karate", "load_node_dataset", "load_planetoid"]
