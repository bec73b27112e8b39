"""Dataset loaders that return :class:`gnnseg.gnn.Graph` objects."""

from __future__ import annotations

import os
from pathlib import Path

from gnnseg.gnn.datasets.karate import load_karate
from gnnseg.gnn.datasets.planetoid import NAMES as PLANETOID_NAMES
from gnnseg.gnn.datasets.planetoid import download_planetoid, load_planetoid
from gnnseg.gnn.graph import Graph

NODE_DATASETS = (*PLANETOID_NAMES, "karate")
DATASET_PREFIXES = ("synth:", "ogb:", "pyg:", "files:")


def check_node_dataset(name: str) -> str:
    """``name`` if it names a node dataset: a Planetoid name, ``karate``, ``synth:PATH`` (a folder made by
    ``gnnseg gnn synth``), ``ogb:PATH`` (an OGB node-property folder), ``pyg:PATH`` (a PyG dataset folder or a
    saved ``Data``) or ``files:DIR`` (edge list, features, labels as plain files); ``ValueError`` otherwise."""
    key = name.lower()
    if key in NODE_DATASETS:
        return key
    for prefix in DATASET_PREFIXES:
        if key.startswith(prefix):
            if not name[len(prefix):]:
                raise ValueError(f"dataset {name!r} needs a folder after {prefix!r}, e.g. {prefix}data/graph")
            return prefix + name[len(prefix):]
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(NODE_DATASETS)}, "
                     f"{', '.join(prefix + 'PATH' for prefix in DATASET_PREFIXES)}")


def load_node_dataset(name: str, root: str | os.PathLike | None = None) -> Graph:
    """A node-classification dataset by name: ``cora``, ``citeseer``, ``pubmed`` (need ``root``: the raw files, flat
    or in PyG's ``root/Cora/raw``), ``karate``, ``synth:PATH`` (:func:`gnnseg.gnn.datasets.synthetic.load_synthetic`),
    ``ogb:PATH`` (:func:`gnnseg.gnn.datasets.ogb.load_ogb_node`), ``pyg:PATH``
    (:func:`gnnseg.gnn.datasets.pyg_files.load_pyg`) or ``files:DIR``
    (:func:`gnnseg.gnn.datasets.files.load_graph_files`)."""
    key = check_node_dataset(name)
    if key == "karate":
        return load_karate()
    if key.startswith("synth:"):
        from gnnseg.gnn.datasets.synthetic import load_synthetic

        return load_synthetic(key[len("synth:"):])
    if key.startswith("ogb:"):
        from gnnseg.gnn.datasets.ogb import load_ogb_node

        return load_ogb_node(key[len("ogb:"):])
    if key.startswith("pyg:"):
        from gnnseg.gnn.datasets.pyg_files import load_pyg

        return load_pyg(key[len("pyg:"):])
    if key.startswith("files:"):
        from gnnseg.gnn.datasets.files import load_graph_files

        return load_graph_files(key[len("files:"):])
    if root is None:
        raise ValueError(f"dataset {name!r} needs --root, the folder holding the ind.{key}.* files")
    return load_planetoid(key, root)


def dataset_spec(name: str) -> str:
    """``name`` as a checkpoint records it: checked, a ``PREFIX:PATH`` with its path made absolute (so that a saved
    model finds its data from any working directory)."""
    key = check_node_dataset(name)
    for prefix in DATASET_PREFIXES:
        if key.startswith(prefix):
            return prefix + str(Path(key[len(prefix):]).resolve())
    return key


__all__ = ["NODE_DATASETS", "check_node_dataset", "dataset_spec", "download_planetoid", "load_karate",
           "load_node_dataset", "load_planetoid"]
