"""Graph classification: TU loading, batching, readouts, stratified folds, GIN learning MUTAG."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from gnnseg.cli import main
from gnnseg.gnn import Graph, GraphValidationError
from gnnseg.gnn.batch import GraphBatch, readout
from gnnseg.gnn.datasets.tu import TUFormatError, download_tu, load_tu
from gnnseg.gnn.tasks.graph_classification import GINClassifier, GraphConfig, accuracy, stratified_folds, train_fold
from tests.conftest import require_dataset

COUNTS = {"MUTAG": (188, 3371, 7442, 7), "PTC_MR": (344, 4915, 10108, 18), "IMDB-BINARY": (1000, 19773, 386124, 65)}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_tu_counts(name):
    graphs = load_tu(name, require_dataset("tudataset"))
    count, nodes, edges, features = COUNTS[name]
    assert len(graphs) == count and sum(g.num_nodes for g in graphs) == nodes
    assert sum(g.num_edges for g in graphs) == edges and graphs[0].num_features == features
    assert {int(g.y) for g in graphs} == {0, 1}
    for graph in graphs[:20]:
        graph.validate()
        assert torch.allclose(graph.x.sum(1), torch.ones(graph.num_nodes))   # one-hot rows


def test_tu_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="TOY_A.txt"):
        load_tu("TOY", tmp_path)
    folder = tmp_path / "TOY"
    folder.mkdir()
    (folder / "TOY_A.txt").write_text("1, 2\n2, 1\n2, 3\n")
    (folder / "TOY_graph_indicator.txt").write_text("1\n1\n2\n")
    (folder / "TOY_graph_labels.txt").write_text("1\n-1\n")
    with pytest.raises(TUFormatError, match="line 3: edge joins two different graphs"):
        load_tu("TOY", tmp_path)


def test_batching_offsets_and_readouts():
    a = Graph(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=2, x=torch.tensor([[1.0], [3.0]]), y=torch.tensor(0))
    b = Graph(edge_index=torch.tensor([[0, 2], [1, 1]]), num_nodes=3, x=torch.tensor([[2.0], [4.0], [-1.0]]),
              y=torch.tensor(1))
    batch = GraphBatch.collate([a, b])
    assert batch.edge_index.tolist() == [[0, 1, 2, 4], [1, 0, 3, 3]]
    assert batch.batch.tolist() == [0, 0, 1, 1, 1] and batch.y.tolist() == [0, 1]
    assert readout(batch.x, batch.batch, 2, "sum").flatten().tolist() == [4.0, 5.0]
    assert readout(batch.x, batch.batch, 2, "mean").flatten().tolist() == pytest.approx([2.0, 5 / 3])
    assert readout(batch.x, batch.batch, 2, "max").flatten().tolist() == [3.0, 4.0]
    with pytest.raises(ValueError, match="readout must be"):
        readout(batch.x, batch.batch, 2, "median")
    with pytest.raises(GraphValidationError, match="different feature widths"):
        GraphBatch.collate([a, Graph(edge_index=torch.empty(2, 0, dtype=torch.long), num_nodes=1,
                                     x=torch.ones(1, 2), y=torch.tensor(0))])


def test_stratified_folds_keep_the_class_mix():
    labels = np.array([0] * 63 + [1] * 125)
    folds = stratified_folds(labels, 10, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(188))
    for fold in folds:
        assert abs(labels[fold].mean() - labels.mean()) < 0.06
    with pytest.raises(ValueError, match="cannot fill 10 folds"):
        stratified_folds(np.array([0, 1, 0]), 10, 0)


def test_gin_learns_mutag_quickly():
    graphs = load_tu("MUTAG", require_dataset("tudataset"))
    folds = stratified_folds(np.array([int(g.y) for g in graphs]), 10, seed=0)
    curve = train_fold(graphs, np.concatenate(folds[1:]), folds[0], GraphConfig(epochs=8, iterations_per_epoch=10), 0)
    assert len(curve) == 8 and max(curve) >= 0.75          # majority class alone would be 0.66
    model = GINClassifier(7, 16, 2, train_eps=True)
    assert sum(1 for name, _ in model.named_parameters() if name.endswith("eps")) == 4
    assert 0.0 <= accuracy(model, graphs[:10]) <= 1.0


def test_graphclass_cli_contract(capsys, last_json):
    root = require_dataset("tudataset")
    assert main(["gnn", "graphclass", "--dataset", "MUTAG", "--root", str(root), "--folds", "2", "--epochs", "2",
                 "--json"]) == 0
    result = last_json()
    assert {"cv_acc_mean", "cv_acc_std", "best_epoch", "dataset"} <= set(result)
    assert 0.0 <= result["cv_acc_mean"] <= 1.0


def _tu_zip(source, target, *, change=None):
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.iterdir()):
            data = path.read_bytes()
            archive.writestr(f"{source.name}/{path.name}", data + b"0\n" if path.name == change else data)
    return target


def test_download_checks_the_pinned_checksums_and_leaves_nothing_on_failure(tmp_path):
    source = require_dataset("tudataset/MUTAG")
    good = _tu_zip(source, tmp_path / "good.zip")
    folder = download_tu("MUTAG", tmp_path / "data", url=good.as_uri())
    assert load_tu("MUTAG", tmp_path / "data")[0].num_nodes == load_tu("MUTAG", source.parent)[0].num_nodes
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["MUTAG"] and folder.is_dir()
    tampered = _tu_zip(source, tmp_path / "tampered.zip", change="MUTAG_graph_labels.txt")
    with pytest.raises(TUFormatError, match="checksum mismatch for MUTAG/MUTAG_graph_labels.txt"):
        download_tu("MUTAG", tmp_path / "other", url=tampered.as_uri())
    assert not any((tmp_path / "other").iterdir())
