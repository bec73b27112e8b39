"""OGB's metrics: gnnseg's implementation against ogb's own Evaluator on the same predictions, the node trainers
scoring OGB datasets through it, and a clear error when ogb is missing."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

from gnnseg.gnn import models, ogb_evaluation
from gnnseg.gnn.datasets.ogb import load_ogb_node
from gnnseg.gnn.ogb_evaluation import (
    OGB_EVAL_METRICS,
    UndefinedMetricError,
    node_accuracy,
    ogb_metric,
    per_task_ranking,
)
from gnnseg.gnn.tasks.minibatch import MiniBatchConfig, train_minibatch
from gnnseg.gnn.tasks.molecule_property import task_metrics
from gnnseg.gnn.tasks.node import NodeConfig, evaluate, train_node_classifier
from tests.gnn.test_ogb import fake_ogb

node_evaluation = pytest.importorskip("ogb.nodeproppred", reason="the oracle needs ogb (in the test extra)")
graph_evaluation = pytest.importorskip("ogb.graphproppred", reason="the oracle needs ogb (in the test extra)")


@pytest.fixture
def without_ogb(monkeypatch):
    """Make ``import ogb`` fail as if the package were not installed."""
    for name in [m for m in sys.modules if m == "ogb" or m.startswith("ogb.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "ogb", None)
    ogb_evaluation._ogb_evaluator.cache_clear()
    yield
    ogb_evaluation._ogb_evaluator.cache_clear()


def oracle(name: str, y_true, y_pred) -> dict:
    module = node_evaluation if name.startswith("ogbn-") else graph_evaluation
    return module.Evaluator(name).eval({"y_true": y_true, "y_pred": y_pred})


def both_implementations(name: str, y_true, y_pred) -> tuple[dict, dict]:
    return ogb_metric(name, y_true, y_pred, "gnnseg"), ogb_metric(name, y_true, y_pred, "ogb")


def with_missing(labels: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    labels = labels.astype(np.float64)
    labels[rng.random(labels.shape) < share] = np.nan
    return labels


def test_the_metric_table_is_ogbs_master_files():
    import pandas as pd

    for module in (node_evaluation, graph_evaluation):
        master = pd.read_csv(os.path.join(os.path.dirname(module.__file__), "master.csv"), index_col=0,
                             keep_default_na=False)
        for name in master:
            metric, tasks = master[name]["eval metric"], int(master[name]["num tasks"])
            if metric == "F1":                      # ogbg-code2 scores token sequences, not arrays
                assert name not in OGB_EVAL_METRICS
            else:
                assert OGB_EVAL_METRICS[name] == (metric, tasks), name
    assert len(OGB_EVAL_METRICS) == 19


def test_arxiv_accuracy_equals_ogbs_evaluator():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 40, (1000, 1))
    y_pred = np.where(rng.random((1000, 1)) < 0.6, y_true, rng.integers(0, 40, (1000, 1)))
    ours, through_ogb = both_implementations("ogbn-arxiv", y_true, y_pred)
    expected = oracle("ogbn-arxiv", y_true, y_pred)
    assert ours == through_ogb == expected == {"acc": float(np.mean(y_true == y_pred))}
    assert 0.55 < ours["acc"] < 0.67
    assert ogb_metric("ogbn-arxiv", [1, 2, 3, 4], [1, 2, 0, 4], "gnnseg") == {"acc": 0.75}   # 1-D: one task


def test_proteins_multitask_rocauc_equals_ogbs_evaluator():
    rng = np.random.default_rng(1)
    y_true = (rng.random((400, 112)) < 0.3).astype(np.int64)
    y_true[:, 5] = 0                                      # a task with one class: skipped, not scored 0.5
    y_true[:, 7] = 1
    y_pred = rng.normal(size=(400, 112)) + 0.8 * y_true
    ours, through_ogb = both_implementations("ogbn-proteins", y_true, y_pred)
    expected = oracle("ogbn-proteins", y_true, y_pred)["rocauc"]
    assert ours["rocauc"] == pytest.approx(expected, abs=1e-12)
    assert through_ogb["rocauc"] == expected
    per_task = per_task_ranking(y_true, y_pred)
    assert per_task[5] is None and per_task[7] is None and sum(v is not None for v in per_task) == 110
    assert 0.65 < expected < 0.8


@pytest.mark.parametrize("name, tasks", [("ogbg-molhiv", 1), ("ogbg-moltox21", 12)])
def test_molecule_rocauc_with_missing_labels_equals_ogbs_evaluator(name, tasks):
    rng = np.random.default_rng(2)
    y_true = with_missing((rng.random((300, tasks)) < 0.2).astype(np.float64), 0.3, rng)
    if tasks > 1:
        y_true[:, 3] = np.where(np.isnan(y_true[:, 3]), np.nan, 0.0)    # present labels of one class only
    y_pred = rng.random((300, tasks))
    expected = oracle(name, y_true, y_pred)["rocauc"]
    ours, through_ogb = both_implementations(name, y_true, y_pred)
    assert ours["rocauc"] == pytest.approx(expected, abs=1e-12) and through_ogb["rocauc"] == expected
    # the molecule trainer's own scores follow the same rule
    scores = task_metrics(y_pred, y_true, "classification")
    assert scores["auc"] == pytest.approx(expected, abs=1e-12)
    assert scores["auc_tasks"] == (tasks - 1 if tasks > 1 else 1)


def test_average_precision_and_rmse_equal_ogbs_evaluator():
    rng = np.random.default_rng(3)
    y_true = with_missing((rng.random((200, 128)) < 0.1).astype(np.float64), 0.4, rng)
    y_pred = rng.random((200, 128))
    ours, through_ogb = both_implementations("ogbg-molpcba", y_true, y_pred)
    assert ours["ap"] == pytest.approx(oracle("ogbg-molpcba", y_true, y_pred)["ap"], abs=1e-12)
    values = with_missing(rng.normal(size=(50, 1)), 0.2, rng)
    predicted = rng.normal(size=(50, 1))
    ours, through_ogb = both_implementations("ogbg-molesol", values, predicted)
    assert ours["rmse"] == pytest.approx(oracle("ogbg-molesol", values, predicted)["rmse"], abs=1e-12)
    assert through_ogb["rmse"] == pytest.approx(ours["rmse"], abs=1e-12)


def test_mistakes_are_named_before_any_scoring():
    with pytest.raises(ValueError, match="no OGB metric for dataset 'ogbn-cora'"):
        ogb_metric("ogbn-cora", [1], [1])
    with pytest.raises(ValueError, match="ogbg-moltox21 has 12 task"):
        ogb_metric("ogbg-moltox21", np.zeros((4, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"differ in shape"):
        ogb_metric("ogbn-arxiv", np.zeros((4, 1)), np.zeros((5, 1)))
    for implementation in ("gnnseg", "ogb"):
        with pytest.raises(UndefinedMetricError, match="no task has both a positive and a negative"):
            ogb_metric("ogbg-molhiv", np.array([[0.0], [np.nan], [0.0]]), np.ones((3, 1)), implementation)


def test_the_node_trainers_score_ogb_datasets_with_ogbs_metric(tmp_path, monkeypatch):
    graph = load_ogb_node(fake_ogb(tmp_path / "ogbn_arxiv", split="time"))
    assert graph.name == "ogbn-arxiv"
    calls = []

    def recording(name, y_true, y_pred, implementation="auto"):
        calls.append(name)
        return ogb_metric(name, y_true, y_pred, implementation)

    monkeypatch.setattr(ogb_evaluation, "ogb_metric", recording)
    result = train_node_classifier(graph, NodeConfig(model="gcn", hidden=8, epochs=3), seed=0)
    assert calls and set(calls) == {"ogbn-arxiv"}
    test = graph.test_mask
    expected = oracle("ogbn-arxiv", graph.y[test].view(-1, 1).numpy(), result.predictions[test].view(-1, 1).numpy())
    assert result.test_acc == expected["acc"]
    calls.clear()
    config = MiniBatchConfig(fanouts=(2, 2), batch_size=4, hidden=4, epochs=2, num_workers=0)
    sampled = train_minibatch(graph, config, seed=0, show_progress=False)
    assert set(calls) == {"ogbn-arxiv"} and 0.0 <= sampled.test_acc <= 1.0
    # graphs that are not OGB datasets keep the plain accuracy and never ask for ogb
    calls.clear()
    renamed = load_ogb_node(fake_ogb(tmp_path / "my_graph", split="time"), name=None)
    assert renamed.name == "my_graph"
    scores = evaluate(models.build_model("gcn", renamed.num_features, 3, hidden_channels=4), renamed)
    assert not calls and 0.0 <= scores["test_acc"] <= 1.0


def test_without_ogb_the_same_numbers_come_from_gnnseg(without_ogb):
    assert not ogb_evaluation.ogb_installed()
    labels, predicted = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2])
    assert node_accuracy("ogbn-products", predicted, labels) == 0.75
    y_true = np.array([[1.0, 0.0], [0.0, np.nan], [1.0, 1.0], [0.0, 0.0]])
    y_pred = np.array([[0.9, 0.2], [0.1, 0.5], [0.4, 0.3], [0.5, 0.8]])
    # task 0: 3 of the 4 positive-negative pairs ranked right; task 1 (one label missing): 1 of 2
    assert ogb_metric("ogbg-molclintox", y_true, y_pred) == {"rocauc": pytest.approx((0.75 + 0.5) / 2)}
    with pytest.raises(ImportError) as error:
        ogb_metric("ogbn-arxiv", [1], [1], implementation="ogb")
    message = str(error.value)
    assert "\n" not in message and "needs the ogb package: pip install 'gnnseg[ogb]'" in message
