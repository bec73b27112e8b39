"""OGB node-property datasets (ogbn-products, ogbn-arxiv, ...) from their standard on-disk layout.

The layout is the one ``ogb.nodeproppred.NodePropPredDataset`` downloads and reads (``ogb/io/read_graph_raw.py``,
``ogb/nodeproppred/dataset.py``): a dataset folder (``ogbn_products``) holding

    raw/num-node-list.csv.gz     one line: the number of nodes
    raw/edge.csv.gz              one edge per line, "source,target" (0-based, no header)
    raw/node-feat.csv.gz         one row of floats per node (optional)
    raw/node-label.csv.gz        one label per node
    split/<split>/{train,valid,test}.csv.gz   node ids, one per line

ogbn-products stores each undirected edge once (``add_inverse_edge`` in OGB's ``master.csv``), so both
directions are added; ogbn-arxiv's citations are directed, and ``undirected=True`` (the default, what the OGB
examples do with ``to_symmetric``) adds the reverses as well. Repeated edges are merged; self-loops are kept.

The first load parses the CSVs (numpy's C reader; ogbn-products takes minutes) and, with ``cache=True``, saves
the arrays as ``.npy`` files under ``<folder>/gnnseg_processed/`` (written atomically; nothing of OGB's is
changed), which later loads memory-map. ``download_ogb`` fetches the official zip for users with internet.
OGB publishes no checksums for these archives, so the download reports the sha256 it got instead of checking
one (pin it in :data:`CHECKSUMS` once you trust a copy).

The graph is named for its dataset (``ogbn-arxiv``), and the node trainers score a graph with such a name by
OGB's own metric (``gnnseg.gnn.ogb_evaluation.ogb_metric``: OGB's ``Evaluator`` when ogb is installed).
Only single-label datasets load: ogbn-proteins' 112 binary label columns are refused by the label check.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gnnseg.core.archives import ArchiveLimits, safe_extract
from gnnseg.core.atomic import atomic_path
from gnnseg.gnn.datasets.csr import csr_from_keys, edge_keys
from gnnseg.gnn.datasets.planetoid import sha256
from gnnseg.gnn.graph import Graph

# From OGB's ogb/nodeproppred/make_master_file.py (master.csv): download name, whether edges are stored once,
# the default split.
OGB_NODE_DATASETS: dict[str, dict[str, Any]] = {
    "ogbn-products": {"download_name": "products", "add_inverse_edge": True, "split": "sales_ranking",
                      "num_classes": 47, "num_nodes": 2_449_029},
    "ogbn-arxiv": {"download_name": "arxiv", "add_inverse_edge": False, "split": "time", "num_classes": 40,
                   "num_nodes": 169_343},
}
DOWNLOAD_URL = "https://snap.stanford.edu/ogb/data/nodeproppred/{download_name}.zip"
DOWNLOAD_LIMITS = ArchiveLimits(max_bytes=256 << 30, max_entries=1_000)
"""ogbn-papers100M unpacks to about 60 GB; the cap is there against a corrupt or hostile archive, not size."""
CHECKSUMS: dict[str, str | None] = {"ogbn-products": None, "ogbn-arxiv": None}
CACHE_FOLDER = "gnnseg_processed"
CACHE_VERSION = 1


class OGBError(RuntimeError):
    """An OGB folder is incomplete or inconsistent, or a download failed its checks."""


def dataset_name(folder: Path) -> str | None:
    """``ogbn-products`` for a folder named ``ogbn_products``, ``ogbn-products`` or ``products``."""
    stem = folder.name.replace("_", "-")
    for name, info in OGB_NODE_DATASETS.items():
        if stem in (name, info["download_name"]):
            return name
    return None


def read_ogb_csv(path: Path, dtype: type, columns: int | None = None) -> np.ndarray:
    """A headerless gzipped CSV of OGB's raw layout as a 2-D array (one-line errors for missing or bad files)."""
    if not path.is_file():
        raise FileNotFoundError(f"OGB file missing: {path}")
    try:
        with gzip.open(path, "rt") as handle:
            values = np.loadtxt(handle, delimiter=",", dtype=np.float64 if dtype is np.float32 else dtype, ndmin=2)
    except (ValueError, OSError, EOFError) as exc:
        raise OGBError(f"cannot parse {path}: {exc}") from exc
    if columns is not None and values.size and values.shape[1] != columns:
        raise OGBError(f"{path} should have {columns} comma-separated column(s), found {values.shape[1]}")
    return values.astype(dtype, copy=False)


