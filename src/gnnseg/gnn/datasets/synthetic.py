"""Large synthetic node-classification graphs: a degree-corrected stochastic block model, built as CSR.

**Model.** ``N`` nodes in ``C`` equal-sized communities (sizes differ by at most one), the blocks. Every
node gets a degree propensity ``theta_i`` from a Pareto law with tail exponent ``degree_exponent``
(``P(theta > t) = t^-(gamma - 1)``, ``t >= 1``), capped at the structural cut-off ``sqrt(N * avg_degree)`` of
expected degree (Boguñá, Pastor-Satorras & Vespignani, EPJ B 2004), so that a simple graph can hold the
hubs. Each of ``M = N * avg_degree / 2`` undirected edges picks one end ``u`` with probability ``∝ theta_u``;
with probability ``homophily`` the other end ``v`` comes from ``u``'s community, otherwise from the other
communities, again ``∝ theta_v`` (the planted-partition DC-SBM of Karrer & Newman, Phys. Rev. E 2011, with
``omega_in / omega_out`` set by ``homophily``). Self-loops and repeated pairs are dropped and further edges
are drawn (up to three rounds) until ``M`` distinct pairs exist; the CSR stores every edge in both
directions, so the graph is undirected and simple. Because communities carry equal ``theta`` mass, a node's
expected degree is ``∝ theta_i`` whatever its community, and a random neighbour of a node in community
``c`` is in ``c`` with probability ``homophily`` and in each other one with probability
``(1 - homophily) / (C - 1)``. Features are ``x_i = mu_{b_i} + feature_noise * eps_i`` (``b_i`` the
community, ``mu_c ~ N(0, I_F)``, ``eps_i ~ N(0, I_F)``). The label ``y_i`` is the community, replaced with
probability ``label_noise`` by one of the other classes, uniformly (planted label noise). Node ids are a
random permutation of the community-grouped order; train / validation / test nodes a random split.

**Ceiling.** ``ceiling_accuracy`` is the accuracy, on the test nodes' labels, of the Bayes classifier that
knows the model's parameters, the node's own features **and the true communities of all its neighbours**:
it predicts ``argmax_c [ -||x_i - mu_c||^2 / (2 sigma^2) + n_ic log(homophily) + (d_i - n_ic)
log((1 - homophily) / (C - 1)) ]`` with ``n_ic`` the node's neighbours in community ``c`` (with label
noise the most likely label is the most likely community). Given the graph, the communities form a Markov
random field whose blanket for ``b_i`` is its neighbours' communities (non-edges carry no community
information, the communities having equal ``theta`` mass), so no estimator from the features and the graph
can do better, up to the small effect of the dropped repeated pairs: an upper bound. It is close to
``(1 - label_noise) * a + label_noise / (C - 1) * (1 - a)``, ``a`` its accuracy on the communities
(``ceiling_community_accuracy``): where features and structure pin the community down (``a ≈ 1``) the
ceiling is ``1 - label_noise``. A GNN sees its neighbours' *features*, not their communities, so it
approaches the bound where neighbourhoods are large. ``feature_bayes_accuracy`` (own features only) and
``neighbor_label_accuracy`` (majority of the neighbours' communities) are stored beside it.

**Memory.** Pairs are generated in chunks of ``chunk_edges`` and kept as one sorted ``int64`` key per pair
(8 bytes); the CSR is built by sorting the two directed key lists and merging them (16 bytes per directed
edge at the peak, then 4 bytes per directed edge for the ``int32`` sources). For ``N = 2.4M`` and ``M =
62M`` pairs the peak is about ``2 * M * 8`` (keys) ``+ 2 * M * 8`` (merge) ``≈ 2 GB``, never an ``N x N``
matrix and no Python loop over nodes or edges; features are written to disk in row chunks.

On disk (``write_synthetic``): a folder with ``meta.json``, ``row_ptr.npy`` (int64, ``N + 1``),
``sources.npy`` (int32, ``2M``; incoming-edge CSR, rows = targets), ``x.npy`` (float32, ``N x F``),
``y.npy`` (int64), ``{train,val,test}_idx.npy``; every array memory-maps (``load_synthetic(mmap=True)``).
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gnnseg.gnn.datasets.csr import csr_from_keys, edge_keys
from gnnseg.gnn.graph import Graph, GraphValidationError

FORMAT = "gnnseg.synthetic/1"
ARRAYS = ("row_ptr", "sources", "x", "y", "community", "train_idx", "val_idx", "test_idx")


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of :func:`make_synthetic` (see the module docstring for the model)."""

    num_nodes: int = 100_000
    avg_degree: float = 50.0
    num_classes: int = 47
    num_features: int = 100
    degree_exponent: float = 2.5
    homophily: float = 0.5
    feature_noise: float = 4.0
    label_noise: float = 0.1
    train_fraction: float = 0.08
    val_fraction: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_nodes < 2:
            raise ValueError(f"num_nodes must be at least 2, got {self.num_nodes}")
        if not 0 < self.avg_degree <= self.num_nodes - 1:
            raise ValueError(f"avg_degree must be in (0, num_nodes - 1 = {self.num_nodes - 1}], got {self.avg_degree}")
        if not 2 <= self.num_classes <= self.num_nodes:
            raise ValueError(f"num_classes must be between 2 and num_nodes, got {self.num_classes}")
        if self.num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {self.num_features}")
        if not self.degree_exponent > 2:
            raise ValueError(f"degree_exponent must be > 2 (finite mean degree), got {self.degree_exponent}")
        if not 0 < self.homophily < 1:
            raise ValueError(f"homophily must be in (0, 1), got {self.homophily}")
        if not self.feature_noise > 0:
            raise ValueError(f"feature_noise must be positive, got {self.feature_noise}")
        if not 0 <= self.label_noise < 1 - 1 / self.num_classes:
            raise ValueError(f"label_noise must be in [0, 1 - 1/num_classes), got {self.label_noise}")
        if not (0 < self.train_fraction and 0 <= self.val_fraction and self.train_fraction + self.val_fraction < 1):
            raise ValueError(f"train_fraction ({self.train_fraction}) and val_fraction ({self.val_fraction}) must "
                             f"be non-negative, train positive, and leave test nodes")
        if self.num_nodes >= 2**31:
            raise ValueError(f"num_nodes must be below 2^31 (int32 sources), got {self.num_nodes}")


