"""PyG data in and out: exact round trips, PyG objects in every trainer, ``pyg:PATH`` and PyG's Planetoid layout.

PyG's own ``Planetoid`` class processes the same raw ``ind.cora.*`` files as our loader; the two graphs, and GCNs
trained on them from the same seed, must agree exactly.
"""

from __future__ import annotations

import math
import random
import shutil
from dataclasses import fields, replace

import pytest
import torch

from gnnseg.cli import main
from gnnseg.gnn import Graph, GraphValidationError
from gnnseg.gnn.datasets import load_node_dataset, load_planetoid
from gnnseg.gnn.datasets.pyg_files import PyGFileError, load_pyg
from gnnseg.gnn.graph import as_graph
from gnnseg.gnn.node_splits import DefaultSplitWarning
from gnnseg.gnn.tasks.link import LinkConfig, train_link_predictor
from gnnseg.gnn.tasks.minibatch import minibatch_preset, train_minibatch
from gnnseg.gnn.tasks.node import preset, train_node_classifier
from tests.conftest import require_dataset

pyg_data = pytest.importorskip("torch_geometric.data", reason="PyG is what these tests interoperate with")
from torch_geometric.datasets import FakeDataset, Planetoid  # noqa: E402

GRAPH_FIELDS = [f.name for f in fields(Graph) if f.name != "_cache"]
QUICK_GCN = preset("gcn", epochs=10)


def assert_same_graph(first: Graph, second: Graph) -> None:
    for name in GRAPH_FIELDS:
        a, b = getattr(first, name), getattr(second, name)
        assert (torch.equal(a, b) and a.dtype == b.dtype) if isinstance(a, torch.Tensor) else a == b, name


@pytest.fixture(scope="module")
def cora():
    return load_planetoid("cora", require_dataset("planetoid"))


@pytest.fixture(scope="module")
def pyg_root(tmp_path_factory):
    """PyG's Planetoid layout, ``ROOT/Cora/raw/ind.cora.*``, processed by PyG into ``ROOT/Cora/processed``."""
    root = tmp_path_factory.mktemp("pyg")
    (root / "Cora" / "raw").mkdir(parents=True)
    for file in require_dataset("planetoid").glob("ind.cora.*"):
        shutil.copy(file, root / "Cora" / "raw" / file.name)
    Planetoid(str(root), "Cora")
    return root


@pytest.fixture(scope="module")
def reference(cora):
    """A short GCN run on our loader's Cora: what every PyG route must reproduce exactly."""
    return train_node_classifier(cora, QUICK_GCN, seed=0, show_progress=False)


def fake_dataset(num_nodes: int = 60) -> FakeDataset:
    random.seed(0)                         # FakeDataset draws sizes from Python's RNG, tensors from torch's
    torch.manual_seed(0)
    return FakeDataset(num_graphs=1, avg_num_nodes=num_nodes, num_channels=8, edge_dim=3, num_classes=4)


def test_graph_to_pyg_and_back_is_exact_on_cora(cora):
    data = cora.to_pyg()
    assert isinstance(data, pyg_data.Data) and data.num_nodes == 2708 and data.name == "cora"
    assert torch.equal(data.x, cora.x) and torch.equal(data.test_mask, cora.test_mask)
    assert_same_graph(Graph.from_pyg(data), cora)


def test_pyg_fake_dataset_to_graph_and_back_is_exact():
    dataset = fake_dataset()
    data, graph = dataset[0], as_graph(dataset)
    assert graph.name == "FakeDataset" and graph.num_nodes == data.num_nodes
    assert graph.edge_attr.shape == (data.num_edges, 3) and graph.train_mask is None
    again = graph.to_pyg()
    assert set(again.keys()) == set(data.keys()) | {"name", "num_nodes"}
    for key in data.keys():
        assert torch.equal(again[key], data[key]), key
    assert_same_graph(Graph.from_pyg(again), graph)


def test_pyg_planetoid_equals_our_loader(cora, pyg_root):
    dataset = Planetoid(str(pyg_root), "Cora")
    graph = as_graph(dataset)                       # the dataset's one graph, named after it
    assert graph.name == "Cora"
    assert_same_graph(replace(graph, name="cora").coalesce(), cora)   # PyG orders edges by target, we by source
    assert_same_graph(load_planetoid("cora", pyg_root), cora)          # --root in PyG's layout
    assert_same_graph(load_planetoid("cora", pyg_root / "Cora"), cora)
    assert_same_graph(replace(load_node_dataset(f"pyg:{pyg_root / 'Cora'}"), name="Cora"), graph)