def ogb_split_folder(root: Path, split: str | None) -> Path:
    """``root/split/<split>``, or the only split folder there is when ``split`` is None."""
    folders = sorted(p for p in (root / "split").glob("*") if p.is_dir()) if (root / "split").is_dir() else []
    if split is not None:
        chosen = root / "split" / split
        if not chosen.is_dir():
            raise FileNotFoundError(f"OGB split folder missing: {chosen} (found: {[p.name for p in folders]})")
        return chosen
    if len(folders) != 1:
        raise OGBError(f"{root / 'split'} must hold exactly one split folder when no split is named, found "
                       f"{[p.name for p in folders]}")
    return folders[0]


def _parse(root: Path, name: str | None, split: str | None, undirected: bool) -> dict[str, np.ndarray]:
    raw = root / "raw"
    info = OGB_NODE_DATASETS.get(name or "", {})
    split_folder = ogb_split_folder(root, split or info.get("split"))
    num_nodes = int(read_ogb_csv(raw / "num-node-list.csv.gz", np.int64, 1)[0, 0])
    if num_nodes < 1:
        raise OGBError(f"{raw / 'num-node-list.csv.gz'} gives {num_nodes} nodes")
    edges = read_ogb_csv(raw / "edge.csv.gz", np.int64, 2)
    if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
        row = int(np.nonzero((edges < 0).any(1) | (edges >= num_nodes).any(1))[0][0])
        raise OGBError(f"{raw / 'edge.csv.gz'} line {row + 1} ({edges[row].tolist()}) refers to a node outside "
                       f"0..{num_nodes - 1}")
    symmetric = undirected or bool(info.get("add_inverse_edge", False))
    keys = edge_keys(edges[:, 0], edges[:, 1], num_nodes, undirected=symmetric)
    del edges
    row_ptr, sources = csr_from_keys(keys, num_nodes)
    del keys
    arrays = {"row_ptr": row_ptr, "sources": sources}
    labels = read_ogb_csv(raw / "node-label.csv.gz", np.float64, 1)[:, 0]
    if labels.shape[0] != num_nodes:
        raise OGBError(f"{raw / 'node-label.csv.gz'} has {labels.shape[0]} rows for {num_nodes} nodes")
    if np.isnan(labels).any():
        raise OGBError(f"{raw / 'node-label.csv.gz'} has missing labels (first at row "
                       f"{int(np.nonzero(np.isnan(labels))[0][0])}); only fully labeled datasets are supported")
    arrays["y"] = labels.astype(np.int64)
    feature_file = raw / "node-feat.csv.gz"
    if feature_file.is_file():
        features = read_ogb_csv(feature_file, np.float32)
        if features.shape[0] != num_nodes:
            raise OGBError(f"{feature_file} has {features.shape[0]} rows for {num_nodes} nodes")
        arrays["x"] = features
    for part, key in (("train", "train_idx"), ("valid", "val_idx"), ("test", "test_idx")):
        index = read_ogb_csv(split_folder / f"{part}.csv.gz", np.int64, 1)[:, 0]
        if index.size and (index.min() < 0 or index.max() >= num_nodes):
            raise OGBError(f"{split_folder / (part + '.csv.gz')} refers to a node outside 0..{num_nodes - 1}")
        arrays[key] = index
    return arrays


