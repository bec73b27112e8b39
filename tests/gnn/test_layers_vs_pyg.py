"""Our layers against PyG's with identical weights: same outputs and gradients within 1e-5."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gnnseg.gnn.layers import GATConv, GCNConv, GINConv, SGConv
from tests.conftest import awkward_graph

pyg_conv = pytest.importorskip("torch_geometric.nn", reason="torch-geometric is the test oracle")

TOLERANCE = dict(atol=1e-5, rtol=1e-5)


def compare(ours: nn.Module, theirs: nn.Module, x: torch.Tensor, call_ours, call_theirs):
    """Same output, same gradient w.r.t. input and every parameter."""
    x_ours = x.clone().requires_grad_()
    x_theirs = x.clone().requires_grad_()
    out_ours, out_theirs = call_ours(ours, x_ours), call_theirs(theirs, x_theirs)
    torch.testing.assert_close(out_ours, out_theirs, **TOLERANCE)
    upstream = torch.randn_like(out_ours)
    (out_ours * upstream).sum().backward()
    (out_theirs * upstream).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, **TOLERANCE)
    grads_ours = {name: p.grad for name, p in ours.named_parameters()}
    grads_theirs = {name: p.grad for name, p in theirs.named_parameters()}
    return grads_ours, grads_theirs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("channels", [(12, 5), (5, 12)])
def test_gcn_matches_pyg(seed, channels):
    torch.manual_seed(seed)
    edge_index = awkward_graph(seed=seed)
    weight = torch.rand(edge_index.size(1)) + 0.1
    x = torch.randn(30, channels[0])
    theirs = pyg_conv.GCNConv(*channels)
    ours = GCNConv(*channels)
    ours.linear.weight.data.copy_(theirs.lin.weight.data)
    ours.bias.data.copy_(torch.randn(channels[1]))
    theirs.bias.data.copy_(ours.bias.data)
    for edge_weight in (None, weight):
        ours.zero_grad(), theirs.zero_grad()
        grads, oracle = compare(ours, theirs, x, lambda m, v: m(v, edge_index, edge_weight),
                                lambda m, v: m(v, edge_index, edge_weight))
        torch.testing.assert_close(grads["linear.weight"], oracle["lin.weight"], **TOLERANCE)
        torch.testing.assert_close(grads["bias"], oracle["bias"], **TOLERANCE)


@pytest.mark.parametrize("K", [1, 2, 3])
def test_sgc_matches_pyg(K):
    torch.manual_seed(K)
    edge_index = awkward_graph(seed=K)
    x = torch.randn(30, 9)
    theirs = pyg_conv.SGConv(9, 4, K=K)
    ours = SGConv(9, 4, K=K, cached=False)
    ours.linear.load_state_dict(theirs.lin.state_dict())
    grads, oracle = compare(ours, theirs, x, lambda m, v: m(v, edge_index), lambda m, v: m(v, edge_index))
    torch.testing.assert_close(grads["linear.weight"], oracle["lin.weight"], **TOLERANCE)


@pytest.mark.parametrize("train_eps", [False, True])
def test_gin_matches_pyg(train_eps):
    torch.manual_seed(3)
    edge_index = awkward_graph(seed=3)
    x = torch.randn(30, 6)
    mlp = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    theirs = pyg_conv.GINConv(mlp, eps=0.3, train_eps=train_eps)
    ours = GINConv(nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)), eps=0.3, train_eps=train_eps)
    ours.mlp.load_state_dict(theirs.nn.state_dict())
    grads, oracle = compare(ours, theirs, x, lambda m, v: m(v, edge_index), lambda m, v: m(v, edge_index))
    torch.testing.assert_close(grads["mlp.0.weight"], oracle["nn.0.weight"], **TOLERANCE)
    if train_eps:
        torch.testing.assert_close(grads["eps"], oracle["eps"], **TOLERANCE)


@pytest.mark.parametrize("heads,concat", [(1, True), (4, True), (3, False)])
def test_gat_matches_pyg(heads, concat):
    torch.manual_seed(heads)
    edge_index = awkward_graph(seed=heads)
    x = torch.randn(30, 7)
    theirs = pyg_conv.GATConv(7, 5, heads=heads, concat=concat).eval()
    ours = GATConv(7, 5, heads=heads, concat=concat).eval()
    ours.linear.weight.data.copy_(theirs.lin.weight.data)
    ours.att_src.data.copy_(theirs.att_src.data)
    ours.att_dst.data.copy_(theirs.att_dst.data)
    ours.bias.data.copy_(torch.randn_like(ours.bias))
    theirs.bias.data.copy_(ours.bias.data)
    grads, oracle = compare(ours, theirs, x, lambda m, v: m(v, edge_index), lambda m, v: m(v, edge_index))
    for name in ("linear.weight", "att_src", "att_dst", "bias"):
        torch.testing.assert_close(grads[name], oracle[name.replace("linear", "lin")], **TOLERANCE)


def test_gat_attention_sums_to_one_per_target():
    edge_index = awkward_graph(seed=5)
    layer = GATConv(4, 2, heads=2)
    _, (edges, alpha) = layer(torch.randn(30, 4), edge_index, return_attention=True)
    totals = torch.zeros(30, 2).index_add_(0, edges[1], alpha)
    torch.testing.assert_close(totals, torch.ones(30, 2))  # isolated nodes attend to their self-loop


def test_gat_value_dropout_only_acts_while_training():
    edge_index = awkward_graph(seed=6)
    x = torch.randn(30, 4)
    layer = GATConv(4, 3, heads=2, value_dropout=1.0)
    layer.bias.data.copy_(torch.arange(6.0))
    assert torch.equal(layer.train()(x, edge_index), torch.arange(6.0).expand(30, 6))  # every value dropped
    reference = GATConv(4, 3, heads=2)
    reference.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer.eval()(x, edge_index), reference.eval()(x, edge_index))


@pytest.mark.parametrize("make", [lambda: GCNConv(5, 3, cached=True), lambda: SGConv(5, 3, K=2, cached=True),
                                  lambda: GATConv(5, 3, cached=True)])
def test_cached_layers_recompute_for_a_different_graph(make):
    layer = make().eval()
    x = torch.randn(30, 5)
    first, second = awkward_graph(seed=7), awkward_graph(seed=8)
    on_first = layer(x, first)
    fresh = make().eval()
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x, second), fresh(x, second))      # not the first graph's cache
    torch.testing.assert_close(layer(x, first), on_first)
