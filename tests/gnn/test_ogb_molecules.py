"""OGB molecule folders: the graphs OGB's reader makes, the official split, training through the CLI, bad files."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from gnnseg.cli import main
from gnnseg.gnn.datasets.molecule_tables import split_dataset
from gnnseg.gnn.datasets.ogb import OGBError
from gnnseg.gnn.datasets.ogb_molecules import load_ogb_molecules, ogb_molecule_name

ogb_utils = pytest.importorskip("ogb.utils", reason="OGB's smiles2graph writes the folders (ogb is in the test extra)")
pytest.importorskip("rdkit", reason="smiles2graph needs RDKit (in the test extra)")
from ogb.io.read_graph_raw import read_csv_graph_raw  # noqa: E402  (the oracle: OGB's own reader)

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Oc1ccccc1C(=O)O", "C[C@H](N)C(=O)O", "C#N", "O=C=O", "CCN(CC)CC",
          "c1ccncc1", "ClC(Cl)Cl", "CC(C)(C)O", "C1CCCCC1", "OC(=O)CCC(=O)O", "N#Cc1ccccc1", "CS(=O)C",
          "C=CC=C", "[Na+].[Cl-]", "CC(=O)N", "c1ccc2ccccc2c1", "OCC(O)CO", "FC(F)(F)c1ccccc1"]


def write_gz(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as handle:
        handle.write(text)


def lines(rows) -> str:
    return "".join(",".join(str(v) for v in row) + "\n" for row in rows)


def fake_ogb_molecules(folder: Path, smiles=SMILES, labels=None) -> Path:
    """An ``ogbg-molbbbp``-style folder written as OGB writes it: each bond once, smiles2graph's codes."""
    graphs = [ogb_utils.smiles2graph(text) for text in smiles]
    labels = labels if labels is not None else [[k % 2] for k in range(len(smiles))]
    raw = folder / "raw"
    write_gz(raw / "num-node-list.csv.gz", lines([[g["num_nodes"]] for g in graphs]))
    write_gz(raw / "num-edge-list.csv.gz", lines([[g["edge_index"].shape[1] // 2] for g in graphs]))
    write_gz(raw / "node-feat.csv.gz", lines(np.concatenate([g["node_feat"] for g in graphs])))
    write_gz(raw / "edge.csv.gz", lines(np.concatenate([g["edge_index"][:, 0::2].T for g in graphs])))
    write_gz(raw / "edge-feat.csv.gz", lines(np.concatenate([g["edge_feat"][0::2] for g in graphs])))
    write_gz(raw / "graph-label.csv.gz", lines(labels))
    mapping = io.StringIO()
    writer = csv.writer(mapping)
    writer.writerow(["p_np", "smiles", "mol_id"])
    writer.writerows([[row[0], text, k] for k, (row, text) in enumerate(zip(labels, smiles))])
    write_gz(folder / "mapping" / "mol.csv.gz", mapping.getvalue())
    order = np.random.default_rng(0).permutation(len(smiles))
    for part, index in (("train", order[:14]), ("valid", order[14:17]), ("test", order[17:])):
        write_gz(folder / "split" / "scaffold" / f"{part}.csv.gz", lines([[i] for i in sorted(index)]))
    return folder


def test_molecules_are_the_graphs_ogbs_reader_and_smiles2graph_make(tmp_path):
    folder = fake_ogb_molecules(tmp_path / "ogbg_molbbbp")
    dataset = load_ogb_molecules(folder)
    assert dataset.name == "ogbg-molbbbp" and dataset.task == "classification" and dataset.featurizer == "ogb"
    assert dataset.smiles == SMILES and dataset.target_names == ["p_np"]
    oracle = read_csv_graph_raw(str(folder / "raw"), add_inverse_edge=True)
    for graph, expected, text in zip(dataset.graphs, oracle, SMILES, strict=True):
        assert torch.equal(graph.edge_index, torch.from_numpy(expected["edge_index"]))
        assert torch.equal(graph.x, torch.from_numpy(expected["node_feat"]))
        assert torch.equal(graph.edge_attr, torch.from_numpy(expected["edge_feat"]))
        direct = ogb_utils.smiles2graph(text)
        assert torch.equal(graph.edge_index, torch.from_numpy(direct["edge_index"]))
    assert dataset.targets[:, 0].tolist() == [k % 2 for k in range(len(SMILES))]
    train, valid, test = split_dataset(dataset, "official")
    assert (len(train), len(valid), len(test)) == (14, 3, 3)
    assert sorted(np.concatenate([train, valid, test]).tolist()) == list(range(len(SMILES)))


def test_missing_labels_are_nan_and_names_come_from_the_folder(tmp_path):
    labels = [[k % 2] if k % 5 else [""] for k in range(len(SMILES))]
    dataset = load_ogb_molecules(fake_ogb_molecules(tmp_path / "bbbp", labels=labels))
    assert dataset.name == "ogbg-molbbbp"                       # the folder the zip unpacks to
    assert int(torch.isnan(dataset.targets).sum()) == 4
    assert ogb_molecule_name(tmp_path / "ogbg-molhiv") == "ogbg-molhiv"
    assert ogb_molecule_name(tmp_path / "my_molecules") is None


def test_a_csv_table_has_no_official_split(tmp_path):
    dataset = load_ogb_molecules(fake_ogb_molecules(tmp_path / "ogbg_molbbbp"))
    dataset.official_split = None
    with pytest.raises(ValueError, match="has no official split"):
        split_dataset(dataset, "official")


def test_an_ogb_folder_trains_through_the_cli(tmp_path, last_json):
    folder = fake_ogb_molecules(tmp_path / "ogbg_molbbbp")
    code = main(["gnn", "molecules", "--ogb", str(folder), "--epochs", "2", "--hidden", "16", "--layers", "2",
                 "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert code == 0
    result = last_json()
    assert result["dataset"] == "ogbg-molbbbp" and result["split"] == "official" and result["featurizer"] == "ogb"
    assert result["split_sizes"] == [14, 3, 3] and result["molecules"] == len(SMILES)
    assert Path(result["checkpoint"]).is_file()


@pytest.mark.parametrize("arguments,message", [
    (["--targets", "p_np"], "--targets do not apply to --ogb"),
    (["--featurizer", "gnnseg"], "--featurizer gnnseg do not apply to --ogb"),
])
def test_cli_refuses_options_an_ogb_folder_brings_itself(tmp_path, capsys, arguments, message):
    folder = fake_ogb_molecules(tmp_path / "ogbg_molbbbp")
    assert main(["gnn", "molecules", "--ogb", str(folder), "--runs-dir", str(tmp_path / "runs"), *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def corrupt(path: Path, edit) -> None:
    with gzip.open(path, "rt") as handle:
        text = handle.read()
    write_gz(path, edit(text))


@pytest.mark.parametrize("file,edit,message", [
    ("raw/node-feat.csv.gz", lambda t: "200" + t[t.index(","):], "atom code 200 in column 0 is outside"),
    ("raw/edge.csv.gz", lambda t: "0,9\n" + t[t.index("\n") + 1:], "molecule 0 has a bond to an atom outside 0..2"),
    ("raw/graph-label.csv.gz", lambda t: t + "1\n", "has 21 rows for 20 molecules"),
    ("raw/graph-label.csv.gz", lambda t: "yes\n" + t[t.index("\n") + 1:], "label 'yes' is not a number"),
    ("split/scaffold/test.csv.gz", lambda t: t + "99\n", "refers to a molecule outside 0..19"),
    ("raw/num-edge-list.csv.gz", lambda t: "5\n" + t[t.index("\n") + 1:],
     r"edge-feat.csv.gz has \d+ rows for \d+ bonds"),
])
def test_broken_files_are_named(tmp_path, file, edit, message):
    folder = fake_ogb_molecules(tmp_path / "ogbg_molbbbp")
    corrupt(folder / file, edit)
    with pytest.raises(OGBError, match=message):
        load_ogb_molecules(folder)


def test_unknown_and_average_precision_datasets_are_refused(tmp_path):
    folder = fake_ogb_molecules(tmp_path / "my_molecules")
    with pytest.raises(ValueError, match="cannot tell which OGB molecule dataset"):
        load_ogb_molecules(folder)
    with pytest.raises(ValueError, match="ogbg-molpcba is scored by ap"):
        load_ogb_molecules(folder, name="ogbg-molpcba")
    with pytest.raises(FileNotFoundError, match="is not an OGB dataset folder"):
        load_ogb_molecules(tmp_path / "nothing")
