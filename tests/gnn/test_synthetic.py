"""Synthetic DC-SBM graphs: a valid simple symmetric CSR, heavy-tailed degrees, balanced labels, the ceiling,
the on-disk format, and learnability."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gnnseg.gnn.datasets import load_node_dataset
from gnnseg.gnn.datasets.synthetic import (
    SyntheticConfig,
    load_synthetic,
    make_synthetic,
    make_synthetic_parts,
    synthetic_features,
    write_synthetic,
)
from gnnseg.gnn.graph import Graph, GraphValidationError
from gnnseg.gnn.tasks.minibatch import minibatch_config, train_minibatch


def power_law_exponent(degree: np.ndarray, k_min: int) -> float:
    """Maximum-likelihood tail exponent of P(k) ~ k^-gamma for k >= k_min (Clauset, Shalizi & Newman 2009,
    eq. 3.7, the discrete approximation with k_min - 1/2)."""
    tail = degree[degree >= k_min].astype(np.float64)
    return 1.0 + tail.size / np.log(tail / (k_min - 0.5)).sum()


@pytest.fixture(scope="module")
def medium():
    config = SyntheticConfig(num_nodes=20_000, avg_degree=20, num_classes=10, num_features=16, seed=1)
    return config, make_synthetic_parts(config)


def test_csr_is_simple_symmetric_and_has_the_requested_edges(medium):
    config, parts = medium
    n, row_ptr, sources = config.num_nodes, parts.row_ptr, parts.sources.astype(np.int64)
    assert row_ptr[0] == 0 and row_ptr[-1] == sources.size and (np.diff(row_ptr) >= 0).all()
    assert sources.dtype == np.int64 and parts.sources.dtype == np.int32
    assert sources.min() >= 0 and sources.max() < n
    assert sources.size == 2 * round(n * config.avg_degree / 2)                # M distinct pairs, both ways
    targets = np.repeat(np.arange(n), np.diff(row_ptr))
    assert not (sources == targets).any()                                     # no self-loops
    keys = targets * n + sources
    assert (np.diff(keys) > 0).all()                                          # sorted rows, no duplicates
    assert np.array_equal(np.sort(sources * n + targets), keys)               # every edge has its reverse


def test_degrees_are_heavy_tailed(medium):
    config, parts = medium
    degree = np.diff(parts.row_ptr)
    median = int(np.median(degree))
    assert degree.max() > 20 * median                                          # hubs
    assert degree.max() <= 3 * math.sqrt(config.num_nodes * config.avg_degree)  # the structural cut-off, roughly
    assert power_law_exponent(degree, 3 * median) == pytest.approx(config.degree_exponent, abs=0.35)
    light = make_synthetic_parts(SyntheticConfig(num_nodes=20_000, avg_degree=20, num_classes=10, num_features=4,
                                                 degree_exponent=8.0, seed=1))
    light_degree = np.diff(light.row_ptr)
    assert light_degree.max() < 4 * np.median(light_degree)                   # a steep tail has no hubs


def test_labels_are_balanced_with_the_planted_noise(medium):
    config, parts = medium
    sizes = np.bincount(parts.community, minlength=config.num_classes)
    assert sizes.max() - sizes.min() <= 1
    flipped = (parts.y != parts.community).mean()
    assert flipped == pytest.approx(config.label_noise, abs=0.01)
    assert np.bincount(parts.y).min() > 0.8 * config.num_nodes / config.num_classes
    split = np.concatenate([parts.train_idx, parts.val_idx, parts.test_idx])
    assert np.array_equal(np.sort(split), np.arange(config.num_nodes))
    assert parts.train_idx.size == round(0.08 * config.num_nodes) and parts.val_idx.size == 400


def test_same_seed_same_graph_and_another_seed_differs():
    config = SyntheticConfig(num_nodes=2000, avg_degree=10, num_classes=4, num_features=4, seed=7)
    first, again = make_synthetic_parts(config), make_synthetic_parts(config)
    other = make_synthetic_parts(SyntheticConfig(num_nodes=2000, avg_degree=10, num_classes=4, num_features=4, seed=8))
    assert np.array_equal(first.sources, again.sources) and np.array_equal(first.y, again.y)
    assert np.array_equal(synthetic_features(config, first), synthetic_features(config, again))
    assert not np.array_equal(first.sources[:100], other.sources[:100])


def test_the_ceiling_is_one_minus_the_label_noise_when_structure_decides():
    config = SyntheticConfig(num_nodes=4000, avg_degree=30, num_classes=5, num_features=16, homophily=0.8,
                             label_noise=0.2, seed=2)
    _, info = make_synthetic(config)
    assert info["ceiling_community_accuracy"] > 0.99
    assert info["ceiling_accuracy"] == pytest.approx(0.8, abs=0.03)
    assert info["ceiling_accuracy"] >= max(info["feature_bayes_accuracy"], info["neighbor_label_accuracy"]) - 0.01


def test_graph_from_the_generator_is_valid_and_learnable():
    config = SyntheticConfig(num_nodes=600, avg_degree=12, num_classes=4, num_features=8, feature_noise=2.0,
                             homophily=0.7, label_noise=0.0, train_fraction=0.3, val_fraction=0.2, seed=3)
    graph, info = make_synthetic(config)
    graph.validate()
    assert graph.csr()[2] is None and graph.is_undirected()
    assert int(graph.train_mask.sum()) == 180 and graph.num_classes == 4
    result = train_minibatch(graph, minibatch_config("sage", "neighbor", fanouts=(5, 5), hidden=16, batch_size=64,
                                                     epochs=15), seed=0, show_progress=False)
    assert result.test_acc > info["feature_bayes_accuracy"] + 0.1          # the structure is used
    assert result.test_acc <= info["ceiling_accuracy"] + 0.03              # nothing beats the oracle


def test_folder_round_trip_and_refusals(tmp_path):
    config = SyntheticConfig(num_nodes=500, avg_degree=6, num_classes=3, num_features=5, seed=4)
    meta = write_synthetic(config, tmp_path / "g")
    assert {p.name for p in (tmp_path / "g").iterdir()} == {"meta.json", "row_ptr.npy", "sources.npy", "x.npy",
                                                              "y.npy", "community.npy", "train_idx.npy",
                                                              "val_idx.npy", "test_idx.npy"}
    assert meta["num_edges"] == 3000 and meta["config"]["seed"] == 4 and "ceiling_accuracy" in meta
    memory, info = make_synthetic(config)
    for mmap in (True, False):
        loaded = load_synthetic(tmp_path / "g", mmap=mmap)
        assert torch.equal(loaded.edge_index, memory.edge_index) and torch.equal(loaded.x, memory.x)
        assert torch.equal(loaded.y, memory.y) and torch.equal(loaded.test_mask, memory.test_mask)
    assert info["ceiling_accuracy"] == meta["ceiling_accuracy"]
    assert load_node_dataset(f"synth:{tmp_path / 'g'}").num_nodes == 500

    with pytest.raises(FileExistsError, match="never written over"):
        write_synthetic(config, tmp_path / "g")
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    (tmp_path / "g" / "community.npy").unlink()
    with pytest.raises(FileNotFoundError, match="community.npy is missing"):
        load_synthetic(tmp_path / "g")
    np.save(tmp_path / "g" / "community.npy", np.zeros(7, dtype=np.int64))
    with pytest.raises(GraphValidationError, match="community.npy has shape"):
        load_synthetic(tmp_path / "g")
    meta_file = tmp_path / "g" / "meta.json"
    meta_file.write_text(json.dumps({"format": "other/1"}))
    with pytest.raises(GraphValidationError, match="expected 'gnnseg.synthetic/1'"):
        load_synthetic(tmp_path / "g")
    with pytest.raises(FileNotFoundError, match="gnnseg gnn synth"):
        load_synthetic(tmp_path / "missing")


@pytest.mark.parametrize("values,message", [
    ({"num_nodes": 1}, "num_nodes must be at least 2"),
    ({"num_nodes": 10, "avg_degree": 10}, "avg_degree must be in"),
    ({"degree_exponent": 2.0}, "degree_exponent must be > 2"),
    ({"homophily": 1.0}, "homophily must be in"),
    ({"num_classes": 4, "label_noise": 0.8}, "label_noise must be in"),
    ({"train_fraction": 0.9, "val_fraction": 0.1}, "leave test nodes"),
])
def test_bad_configs_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**values)


def test_graph_from_csr_checks_its_offsets():
    graph = Graph.from_csr(np.array([0, 2, 2, 3]), np.array([1, 2, 0], dtype=np.int32))
    assert graph.edge_index.tolist() == [[1, 2, 0], [0, 0, 2]] and graph.in_degree().tolist() == [2, 0, 1]
    with pytest.raises(GraphValidationError, match="must start at 0 and end at the number of sources"):
        Graph.from_csr(np.array([0, 2, 4]), np.array([1, 0, 1]))
    with pytest.raises(GraphValidationError, match="decreases at node 1: 3 -> 2"):
        Graph.from_csr(np.array([0, 3, 2, 3]), np.array([1, 0, 1]))
    with pytest.raises(GraphValidationError, match="sources refers to node 5"):
        Graph.from_csr(np.array([0, 1, 2]), np.array([1, 5]))