def test_pyg_data_trains_to_the_same_result_as_our_graph(pyg_root, reference):
    data = Planetoid(str(pyg_root), "Cora")[0]
    result = train_node_classifier(data, QUICK_GCN, seed=0, show_progress=False)
    assert result.history["train_loss"] == reference.history["train_loss"]
    assert result.test_acc == reference.test_acc > 0.5
    assert result.predictions.shape == (2708,) and result.predictions.dtype == torch.int64
    assert torch.equal(result.predictions, reference.predictions)
    held_out = data.test_mask
    assert float((result.predictions[held_out] == data.y[held_out]).float().mean()) == pytest.approx(result.test_acc)


def test_every_trainer_takes_pyg_data():
    data = fake_dataset(40)[0]
    data.train_mask = torch.arange(data.num_nodes) % 3 == 0
    data.val_mask = torch.arange(data.num_nodes) % 3 == 1
    data.test_mask = torch.arange(data.num_nodes) % 3 == 2
    data.y = data.y.unsqueeze(1)                               # (N, 1), as OGB's PyG datasets store labels
    minibatch = train_minibatch(data, minibatch_preset("sage", epochs=2, batch_size=8), seed=0)
    assert 0.0 <= minibatch.test_acc <= 1.0
    links = train_link_predictor(data, LinkConfig(epochs=3), seed=0)
    assert 0.0 <= links.test_auc <= 1.0


def test_pyg_data_without_masks_gets_the_random_split():
    data = fake_dataset()[0]                                    # the call: a Data, no config, no masks
    with pytest.warns(DefaultSplitWarning, match="'pyg' has no usable train_mask or test_mask"):
        result = train_node_classifier(data)
    assert math.isfinite(result.test_acc) and math.isfinite(result.val_acc)
    assert result.predictions.shape == (data.num_nodes,)


def test_what_as_graph_refuses():
    with pytest.raises(GraphValidationError, match="holds 3 graphs; node classification trains on one: pass "
                                                   "dataset\\[i\\]"):
        as_graph(FakeDataset(num_graphs=3, avg_num_nodes=10))
    with pytest.raises(GraphValidationError, match="HeteroData"):
        as_graph(pyg_data.HeteroData())
    with pytest.raises(TypeError, match="expected a gnnseg Graph, a torch_geometric Data .* got builtins.dict"):
        as_graph({"edge_index": torch.zeros(2, 0)})
    data = fake_dataset()[0]
    data.train_mask = torch.zeros(data.num_nodes, 10, dtype=torch.bool)
    with pytest.raises(GraphValidationError, match=rf"train_mask has shape \({data.num_nodes}, 10\): 10 splits"):
        as_graph(data)


def test_pyg_file_and_folder_loading(tmp_path, cora):
    file = tmp_path / "cora.pt"
    torch.save(cora.to_pyg(), file)
    assert_same_graph(load_pyg(file), cora)                       # the Data's own name, "cora"
    torch.save(cora.to_pyg().to_dict(), tmp_path / "as_dict.pt")
    assert torch.equal(load_pyg(tmp_path / "as_dict.pt").edge_index, cora.edge_index)
    torch.save([fake_dataset()[0], fake_dataset()[0]], tmp_path / "two.pt")
    with pytest.raises(PyGFileError, match="two.pt holds a list of 2 graphs"):
        load_pyg(tmp_path / "two.pt")
    two = FakeDataset(num_graphs=2, avg_num_nodes=10)
    two.save(list(two), str(tmp_path / "dataset.pt"))              # InMemoryDataset's processed layout
    with pytest.raises(PyGFileError, match="dataset.pt is a PyG dataset of 2 graphs"):
        load_pyg(tmp_path / "dataset.pt")
    with pytest.raises(PyGFileError, match="expected one data file \\(\\*.pt\\) in .* found as_dict.pt, cora.pt"):
        load_pyg(tmp_path)
    with pytest.raises(PyGFileError, match="no such file or folder"):
        load_pyg(tmp_path / "missing")
    (tmp_path / "notes.pt").write_text("not torch")
    with pytest.raises(PyGFileError, match="cannot read .*notes.pt: not a file written by torch.save"):
        load_pyg(tmp_path / "notes.pt")


