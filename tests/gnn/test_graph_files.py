"""``files:DIR``: a graph from an edge list, a feature table and labels, and one named error per bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gnnseg.cli import main
from gnnseg.gnn.datasets import load_karate, load_node_dataset
from gnnseg.gnn.datasets.files import GraphFilesError, load_graph_files

KARATE = load_karate()


def undirected_pairs() -> np.ndarray:
    """Karate's edges, each once (``u < v``), as ``(E, 2)``."""
    source, target = KARATE.edge_index.numpy()
    keep = source < target
    return np.stack([source[keep], target[keep]], axis=1)


def write_karate(folder, *, splits: bool = True):
    """Karate as plain files: edges listed once with a header, identity features, clubs, a split of its own."""
    folder.mkdir(exist_ok=True)
    lines = ["source,target", *(f"{u},{v}" for u, v in undirected_pairs())]
    (folder / "edges.csv").write_text("\n".join(lines) + "\n")
    np.save(folder / "features.npy", KARATE.x.numpy())
    (folder / "labels.csv").write_text("club\n" + "\n".join(str(int(c)) for c in KARATE.y) + "\n")
    if splits:
        (folder / "train.txt").write_text("0 33 1 2 32 31\n")
        (folder / "val.txt").write_text("3\n4\n30\n")
        (folder / "test.txt").write_text(" ".join(str(n) for n in range(5, 30)))
    return folder


def test_plain_files_give_the_graph_they_describe(tmp_path):
    graph = load_graph_files(write_karate(tmp_path / "club"))
    assert graph.name == "club" and graph.num_nodes == 34 and graph.num_edges == 156      # 78 friendships, both ways
    assert torch.equal(graph.edge_index, KARATE.coalesce().edge_index)
    assert torch.equal(graph.x, KARATE.x) and torch.equal(graph.y, KARATE.y)
    assert graph.train_mask.nonzero().flatten().tolist() == [0, 1, 2, 31, 32, 33]
    assert int(graph.val_mask.sum()) == 3 and int(graph.test_mask.sum()) == 25
    assert load_graph_files(tmp_path / "club", directed=True).num_edges == 78

    other = tmp_path / "other"                                  # the other formats give the same graph
    other.mkdir()
    np.save(other / "edges.npy", undirected_pairs())            # (E, 2)
    (other / "features.csv").write_text("\n".join(",".join(f"{v:g}" for v in row) for row in KARATE.x.tolist()))
    (other / "labels.csv").write_text("\n".join(str(int(c)) for c in KARATE.y))
    same = load_graph_files(other)
    assert torch.equal(same.edge_index, graph.edge_index) and torch.equal(same.x, graph.x)
    assert same.train_mask is None
    np.save(other / "edges.npy", undirected_pairs().T)          # (2, E)
    assert torch.equal(load_node_dataset(f"files:{other}").edge_index, graph.edge_index)


def test_files_train_through_the_cli_with_predictions(tmp_path, last_json):
    folder = write_karate(tmp_path / "club")
    predictions = tmp_path / "club_predictions.pt"
    assert main(["gnn", "train", "--dataset", f"files:{folder}", "--epochs", "10", "--save-predictions",
                 str(predictions), "--runs-dir", str(tmp_path), "--json"]) == 0
    result = last_json()
    saved = torch.load(predictions, weights_only=True)
    assert saved.shape == (34,) and saved.dtype == torch.int64 and set(saved.tolist()) <= {0, 1}
    test = torch.arange(5, 30)
    assert result["test_acc_mean"] == pytest.approx(float((saved[test] == KARATE.y[test]).float().mean()))

    mini = tmp_path / "mini_predictions.pt"                     # the mini-batch trainer writes them too
    assert main(["gnn", "train", "--model", "sage", "--dataset", f"files:{folder}", "--epochs", "2",
                 "--save-predictions", str(mini), "--runs-dir", str(tmp_path), "--json"]) == 0
    assert torch.load(mini, weights_only=True).shape == (34,) and math.isfinite(last_json()["test_acc_mean"])


def test_files_without_splits_get_a_random_split(tmp_path, last_json):
    folder = write_karate(tmp_path / "club", splits=False)
    with pytest.warns(UserWarning, match="'club' has no usable train_mask or test_mask"):
        assert main(["gnn", "train", "--dataset", f"files:{folder}", "--epochs", "5", "--runs-dir", str(tmp_path),
                     "--json"]) == 0
    assert math.isfinite(last_json()["test_acc_mean"])


