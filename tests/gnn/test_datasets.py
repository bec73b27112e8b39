"""Planetoid and karate loaders on the real files in ../shared/datasets."""

from __future__ import annotations

import shutil

import pytest
import torch

from gnnseg.gnn import Graph
from gnnseg.gnn.datasets import load_karate, load_node_dataset, load_planetoid
from gnnseg.gnn.datasets.planetoid import CHECKSUMS, PlanetoidError, sha256

SPLITS = {  # name: nodes, undirected edges (stored both ways), features, classes, train, val, test
    "cora": (2708, 10556, 1433, 7, 140, 500, 1000),
    "citeseer": (3327, 9104, 3703, 6, 120, 500, 1000),
}


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_planetoid_shapes_and_public_split(planetoid_root, name):
    graph = load_planetoid(name, planetoid_root)
    nodes, edges, features, classes, train, val, test = SPLITS[name]
    assert (graph.num_nodes, graph.num_edges, graph.num_features, graph.num_classes) == (nodes, edges, features,
                                                                                         classes)
    assert [int(graph.train_mask.sum()), int(graph.val_mask.sum()), int(graph.test_mask.sum())] == [train, val, test]
    assert graph.train_mask[:train].all() and graph.val_mask[train:train + val].all()
    assert not (graph.train_mask & graph.test_mask).any() and not (graph.val_mask & graph.test_mask).any()
    assert graph.is_undirected()
    assert (graph.edge_index[0] != graph.edge_index[1]).all()
    assert graph.coalesce().num_edges == graph.num_edges  # no duplicates
    assert set(graph.x.unique().tolist()) <= {0.0, 1.0}   # raw bag-of-words


def test_citeseer_isolated_test_slots_are_zero_rows(planetoid_root):
    graph = load_planetoid("citeseer", planetoid_root)
    test_ids = [int(v) for v in (planetoid_root / "ind.citeseer.test.index").read_text().split()]
    padded = sorted(set(range(min(test_ids), max(test_ids) + 1)) - set(test_ids))
    assert len(padded) == 15
    assert graph.x[padded].abs().sum() == 0
    assert not graph.test_mask[padded].any()


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_planetoid_matches_pyg_reader(planetoid_root, name):
    io = pytest.importorskip("torch_geometric.io.planetoid", reason="PyG is the oracle")
    theirs = io.read_planetoid_data(str(planetoid_root), name)
    ours = load_planetoid(name, planetoid_root)
    torch.testing.assert_close(ours.x, theirs.x)
    assert torch.equal(ours.y, theirs.y)
    for mask in ("train_mask", "val_mask", "test_mask"):
        assert torch.equal(getattr(ours, mask), getattr(theirs, mask)), mask
    theirs_edges = Graph(edge_index=theirs.edge_index, num_nodes=theirs.num_nodes).coalesce().edge_index
    assert torch.equal(ours.coalesce().edge_index, theirs_edges)


def test_pubmed_names_the_missing_file(planetoid_root):
    if (planetoid_root / "ind.pubmed.allx").exists():
        pytest.skip("this copy of the data has ind.pubmed.allx")
    with pytest.raises(FileNotFoundError, match="ind.pubmed.allx"):
        load_planetoid("pubmed", planetoid_root)


def test_shared_files_match_pinned_checksums(planetoid_root):
    for file in ("ind.cora.graph", "ind.citeseer.tx", "ind.cora.test.index"):
        assert sha256(planetoid_root / file) == CHECKSUMS[file]


def test_corrupt_and_malicious_files_are_refused(planetoid_root, tmp_path):
    for file in planetoid_root.glob("ind.cora.*"):
        shutil.copy(file, tmp_path / file.name)
    (tmp_path / "ind.cora.tx").write_bytes(b"\x80\x02garbage")
    with pytest.raises(PlanetoidError, match="corrupt Planetoid file .*ind.cora.tx"):
        load_planetoid("cora", tmp_path)
    import pickle
    (tmp_path / "ind.cora.tx").write_bytes(pickle.dumps(shutil.rmtree))   # would call code if trusted
    with pytest.raises(PlanetoidError, match="refusing to load shutil.rmtree"):
        load_planetoid("cora", tmp_path)


def test_unknown_names_and_missing_root():
    with pytest.raises(ValueError, match="unknown Planetoid dataset 'coraa'"):
        load_planetoid("coraa", ".")
    with pytest.raises(ValueError, match="needs --root"):
        load_node_dataset("cora", None)


def test_karate_club():
    graph = load_karate()
    assert (graph.num_nodes, graph.num_edges, graph.num_classes) == (34, 156, 2)
    assert graph.train_mask.nonzero().flatten().tolist() == [0, 33]
    assert graph.y[0] == 0 and graph.y[33] == 1 and int(graph.y.sum()) == 17
    with pytest.raises(ValueError, match="outside 0..33"):
        load_karate(labeled=(0, 40))


def test_download_verifies_checksums(planetoid_root, tmp_path):
    from gnnseg.gnn.datasets import download_planetoid

    source = planetoid_root.resolve().as_uri() + "/{file}"        # a file:// mirror stands in for GitHub
    target = download_planetoid("cora", tmp_path / "cora", url=source)
    graph = load_planetoid("cora", target)
    assert graph.num_nodes == 2708

    tampered = tmp_path / "mirror"
    tampered.mkdir()
    for file in planetoid_root.glob("ind.citeseer.*"):
        shutil.copy(file, tampered / file.name)
    (tampered / "ind.citeseer.x").write_bytes(b"tampered")
    with pytest.raises(PlanetoidError, match="checksum mismatch for ind.citeseer.x"):
        download_planetoid("citeseer", tmp_path / "citeseer", url=tampered.as_uri() + "/{file}")
    assert not (tmp_path / "citeseer" / "ind.citeseer.x").exists()

    (tmp_path / "cora" / "ind.cora.y").write_bytes(b"user's own edit")      # never overwritten
    with pytest.raises(PlanetoidError, match="exists but its sha256"):
        download_planetoid("cora", tmp_path / "cora", url=source)
    assert (tmp_path / "cora" / "ind.cora.y").read_bytes() == b"user's own edit"