class RunsCode:
    """What a hostile file would hold: unpickling it would create ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_a_pyg_file_that_needs_unsafe_unpickling_is_refused(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    data = fake_dataset()[0]
    data.extra = RunsCode(str(marker))
    torch.save(data, tmp_path / "hostile.pt")
    with pytest.raises(PyGFileError, match="hostile.pt holds Python objects \\((builtins.)?exec\\) that only an unsafe "
                                           "unpickle could load"):
        load_pyg(tmp_path / "hostile.pt")
    assert main(["gnn", "train", "--dataset", f"pyg:{tmp_path / 'hostile.pt'}", "--runs-dir", str(tmp_path)]) == 2
    assert "weights_only=True" in capsys.readouterr().err
    assert not marker.exists()


def test_cli_trains_pyg_folders_and_pyg_roots_like_our_loader(pyg_root, reference, tmp_path, last_json):
    common = ["--model", "gcn", "--epochs", "10", "--seed", "0", "--runs-dir", str(tmp_path), "--json"]
    predictions = tmp_path / "predictions.pt"
    assert main(["gnn", "train", "--dataset", f"pyg:{pyg_root / 'Cora'}", "--save-predictions", str(predictions),
                 *common]) == 0
    from_pyg = last_json()
    assert from_pyg["test_acc_mean"] == pytest.approx(reference.test_acc, abs=1e-7)
    saved = torch.load(predictions, weights_only=True)
    assert from_pyg["predictions"] == str(predictions) and torch.equal(saved, reference.predictions)
    assert main(["gnn", "train", "--dataset", "cora", "--root", str(pyg_root), *common]) == 0
    assert last_json()["test_acc_mean"] == pytest.approx(reference.test_acc, abs=1e-7)

    assert main(["gnn", "eval", "--checkpoint", from_pyg["checkpoint"], "--json"]) == 0   # finds its pyg: folder
    assert last_json()["test_acc"] == pytest.approx(reference.test_acc, abs=1e-7)
    assert main(["gnn", "train", "--dataset", "cora", "--root", str(pyg_root), "--save-predictions",
                 str(predictions), *common]) == 2                                        # never overwritten
    assert torch.equal(torch.load(predictions, weights_only=True), reference.predictions)


@pytest.fixture(scope="module")
def pyg_mutag(tmp_path_factory):
    """PyG's own TUDataset built from the shared MUTAG files (copied into a temporary root, never downloaded)."""
    source = require_dataset("tudataset/MUTAG")
    root = tmp_path_factory.mktemp("pyg_tu")
    shutil.copytree(source, root / "MUTAG" / "raw")
    from torch_geometric.datasets import TUDataset

    return root / "MUTAG", TUDataset(str(root), "MUTAG")


def test_a_pyg_dataset_of_graphs_equals_our_tu_reader(pyg_mutag):
    from gnnseg.gnn.datasets.pyg_files import load_pyg_graphs
    from gnnseg.gnn.datasets.tu import load_tu
    from gnnseg.gnn.graph import as_graphs

    folder, dataset = pyg_mutag
    ours = load_tu("MUTAG", require_dataset("tudataset"))
    for graphs in (load_pyg_graphs(folder), as_graphs(dataset)):
        assert len(graphs) == len(ours) == 188
        for theirs, mine in zip(graphs, ours, strict=True):
            assert int(theirs.y.reshape(())) == int(mine.y)
            assert torch.equal(theirs.x, mine.x)
            edges = [sorted(map(tuple, g.edge_index.t().tolist())) for g in (theirs, mine)]
            assert edges[0] == edges[1]
    assert load_pyg_graphs(folder)[5].name == "MUTAG[5]"


def test_graph_classification_takes_pyg_datasets_and_folders(pyg_mutag, tmp_path, last_json):
    from gnnseg.gnn.tasks.graph_classification import GraphConfig, cross_validate

    folder, dataset = pyg_mutag
    result = cross_validate(dataset, GraphConfig(folds=2, epochs=2, hidden=8), show_progress=False)
    assert result["folds"] == 2 and 0.0 <= result["cv_acc_mean"] <= 1.0
    assert main(["gnn", "graphclass", "--dataset", f"pyg:{folder}", "--folds", "2", "--epochs", "2", "--hidden",
                 "8", "--json"]) == 0
    assert last_json()["folds"] == 2
    with pytest.raises(PyGFileError, match="is a PyG dataset of 188 graphs; node classification trains on one"):
        load_pyg(folder)


def test_graph_classification_names_graphs_it_cannot_use():
    from gnnseg.gnn.tasks.graph_classification import cross_validate

    with_labels = [pyg_data.Data(x=torch.ones(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]), y=torch.tensor([k % 2]))
                   for k in range(4)]
    no_features = [*with_labels[:3], pyg_data.Data(edge_index=torch.tensor([[0], [1]]), num_nodes=2,
                                                   y=torch.tensor([1]))]
    with pytest.raises(GraphValidationError, match=r"graph 3 \(pyg\) has no node features x"):
        cross_validate(no_features)
    node_labels = [*with_labels[:3], pyg_data.Data(x=torch.ones(3, 2), edge_index=torch.tensor([[0], [1]]),
                                                   y=torch.tensor([0, 1, 0]))]
    with pytest.raises(GraphValidationError, match=r"graph 3 \(pyg\) has y of shape \(3,\)"):
        cross_validate(node_labels)