def _edit(name: str, text: str):
    return lambda folder: (folder / name).write_text(text)


def _remove(name: str):
    return lambda folder: (folder / name).unlink()


def _save(name: str, array):
    return lambda folder: np.save(folder / name, array)


def _nan_features(folder):
    features = KARATE.x.numpy().copy()
    features[5, 2] = np.nan
    np.save(folder / "features.npy", features)


BAD_INPUTS = {
    "no edges": (_remove("edges.csv"), "club: missing edges.csv or edges.npy \\(the edge list\\)"),
    "no features": (_remove("features.npy"), "missing features.npy or features.csv \\(the node features\\)"),
    "no labels": (_remove("labels.csv"), "missing labels.csv \\(one class label per node\\)"),
    "two edge files": (_save("edges.npy", undirected_pairs()), "both edges.csv and edges.npy are there"),
    "node id out of range": (_edit("edges.csv", "source,target\n0,1\n2,34\n"),
                             "edges.csv: line 3: node id 34 is out of range 0..33 \\(features.npy has 34 rows"),
    "negative node id": (_edit("edges.csv", "0,1\n-1,3\n"), "edges.csv: line 2: node id -1 is out of range"),
    "ragged csv": (_edit("edges.csv", "0,1\n1,2\n2,3,4\n"),
                   "edges.csv: line 3 has 3 comma-separated values, expected 2 \\(ragged CSV\\)"),
    "not an integer": (_edit("edges.csv", "0,1\n1,two\n"), "edges.csv: line 2: 'two' is not an integer"),
    "float edge array": (lambda f: (_remove("edges.csv")(f), _save("edges.npy", np.zeros((2, 3)))(f)),
                         "edges.npy: node ids must be integers, got dtype float64"),
    "edge array shape": (lambda f: (_remove("edges.csv")(f), _save("edges.npy", np.zeros((3, 3), int))(f)),
                         "edges.npy: edges must have shape \\(2, E\\) or \\(E, 2\\), got \\(3, 3\\)"),
    "edge array out of range": (lambda f: (_remove("edges.csv")(f), _save("edges.npy", np.array([[0, 1], [1, 40]]))(f)),
                                "edges.npy: column 1: node id 40 is out of range 0..33"),
    "pickled array": (_save("features.npy", np.array([{"a": 1}], dtype=object)),
                      "features.npy: not a plain .npy array"),
    "nan features": (_nan_features, "features.npy: feature nan \\(not finite\\) at node 5, column 2"),
    "feature shape": (_save("features.npy", np.zeros(34)), "features must have shape \\(nodes, features\\)"),
    "ragged feature csv": (lambda f: (_remove("features.npy")(f), _edit("features.csv", "1,2\n3\n")(f)),
                           "features.csv: line 2 has 1 comma-separated values, expected 2 \\(ragged CSV\\)"),
    "label count": (_edit("labels.csv", "\n".join(["0"] * 33)),
                    "labels.csv: 33 labels, but features.npy has 34 rows; give one label per node"),
    "negative label": (_edit("labels.csv", "\n".join(["0"] * 10 + ["-1"] + ["1"] * 23)),
                       "labels.csv: line 11: label -1 is negative"),
    "text label": (_edit("labels.csv", "club\n" + "\n".join(["0"] * 33 + ["Officer"])),
                   "labels.csv: line 35: 'Officer' is not an integer"),
    "split id out of range": (_edit("train.txt", "0 1 99"), "train.txt: node id 99 is out of range 0..33"),
    "split id not a number": (_edit("val.txt", "3 four"), "val.txt: 'four' is not an integer node id"),
    "overlapping splits": (_edit("test.txt", "0 5 6"), "test.txt and train.txt share 1 nodes \\(e.g. node 0\\)"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_every_bad_input_gets_one_line_naming_file_and_problem(tmp_path, name):
    spoil, message = BAD_INPUTS[name]
    folder = write_karate(tmp_path / "club")
    spoil(folder)
    with pytest.raises(GraphFilesError, match=message) as error:
        load_graph_files(folder)
    assert "\n" not in str(error.value)


def test_cli_reports_bad_files_in_one_line(tmp_path, capsys):
    folder = write_karate(tmp_path / "club")
    (folder / "labels.csv").write_text("0\n1\n")
    assert main(["gnn", "train", "--dataset", f"files:{folder}", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gnnseg: error: ") and "labels.csv: 2 labels, but features.npy has 34 rows" in err
    assert main(["gnn", "train", "--dataset", f"files:{tmp_path / 'absent'}", "--runs-dir", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err
