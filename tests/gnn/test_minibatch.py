"""Mini-batch training: models on blocks, exact layer-wise inference, the trainer (workers, checkpoints, resume),
the CLI contract and bad input."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import gnnseg.gnn.tasks.minibatch as minibatch_module
from gnnseg.cli import main
from gnnseg.core import CheckpointError
from gnnseg.gnn import models
from gnnseg.gnn.datasets import load_planetoid
from gnnseg.gnn.datasets.synthetic import SyntheticConfig, make_synthetic
from gnnseg.gnn.graph import Graph, GraphValidationError
from gnnseg.gnn.sampling import (
    FastGCNSampler,
    FullNeighborhood,
    LADIESSampler,
    NeighborSampler,
)
from gnnseg.gnn.sampling.neighbor import resolve_backend
from gnnseg.gnn.tasks.minibatch import (
    SCORE_KEYS,
    MiniBatchConfig,
    SeedBatches,
    epoch_shard,
    minibatch_config,
    minibatch_preset,
    record_evaluation,
    same_run_settings,
    train_minibatch,
)
from gnnseg.gnn.tasks.minibatch_runs import run_minibatch_classification
from gnnseg.gnn.tasks.saved_models import evaluate_saved_classifier
from tests.conftest import awkward_graph


def awkward() -> Graph:
    """30 nodes, directed, with self-loops, duplicate edges and isolated nodes 27-29."""
    return Graph(awkward_graph(seed=0), 30)


def small_synthetic(**overrides) -> Graph:
    values = {"num_nodes": 600, "avg_degree": 8, "num_classes": 4, "num_features": 8, "label_noise": 0.0,
              "feature_noise": 2.0, "homophily": 0.7, "train_fraction": 0.3, "val_fraction": 0.2,
              "seed": 3} | overrides
    return make_synthetic(SyntheticConfig(**values))[0]


MODELS = {
    "sage-mean": lambda: models.sage(6, 8, 3, num_layers=2),
    "sage-pool": lambda: models.sage(6, 8, 3, num_layers=2, aggregator="pool", normalize=True),
    "gcn-mean": lambda: models.gcn(6, 8, 3, num_layers=3, normalization="mean", cached=False),
    "gat": lambda: models.gat(6, 4, 3, heads=2, num_layers=2, cached=False),
    "gin": lambda: models.gin(6, 8, 3, num_layers=2),
}


# --------------------------------------------------------------------------------- layer-wise inference
@pytest.mark.parametrize("name", list(MODELS))
def test_layerwise_inference_equals_the_full_graph_forward(name):
    """Whole neighbourhoods, chunk by chunk (chunks of 1-4 nodes and about 5 edges, a hub alone in its chunk),
    give the full-graph outputs: self-loops, duplicate edges and isolated nodes included."""
    torch.manual_seed(0)
    graph = awkward()
    model = MODELS[name]().eval()
    x = torch.randn(30, 6)
    full = model(x, graph.edge_index)
    neighborhood = NeighborSampler(graph, [1] * model.num_message_passing_layers).full_neighborhood()
    for max_nodes, max_edges in ((4, 5), (1, 1), (64, 10_000)):
        layerwise = model.layerwise_inference(x, neighborhood, max_nodes=max_nodes, max_edges=max_edges)
        torch.testing.assert_close(layerwise, full, atol=1e-5, rtol=1e-5)
    wanted = torch.tensor([28, 3, 17, 0])
    torch.testing.assert_close(model.layerwise_inference(x, neighborhood, output_nodes=wanted, max_nodes=3),
                               full[wanted], atol=1e-5, rtol=1e-5)
    assert model.training is False


def test_layerwise_inference_keeps_the_training_mode_and_checks_inputs():
    graph = awkward()
    model = models.sage(6, 8, 3).train()
    neighborhood = NeighborSampler(graph, [2, 2]).full_neighborhood()
    model.layerwise_inference(torch.randn(30, 6), neighborhood)
    assert model.training
    with pytest.raises(ValueError, match="x has 29 rows but the graph has 30 nodes"):
        model.layerwise_inference(torch.randn(29, 6), neighborhood)
    with pytest.raises(ValueError, match="output_nodes must be a non-empty 1-D tensor"):
        model.layerwise_inference(torch.randn(30, 6), neighborhood, output_nodes=torch.tensor([], dtype=torch.long))


@pytest.mark.parametrize("sampler_type", [FastGCNSampler, LADIESSampler])
def test_layerwise_inference_of_an_importance_model_is_the_full_a_hat_propagation(sampler_type):
    """FastGCN / LADIES models are evaluated with A_hat itself (the reference's full-batch evaluation)."""
    torch.manual_seed(1)
    graph = awkward()
    model = models.sampled_gcn(6, 8, 3, num_layers=3).eval()
    sampler = sampler_type(graph, [4, 4, 4])
    x = torch.randn(30, 6)
    a_hat = torch.zeros(30, 30)
    rows = torch.repeat_interleave(torch.arange(30), sampler.row_ptr[1:] - sampler.row_ptr[:-1])
    a_hat[rows, sampler.columns] = sampler.values
    h = x
    for layer in model.layers[:-1]:
        h = F.elu(a_hat @ (h @ layer.linear.weight.t()) + layer.bias)
    expected = model.layers[-1](h)
    got = model.layerwise_inference(x, sampler.full_neighborhood(), max_nodes=7, max_edges=20)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_full_neighborhood_chunks_respect_their_budgets():
    graph = awkward()
    neighborhood = NeighborSampler(graph, [1]).full_neighborhood()
    degree = graph.in_degree()
    nodes = torch.arange(30)
    bounds = neighborhood.boundaries(nodes, max_nodes=4, max_edges=9)
    assert bounds[0] == 0 and bounds[-1] == 30
    for start, stop in itertools.pairwise(bounds):
        assert 1 <= stop - start <= 4
        assert stop - start == 1 or int(degree[start:stop].sum()) <= 9
    blocks = [block for _, _, block in neighborhood.chunks(nodes, max_nodes=4, max_edges=9)]
    assert sum(block.num_edges for block in blocks) == graph.num_edges
    with pytest.raises(ValueError, match="max_nodes and max_edges must be positive"):
        neighborhood.boundaries(nodes, max_nodes=0, max_edges=9)
    with pytest.raises(ValueError, match="values must match columns"):
        FullNeighborhood(torch.tensor([0, 1]), torch.tensor([0]), torch.ones(2))


# ------------------------------------------------------------------------------------------- models on blocks
def test_forward_blocks_equals_forward_with_the_blocks_in_the_edge_slot():
    torch.manual_seed(2)
    graph = awkward()
    model = models.sage(6, 8, 3).eval()
    blocks = NeighborSampler(graph, [3, 2]).sample([4, 1, 28], generator=0)
    x = torch.randn(30, 6)[blocks[0].source_nodes]
    out = model.forward_blocks(x, blocks)
    assert out.shape == (3, 3)
    torch.testing.assert_close(model(x, blocks), out)


def test_models_refuse_blocks_they_cannot_use():
    graph = awkward()
    weighted = LADIESSampler(graph, [4, 4]).sample([2, 5], generator=0)
    x = torch.randn(weighted[0].num_sources, 6)
    for model in (models.gat(6, 4, 3, heads=2, cached=False), models.sage(6, 8, 3, aggregator="pool"),
                  models.gcn(6, 8, 3, normalization="mean", cached=False)):
        with pytest.raises(ValueError, match="cannot use the propagation weights of this block"):
            model(x, weighted)
    assert models.sage(6, 8, 3)(x, weighted).shape == (2, 3)                  # weighted mean
    assert models.sampled_gcn(6, 8, 3, num_layers=2)(x, weighted).shape == (2, 3)
    uniform = NeighborSampler(graph, [2, 2]).sample([2, 5], generator=0)
    with pytest.raises(ValueError, match="has no block form"):
        models.sgc(6, 3)(torch.randn(uniform[-1].num_sources, 6), uniform[-1:])
    with pytest.raises(ValueError, match="2 message-passing layers but got 1 blocks"):
        models.sage(6, 8, 3)(torch.randn(uniform[1].num_sources, 6), uniform[1:])
    with pytest.raises(ValueError, match="pass x\\[blocks\\[0\\].source_nodes\\]"):
        models.sage(6, 8, 3)(torch.randn(30, 6), uniform)
    with pytest.raises(ValueError, match="one rate per layer"):
        models.StackedGNN([models.NodeLinear(3, 2)], dropout=[0.1, 0.2])


def test_sampled_gcn_matches_the_ladies_reference_architecture():
    model = models.sampled_gcn(10, 256, 7)
    assert len(model.layers) == 6 and model.num_message_passing_layers == 5
    assert all(layer.accepts_block_weights for layer in model.layers[:5])
    assert model.dropouts == pytest.approx([0.0, 0.2, 0.2, 0.2, 0.2, 0.6])      # 1 - 0.8 * 0.5 before the classifier
    assert model.activation is F.elu


# ------------------------------------------------------------------------------------------------- trainer
@pytest.mark.parametrize("reuse_samples", [False, True])
def test_sage_on_cora_improves_validation_accuracy(planetoid_root, reuse_samples):
    graph = load_planetoid("cora", planetoid_root)
    config = minibatch_preset("sage", "cora", epochs=6, fanouts=(10, 5), reuse_samples=reuse_samples)
    result = train_minibatch(graph, config, seed=0, show_progress=False)
    val = result.history["val_acc"]
    assert len(val) == 6 and max(val) > val[0] + 0.05 and result.val_acc > 0.7
    assert result.test_acc > 0.7 and result.best_epoch == val.index(max(val))
    assert 140 < result.sampled_nodes_per_batch_mean < 2708            # 140 seeds and their sampled 2 hops
    assert result.batches == 6 and result.peak_rss_mb > 10


@pytest.mark.skipif(resolve_backend("auto") != "numba", reason="numba is not installed (pip install 'gnnseg[fast]')")
def test_sage_on_cora_learns_as_well_with_the_numba_sampler_as_with_torchs(planetoid_root):
    graph = load_planetoid("cora", planetoid_root)
    results = {backend: train_minibatch(graph, minibatch_preset("sage", "cora", epochs=6, fanouts=(10, 5),
                                                                 sampler_backend=backend), seed=0, show_progress=False)
               for backend in ("torch", "numba")}
    torch_run, numba_run = results["torch"], results["numba"]
    assert torch_run.test_acc > 0.7 and numba_run.test_acc > 0.7
    assert abs(numba_run.test_acc - torch_run.test_acc) < 0.03
    assert abs(numba_run.sampled_nodes_per_batch_mean / torch_run.sampled_nodes_per_batch_mean - 1) < 0.05


@pytest.mark.slow
def test_compiled_training_follows_eager_training():
    graph = small_synthetic()
    config = MiniBatchConfig(fanouts=(4, 3), batch_size=32, hidden=16, epochs=1, dropout=0.0)
    eager = train_minibatch(graph, config, seed=5, show_progress=False)
    compiled = train_minibatch(graph, MiniBatchConfig(**{**config.__dict__, "compile": True}), seed=5,
                               show_progress=False)
    assert compiled.batches == eager.batches == 6
    assert compiled.history["loss"] == pytest.approx(eager.history["loss"], rel=1e-4)
    for name, tensor in eager.state_dict.items():
        torch.testing.assert_close(compiled.state_dict[name], tensor, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("reuse_samples", [False, True])
def test_results_do_not_depend_on_the_number_of_workers(reuse_samples):
    """Also for reused draws, whose blocks share one edge list between processes."""
    graph = small_synthetic()
    config = MiniBatchConfig(fanouts=(4, 3), batch_size=32, hidden=16, epochs=2, dropout=0.3,
                             reuse_samples=reuse_samples)
    alone = train_minibatch(graph, config, seed=5, show_progress=False)
    workers = train_minibatch(graph, MiniBatchConfig(**{**config.__dict__, "num_workers": 2}), seed=5,
                              show_progress=False)
    assert alone.batches == workers.batches == 12
    assert alone.history["loss"] == workers.history["loss"]
    assert alone.sampled_nodes_per_batch_mean == workers.sampled_nodes_per_batch_mean
    for name, tensor in alone.state_dict.items():
        torch.testing.assert_close(workers.state_dict[name], tensor, rtol=0, atol=0)


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    graph = small_synthetic()
    config = MiniBatchConfig(fanouts=(4, 3), batch_size=64, hidden=16, epochs=4, dropout=0.3)
    straight = train_minibatch(graph, config, seed=1, show_progress=False)

    saves = []
    original = minibatch_module.save_checkpoint

    def interrupt_after_two_epochs(payload, path):
        original(payload, path)
        saves.append(payload["state"]["epoch"])
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(minibatch_module, "save_checkpoint", interrupt_after_two_epochs)
    checkpoint = tmp_path / "latest.pt"
    with pytest.raises(KeyboardInterrupt):
        train_minibatch(graph, config, seed=1, checkpoint=checkpoint, show_progress=False)
    monkeypatch.setattr(minibatch_module, "save_checkpoint", original)
    with_workers = MiniBatchConfig(**{**config.__dict__, "num_workers": 1})      # workers change no number
    resumed = train_minibatch(graph, with_workers, seed=1, checkpoint=checkpoint, resume=True, show_progress=False)
    assert saves == [1, 2] and resumed.epochs_run == 4
    assert resumed.history == straight.history
    for name, tensor in straight.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[name], tensor, rtol=0, atol=0)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["state"]["epoch"] == 4

    with pytest.raises(CheckpointError, match="written by another run"):
        train_minibatch(graph, MiniBatchConfig(**{**config.__dict__, "lr": 0.5}), seed=1, checkpoint=checkpoint,
                        resume=True, show_progress=False)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        train_minibatch(graph, config, seed=1, checkpoint=tmp_path / "none.pt", resume=True, show_progress=False)


def test_early_stopping_on_validation_accuracy():
    graph = small_synthetic()
    config = MiniBatchConfig(fanouts=(4, 3), batch_size=256, hidden=8, epochs=50, patience=2, lr=0.5)
    result = train_minibatch(graph, config, seed=0, show_progress=False)
    val = result.history["val_acc"]
    assert result.epochs_run < 50 and result.epochs_run == result.best_epoch + 3
    assert max(val) == val[result.best_epoch] and all(v <= max(val) for v in val[result.best_epoch + 1:])


@pytest.mark.parametrize("sampler,samples", [("fastgcn", 200), ("ladies", 64)])
def test_importance_sampled_training_learns(sampler, samples):
    graph = small_synthetic(avg_degree=12)
    config = minibatch_config(None, sampler, num_samples=(samples, samples), hidden=16, batch_size=64, epochs=15,
                              lr=0.01, patience=None)
    result = train_minibatch(graph, config, seed=0, show_progress=False)
    assert result.val_acc > 0.8         # own features alone: 0.62 (Bayes), the oracle ceiling: 0.98
    assert result.sampled_nodes_per_batch_mean <= 64 + 2 * samples   # seeds + at most `samples` drawn per layer


def test_epoch_shards_are_disjoint_and_batches_deterministic():
    nodes = torch.arange(100, 203)
    shards = [epoch_shard(nodes, seed=3, epoch=2, rank=r, world_size=3) for r in range(3)]
    together = torch.cat(shards)
    assert all(s.numel() == 34 for s in shards) and together.unique().numel() == 102
    assert bool(torch.isin(together, nodes).all())
    assert not torch.equal(epoch_shard(nodes, 3, 3, 0, 3), shards[0])          # a new permutation each epoch
    batches = SeedBatches(nodes, 10, seed=3, first_epoch=1, last_epoch=3)
    assert len(batches) == 2 * 11
    first, again = batches[12], SeedBatches(nodes, 10, seed=3, first_epoch=1, last_epoch=3)[12]
    assert first[0] == 2 and torch.equal(first[1], again[1]) and first[2] == again[2]
    with pytest.raises(ValueError, match="cannot be shared by 4 ranks"):
        SeedBatches(torch.arange(3), 10, 0, 0, 1, rank=0, world_size=4)


@pytest.mark.parametrize("values,message", [
    ({"fanouts": (0, 5)}, r"fanouts\[0\] must be a positive integer"),
    ({"sampler": "uniform"}, "unknown sampler 'uniform'"),
    ({"sampler_backend": "cuda"}, "unknown sampler backend 'cuda'; choose one of auto, numba, torch"),
    ({"model": "gat", "sampler": "ladies"}, "only GCN .model 'gcn'. and SAGE with the mean aggregator"),
    ({"model": "sage", "aggregator": "pool", "sampler": "fastgcn"}, "with aggregator 'pool'"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"num_workers": -1}, "num_workers must be >= 0"),
    ({"patience": 0}, "patience must be >= 1"),
])
def test_bad_configs_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        MiniBatchConfig(**values)