def load_ogb_node(root: str | os.PathLike, *, name: str | None = None, split: str | None = None,
                  undirected: bool = True, cache: bool = True) -> Graph:
    """The OGB node-property dataset in folder ``root`` (``.../ogbn_products``) as a :class:`Graph`.

    ``name`` (``ogbn-products``, ``ogbn-arxiv``) defaults to what the folder's name says; other OGB-layout
    folders load too (their edges as stored, symmetrized when ``undirected``; ``split`` must be named if
    ``split/`` holds several). Masks come from the split files; features are float32, labels int64.
    """
    root = Path(root)
    if not (root / "raw").is_dir():
        raise FileNotFoundError(f"{root} is not an OGB dataset folder: {root / 'raw'} is missing (download one "
                                f"with download_ogb('ogbn-products', parent_folder))")
    name = name or dataset_name(root)
    if name is not None and name not in OGB_NODE_DATASETS and not name.startswith("ogbn-"):
        raise ValueError(f"unknown OGB dataset name {name!r}")
    tag = {"version": CACHE_VERSION, "name": name, "split": split, "undirected": undirected}
    cache_dir = root / CACHE_FOLDER / f"{'undirected' if undirected else 'directed'}-{split or 'default'}"
    arrays = _read_cache(cache_dir, tag) if cache else None
    if arrays is None:
        arrays = _parse(root, name, split, undirected)
        if cache:
            _write_cache(cache_dir, tag, arrays)
    num_nodes = arrays["row_ptr"].size - 1
    masks = {}
    for key, mask_name in (("train_idx", "train_mask"), ("val_idx", "val_mask"), ("test_idx", "test_mask")):
        mask = torch.zeros(num_nodes, dtype=torch.bool)
        mask[torch.from_numpy(np.asarray(arrays[key], dtype=np.int64))] = True
        masks[mask_name] = mask
    x = None
    if "x" in arrays:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            x = torch.from_numpy(arrays["x"])
    y = torch.from_numpy(np.ascontiguousarray(arrays["y"], dtype=np.int64))
    graph = Graph.from_csr(arrays["row_ptr"], arrays["sources"], x=x, y=y, name=name or root.name, **masks)
    return graph.validate()


def _read_cache(folder: Path, tag: dict[str, Any]) -> dict[str, np.ndarray] | None:
    meta = folder / "meta.json"
    if not meta.is_file() or json.loads(meta.read_text()) != tag:
        return None
    return {file.stem: np.load(file, mmap_mode="c") for file in folder.glob("*.npy")}


def _write_cache(folder: Path, tag: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for key, value in arrays.items():
        with atomic_path(folder / f"{key}.npy") as temporary:
            np.save(temporary, value)
    with atomic_path(folder / "meta.json") as temporary:        # last: marks the cache complete
        temporary.write_text(json.dumps(tag))


def download_ogb(name: str, root: str | os.PathLike, url: str | None = None) -> Path:
    """Download ``name`` (``ogbn-products``, ``ogbn-arxiv``) into ``root/<ogbn_name>`` as OGB lays it out.

    The folder must not exist yet (nothing is overwritten). The zip goes to a temporary file, its sha256 is
    checked against :data:`CHECKSUMS` when one is pinned (else reported in a warning), its members are
    checked to stay inside the target, and the extracted folder is renamed into place. Returns the folder.
    """
    if name not in OGB_NODE_DATASETS:
        raise ValueError(f"unknown OGB node dataset {name!r}; choose one of {', '.join(OGB_NODE_DATASETS)}")
    info = OGB_NODE_DATASETS[name]
    root = Path(root)
    target = root / name.replace("-", "_")
    if target.exists():
        raise FileExistsError(f"{target} already exists; move it away to download again")
    root.mkdir(parents=True, exist_ok=True)
    archive = root / f".{info['download_name']}.zip.part"
    staging = root / f".{info['download_name']}.extracting"
    try:
        with urllib.request.urlopen(url or DOWNLOAD_URL.format(**info), timeout=60) as response, \
                archive.open("wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
        digest, expected = sha256(archive), CHECKSUMS.get(name)
        if expected is None:
            warnings.warn(f"{name} has no pinned checksum; the downloaded archive's sha256 is {digest}", stacklevel=2)
        elif digest != expected:
            raise OGBError(f"checksum mismatch for {name}: expected {expected}, got {digest}")
        with zipfile.ZipFile(archive) as bundle:
            safe_extract(bundle, staging, DOWNLOAD_LIMITS, f"the {name} archive")
        extracted = staging / info["download_name"]
        if not (extracted / "raw").is_dir():
            raise OGBError(f"the {name} archive has no {info['download_name']}/raw folder")
        os.rename(extracted, target)
    finally:
        if archive.exists():
            archive.unlink()
        shutil.rmtree(staging, ignore_errors=True)
    return target
