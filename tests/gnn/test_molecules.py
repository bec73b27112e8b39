"""Molecules: SMILES featurization, CSV tables with invalid rows and missing labels, scaffold splits, the
masked multi-task loss, GINE against PyG, a short training run, and the molecules / screen commands."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit", reason="molecule support needs RDKit: pip install 'gnnseg[chem]' (in the test extra)")

from gnnseg.cli import main
from gnnseg.gnn import Graph, GraphValidationError
from gnnseg.gnn.batch import GraphBatch
from gnnseg.gnn.datasets.molecule_tables import (
    MoleculeTableError,
    balanced_scaffold_split,
    load_molecule_csv,
    load_shared_table,
    random_split,
    scaffold_split,
)
from gnnseg.gnn.layers.gine import GINEConv
from gnnseg.gnn.molecule_graphs import (
    ATOM_FEATURES,
    ATOM_TYPES,
    BOND_FEATURES,
    InvalidSmilesError,
    atom_feature_slice,
    murcko_scaffold,
    smiles_to_graph,
)
from gnnseg.gnn.tasks.molecule_property import (
    MoleculeConfig,
    masked_loss,
    predict_graphs,
    task_metrics,
    train_molecule_model,
)
from gnnseg.gnn.tasks.molecule_runs import _write_new_csv, load_molecule_model
from tests.conftest import require_dataset

ASPIRIN = "CC(=O)OC1=CC=CC=C1C(=O)O"
BLOCKS = ("element", "degree", "formal_charge", "hydrogens", "aromatic", "hybridization")


def _block(graph: Graph, name: str) -> torch.Tensor:
    return graph.x[:, atom_feature_slice(name)]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------------------------------- featurization
def test_aspirin_atoms_bonds_and_edges_both_ways():
    graph = smiles_to_graph(ASPIRIN).validate()
    assert graph.num_nodes == 13 and graph.num_edges == 26
    assert graph.x.shape == (13, ATOM_FEATURES) and graph.edge_attr.shape == (26, BOND_FEATURES)
    # bond k is stored as edges 2k (i -> j) and 2k + 1 (j -> i) with the same features
    assert torch.equal(graph.edge_index[:, 0::2], graph.edge_index[:, 1::2].flip(0))
    assert torch.equal(graph.edge_attr[0::2], graph.edge_attr[1::2])
    for name in BLOCKS:
        if name != "aromatic":   # every one-hot block has exactly one slot set per atom
            assert torch.equal(_block(graph, name).sum(1), torch.ones(13)), name
    element = _block(graph, "element").argmax(1)
    assert [ATOM_TYPES[k] for k in element.tolist()].count("C") == 9
    assert [ATOM_TYPES[k] for k in element.tolist()].count("O") == 4
    assert int(_block(graph, "aromatic").sum()) == 6                       # the benzene ring
    aromatic_bonds = graph.edge_attr[:, 3]
    assert int(aromatic_bonds.sum()) == 12                                  # 6 ring bonds, both ways
    assert int(graph.edge_attr[:, 1].sum()) == 4                            # two C=O, both ways
    assert int(graph.edge_attr[:, 5].sum()) == 12                           # ring bonds are the aromatic ones


def test_benzene_and_cyclohexane_flags():
    benzene, cyclohexane = smiles_to_graph("c1ccccc1"), smiles_to_graph("C1CCCCC1")
    assert _block(benzene, "aromatic").flatten().tolist() == [1.0] * 6
    assert _block(cyclohexane, "aromatic").flatten().tolist() == [0.0] * 6
    # hybridization SP, SP2, SP3, ...: benzene atoms are SP2, cyclohexane atoms SP3
    assert _block(benzene, "hybridization").argmax(1).tolist() == [1] * 6
    assert _block(cyclohexane, "hybridization").argmax(1).tolist() == [2] * 6
    # total hydrogens 0..4: one per benzene carbon, two per cyclohexane carbon
    assert _block(benzene, "hydrogens").argmax(1).tolist() == [1] * 6
    assert _block(cyclohexane, "hydrogens").argmax(1).tolist() == [2] * 6
    assert benzene.edge_attr.tolist() == [[0, 0, 0, 1, 1, 1]] * 12          # aromatic, conjugated, in ring
    assert cyclohexane.edge_attr.tolist() == [[1, 0, 0, 0, 0, 1]] * 12      # single, not conjugated, in ring


def test_charges_unknown_elements_and_single_atoms():
    ammonium = smiles_to_graph("[NH4+]")
    assert ammonium.num_edges == 0 and ammonium.edge_attr.shape == (0, BOND_FEATURES)
    assert _block(ammonium, "formal_charge").argmax(1).tolist() == [3]     # -2, -1, 0, +1, +2, other
    assert _block(ammonium, "hydrogens").argmax(1).tolist() == [4]
    uranium = smiles_to_graph("[U]")
    assert _block(uranium, "element").argmax(1).tolist() == [len(ATOM_TYPES)]   # the "other" slot
    assert murcko_scaffold(ASPIRIN) == "c1ccccc1" and murcko_scaffold("CCO") == ""
    for bad, reason in (("C1CC", "syntax"), ("C(C)(C)(C)(C)C", "valence"), ("", "empty")):
        with pytest.raises(InvalidSmilesError, match=reason):
            smiles_to_graph(bad)


def test_graph_edge_attr_is_validated_and_follows_edge_transforms():
    graph = Graph(edge_index=torch.tensor([[0, 1, 1, 2, 2], [1, 0, 2, 1, 2]]), num_nodes=3,
                  edge_attr=torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]]))
    graph.validate()
    with pytest.raises(GraphValidationError, match=r"edge_attr must have shape \(5, D\)"):
        Graph(edge_index=graph.edge_index, num_nodes=3, edge_attr=torch.ones(4, 1)).validate()
    no_loops = graph.remove_self_loops()
    assert no_loops.edge_attr.flatten().tolist() == [1.0, 2.0, 3.0, 4.0]
    doubled = Graph(edge_index=torch.tensor([[0, 0], [1, 1]]), num_nodes=2, edge_attr=torch.tensor([[1.0], [2.0]]))
    assert doubled.coalesce().edge_attr.flatten().tolist() == [3.0]          # duplicates summed, as PyG
    undirected = Graph(edge_index=torch.tensor([[0], [1]]), num_nodes=2, edge_attr=torch.tensor([[7.0]]))
    assert undirected.to_undirected().edge_attr.flatten().tolist() == [7.0, 7.0]
    with pytest.raises(GraphValidationError, match="cannot invent edge_attr"):
        graph.add_self_loops()
    batch = GraphBatch.collate([smiles_to_graph("CCO"), smiles_to_graph("c1ccccc1")], y=torch.tensor([[1.0], [0.0]]))
    assert batch.edge_attr.shape == (4 + 12, BOND_FEATURES) and batch.y.shape == (2, 1)
    assert batch.edge_index[:, 4:].min() == 3                                 # benzene's atoms follow ethanol's
    with pytest.raises(GraphValidationError, match="different edge feature widths"):
        GraphBatch.collate([smiles_to_graph("CCO"), Graph(edge_index=torch.tensor([[0], [1]]), num_nodes=2,
                                                          x=torch.zeros(2, ATOM_FEATURES))], y=torch.zeros(2, 1))


def test_edge_attr_survives_the_pyg_round_trip():
    pytest.importorskip("torch_geometric")
    graph = smiles_to_graph(ASPIRIN)
    data = graph.to_pyg()
    assert torch.equal(data.edge_attr, graph.edge_attr)
    assert torch.equal(Graph.from_pyg(data).edge_attr, graph.edge_attr)


def test_gine_layer_matches_pyg():
    pyg_conv = pytest.importorskip("torch_geometric.nn").GINEConv
    torch.manual_seed(0)
    graph = GraphBatch.collate([smiles_to_graph(ASPIRIN), smiles_to_graph("C1CC1N")], y=torch.zeros(2, 1))
    x = torch.randn(graph.x.size(0), 8, requires_grad=True)
    ours = GINEConv(torch.nn.Sequential(torch.nn.Linear(8, 5), torch.nn.ReLU(), torch.nn.Linear(5, 5)), 8,
                    BOND_FEATURES, eps=0.3)
    theirs = pyg_conv(torch.nn.Sequential(torch.nn.Linear(8, 5), torch.nn.ReLU(), torch.nn.Linear(5, 5)), eps=0.3,
                      edge_dim=BOND_FEATURES)
    theirs.nn.load_state_dict(ours.mlp.state_dict())
    theirs.lin.load_state_dict(ours.edge_lin.state_dict())
    mine = ours(x, graph.edge_index, graph.edge_attr)
    reference = theirs(x, graph.edge_index, graph.edge_attr)
    assert torch.allclose(mine, reference, atol=1e-5)
    (grad_mine,) = torch.autograd.grad(mine.square().sum(), x)
    (grad_reference,) = torch.autograd.grad(reference.square().sum(), x)
    assert torch.allclose(grad_mine, grad_reference, atol=1e-5)


# ------------------------------------------------------------------------------------------------- tables
def test_invalid_smiles_are_reported_by_row_and_skipped(tmp_path):
    table = _write_csv(tmp_path / "t.csv", ["name", "smiles", "y"], [
        ["ethanol", "CCO", "0"], ["broken ring", "C1CC", "1"], ["benzene", "c1ccccc1", "1"],
        ["nonsense", "not_a_smiles", "0"], ["empty", "", "1"], ["pentavalent", "C(C)(C)(C)(C)C", "0"],
        ["aspirin", ASPIRIN, ""]])
    data = load_molecule_csv(table, "smiles", ["y"])
    assert data.rows == [0, 2, 6] and data.smiles == ["CCO", "c1ccccc1", ASPIRIN]
    assert [(s.row, s.line, s.smiles) for s in data.skipped] == [
        (1, 3, "C1CC"), (3, 5, "not_a_smiles"), (4, 6, ""), (5, 7, "C(C)(C)(C)(C)C")]
    assert "valence" in data.skipped[3].reason.lower()
    assert data.targets[:2].flatten().tolist() == [0.0, 1.0] and torch.isnan(data.targets[2, 0])
    assert data.records[1]["name"] == "benzene"
    summary = data.summary()
    assert summary["skipped"] == 4 and summary["labels_missing"] == 1 and summary["positives"] == 1


def test_table_mistakes_raise_with_file_line_and_column(tmp_path):
    table = _write_csv(tmp_path / "t.csv", ["smiles", "y"], [["CCO", "0"], ["CCN", "0.5"]])
    with pytest.raises(MoleculeTableError, match=r"line 3, column 'y': classification labels must be 0 or 1"):
        load_molecule_csv(table, "smiles", ["y"])
    assert load_molecule_csv(table, "smiles", ["y"], task="regression").targets.flatten().tolist() == [0.0, 0.5]
    with pytest.raises(MoleculeTableError, match="no column 'activity'"):
        load_molecule_csv(table, "smiles", ["activity"])
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_molecule_csv(tmp_path / "missing.csv", "smiles", ["y"])


def test_tox21_keeps_twelve_tasks_with_missing_labels():
    data = load_shared_table("tox21", require_dataset("molecules"))
    assert data.num_tasks == 12 and len(data) + len(data.skipped) == 7831
    present = ~torch.isnan(data.targets)
    assert 0 < int((~present).sum()) and bool(present.any(0).all())


# ------------------------------------------------------------------------------------------------- splits
def test_scaffold_split_is_deterministic_and_keeps_scaffolds_apart():
    # five benzene derivatives, three cyclohexane derivatives, one pyridine, one naphthalene, 50/30/20:
    # the largest group fills train, the next fits validation, the rarest scaffolds go to test
    smiles = ["c1ccccc1C", "c1ccccc1O", "c1ccccc1N", "c1ccccc1Cl", "c1ccccc1F",
              "C1CCCCC1C", "C1CCCCC1O", "C1CCCCC1N", "c1ccncc1", "c1ccc2ccccc2c1"]
    train, val, test = scaffold_split(smiles, (0.5, 0.3, 0.2))
    assert train.tolist() == [0, 1, 2, 3, 4] and val.tolist() == [5, 6, 7] and test.tolist() == [8, 9]

    data = load_shared_table("bbbp", require_dataset("molecules"))
    parts = scaffold_split(data.smiles)
    again = scaffold_split(data.smiles)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(data)))
    scaffolds = [{murcko_scaffold(data.smiles[i]) for i in part} for part in parts]
    assert not scaffolds[0] & scaffolds[2] and not scaffolds[0] & scaffolds[1] and not scaffolds[1] & scaffolds[2]
    assert [len(p) for p in parts] == [1631, 204, 204]

    balanced = balanced_scaffold_split(data.smiles, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(balanced, balanced_scaffold_split(data.smiles, seed=3)))
    assert not np.array_equal(balanced[2], balanced_scaffold_split(data.smiles, seed=4)[2])
    assert sorted(np.concatenate(balanced).tolist()) == list(range(len(data)))
    scaffolds = [{murcko_scaffold(data.smiles[i]) for i in part} for part in balanced]
    assert not scaffolds[0] & scaffolds[2] and not scaffolds[0] & scaffolds[1] and not scaffolds[1] & scaffolds[2]
    assert len(balanced[0]) <= 0.8 * len(data) and len(balanced[1]) <= 0.1 * len(data) + 1


def test_random_split_follows_the_seed():
    a, b = random_split(100, seed=1), random_split(100, seed=1)
    c = random_split(100, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[0], c[0])
    assert [len(p) for p in a] == [80, 10, 10] and sorted(np.concatenate(a).tolist()) == list(range(100))
    with pytest.raises(ValueError, match="summing to 1"):
        random_split(100, (0.8, 0.1, 0.2))


# ------------------------------------------------------------------------------------------ loss and metrics
def test_masked_loss_ignores_missing_labels():
    outputs = torch.tensor([[0.3, -1.0, 2.0], [1.5, 0.2, -0.7]], requires_grad=True)
    targets = torch.tensor([[1.0, float("nan"), 0.0], [float("nan"), 1.0, float("nan")]])
    loss = masked_loss(outputs, targets, "classification")
    present = ~torch.isnan(targets)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(outputs[present], targets[present])
    assert torch.allclose(loss, expected)
    loss.backward()
    assert torch.all(outputs.grad[~present] == 0) and torch.all(outputs.grad[present] != 0)
    changed = outputs.detach().clone()
    changed[~present] = 100.0                          # predictions for missing labels do not matter
    assert torch.allclose(masked_loss(changed, targets, "classification"), expected)
    regression = masked_loss(outputs.detach(), targets, "regression")
    assert torch.allclose(regression, ((outputs.detach()[present] - targets[present]) ** 2).mean())
    nothing = masked_loss(outputs, torch.full_like(targets, float("nan")), "classification")
    assert float(nothing.detach()) == 0.0


def test_task_metrics_skip_tasks_with_one_class():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = rng.random((40, 3))
    labels = (rng.random((40, 3)) < 0.4).astype(float)
    labels[:, 1] = 0.0                                 # one class only: no AUC
    labels[::5, 0] = np.nan                            # missing labels are left out
    result = task_metrics(scores, labels, "classification", ["a", "b", "c"])
    present = ~np.isnan(labels[:, 0])
    auc_a = sklearn_metrics.roc_auc_score(labels[present, 0], scores[present, 0])
    auc_c = sklearn_metrics.roc_auc_score(labels[:, 2], scores[:, 2])
    assert result["auc_per_task"]["b"] is None and result["auc_tasks"] == 2
    assert result["auc"] == pytest.approx((auc_a + auc_c) / 2)
    rmse = task_metrics(np.array([[1.0], [3.0]]), np.array([[0.0], [1.0]]), "regression")
    assert rmse["rmse"] == pytest.approx(np.sqrt((1 + 4) / 2))


# ------------------------------------------------------------------------------------------------ training
def test_short_training_reduces_the_loss():
    data = load_shared_table("bbbp", require_dataset("molecules"))
    keep = list(range(48))
    data.graphs, data.smiles, data.targets = [data.graphs[i] for i in keep], data.smiles[:48], data.targets[:48]
    split = (np.arange(0, 36), np.arange(36, 42), np.arange(42, 48))
    config = MoleculeConfig(hidden=32, num_layers=3, dropout=0.0, epochs=25, patience=25, batch_size=12, lr=3e-3)
    result = train_molecule_model(data, split, config, seed=0, show_progress=False)
    losses = result.history["train_loss"]
    assert len(losses) == 25 and losses[-1] < 0.5 * losses[0]
    assert 1 <= result.best_epoch <= 25 and result.selection in ("val_auc", "val_loss")


# ------------------------------------------------------------------------------------------------ commands
def test_molecules_and_screen_commands(tmp_path, capsys, last_json):
    data = load_shared_table("bbbp", require_dataset("molecules"))
    table = _write_csv(tmp_path / "train.csv", ["smiles", "p_np"],
                       [[s, int(t)] for s, t in zip(data.smiles[:60], data.targets[:60, 0].tolist())])
    assert main(["gnn", "molecules", "--csv", str(table), "--targets", "p_np", "--split", "random", "--seeds", "2",
                 "--epochs", "3", "--hidden", "16", "--layers", "2", "--runs-dir", str(tmp_path / "runs"),
                 "--json"]) == 0
    result = last_json()
    assert {"test_auc_mean", "test_auc_std", "val_auc_mean", "checkpoint", "run_dir"} <= set(result)
    assert result["seeds"] == 2 and result["split_sizes"] == [48, 6, 6] and result["skipped"] == 0
    checkpoint = Path(result["checkpoint"])
    assert checkpoint.is_file() and (Path(result["run_dir"]) / "metrics.json").is_file()

    candidates = _write_csv(tmp_path / "library.csv", ["id", "smiles", "score"], [
        ["m1", "CCO", "x"], ["m2", "C1CC", "x"], ["m3", ASPIRIN, "x"], ["m4", "c1ccccc1N", "x"],
        ["m5", "CN1CCC[C@H]1c1cccnc1", "x"], ["m6", "???", "x"]])
    out = tmp_path / "ranked.csv"
    assert main(["gnn", "screen", "--model", str(checkpoint), "--csv", str(candidates), "--top", "3",
                 "--out", str(out), "--json"]) == 0
    report = last_json()
    assert report["scored"] == 4 and report["written"] == 3 and report["skipped"] == 2
    assert [(r["row"], r["line"], r["smiles"]) for r in report["skipped_rows"]] == [(1, 3, "C1CC"), (5, 7, "???")]
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["rank", "smiles", "score", "id", "input_score"]
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    model, payload = load_molecule_model(checkpoint)
    valid = ["CCO", ASPIRIN, "c1ccccc1N", "CN1CCC[C@H]1c1cccnc1"]
    expected = predict_graphs(model, [smiles_to_graph(s) for s in valid], payload["task"])[:, 0].numpy()
    best_three = [valid[k] for k in np.argsort(-expected, kind="stable")[:3]]
    assert [r["smiles"] for r in rows] == best_three
    assert [float(r["score"]) for r in rows] == pytest.approx(sorted(expected.tolist(), reverse=True)[:3], rel=1e-5)
    assert {r["id"] for r in rows} <= {"m1", "m3", "m4", "m5"}

    before = out.read_bytes()
    assert main(["gnn", "screen", "--model", str(checkpoint), "--csv", str(candidates), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == before
    # the final write refuses too, should the file appear while the library is being scored
    with pytest.raises(FileExistsError):
        _write_new_csv(out, ["rank"], [[1]])
    assert out.read_bytes() == before and not list(tmp_path.glob(".tmp-*"))


def test_molecules_command_regression(tmp_path, capsys, last_json):
    root = require_dataset("molecules")
    assert main(["gnn", "molecules", "--csv", str(root / "moleculenet" / "delaney-processed.csv"), "--targets",
                 "measured log solubility in mols per litre", "--task", "regression", "--split", "scaffold",
                 "--epochs", "1", "--hidden", "16", "--layers", "2", "--runs-dir", str(tmp_path), "--json"]) == 0
    result = last_json()
    assert result["split_sizes"] == [902, 113, 113] and result["test_rmse_mean"] > 0
    model, _ = load_molecule_model(result["checkpoint"])
    assert -4.0 < float(model.target_mean) < -2.0 and 1.5 < float(model.target_std) < 2.5   # log mol/L
