"""OGB's molecule featurization through gnnseg's pipeline (exactly ``smiles2graph``'s arrays), the embeddings of its
integer codes against OGB's AtomEncoder / BondEncoder, a short training and screening run with
``--featurizer ogb``, and the one-line error when ogb is missing."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit", reason="molecule support needs RDKit: pip install 'gnnseg[chem]' (in the test extra)")

from gnnseg.cli import main
from gnnseg.gnn.batch import GraphBatch
from gnnseg.gnn.categorical_features import CategoricalEmbedding, categorical_one_hot
from gnnseg.gnn.datasets.molecule_tables import SHARED_TABLES, load_molecule_csv
from gnnseg.gnn.layers.gine import GINEConv
from gnnseg.gnn.models import gin_mlp
from gnnseg.gnn.molecule_graphs import smiles_to_graph
from gnnseg.gnn.ogb_molecule_features import OGB_ATOM_VOCABULARY, OGB_BOND_VOCABULARY
from gnnseg.gnn.tasks.molecule_property import MoleculeConfig, predict_graphs, train_molecule_model
from gnnseg.gnn.tasks.molecule_runs import load_molecule_model
from tests.conftest import require_dataset

ogb_utils = pytest.importorskip("ogb.utils", reason="the oracle needs ogb (in the test extra)")
from ogb.graphproppred.mol_encoder import AtomEncoder, BondEncoder  # noqa: E402
from ogb.utils.features import get_atom_feature_dims, get_bond_feature_dims  # noqa: E402

EXTRA = ["C[C@H](N)C(=O)O", "F/C=C/F", "[NH4+].[Cl-]", "C", "[Na+].[O-]C(=O)c1ccccc1", "c1ccc2c(c1)[nH]c1ccccc12"]


def shared_smiles(per_table: int = 12) -> list[str]:
    """``per_table`` SMILES spread through each shared molecule table (skips when a file is absent)."""
    chosen = []
    for relative, column, _, _ in SHARED_TABLES.values():
        with require_dataset(f"molecules/{relative}").open(newline="", encoding="utf-8-sig") as handle:
            rows = [row[column] for row in csv.DictReader(handle)]
        chosen += [rows[k] for k in np.linspace(0, len(rows) - 1, per_table).astype(int)]
    return chosen


def write_table(path: Path, smiles: list[str], labels: list[int] | None = None) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles", "y"])
        writer.writerows([s, "" if labels is None else labels[k]] for k, s in enumerate(smiles))
    return path


def test_vocabularies_are_ogbs():
    assert OGB_ATOM_VOCABULARY == tuple(get_atom_feature_dims())
    assert OGB_BOND_VOCABULARY == tuple(get_bond_feature_dims())


def test_tables_featurized_with_ogb_hold_exactly_smiles2graphs_arrays(tmp_path):
    smiles = shared_smiles() + EXTRA
    data = load_molecule_csv(write_table(tmp_path / "mix.csv", smiles), "smiles", (), featurizer="ogb")
    assert data.featurizer == "ogb" and len(data) == len(smiles) == 54 and not data.skipped
    for text, graph in zip(smiles, data.graphs):
        expected = ogb_utils.smiles2graph(text)
        assert graph.x.dtype == graph.edge_attr.dtype == torch.int64
        assert np.array_equal(graph.x.numpy(), expected["node_feat"]), text
        assert np.array_equal(graph.edge_index.numpy(), expected["edge_index"]), text
        assert np.array_equal(graph.edge_attr.numpy(), expected["edge_feat"]), text
        assert graph.num_nodes == expected["num_nodes"]
    methane = data.graphs[smiles.index("C")]
    assert methane.x.tolist() == [[5, 0, 4, 5, 4, 0, 2, 0, 0]]     # carbon, degree 4 with its Hs, 4 Hs, SP3
    assert methane.edge_attr.shape == (0, 3) and methane.edge_index.shape == (2, 0)
    trans = data.graphs[smiles.index("F/C=C/F")].edge_attr
    assert trans[2].tolist() == [1, 2, 0]                          # the double bond: STEREOE
    # invalid SMILES are skipped with the same reasons as gnnseg's own featurizer gives
    broken = load_molecule_csv(write_table(tmp_path / "bad.csv", ["CCO", "C1CC", "???"]), "smiles", (),
                               featurizer="ogb")
    assert [(s.row, s.smiles) for s in broken.skipped] == [(1, "C1CC"), (2, "???")]
    with pytest.raises(ValueError, match="featurizer must be one of"):
        smiles_to_graph("CCO", featurizer="rdkit")


def test_embeddings_equal_ogbs_atom_and_bond_encoders():
    data = [ogb_utils.smiles2graph(s) for s in EXTRA]
    atoms = torch.from_numpy(np.concatenate([g["node_feat"] for g in data]))
    bonds = torch.from_numpy(np.concatenate([g["edge_feat"] for g in data]))
    torch.manual_seed(0)
    theirs, ours = AtomEncoder(16), CategoricalEmbedding(OGB_ATOM_VOCABULARY, 16)
    for mine, reference in zip(ours.embeddings, theirs.atom_embedding_list):
        mine.weight.data.copy_(reference.weight.data)
    assert torch.allclose(ours(atoms), theirs(atoms), atol=1e-6)

    # a linear map of the bonds' one-hot columns is a BondEncoder: one row per column's code, summed
    bond_encoder = BondEncoder(16)
    one_hot = categorical_one_hot(bonds, OGB_BOND_VOCABULARY)
    assert one_hot.shape == (bonds.size(0), 13) and torch.equal(one_hot.sum(1), torch.full((bonds.size(0),), 3.0))
    conv = GINEConv(gin_mlp(16, 16), 16, 13)
    weights = torch.cat([e.weight.data for e in bond_encoder.bond_embedding_list]).t()
    with torch.no_grad():
        conv.edge_lin.weight.copy_(weights)
        conv.edge_lin.bias.zero_()
    assert torch.allclose(conv.edge_lin(one_hot), bond_encoder(bonds), atol=1e-6)

    # so GINE on the embedded atoms and one-hot bonds is OGB's GIN layer: mlp((1 + eps) h_i + sum ReLU(h_j + e_ji))
    batch = GraphBatch.collate([smiles_to_graph(s, featurizer="ogb") for s in EXTRA], y=torch.zeros(len(EXTRA)))
    h = ours(batch.x)
    source, target = batch.edge_index
    messages = torch.relu(h[source] + bond_encoder(batch.edge_attr))
    reference = conv.mlp(h + torch.zeros_like(h).index_add_(0, target, messages))
    assert torch.allclose(conv(h, batch.edge_index, one_hot), reference, atol=1e-5)


def test_codes_outside_a_vocabulary_are_named():
    codes = torch.tensor([[5, 0, 4, 5, 4, 0, 4, 0, 0], [5, 0, 12, 5, 4, 0, 4, 0, 0]])
    with pytest.raises(ValueError, match="column 2 row 1 holds code 12, outside 0..11"):
        CategoricalEmbedding(OGB_ATOM_VOCABULARY, 4)(codes)
    with pytest.raises(ValueError, match=r"integer codes of shape \(N, 3\)"):
        categorical_one_hot(torch.ones((2, 13)), OGB_BOND_VOCABULARY)


def test_a_short_training_on_ogb_features_gives_finite_scores(tmp_path):
    smiles = shared_smiles(per_table=20)
    labels = [k % 2 for k in range(len(smiles))]
    data = load_molecule_csv(write_table(tmp_path / "t.csv", smiles, labels), "smiles", ["y"], featurizer="ogb")
    split = (np.arange(0, 60), np.arange(60, 70), np.arange(70, 80))
    config = MoleculeConfig(hidden=16, num_layers=2, epochs=4, patience=4, batch_size=16)
    result = train_molecule_model(data, split, config, seed=0, show_progress=False)
    assert result.epochs_run == 4 and all(math.isfinite(v) for v in result.history["train_loss"])
    assert 0.0 <= result.test["auc"] <= 1.0 and 0.0 <= result.val["auc"] <= 1.0


def test_molecules_and_screen_commands_with_the_ogb_featurizer(tmp_path, last_json):
    smiles = shared_smiles(per_table=15)
    table = write_table(tmp_path / "train.csv", smiles, [int("N" in s) for s in smiles])
    assert main(["gnn", "molecules", "--csv", str(table), "--targets", "y", "--split", "random", "--featurizer",
                 "ogb", "--epochs", "2", "--hidden", "16", "--layers", "2", "--runs-dir", str(tmp_path / "runs"),
                 "--json"]) == 0
    result = last_json()
    assert result["featurizer"] == "ogb" and math.isfinite(result["test_auc_mean"])
    model, payload = load_molecule_model(result["checkpoint"])
    assert model.featurizer == "ogb" and payload["featurizer"].startswith("ogb.smiles2graph")
    assert (payload["in_channels"], payload["edge_channels"]) == (9, 3)

    library = write_table(tmp_path / "library.csv", EXTRA)
    assert main(["gnn", "screen", "--model", result["checkpoint"], "--csv", str(library), "--top", "6",
                 "--out", str(tmp_path / "ranked.csv"), "--json"]) == 0
    report = last_json()
    expected = predict_graphs(model, [smiles_to_graph(s, "ogb") for s in EXTRA], "classification")[:, 0]
    assert report["scored"] == 6 and report["top_score"] == pytest.approx(float(expected.max()), rel=1e-5)


def test_missing_ogb_is_one_line_naming_the_install(monkeypatch, tmp_path, capsys):
    for name in [m for m in sys.modules if m == "ogb" or m.startswith("ogb.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError) as error:
        smiles_to_graph("CCO", featurizer="ogb")
    message = str(error.value)
    assert message == ("--featurizer ogb (OGB's smiles2graph) needs the ogb package: pip install 'gnnseg[ogb]' "
                       "(or pip install ogb==1.3.6)")
    with pytest.raises(ImportError, match=r"pip install 'gnnseg\[ogb\]'"):
        load_molecule_csv(write_table(tmp_path / "t.csv", ["CCO"]), "smiles", (), featurizer="ogb")
    table = write_table(tmp_path / "y.csv", ["CCO", "CCN", "CCC"], [0, 1, 0])
    assert main(["gnn", "molecules", "--csv", str(table), "--targets", "y", "--featurizer", "ogb",
                 "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "needs the ogb package: pip install 'gnnseg[ogb]'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    # gnnseg's own featurizer and a model for OGB's codes need no ogb
    assert smiles_to_graph("CCO").x.shape == (3, 70)
    codes = torch.tensor([[5, 0, 4, 5, 4, 0, 4, 0, 0]])
    assert CategoricalEmbedding(OGB_ATOM_VOCABULARY, 4)(codes).shape == (1, 4)
