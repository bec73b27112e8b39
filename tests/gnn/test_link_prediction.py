"""Link prediction: edge splits, negative sampling, ranking scores, and a short GAE run on Cora."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnseg.cli import main
from gnnseg.core.ranking import average_precision, roc_auc
from gnnseg.gnn import Graph, GraphValidationError
from gnnseg.gnn.datasets import load_karate, load_planetoid
from gnnseg.gnn.tasks.link import (
    LinkConfig,
    full_reconstruction_loss,
    negative_sampling,
    split_edges,
    train_link_predictor,
    undirected_pairs,
)


def test_ranking_scores_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = rng.normal(size=400)
    labels = (scores + rng.normal(size=400)) > 0
    for s in (scores, np.round(scores, 1)):                   # with and without ties
        assert roc_auc(s, labels) == pytest.approx(metrics.roc_auc_score(labels, s), abs=1e-12)
        assert average_precision(s, labels) == pytest.approx(metrics.average_precision_score(labels, s), abs=1e-12)
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        average_precision([0.1, np.nan], [0, 1])


def test_negative_sampling_avoids_edges_and_self_loops():
    graph = load_karate()
    negatives = negative_sampling(34, graph.edge_index, 300, torch.Generator().manual_seed(0))
    assert negatives.shape == (2, 300)
    assert (negatives[0] < negatives[1]).all()                       # u < v, so never a self-loop
    edges = {tuple(p) for p in undirected_pairs(graph.edge_index).t().tolist()}
    drawn = [tuple(p) for p in negatives.t().tolist()]
    assert not edges & set(drawn) and len(set(drawn)) == 300
    complete = torch.combinations(torch.arange(4)).t()
    with pytest.raises(GraphValidationError, match="cannot sample 1 non-edges"):
        negative_sampling(4, complete, 1, torch.Generator())


def test_edge_split_sizes_and_disjointness():
    graph = load_karate()
    split = split_edges(graph, seed=1)
    total = undirected_pairs(graph.edge_index).size(1)                # 78 friendships
    assert (split.val.size(1), split.test.size(1)) == (round(0.05 * total), round(0.10 * total))
    assert split.train.size(1) + split.val.size(1) + split.test.size(1) == total
    parts = [{tuple(p) for p in part.t().tolist()} for part in (split.train, split.val, split.test,
                                                                split.val_negative, split.test_negative)]
    for a in range(len(parts)):
        for b in range(a + 1, len(parts)):
            assert not parts[a] & parts[b]
    assert split.val_negative.size(1) == split.val.size(1)
    with pytest.raises(ValueError, match="fractions"):
        split_edges(graph, 0.5, 0.6)
    with pytest.raises(GraphValidationError, match="need at least 3"):
        split_edges(Graph(edge_index=torch.tensor([[0], [1]]), num_nodes=2))


def test_full_objective_weights_positives():
    edges = torch.tensor([[0, 1], [1, 0]])
    loss = full_reconstruction_loss(edges, 3)
    z = torch.zeros(3, 2)                                             # every logit 0
    # the reference code's weights count the 2 edges without the self-loops; the target has 2 + 3 ones
    edges_counted, ones, pairs = 2, 2 + 3, 9
    pos_weight = (pairs - edges_counted) / edges_counted
    norm = pairs / (2 * (pairs - edges_counted))
    expected = norm * np.log(2) * (ones * pos_weight + (pairs - ones)) / pairs
    assert loss(z).item() == pytest.approx(expected, rel=1e-6)


def test_gae_learns_cora_links(planetoid_root):
    graph = load_planetoid("cora", planetoid_root)
    result = train_link_predictor(graph, LinkConfig(epochs=60), seed=0)
    assert result.test_auc > 0.85 and result.test_ap > 0.85
    sampled = train_link_predictor(graph, LinkConfig(epochs=60, objective="sampled", variational=True), seed=0)
    assert sampled.test_auc > 0.75


def test_linkpred_cli_contract(planetoid_root, tmp_path, capsys, last_json):
    assert main(["gnn", "linkpred", "--dataset", "cora", "--root", str(planetoid_root), "--seeds", "1",
                 "--epochs", "20", "--runs-dir", str(tmp_path), "--json"]) == 0
    result = last_json()
    assert {"test_auc_mean", "test_ap_mean", "seeds", "dataset", "run_dir"} <= set(result)
    assert 0.5 < result["test_auc_mean"] <= 1.0
