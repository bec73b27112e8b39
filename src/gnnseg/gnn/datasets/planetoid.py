"""Cora, CiteSeer and PubMed from the raw Planetoid files, with Kipf & Welling's public split.

Files: ``ind.<name>.{x,y,tx,ty,allx,ally,graph,test.index}`` (Yang, Cohen & Salakhutdinov, ICML 2016;
github.com/kimiyoung/planetoid). The split is the GCN paper's: the first ``len(y)`` nodes train (Cora 140,
CiteSeer 120, PubMed 60), the next 500 validate, the 1000 ids in ``test.index`` test.

The files are Python-2 pickles. They are read with an unpickler that only builds numpy arrays, scipy CSR
matrices, lists and dicts, so a tampered file cannot run code.
"""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from gnnseg.gnn.graph import Graph

NAMES = ("cora", "citeseer", "pubmed")
PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")
DOWNLOAD_URL = "https://github.com/kimiyoung/planetoid/raw/master/data/{file}"
NUM_VALIDATION = 500

# sha256 of the upstream files (kimiyoung/planetoid at af6abf46, identical in tkipf/gcn).
# PubMed's allx has no pinned hash: no trusted copy of it was available when this table was written.
CHECKSUMS = {
    "ind.citeseer.allx": "2ac30345d95c9ec933a817ee0bdd6a5f077f8c184a20e696910192d534414668",
    "ind.citeseer.ally": "f704b2d986dde6c2669934de1f3ae5696a6cf9455c0f6b2646a2d135ea0a1c95",
    "ind.citeseer.graph": "d79a4ef9d3e7169aee8946145f6b7306e35bc79bffad26346cfb94e10e9912a7",
    "ind.citeseer.test.index": "2af990671580b6b2df5d158d1038f8292e30c9cd821b5453f399659b25b723d4",
    "ind.citeseer.tx": "539a8906a2da97628d212f2fdd668c109a8b3f0d36574b59e5d3fd5b5303da21",
    "ind.citeseer.ty": "55e5bd1ba1e733a04598753ad1a8d57957f4b8f89e74519f41f4f4938767e4ce",
    "ind.citeseer.x": "d20de19150741e555de0ed037195630fc194114ebc7fd72ced62810148aa22f6",
    "ind.citeseer.y": "8ba87e515d8e3ee3cf52f6d2c5b86aa73f11ecad825a808455209ec26cd54924",
    "ind.cora.allx": "9419ba2f26f5c35243db64aba110e0f35a04851609e0dc5433450676ca6b8543",
    "ind.cora.ally": "2b998f5cc7fedc86e7f97ca2498f47a1ffc1462c29e2d578b23bf3f62b6e7d71",
    "ind.cora.graph": "58f13302f39dde8852dad6fe6d15b89b077b6d7f837626bce671ef80344b383d",
    "ind.cora.test.index": "297ce89af2b51a6a194181c7dbe1796c6a1cf9cd9349a88383b1b1e227867875",
    "ind.cora.tx": "b9afbaa4a400df991f6f02ef677e1e44da55ffc04801fd02f9e673987829226a",
    "ind.cora.ty": "41f5ac76596a1699cc33f53084a2419e92961c42bb75f36fc38e616d348532ad",
    "ind.cora.x": "23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084bb27baab",
    "ind.cora.y": "94465c14eb53e04ca262198dcbb2521ee8af60fb3f3d546cd6ca24a511b0e7d1",
    "ind.pubmed.allx": None,
    "ind.pubmed.ally": "0c37bbe3b5014ec365e9d393cf4791925e5ed94fb194305d74f064a8d7b50f0e",
    "ind.pubmed.graph": "5b89f0036ca22909471f1e6558eb42fa06e0c730a577bde5b058b40638f81dc9",
    "ind.pubmed.test.index": "b101d421688bbaecbd82e8a18f1e282378d6830f3a37666f28ebc47f844341b5",
    "ind.pubmed.tx": "4eb5f5d0f30f26497eb0ac6ac9719d09c67e284f1ed0385c93f3ef27a671da3d",
    "ind.pubmed.ty": "ee2e0d4819d9fbcc403689c3bf2e49face401b605932f093bc58ab6461130fdd",
    "ind.pubmed.x": "fbe9cb5c47200d1b7769a26e579be3b7130b556831f9d850e77c4c74f2599b33",
    "ind.pubmed.y": "e6c807633307a07ed659249006536a147c7999c797f11a2560752990181b41b3",
}


class PlanetoidError(RuntimeError):
    """A Planetoid file is missing, corrupt or inconsistent."""


class _PlanetoidUnpickler(pickle.Unpickler):
    """Builds only what Planetoid files contain: numpy arrays, scipy CSR matrices, lists, defaultdicts."""

    _ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
        ("scipy.sparse.csr", "csr_matrix"): sp.csr_matrix,
        ("scipy.sparse._csr", "csr_matrix"): sp.csr_matrix,
        ("collections", "defaultdict"): collections.defaultdict,
        ("__builtin__", "list"): list,
        ("builtins", "list"): list,
    }

    def find_class(self, module: str, name: str):
        target = self._ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a Planetoid file")
        return target


def _file(root: Path, name: str, part: str) -> Path:
    return root / f"ind.{name}.{part}"


def _read(path: Path):
    try:
        if path.name.endswith("test.index"):
            return np.array([int(line) for line in path.read_text().split()], dtype=np.int64)
        with path.open("rb") as handle:
            return _PlanetoidUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise PlanetoidError(f"corrupt Planetoid file {path}: {exc}") from exc


