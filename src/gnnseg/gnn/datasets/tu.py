"""TU graph-classification benchmarks from their raw text files (Morris et al., TUDataset, 2020).

Files per dataset ``<NAME>/``: ``<NAME>_A.txt`` (edges ``"row, col"``, 1-based global node ids, both
directions listed), ``_graph_indicator.txt`` (graph id per node), ``_graph_labels.txt`` (class per graph)
and optionally ``_node_labels.txt`` (categorical, one-hot encoded here). Datasets without node labels
(IMDB-BINARY) get one-hot node degrees, as the GIN paper does for social graphs. Graph labels are mapped
to ``0..C-1`` in sorted order.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from gnnseg.core.archives import ArchiveLimits, UnsafeArchiveError, safe_extract
from gnnseg.gnn.graph import Graph

DOWNLOAD_URL = "https://www.chrsmrrs.com/graphkerneldatasets/{name}.zip"
DOWNLOAD_LIMITS = ArchiveLimits(max_bytes=2 << 30, max_entries=64)


class TUFormatError(ValueError):
    """A TU file is missing or inconsistent; the message names the file and line."""


def _read_ints(path: Path, columns: int = 1) -> np.ndarray:
    try:
        data = np.loadtxt(path, delimiter="," if columns > 1 else None, dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise TUFormatError(f"{path}: {exc}") from exc
    if data.shape[1] != columns:
        raise TUFormatError(f"{path}: expected {columns} column(s), found {data.shape[1]}")
    return data if columns > 1 else data[:, 0]


def load_tu(name: str, root: str | os.PathLike) -> list[Graph]:
    """All graphs of ``root/<name>/`` as :class:`Graph` objects with ``x`` (one-hot) and a scalar ``y``."""
    folder = Path(root) / name
    required = [folder / f"{name}_{part}.txt" for part in ("A", "graph_indicator", "graph_labels")]
    missing = [str(p) for p in required if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"TU dataset {name} is incomplete: missing {', '.join(missing)}; "
                                f"download_tu({name!r}, root) fetches it where there is internet")
    edges = _read_ints(required[0], columns=2) - 1
    indicator = _read_ints(required[1]) - 1
    raw_labels = _read_ints(required[2])
    num_nodes, num_graphs = indicator.size, raw_labels.size
    if indicator.min() != 0 or indicator.max() != num_graphs - 1:
        raise TUFormatError(f"{required[1]}: graph ids run {indicator.min() + 1}..{indicator.max() + 1} but "
                            f"{required[2]} has {num_graphs} labels")
    if edges.size and (edges.min() < 0 or edges.max() >= num_nodes):
        bad = int(np.argmax((edges < 0).any(1) | (edges >= num_nodes).any(1)))
        raise TUFormatError(f"{required[0]} line {bad + 1}: node id out of 1..{num_nodes}")
    if np.any(indicator[edges[:, 0]] != indicator[edges[:, 1]]):
        bad = int(np.argmax(indicator[edges[:, 0]] != indicator[edges[:, 1]]))
        raise TUFormatError(f"{required[0]} line {bad + 1}: edge joins two different graphs")

    node_label_file = folder / f"{name}_node_labels.txt"
    if node_label_file.is_file():
        node_labels = _read_ints(node_label_file)
        if node_labels.size != num_nodes:
            raise TUFormatError(f"{node_label_file}: {node_labels.size} labels for {num_nodes} nodes")
        categories, codes = np.unique(node_labels, return_inverse=True)
    else:
        degree = np.bincount(edges[:, 0], minlength=num_nodes)
        categories, codes = np.unique(degree, return_inverse=True)
    features = np.eye(len(categories), dtype=np.float32)[codes]
    classes, targets = np.unique(raw_labels, return_inverse=True)

    starts = np.searchsorted(indicator, np.arange(num_graphs))
    if np.any(np.diff(indicator) < 0):
        raise TUFormatError(f"{required[1]}: nodes are not grouped by graph")
    order = np.argsort(indicator[edges[:, 0]], kind="stable")
    edges = edges[order]
    edge_starts = np.searchsorted(indicator[edges[:, 0]], np.arange(num_graphs + 1))
    graphs = []
    for g in range(num_graphs):
        first = starts[g]
        count = (starts[g + 1] if g + 1 < num_graphs else num_nodes) - first
        local = edges[edge_starts[g]:edge_starts[g + 1]] - first
        graphs.append(Graph(edge_index=torch.from_numpy(local.T.copy()), num_nodes=int(count),
                            x=torch.from_numpy(features[first:first + count]), y=torch.tensor(int(targets[g])),
                            name=f"{name}[{g}]"))
    return graphs


def download_tu(name: str, root: str | os.PathLike, url: str = DOWNLOAD_URL,
                limits: ArchiveLimits = DOWNLOAD_LIMITS) -> Path:
    """Fetch and unzip ``name`` into ``root/<name>/`` (never overwriting an existing folder).

    The archive is unpacked within ``limits`` (:func:`~gnnseg.core.archives.safe_extract`) into a staging folder,
    and each file is checked against its pinned SHA-256 (``tu_sha256.tsv``, for the datasets it lists) before the
    folder takes its name; on any failure nothing is left behind.
    """
    root = Path(root)
    target = root / name
    if target.exists():
        raise FileExistsError(f"{target} exists; remove it to download again")
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{name}.extracting"
    try:
        with urllib.request.urlopen(url.format(name=name), timeout=120) as response:
            data = response.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:
            raise UnsafeArchiveError(f"the {name} download exceeds {limits.max_bytes:,} bytes")
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as exc:
            raise TUFormatError(f"the {name} download is not a zip archive ({exc})") from None
        safe_extract(archive, staging, limits, f"the {name} archive")
        if not (staging / name).is_dir():
            raise TUFormatError(f"the {name} archive has no {name}/ folder")
        _check_pinned_checksums(name, staging)
        os.rename(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def pinned_checksums() -> dict[str, str]:
    """``name/file`` -> SHA-256 of the TU files this package knows (``tu_sha256.tsv``)."""
    lines = (Path(__file__).with_name("tu_sha256.tsv")).read_text().splitlines()
    return {line.split("\t")[0]: line.split("\t")[2] for line in lines if line and not line.startswith("#")}


def _check_pinned_checksums(name: str, staging: Path) -> None:
    pinned = {key: digest for key, digest in pinned_checksums().items() if key.startswith(f"{name}/")}
    if not pinned:
        warnings.warn(f"{name} has no pinned checksums; its files are used as downloaded", stacklevel=3)
        return
    for key, expected in pinned.items():
        path = staging / key
        if not path.is_file():
            raise TUFormatError(f"the {name} download lacks {key}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise TUFormatError(f"checksum mismatch for {key}: expected {expected}, got {digest}")
