"""Dataset loaders that return :class:`gnnseg.gnn.Graph` objects."""

from __future__ import annotations

import os

from gnnseg.gnn.datasets.karate import load_karate
from gnnseg.gnn.datasets.planetoid import NAMES as PLANETOID_NAMES
from gnnseg.gnn.datasets.planetoid import download_planetoid, load_planetoid
from gnnseg.gnn.graph import Graph

NODE_DATASETS = (*PLANETOID_NAMES, "karate")
DATASET_PREFIXES = ("synth:", "ogb:")


def check_node_dataset(name: str) -> str:
    """``name`` if it names a node dataset: a Planetoid name, ``karate``, ``synth:PATH`` (a folder made by
    ``gnnseg gnn synth``) or ``ogb:PATH`` (an OGB node-property folder); ``ValueError`` otherwise."""
    key = name.lower()
    if key in NODE_DATASETS:
        return key
    for prefix in DATASET_PREFIXES:
        if key.startswith(prefix):
            if not name[len(prefix):]:
                raise ValueError(f"dataset {name!r} needs a folder after {prefix!r}, e.g. {prefix}data/graph")
            return prefix + name[len(prefix):]
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(NODE_DATASETS)}, synth:PATH or ogb:PATH")


def load_node_dataset(name: str, root: str | os.PathLike | None = None) -> Graph:
    """A node-classification dataset by name: ``cora``, ``citeseer``, ``pubmed`` (need ``root``), ``karate``,
    ``synth:PATH`` (:func:`gnnseg.gnn.datasets.synthetic.load_synthetic`) or ``ogb:PATH``
    (:func:`gnnseg.gnn.datasets.ogb.load_ogb_node`)."""
    key = check_node_dataset(name)
    if key == "karate":
        return load_karate()
    if key.startswith("synth:"):
        from gnnseg.gnn.datasets.synthetic import load_synthetic

        return load_synthetic(key[len("synth:"):])
    if key.startswith("ogb:"):
        from gnnseg.gnn.datasets.ogb import load_ogb_node

        return load_ogb_node(key[len("ogb:"):])
    if root is None:
        raise ValueError(f"dataset {name!r} needs --root, the folder holding the ind.{key}.* files")
    return load_planetoid(key, root)


__all__ = ["NODE_DATASETS", "check_node_dataset", "download_planetoid", "load_karate", "load_node_dataset",
           "load_planetoid"]