def _check_name(name: str) -> str:
    key = name.lower()
    if key not in NAMES:
        raise ValueError(f"unknown Planetoid dataset {name!r}; choose one of {', '.join(NAMES)}")
    return key


def raw_folder(name: str, root: str | os.PathLike) -> Path:
    """Where the raw files of ``name`` are under ``root``: ``root`` itself (the flat layout), or PyG's layout,
    ``root/<Name>/raw`` (any case of the name, as PyG's ``Planetoid(root, "Cora")`` writes it) or ``root/raw``
    (``root`` is PyG's dataset folder). ``root`` itself when none holds them, so that the error names it."""
    key, root = _check_name(name), Path(root)
    pyg_layouts = [root / "raw"]
    if root.is_dir():
        pyg_layouts += sorted(folder / "raw" for folder in root.iterdir() if folder.name.lower() == key)
    for folder in [root, *pyg_layouts]:
        if _file(folder, key, "graph").is_file():
            return folder
    return root


def load_planetoid(name: str, root: str | os.PathLike) -> Graph:
    """Load ``name`` (cora, citeseer, pubmed) from the raw files under ``root`` (flat, or PyG's
    ``root/Cora/raw`` layout: :func:`raw_folder`) with the public split.

    Features are returned raw (binary bag-of-words for Cora and CiteSeer); call
    :meth:`Graph.row_normalize_features` for the GCN paper's preprocessing. Edges are symmetric, without
    duplicates or self-loops. CiteSeer's 15 isolated test slots get zero feature rows, as in Kipf's loader.
    """
    key, root = _check_name(name), raw_folder(name, root)
    missing = [str(_file(root, key, part)) for part in PARTS if not _file(root, key, part).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Planetoid {key} is incomplete in {root}: missing {', '.join(missing)}. "
            f"Use download_planetoid({key!r}, root) where there is internet, or copy the files there "
            f"(or into PyG's layout, root/{key.capitalize()}/raw).")
    x, y, tx, ty, allx, ally, adjacency, test_index = (_read(_file(root, key, part)) for part in PARTS)

    test_sorted = np.sort(test_index)
    if key == "citeseer":  # isolated test nodes appear in test.index's range but not in tx/ty: pad with zeros
        full_range = np.arange(test_sorted.min(), test_sorted.max() + 1)
        tx_padded = sp.lil_matrix((len(full_range), tx.shape[1]), dtype=tx.dtype)
        tx_padded[test_sorted - test_sorted.min(), :] = tx
        ty_padded = np.zeros((len(full_range), ty.shape[1]), dtype=ty.dtype)
        ty_padded[test_sorted - test_sorted.min(), :] = ty
        tx, ty = tx_padded.tocsr(), ty_padded

    features = sp.vstack([allx, tx]).tolil()
    features[test_index, :] = features[test_sorted, :]  # tx rows are stored in test.index order
    labels = np.vstack([ally, ty])
    labels[test_index, :] = labels[test_sorted, :]
    num_nodes = features.shape[0]
    if len(adjacency) != num_nodes:
        raise PlanetoidError(f"{key}: graph has {len(adjacency)} nodes but features have {num_nodes} rows")

    pairs = np.array([(u, v) for u, neighbors in adjacency.items() for v in neighbors], dtype=np.int64)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= num_nodes):
        raise PlanetoidError(f"{key}: ind.{key}.graph refers to nodes outside 0..{num_nodes - 1}")
    edges = Graph(edge_index=torch.from_numpy(pairs.T.copy()), num_nodes=num_nodes).remove_self_loops()

    masks = {mask: torch.zeros(num_nodes, dtype=torch.bool) for mask in ("train_mask", "val_mask", "test_mask")}
    masks["train_mask"][: len(y)] = True
    masks["val_mask"][len(y): len(y) + NUM_VALIDATION] = True
    masks["test_mask"][torch.from_numpy(test_sorted)] = True
    graph = Graph(
        edge_index=edges.to_undirected().edge_index,
        num_nodes=num_nodes,
        x=torch.from_numpy(features.toarray().astype(np.float32)),
        y=torch.from_numpy(labels.argmax(1).astype(np.int64)),
        name=key,
        **masks,
    )
    return graph.validate()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_planetoid(name: str, root: str | os.PathLike, url: str = DOWNLOAD_URL) -> Path:
    """Fetch the raw files of ``name`` into ``root`` and verify each against its pinned sha256.

    Files already present with the right hash are kept; a present file with a wrong hash is an error
    (it is never overwritten). A download with a wrong hash is deleted and reported.
    """
    key, root = _check_name(name), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        file = f"ind.{key}.{part}"
        path, expected = root / file, CHECKSUMS[file]
        if path.is_file():
            if expected is not None and sha256(path) != expected:
                raise PlanetoidError(f"{path} exists but its sha256 is not {expected}; move it away and retry")
            continue
        partial = path.with_name(f".{file}.part")
        with urllib.request.urlopen(url.format(file=file), timeout=60) as response, partial.open("wb") as out:
            out.write(response.read())
        actual = sha256(partial)
        if expected is None:
            warnings.warn(f"{file} has no pinned checksum; downloaded sha256 is {actual}", stacklevel=2)
        elif actual != expected:
            partial.unlink()
            raise PlanetoidError(f"checksum mismatch for {file}: expected {expected}, got {actual}")
        os.replace(partial, path)
    return root
