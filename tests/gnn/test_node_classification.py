"""Training: short real runs on Cora and karate, early stopping, checkpoints, and the CLI contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from gnnseg.cli import main
from gnnseg.core import CheckpointError, save_checkpoint
from gnnseg.gnn import Graph, GraphValidationError
from gnnseg.gnn.datasets import load_karate, load_planetoid
from gnnseg.gnn.tasks.karate_embeddings import karate_embeddings
from gnnseg.gnn.tasks.node import NodeConfig, _Selection, _StoppingRule, preset, train_node_classifier
from gnnseg.gnn.tasks.node_runs import evaluate_checkpoint, run_node_classification
from gnnseg.gnn.tasks.saved_models import evaluate_saved_classifier


def test_gcn_on_cora_beats_75_percent(planetoid_root):
    graph = load_planetoid("cora", planetoid_root)
    result = train_node_classifier(graph, preset("gcn"), seed=0)
    assert result.test_acc > 0.75
    assert 0 <= result.best_epoch < result.epochs_run <= 200
    assert len(result.epoch_times_ms) == result.epochs_run
    assert result.history["val_loss"][result.best_epoch] == min(result.history["val_loss"])


@pytest.mark.parametrize("model,epochs,floor", [("sgc", 100, 0.78), ("gat", 100, 0.75), ("gin", 60, 0.5)])
def test_every_model_learns_cora(planetoid_root, model, epochs, floor):
    graph = load_planetoid("cora", planetoid_root)     # short runs: the full figures are in benchmarks/
    result = train_node_classifier(graph, preset(model, "cora", epochs=epochs), seed=1)
    assert result.test_acc > floor, f"{model} reached only {result.test_acc:.3f}"


def test_same_seed_same_result():
    graph = load_karate()
    config = NodeConfig(epochs=30, stopping="none", select="last", row_normalize_features=False)
    first, second = (train_node_classifier(graph, config, seed=3) for _ in range(2))
    assert first.history["train_loss"] == second.history["train_loss"]


@pytest.mark.slow
def test_compiled_full_graph_training_follows_eager_training(planetoid_root):
    graph = load_planetoid("cora", planetoid_root)
    for model in ("gcn", "gat"):
        config = preset(model, "cora", epochs=3, dropout=0.0, value_dropout=0.0)
        eager = train_node_classifier(graph, config, seed=2, show_progress=False)
        compiled = train_node_classifier(graph, preset(model, "cora", epochs=3, dropout=0.0, value_dropout=0.0,
                                                       compile=True), seed=2, show_progress=False)
        assert compiled.history["train_loss"] == pytest.approx(eager.history["train_loss"], rel=1e-4)
        for name, tensor in eager.state_dict.items():
            torch.testing.assert_close(compiled.state_dict[name], tensor, rtol=1e-4, atol=1e-4)


def test_stopping_rules():
    window = _StoppingRule("window", 3)
    assert not any(window.should_stop(loss, 0.5) for loss in (1.0, 0.9, 0.8, 0.7))
    assert window.should_stop(0.95, 0.5)        # above the mean of the previous three (0.8)
    patience = _StoppingRule("patience", 2)
    assert not patience.should_stop(1.0, 0.5)
    assert not patience.should_stop(1.1, 0.4)
    assert patience.should_stop(1.2, 0.3)       # two epochs without any improvement


def test_selection_rules():
    epochs = [{"val_loss": 1.0, "val_acc": 0.5}, {"val_loss": 0.8, "val_acc": 0.4},
              {"val_loss": 0.7, "val_acc": 0.6}, {"val_loss": 0.9, "val_acc": 0.7}]
    picks = {rule: [_Selection(rule)] for rule in ("val_loss", "val_acc_and_loss", "last")}
    chosen = {rule: [e for e, scores in enumerate(epochs) if selection[0].improved(scores)]
              for rule, selection in picks.items()}
    assert chosen == {"val_loss": [0, 1, 2], "val_acc_and_loss": [0, 2], "last": [0, 1, 2, 3]}
    with pytest.raises(ValueError, match="unknown selection rule"):
        _Selection("test_acc").improved(epochs[0])


def test_training_rejects_unusable_graphs():
    graph = load_karate()
    with pytest.raises(GraphValidationError, match="needs graph.y"):
        train_node_classifier(Graph(edge_index=graph.edge_index, num_nodes=34, x=graph.x), preset("gcn"))
    float_labels = Graph(edge_index=graph.edge_index, num_nodes=34, x=graph.x, y=graph.y.float())
    with pytest.raises(GraphValidationError, match="one integer class label per node, but y is torch.float32"):
        train_node_classifier(float_labels, preset("gcn"))
    with pytest.raises(ValueError, match="unknown model 'mlp'"):
        preset("mlp")


def test_karate_embeddings_separate_the_clubs():
    outcomes, graph = karate_embeddings(range(2, 3))
    (two_layers,) = outcomes
    assert two_layers.embedding.shape == (34, 2)
    assert two_layers.accuracy >= 0.85   # two labeled members suffice to find both clubs


def test_run_directory_checkpoint_and_eval(planetoid_root, tmp_path):
    summary = run_node_classification("gcn", "cora", planetoid_root, seeds=2, runs_root=tmp_path,
                                      show_progress=False)
    run_dir = tmp_path / "gnn-train"
    (folder,) = run_dir.iterdir()
    assert {p.name for p in folder.iterdir()} >= {"config.json", "metrics.json", "curves.png", "model.pt"}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert len(metrics["per_seed"]) == 2 and metrics["summary"]["seeds"] == 2
    scores = evaluate_checkpoint(summary["checkpoint"], planetoid_root)
    best = max(metrics["per_seed"], key=lambda r: r["val_acc"])
    assert scores["test_acc"] == pytest.approx(best["test_acc"])
    assert scores["val_acc"] == pytest.approx(best["val_acc"])

    with pytest.raises(CheckpointError, match="trained on 1433 features / 7 classes"):
        evaluate_checkpoint(summary["checkpoint"], planetoid_root, dataset="citeseer")
    other = save_checkpoint({"format": "something/1", "config": {}, "state_dict": {}, "dataset": "cora",
                             "in_channels": 1, "num_classes": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a full-batch node classifier"):
        evaluate_checkpoint(other, planetoid_root)
    assert evaluate_saved_classifier(summary["checkpoint"], planetoid_root) == scores
    with pytest.raises(CheckpointError, match="'something/1' checkpoint, not a node classifier \\(known: "):
        evaluate_saved_classifier(other, planetoid_root)


def test_cli_json_contract(planetoid_root, tmp_path, capsys, last_json):
    code = main(["gnn", "train", "--model", "sgc", "--dataset", "cora", "--root", str(planetoid_root),
                 "--seeds", "2", "--runs-dir", str(tmp_path), "--json"])
    assert code == 0
    result = last_json()
    for key in ("model", "dataset", "seeds", "test_acc_mean", "test_acc_std", "val_acc_mean",
                "epoch_time_ms_median"):
        assert key in result, key
    assert result["model"] == "sgc" and result["dataset"] == "cora" and result["seeds"] == 2
    assert 0.7 < result["test_acc_mean"] <= 1.0 and 0.0 <= result["test_acc_std"] < 0.05

    code = main(["gnn", "eval", "--checkpoint", result["checkpoint"], "--root", str(planetoid_root), "--json"])
    assert code == 0
    evaluated = last_json()
    assert 0.7 < evaluated["test_acc"] <= 1.0


def test_cli_reports_bad_input_without_a_traceback(tmp_path):
    process = subprocess.run([sys.executable, "-m", "gnnseg.cli", "gnn", "train", "--dataset", "pubmed", "--root",
                              str(tmp_path), "--runs-dir", str(tmp_path)], capture_output=True, text=True)
    assert process.returncode == 2
    assert "ind.pubmed.allx" in process.stderr and "Traceback" not in process.stderr
