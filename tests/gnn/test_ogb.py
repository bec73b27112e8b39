"""OGB node-property loader on small fake folders in OGB's layout (no network), and the download path."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from gnnseg.core.archives import UnsafeArchiveError
from gnnseg.gnn.datasets import load_node_dataset
from gnnseg.gnn.datasets.ogb import CACHE_FOLDER, OGBError, download_ogb, load_ogb_node

EDGES = [(0, 1), (1, 2), (2, 0), (3, 4), (1, 0), (5, 5)]     # (1, 0) reverses (0, 1); node 5 has a self-loop
NUM_NODES = 7                                                 # node 6 is isolated


def write_csv(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        for row in rows:
            handle.write(",".join(str(v) for v in (row if isinstance(row, (list, tuple)) else [row])) + "\n")


def fake_ogb(folder: Path, split: str = "sales_ranking", features: bool = True) -> Path:
    """A 7-node dataset in OGB's raw layout (as ogb.nodeproppred writes it)."""
    write_csv(folder / "raw" / "num-node-list.csv.gz", [NUM_NODES])
    write_csv(folder / "raw" / "num-edge-list.csv.gz", [len(EDGES)])
    write_csv(folder / "raw" / "edge.csv.gz", EDGES)
    if features:
        write_csv(folder / "raw" / "node-feat.csv.gz", [[i + 0.5, -i] for i in range(NUM_NODES)])
    write_csv(folder / "raw" / "node-label.csv.gz", [i % 3 for i in range(NUM_NODES)])
    write_csv(folder / "split" / split / "train.csv.gz", [0, 1, 2])
    write_csv(folder / "split" / split / "valid.csv.gz", [3])
    write_csv(folder / "split" / split / "test.csv.gz", [4, 5, 6])
    return folder


def edge_set(graph) -> set[tuple[int, int]]:
    return set(map(tuple, graph.edge_index.t().tolist()))


def test_products_layout_loads_undirected_with_features_labels_and_split(tmp_path):
    graph = load_ogb_node(fake_ogb(tmp_path / "ogbn_products"))
    assert graph.name == "ogbn-products" and graph.num_nodes == NUM_NODES
    expected = {(0, 1), (1, 0), (1, 2), (2, 1), (2, 0), (0, 2), (3, 4), (4, 3), (5, 5)}
    assert edge_set(graph) == expected and graph.num_edges == len(expected)           # duplicates merged
    assert graph.csr()[2] is None and graph.in_degree()[6] == 0
    torch.testing.assert_close(graph.x[3], torch.tensor([3.5, -3.0]))
    assert graph.x.dtype == torch.float32 and graph.y.tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert graph.train_mask.nonzero().flatten().tolist() == [0, 1, 2]
    assert graph.val_mask.nonzero().flatten().tolist() == [3]
    assert graph.test_mask.nonzero().flatten().tolist() == [4, 5, 6]


def test_a_directed_dataset_keeps_its_directions_when_asked(tmp_path):
    folder = fake_ogb(tmp_path / "ogbn_arxiv", split="time")
    directed = load_ogb_node(folder, undirected=False)
    assert directed.name == "ogbn-arxiv" and edge_set(directed) == set(EDGES)
    undirected = load_ogb_node(folder)
    assert edge_set(undirected) == set(EDGES) | {(b, a) for a, b in EDGES}


def test_the_parsed_arrays_are_cached_and_reused(tmp_path, monkeypatch):
    folder = fake_ogb(tmp_path / "ogbn_products")
    first = load_ogb_node(folder)
    assert (folder / CACHE_FOLDER / "undirected-default" / "meta.json").is_file()
    import gnnseg.gnn.datasets.ogb as ogb_module

    monkeypatch.setattr(ogb_module, "_parse", lambda *a, **k: pytest.fail("the cache was not used"))
    again = load_ogb_node(folder)
    assert torch.equal(first.edge_index, again.edge_index) and torch.equal(first.x, again.x)
    assert load_node_dataset(f"ogb:{folder}").num_edges == first.num_edges


def test_unknown_folders_load_generically_and_features_are_optional(tmp_path):
    graph = load_ogb_node(fake_ogb(tmp_path / "my_graph", split="random", features=False), cache=False)
    assert graph.name == "my_graph" and graph.x is None and graph.num_edges == 9


def test_missing_and_broken_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="raw is missing"):
        load_ogb_node(tmp_path / "nothing")
    folder = fake_ogb(tmp_path / "ogbn_products")
    (folder / "split" / "sales_ranking" / "valid.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match="valid.csv.gz"):
        load_ogb_node(folder, cache=False)

    folder = fake_ogb(tmp_path / "ogbn_arxiv", split="time")
    write_csv(folder / "raw" / "edge.csv.gz", [*EDGES, (2, 9)])
    with pytest.raises(OGBError, match=r"edge.csv.gz line 7 \(\[2, 9\]\) refers to a node outside 0..6"):
        load_ogb_node(folder, cache=False)
    write_csv(folder / "raw" / "edge.csv.gz", EDGES)
    write_csv(folder / "raw" / "node-label.csv.gz", [0, 1, 2])
    with pytest.raises(OGBError, match="node-label.csv.gz has 3 rows for 7 nodes"):
        load_ogb_node(folder, cache=False)

    folder = fake_ogb(tmp_path / "two_splits", split="a")
    fake_ogb(folder, split="b")
    with pytest.raises(OGBError, match="exactly one split folder"):
        load_ogb_node(folder, cache=False)
    assert load_ogb_node(folder, split="b", cache=False).num_nodes == NUM_NODES


def test_download_unpacks_the_official_layout_and_never_overwrites(tmp_path):
    source = fake_ogb(tmp_path / "build" / "products")
    archive = tmp_path / "products.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for file in source.rglob("*"):
            bundle.write(file, file.relative_to(source.parent))
    with pytest.warns(UserWarning, match="no pinned checksum"):
        folder = download_ogb("ogbn-products", tmp_path / "data", url=archive.as_uri())
    assert folder == tmp_path / "data" / "ogbn_products"
    assert load_ogb_node(folder).num_edges == 9
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ogbn_products"]     # no leftovers
    with pytest.raises(FileExistsError, match="already exists"):
        download_ogb("ogbn-products", tmp_path / "data", url=archive.as_uri())

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as bundle:
        bundle.writestr("../escape.txt", "x")
    with pytest.warns(UserWarning), pytest.raises(UnsafeArchiveError, match="unsafe path"):
        download_ogb("ogbn-arxiv", tmp_path / "data", url=evil.as_uri())
    assert not (tmp_path / "escape.txt").exists()
    with pytest.raises(ValueError, match="unknown OGB node dataset"):
        download_ogb("ogbn-papers", tmp_path / "data")
    assert np.load(folder / CACHE_FOLDER / "undirected-default" / "row_ptr.npy").size == NUM_NODES + 1
