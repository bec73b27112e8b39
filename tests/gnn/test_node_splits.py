"""Node splits: random splits, the fallback for graphs without train / test masks, and its one warning."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace

import pytest
import torch

from gnnseg.cli import main
from gnnseg.gnn import Graph, GraphValidationError
from gnnseg.gnn.datasets import load_karate
from gnnseg.gnn.node_splits import DefaultSplitWarning, parse_split, random_split, with_splits
from gnnseg.gnn.tasks.node import NodeConfig, train_node_classifier
from gnnseg.gnn.tasks.node_runs import run_node_classification

QUICK = NodeConfig(epochs=15, stopping="none", select="last", row_normalize_features=False)


def unsplit_karate() -> Graph:
    return replace(load_karate(), train_mask=None, test_mask=None)


def test_random_split_counts_disjoint_and_seeded():
    graph = Graph(edge_index=torch.zeros((2, 0), dtype=torch.int64), num_nodes=101)
    split = random_split(graph, (0.6, 0.2, 0.2), seed=0)
    masks = torch.stack([split.train_mask, split.val_mask, split.test_mask])
    assert masks.sum(1).tolist() == [61, 20, 20]          # round(60.6), round(20.2), round(20.2)
    assert masks.sum(0).max() == 1 and int(masks.sum()) == 101
    again, other = random_split(graph, (0.6, 0.2, 0.2), seed=0), random_split(graph, (0.6, 0.2, 0.2), seed=1)
    assert torch.equal(again.test_mask, split.test_mask) and not torch.equal(other.test_mask, split.test_mask)
    partial = random_split(graph, (0.1, 0.1, 0.1), seed=0)
    assert [int(m.sum()) for m in (partial.train_mask, partial.val_mask, partial.test_mask)] == [10, 10, 10]
    assert graph.train_mask is None                       # the input is not modified


@pytest.mark.parametrize("fractions,message", [
    ((0.6, 0.0, 0.4), "must be positive"),
    ((0.6, -0.1, 0.4), "must be positive"),
    ((0.7, 0.2, 0.2), "sum to at most 1, got \\(0.7, 0.2, 0.2\\) \\(sum 1.1\\)"),
    ((0.5, 0.5), "three fractions"),
    ((0.5, float("nan"), 0.2), "must be positive"),
])
def test_split_fractions_are_checked(fractions, message):
    with pytest.raises(ValueError, match=message):
        random_split(load_karate(), fractions)


def test_parse_split():
    assert parse_split("random:0.6,0.2,0.2") == (0.6, 0.2, 0.2)
    with pytest.raises(ValueError, match="random:TRAIN,VAL,TEST"):
        parse_split("0.6,0.2,0.2")
    with pytest.raises(ValueError, match="must be numbers"):
        parse_split("random:0.6,x,0.2")
    with pytest.raises(ValueError, match="sum to at most 1"):
        parse_split("random:0.8,0.2,0.2")


def test_a_split_too_small_for_a_graph_is_an_error():
    tiny = Graph(edge_index=torch.zeros((2, 0), dtype=torch.int64), num_nodes=3, name="tiny")
    with pytest.raises(GraphValidationError, match="split of the 3 nodes of 'tiny' leaves test_mask empty"):
        random_split(tiny, (0.6, 0.2, 0.2))
    with pytest.raises(GraphValidationError, match="leaves val_mask, test_mask empty"):
        random_split(tiny, (0.9, 0.05, 0.05))
    with pytest.raises(GraphValidationError, match="leaves test_mask empty"), pytest.warns(DefaultSplitWarning):
        train_node_classifier(replace(tiny, x=torch.ones(3, 1), y=torch.zeros(3, dtype=torch.int64)), QUICK)


def test_graph_with_masks_keeps_them_without_a_warning():
    karate = load_karate()               # train and test masks, no validation nodes: kept as they are
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert with_splits(karate) is karate
    forced = with_splits(karate, (0.5, 0.25, 0.25), seed=2)
    assert int(forced.train_mask.sum()) == 17 and int(forced.val_mask.sum()) == 8


def test_missing_masks_get_the_default_split_with_one_warning_and_finite_accuracy():
    graph = unsplit_karate()
    with pytest.warns(DefaultSplitWarning) as caught:
        result = train_node_classifier(graph, QUICK, 0)
    (warning,) = [w for w in caught if w.category is DefaultSplitWarning]     # one message per split made
    assert str(warning.message).startswith("'karate' has no usable train_mask or test_mask: training on a random "
                                           "0.6/0.2/0.2 train/val/test split of its nodes (seed 0)")
    assert math.isfinite(result.test_acc) and math.isfinite(result.val_acc)
    # the split is the documented one: random_split(graph, (0.6, 0.2, 0.2), seed=0)
    expected = random_split(graph, (0.6, 0.2, 0.2), seed=0)
    assert int(expected.test_mask.sum()) == 7
    assert result.test_acc == train_node_classifier(expected, QUICK, 0).test_acc


def test_a_run_of_several_seeds_splits_once_and_says_so_once(tmp_path, monkeypatch):
    monkeypatch.setattr("gnnseg.gnn.tasks.node_runs.load_node_dataset", lambda name, root: unsplit_karate())
    with pytest.warns(DefaultSplitWarning) as caught:
        summary = run_node_classification("gcn", "karate", None, seeds=3, runs_root=tmp_path,
                                          overrides={"epochs": 5}, show_progress=False)
    assert len([w for w in caught if w.category is DefaultSplitWarning]) == 1
    assert summary["seeds"] == 3 and math.isfinite(summary["test_acc_mean"])


def test_an_empty_train_mask_is_replaced_not_trained_on():
    karate = load_karate()
    empty_train = replace(karate, train_mask=torch.zeros(34, dtype=torch.bool))
    with pytest.warns(DefaultSplitWarning, match="no usable train_mask:"):
        result = train_node_classifier(empty_train, QUICK, 0)
    assert math.isfinite(result.test_acc)


def test_cli_split_option(tmp_path, last_json):
    code = main(["gnn", "train", "--dataset", "karate", "--split", "random:0.5,0.2,0.3", "--split-seed", "4",
                 "--epochs", "5", "--runs-dir", str(tmp_path), "--json"])
    assert code == 0
    result = last_json()
    assert math.isfinite(result["test_acc_mean"])
    config = json.loads(next((tmp_path / "gnn-train").glob("*/config.json")).read_text())
    assert (config["split"], config["split_seed"]) == ([0.5, 0.2, 0.3], 4)
    assert main(["gnn", "eval", "--checkpoint", result["checkpoint"], "--json"]) == 0
    assert last_json()["test_acc"] == pytest.approx(result["test_acc_mean"])    # the same split, from the model
    with pytest.raises(SystemExit) as exit_info:
        main(["gnn", "train", "--dataset", "karate", "--split", "random:0.9,0.2,0.2"])
    assert exit_info.value.code == 2