def test_training_rejects_unusable_graphs():
    graph = small_synthetic()
    with pytest.raises(GraphValidationError, match="needs graph.y"):
        train_minibatch(Graph(graph.edge_index, graph.num_nodes, x=graph.x, train_mask=graph.train_mask),
                        MiniBatchConfig(epochs=1))
    with pytest.raises(ValueError, match="unknown mini-batch preset"):
        minibatch_preset("graphsaint")


def test_a_run_directory_resumes_and_refuses_other_settings(planetoid_root, tmp_path):
    overrides = {"fanouts": (5, 5), "batch_size": 140, "epochs": 2}
    first = run_minibatch_classification("sage", None, "cora", planetoid_root, runs_root=tmp_path,
                                         overrides=overrides, show_progress=False)
    again = run_minibatch_classification("sage", None, "cora", planetoid_root, runs_root=tmp_path,
                                         overrides=overrides, resume_run=first["run_dir"], show_progress=False)
    assert again["run_dir"] == first["run_dir"] and again["test_acc_mean"] == first["test_acc_mean"]
    assert len(list((tmp_path / "gnn-train").iterdir())) == 1
    scored = evaluate_saved_classifier(first["checkpoint"], planetoid_root)  # scored the mini-batch way: layer-wise
    assert scored["sampler"] == "neighbor" and 0.5 < scored["test_acc"] <= 1.0
    with pytest.raises(ValueError, match="was started with other settings"):
        run_minibatch_classification("sage", None, "cora", planetoid_root, overrides={**overrides, "epochs": 3},
                                     resume_run=first["run_dir"], show_progress=False)
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        run_minibatch_classification("sage", None, "cora", planetoid_root, resume_run=tmp_path / "nothing")