@dataclass
class SyntheticParts:
    """The arrays of a generated graph (numpy), before they become a :class:`Graph` or files."""

    row_ptr: np.ndarray          # (N + 1,) int64, incoming-edge CSR offsets
    sources: np.ndarray          # (E,) int32, CSR sources (rows = targets)
    y: np.ndarray                # (N,) int64, the observed labels (communities with label noise)
    community: np.ndarray        # (N,) int64, the planted communities (blocks)
    class_means: np.ndarray      # (C, F) float32
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    requested_pairs: int
    rounds: int


def _class_starts(num_nodes: int, num_classes: int) -> np.ndarray:
    """Offsets of the classes in the class-grouped order: sizes ``N // C`` or one more."""
    sizes = np.full(num_classes, num_nodes // num_classes, dtype=np.int64)
    sizes[: num_nodes % num_classes] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def _draw_pairs(rng: np.random.Generator, count: int, cumulative: np.ndarray, block_of: np.ndarray,
                block_low: np.ndarray, block_mass: np.ndarray, homophily: float) -> tuple[np.ndarray, np.ndarray]:
    """``count`` (u, v) pairs in the class-grouped order (see the module docstring)."""
    total = cumulative[-1]
    last = cumulative.size - 1
    u = np.minimum(np.searchsorted(cumulative, rng.random(count) * total, side="right"), last)
    block = block_of[u]
    low, mass = block_low[block], block_mass[block]
    same = rng.random(count) < homophily
    r = rng.random(count)
    inside = low + r * mass                                        # within u's class
    outside = r * (total - mass)                                   # elsewhere: skip u's class
    outside = outside + np.where(outside >= low, mass, 0.0)
    v = np.minimum(np.searchsorted(cumulative, np.where(same, inside, outside), side="right"), last)
    return u, v


def make_synthetic_parts(config: SyntheticConfig, *, chunk_edges: int = 1 << 22) -> SyntheticParts:
    """Generate the CSR, labels, class means and split of ``config`` (features are drawn separately, in
    row chunks, by :func:`synthetic_features`)."""
    n, c = config.num_nodes, config.num_classes
    rng = np.random.default_rng(config.seed)
    starts = _class_starts(n, c)
    block_of = np.repeat(np.arange(c, dtype=np.int32), np.diff(starts))     # class of each grouped position

    alpha = config.degree_exponent - 1.0
    theta = (1.0 - rng.random(n)) ** (-1.0 / alpha)                          # Pareto(alpha), theta >= 1
    expected = theta * config.avg_degree / theta.mean()
    cutoff = max(config.avg_degree, math.sqrt(n * config.avg_degree))
    theta = np.minimum(expected, cutoff)
    cumulative = np.cumsum(theta)
    block_low = np.concatenate([[0.0], cumulative[starts[1:-1] - 1]])       # theta mass before each class
    block_mass = np.diff(np.concatenate([block_low, [cumulative[-1]]]))

    target = round(n * config.avg_degree / 2)
    max_pairs = n * (n - 1) // 2
    target = min(target, max_pairs)
    keys = np.empty(0, dtype=np.int64)
    rounds = 0
    while keys.size < target and rounds < 3:
        rounds += 1
        missing = target - keys.size
        draw = int(missing * (1.05 if rounds == 1 else 1.5)) + 16
        parts = [keys]
        for first in range(0, draw, chunk_edges):
            count = min(chunk_edges, draw - first)
            u, v = _draw_pairs(rng, count, cumulative, block_of, block_low, block_mass, config.homophily)
            keep = u != v
            low, high = np.minimum(u[keep], v[keep]), np.maximum(u[keep], v[keep])
            parts.append(low.astype(np.int64) * n + high)
        keys = np.concatenate(parts)
        del parts
        keys.sort()
        distinct = np.empty(keys.size, dtype=bool)
        distinct[:1] = True
        np.not_equal(keys[1:], keys[:-1], out=distinct[1:])
        keys = keys[distinct]
        del distinct
    if keys.size > target:                        # drop the surplus at random, keeping the order
        drop = rng.choice(keys.size, keys.size - target, replace=False)
        keep = np.ones(keys.size, dtype=bool)
        keep[drop] = False
        keys = keys[keep]

    # relabel the grouped positions with a random permutation, then build the symmetric CSR
    permutation = rng.permutation(n).astype(np.int64)
    a, b = permutation[keys // n], permutation[keys % n]
    del keys
    directed = edge_keys(a, b, n, undirected=True)
    del a, b
    row_ptr, sources = csr_from_keys(directed, n, deduplicate=False, chunk=chunk_edges)
    del directed

    community = np.empty(n, dtype=np.int64)
    community[permutation] = block_of
    y = community.copy()
    flipped = rng.random(n) < config.label_noise         # observed label: another class, uniformly
    y[flipped] = (community[flipped] + rng.integers(1, c, int(flipped.sum()))) % c
    class_means = rng.standard_normal((c, config.num_features), dtype=np.float32)
    order = rng.permutation(n)
    num_train = max(1, round(config.train_fraction * n))
    num_val = round(config.val_fraction * n)
    train_idx = np.sort(order[:num_train])
    val_idx = np.sort(order[num_train:num_train + num_val])
    test_idx = np.sort(order[num_train + num_val:])
    return SyntheticParts(row_ptr, sources, y, community, class_means, train_idx, val_idx, test_idx, target,
                          rounds)


def synthetic_features(config: SyntheticConfig, parts: SyntheticParts, out: np.ndarray | None = None, *,
                       chunk_rows: int = 1 << 16) -> np.ndarray:
    """``x = mu_y + feature_noise * eps`` (float32, ``N x F``), written into ``out`` (e.g. a memory-mapped
    ``.npy``) ``chunk_rows`` rows at a time; the noise depends only on the config's seed."""
    n = config.num_nodes
    if out is None:
        out = np.empty((n, config.num_features), dtype=np.float32)
    rng = np.random.default_rng([config.seed, 1])
    for first in range(0, n, chunk_rows):
        last = min(first + chunk_rows, n)
        noise = rng.standard_normal((last - first, config.num_features), dtype=np.float32)
        out[first:last] = parts.class_means[parts.community[first:last]] + np.float32(config.feature_noise) * noise
    return out


def ceiling_accuracies(config: SyntheticConfig, parts: SyntheticParts, x: np.ndarray, nodes: np.ndarray, *,
                       chunk_rows: int = 1 << 15) -> dict[str, float]:
    """Accuracy on ``nodes`` of the oracle classifiers of the module docstring: own features and neighbour
    labels (``ceiling_accuracy``), own features only, neighbour labels only."""
    c, sigma2 = config.num_classes, config.feature_noise ** 2
    means = parts.class_means.astype(np.float64)
    half_norms = 0.5 * (means ** 2).sum(1)
    log_ratio = math.log(config.homophily * (c - 1) / (1.0 - config.homophily))
    correct = {"ceiling_accuracy": 0, "feature_bayes_accuracy": 0, "neighbor_label_accuracy": 0,
               "ceiling_community_accuracy": 0}
    rng = np.random.default_rng([config.seed, 2])           # random tie-breaking for the label-only rule
    for first in range(0, nodes.size, chunk_rows):
        chunk = nodes[first:first + chunk_rows]
        feature = (x[chunk].astype(np.float64) @ means.T - half_norms) / sigma2            # (B, C)
        start, stop = parts.row_ptr[chunk], parts.row_ptr[chunk + 1]
        degree = stop - start
        owner = np.repeat(np.arange(chunk.size), degree)
        slots = np.arange(owner.size) - np.repeat(np.cumsum(degree) - degree, degree) + np.repeat(start, degree)
        labels = parts.community[parts.sources[slots]]
        counts = np.bincount(owner * c + labels, minlength=chunk.size * c).reshape(chunk.size, c)
        truth = parts.y[chunk]                                                        # observed labels
        best = np.argmax(feature + counts * log_ratio, 1)
        correct["ceiling_accuracy"] += int((best == truth).sum())
        correct["ceiling_community_accuracy"] += int((best == parts.community[chunk]).sum())
        correct["feature_bayes_accuracy"] += int((np.argmax(feature, 1) == truth).sum())
        jitter = rng.random(counts.shape) * 1e-3
        correct["neighbor_label_accuracy"] += int((np.argmax(counts + jitter, 1) == truth).sum())
    return {key: value / max(nodes.size, 1) for key, value in correct.items()}


def _degree_summary(row_ptr: np.ndarray) -> dict[str, float]:
    degree = np.diff(row_ptr)
    return {"degree_mean": float(degree.mean()), "degree_median": float(np.median(degree)),
            "degree_max": int(degree.max()), "isolated_nodes": int((degree == 0).sum())}


def _graph(parts: SyntheticParts, x: np.ndarray | torch.Tensor, name: str) -> Graph:
    n = parts.y.size
    masks = {}
    for split, index in (("train_mask", parts.train_idx), ("val_mask", parts.val_idx), ("test_mask", parts.test_idx)):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.as_tensor(np.asarray(index), dtype=torch.int64)] = True
        masks[split] = mask
    features = x if isinstance(x, torch.Tensor) else torch.from_numpy(x)
    labels = torch.from_numpy(np.ascontiguousarray(parts.y, dtype=np.int64))
    return Graph.from_csr(parts.row_ptr, parts.sources, x=features, y=labels, name=name, **masks)


def make_synthetic(config: SyntheticConfig) -> tuple[Graph, dict[str, Any]]:
    """Generate a graph in memory: ``(graph, info)`` where ``info`` holds the realized edge count, the degree
    summary and the ceiling accuracies on the test nodes."""
    parts = make_synthetic_parts(config)
    x = synthetic_features(config, parts)
    info = _info(config, parts, x)
    return _graph(parts, x, "synthetic"), info


def _info(config: SyntheticConfig, parts: SyntheticParts, x: np.ndarray) -> dict[str, Any]:
    return {"num_nodes": config.num_nodes, "num_edges": int(parts.sources.size),
            "undirected_edges": int(parts.sources.size // 2), "requested_undirected_edges": parts.requested_pairs,
            "generation_rounds": parts.rounds, "num_classes": config.num_classes,
            "num_features": config.num_features, **_degree_summary(parts.row_ptr),
            **ceiling_accuracies(config, parts, x, parts.test_idx)}


def write_synthetic(config: SyntheticConfig, path: str | os.PathLike) -> dict[str, Any]:
    """Generate ``config`` into a new folder ``path`` (refused if it exists); returns ``meta.json``'s
    content. The folder is assembled under a temporary name and renamed when complete."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; synthetic graphs are never written over an existing path")
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    temporary.mkdir(parents=True)
    began = time.perf_counter()
    try:
        parts = make_synthetic_parts(config)
        for name in ("row_ptr", "sources", "y", "community", "train_idx", "val_idx", "test_idx"):
            np.save(temporary / f"{name}.npy", getattr(parts, name))
        x = np.lib.format.open_memmap(temporary / "x.npy", mode="w+", dtype=np.float32,
                                      shape=(config.num_nodes, config.num_features))
        synthetic_features(config, parts, x)
        x.flush()
        meta = {"format": FORMAT, "config": asdict(config), **_info(config, parts, x),
                "num_train": int(parts.train_idx.size), "num_val": int(parts.val_idx.size),
                "num_test": int(parts.test_idx.size), "class_means": parts.class_means.tolist(),
                "generation_seconds": time.perf_counter() - began,
                "generation_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
        del x
        (temporary / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.rename(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    meta.pop("class_means")
    return {**meta, "path": str(path)}


def read_synthetic_meta(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not a synthetic graph folder: {meta_path} is missing "
                                f"(make one with `gnnseg gnn synth --out {path}`)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise GraphValidationError(f"{meta_path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load_synthetic(path: str | os.PathLike, *, mmap: bool = True) -> Graph:
    """A graph written by :func:`write_synthetic`. With ``mmap`` the features stay memory-mapped
    (copy-on-write, so nothing can change the file) and the CSR sources are read through the map once.
    Shapes are checked against ``meta.json``; a missing or inconsistent file raises naming it."""
    path = Path(path)
    meta = read_synthetic_meta(path)
    arrays = {}
    for name in ARRAYS:
        file = path / f"{name}.npy"
        if not file.is_file():
            raise FileNotFoundError(f"synthetic graph {path} is incomplete: {file} is missing")
        arrays[name] = np.load(file, mmap_mode="c" if mmap else None)
    n, e = meta["num_nodes"], meta["num_edges"]
    expected = {"row_ptr": (n + 1,), "sources": (e,), "x": (n, meta["num_features"]), "y": (n,),
                "community": (n,)}
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise GraphValidationError(f"{path / (name + '.npy')} has shape {arrays[name].shape}, "
                                       f"meta.json says {shape}")
    parts = SyntheticParts(arrays["row_ptr"], arrays["sources"], arrays["y"], arrays["community"],
                           np.asarray(meta.get("class_means", []), dtype=np.float32), arrays["train_idx"],
                           arrays["val_idx"], arrays["test_idx"], meta["requested_undirected_edges"],
                           meta["generation_rounds"])
    for split in ("train_idx", "val_idx", "test_idx"):
        index = arrays[split]
        if index.size and (index.min() < 0 or index.max() >= n):
            raise GraphValidationError(f"{path / (split + '.npy')} refers to nodes outside 0..{n - 1}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)        # a copy-on-write map is writable for numpy
        x = torch.from_numpy(arrays["x"])
    return _graph(parts, x, f"synth:{path.name}")