def test_settings_saved_before_they_existed_count_as_their_defaults():
    config = MiniBatchConfig(fanouts=(5, 5), epochs=2)
    saved = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()}
    older = {k: v for k, v in saved.items() if k != "reuse_samples"}          # written before the option
    assert same_run_settings(saved, config) and same_run_settings(older, config)
    assert not same_run_settings(older, MiniBatchConfig(fanouts=(5, 5), epochs=2, reuse_samples=True))
    before_backends = {k: v for k, v in saved.items() if k != "sampler_backend"}    # those runs sampled with torch
    assert same_run_settings(before_backends, MiniBatchConfig(fanouts=(5, 5), epochs=2, sampler_backend="torch"))
    assert not same_run_settings(before_backends, config)
    assert same_run_settings({**saved, "num_workers": 3}, config)              # execution settings may differ
    assert not same_run_settings({**saved, "epochs": 3}, config)


# ----------------------------------------------------------------------------------------------------- CLI
def test_cli_minibatch_json_contract_and_eval(planetoid_root, tmp_path, capsys, last_json):
    code = main(["gnn", "train", "--model", "sage", "--sampler", "neighbor", "--fanouts", "10,5", "--batch-size", "64",
                 "--dataset", "cora", "--root", str(planetoid_root), "--epochs", "3", "--seeds", "2",
                 "--reuse-samples", "--sampler-backend", "torch", "--runs-dir", str(tmp_path), "--json"])
    assert code == 0
    result = last_json()
    for key in ("model", "dataset", "seeds", "test_acc_mean", "test_acc_std", "val_acc_mean", "epoch_time_ms_median",
                "sampled_nodes_per_batch_mean", "peak_rss_mb", "run_dir", "checkpoint"):
        assert key in result, key
    assert result["model"] == "sage" and result["sampler"] == "neighbor" and result["seeds"] == 2
    assert 0.4 < result["test_acc_mean"] <= 1.0 and result["peak_rss_mb"] > 10
    assert 64 < result["sampled_nodes_per_batch_mean"] < 2708
    run_dir = next((tmp_path / "gnn-train").iterdir())
    files = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "metrics.json", "curves.png", "model.pt", "checkpoint_seed0.pt"} <= files
    assert '"reuse_samples": true' in (run_dir / "config.json").read_text()
    assert '"sampler_backend": "torch"' in (run_dir / "config.json").read_text()

    code = main(["gnn", "eval", "--checkpoint", result["checkpoint"], "--root", str(planetoid_root), "--json"])
    assert code == 0
    evaluated = last_json()
    metrics = json.loads((tmp_path / "gnn-train").iterdir().__next__().joinpath("metrics.json").read_text())
    best = max(metrics["per_seed"], key=lambda r: (r["val_acc"], -r["seed"]))
    assert evaluated["test_acc"] == pytest.approx(best["test_acc"])


def test_cli_synth_then_ladies_training(tmp_path, capsys, last_json):
    out = tmp_path / "graph"
    assert main(["gnn", "synth", "--nodes", "400", "--avg-degree", "8", "--classes", "4", "--features", "8",
                 "--out", str(out), "--json"]) == 0
    made = last_json()
    assert made["num_nodes"] == 400 and made["undirected_edges"] == 1600 and 0 < made["ceiling_accuracy"] <= 1
    code = main(["gnn", "train", "--sampler", "ladies", "--num-samples", "32,32", "--dataset", f"synth:{out}",
                 "--epochs", "2", "--batch-size", "64", "--runs-dir", str(tmp_path / "runs"), "--json"])
    assert code == 0
    result = last_json()
    assert result["model"] == "gcn" and result["sampler"] == "ladies"
    assert result["sampled_nodes_per_batch_mean"] <= 64 + 2 * 32
    assert main(["gnn", "synth", "--nodes", "400", "--out", str(out)]) == 2            # never overwritten


@pytest.mark.parametrize("arguments,message", [
    (["--sampler", "neighbor", "--fanouts", "0,5"], "fanouts[0] must be a positive integer, got 0"),
    (["--fanouts", "10,5"], "--fanouts apply to mini-batch training: add --sampler"),
    (["--sampler", "neighbor", "--sampler-backend", "cuda"], "invalid choice: 'cuda'"),
    (["--sampler", "neighbor", "--dataset", "synth:/nonexistent/graph"], "meta.json is missing"),
    (["--sampler", "ladies", "--model", "gat"], "only GCN (model 'gcn') and SAGE"),
])
def test_cli_reports_bad_minibatch_input_without_a_traceback(planetoid_root, tmp_path, arguments, message):
    command = [sys.executable, "-m", "gnnseg.cli", "gnn", "train", "--root", str(planetoid_root), "--runs-dir",
               str(tmp_path), "--epochs", "1", *arguments]
    process = subprocess.run(command, capture_output=True, text=True, check=False)
    assert process.returncode == 2, process.stderr
    assert message in process.stderr and "Traceback" not in process.stderr


def test_evaluations_keep_the_best_and_stop_after_patience_without_improvement():
    state = {"best_val": float("-inf"), "waited": 0, "stopped": False}
    history = {key: [] for key in ("eval_epoch", *SCORE_KEYS)}
    bests = [record_evaluation(state, history, {"val_acc": val, "test_acc": 0.5}, epoch, True, 2)
             for epoch, val in enumerate((0.6, 0.7, 0.7, 0.65))]
    assert bests == [True, True, False, False]
    assert (state["best_epoch"], state["best_val"], state["waited"], state["stopped"]) == (1, 0.7, 2, True)
    assert history["eval_epoch"] == [0, 1, 2, 3] and history["val_acc"] == [0.6, 0.7, 0.7, 0.65]
    assert all(math.isnan(v) for v in history["train_loss"])
    without_validation = {"best_val": float("-inf"), "waited": 0, "stopped": False}
    assert all(record_evaluation(without_validation, {key: [] for key in history}, {"test_acc": 0.1}, epoch, False, 1)
               for epoch in range(3))                       # the latest is the best; patience never stops it
    assert without_validation["best_epoch"] == 2 and not without_validation["stopped"]
