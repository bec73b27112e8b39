"""Our layers against PyG's with identical weights: same outputs and gradients within 1e-5."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gnnseg.gnn.layers import GATConv, GCNConv, GINConv, SAGEConv, SGConv
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
        grads, oracle = compare(ours, theirs, x, lambda m, v, w=edge_weight: m(v, edge_index, w),
                                lambda m, v, w=edge_weight: m(v, edge_index, w))
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


# ------------------------------------------------------------------------------------------------ GraphSAGE
SAGE_VARIANTS = {  # ours -> PyG's SAGEConv arguments
    "mean": {"aggr": "mean"},
    "max": {"aggr": "max"},
    "pool": {"aggr": "max", "project": True},
}


def make_sage_pair(aggregator: str, in_channels: int, out_channels: int, *, normalize: bool = False,
                   root_weight: bool = True):
    """Our SAGEConv and PyG's with identical weights (PyG's ``lin`` is our ``pool_linear``)."""
    theirs = pyg_conv.SAGEConv(in_channels, out_channels, normalize=normalize, root_weight=root_weight,
                               **SAGE_VARIANTS[aggregator])
    ours = SAGEConv(in_channels, out_channels, aggregator=aggregator, normalize=normalize, root_weight=root_weight)
    state = {key.replace("lin.", "pool_linear.") if key.startswith("lin.") else key: value
             for key, value in theirs.state_dict().items()}
    ours.load_state_dict(state)
    return ours, theirs


def assert_same_parameter_grads(grads: dict, oracle: dict) -> None:
    for name, grad in grads.items():
        theirs = oracle[name.replace("pool_linear.", "lin.")]
        torch.testing.assert_close(grad, theirs, **TOLERANCE)


@pytest.mark.parametrize("aggregator", ["mean", "max", "pool"])
@pytest.mark.parametrize("normalize,root_weight", [(False, True), (True, True), (False, False)])
@pytest.mark.parametrize("seed", [0, 1])
def test_sage_matches_pyg_on_full_graphs(aggregator, normalize, root_weight, seed):
    torch.manual_seed(seed)
    edge_index = awkward_graph(seed=seed)      # isolated nodes, self-loops, duplicate edges
    ours, theirs = make_sage_pair(aggregator, 7, 5, normalize=normalize, root_weight=root_weight)
    grads, oracle = compare(ours, theirs, torch.randn(30, 7), lambda m, v: m(v, edge_index),
                            lambda m, v: m(v, edge_index))
    assert_same_parameter_grads(grads, oracle)


def awkward_block(num_targets: int = 12, seed: int = 0) -> torch.Tensor:
    """A block over the awkward graph: sources are its 30 nodes, targets the first ``num_targets`` (so local
    ids equal global ids), edges all the graph's edges into them (self-loops and duplicates included; some
    targets have no incoming edge)."""
    edge_index = awkward_graph(seed=seed)
    return edge_index[:, edge_index[1] < num_targets]


@pytest.mark.parametrize("aggregator", ["mean", "max", "pool"])
def test_sage_matches_pyg_on_a_block(aggregator):
    torch.manual_seed(4)
    edge_index, targets = awkward_block(12, seed=4), 12
    ours, theirs = make_sage_pair(aggregator, 6, 4, normalize=True)
    grads, oracle = compare(ours, theirs, torch.randn(30, 6),
                            lambda m, v: m(v, edge_index, num_targets=targets),
                            lambda m, v: m((v, v[:targets]), edge_index, size=(30, targets)))
    assert_same_parameter_grads(grads, oracle)


def test_sage_weighted_mean_against_dense_reference():
    torch.manual_seed(5)
    edge_index, targets = awkward_block(10, seed=5), 10
    weight = torch.rand(edge_index.size(1)) + 0.1
    x = torch.randn(30, 4)
    layer = SAGEConv(4, 3)
    dense = torch.zeros(targets, 30).index_put_((edge_index[1], edge_index[0]), weight, accumulate=True)
    sums = dense.sum(1, keepdim=True)
    mean = (dense / sums.masked_fill(sums == 0, 1.0)) @ x
    expected = layer.lin_l(mean) + layer.lin_r(x[:targets])
    torch.testing.assert_close(layer(x, edge_index, weight, num_targets=targets), expected, **TOLERANCE)
    with pytest.raises(ValueError, match="'mean' aggregator only"):
        SAGEConv(4, 3, aggregator="pool")(x, edge_index, weight, num_targets=targets)


def test_sage_rejects_unknown_options():
    with pytest.raises(ValueError, match="aggregator must be one of mean, max, pool"):
        SAGEConv(4, 3, aggregator="lstm")
    with pytest.raises(ValueError, match="pool_channels applies to the 'pool' aggregator only"):
        SAGEConv(4, 3, aggregator="mean", pool_channels=8)
    wide_pool = SAGEConv(4, 3, aggregator="pool", pool_channels=8)
    assert wide_pool.lin_l.in_features == 8
    assert wide_pool(torch.randn(5, 4), torch.tensor([[0], [1]])).shape == (5, 3)


# ------------------------------------------------------------------------------------------ layers on blocks
@pytest.mark.parametrize("train_eps", [False, True])
def test_gin_matches_pyg_on_a_block(train_eps):
    torch.manual_seed(6)
    edge_index, targets = awkward_block(9, seed=6), 9
    theirs = pyg_conv.GINConv(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), eps=0.2,
                              train_eps=train_eps)
    ours = GINConv(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), eps=0.2, train_eps=train_eps)
    ours.mlp.load_state_dict(theirs.nn.state_dict())
    grads, oracle = compare(ours, theirs, torch.randn(30, 6),
                            lambda m, v: m(v, edge_index, num_targets=targets),
                            lambda m, v: m((v, v[:targets]), edge_index, size=(30, targets)))
    torch.testing.assert_close(grads["mlp.0.weight"], oracle["nn.0.weight"], **TOLERANCE)


@pytest.mark.parametrize("heads,concat", [(1, True), (3, True), (2, False)])
def test_gat_matches_pyg_on_a_block(heads, concat):
    torch.manual_seed(7 + heads)
    edge_index, targets = awkward_block(11, seed=7), 11
    theirs = pyg_conv.GATConv(5, 4, heads=heads, concat=concat).eval()
    ours = GATConv(5, 4, heads=heads, concat=concat).eval()
    ours.linear.weight.data.copy_(theirs.lin.weight.data)
    ours.att_src.data.copy_(theirs.att_src.data)
    ours.att_dst.data.copy_(theirs.att_dst.data)
    ours.bias.data.copy_(torch.randn_like(ours.bias))
    theirs.bias.data.copy_(ours.bias.data)
    grads, oracle = compare(ours, theirs, torch.randn(30, 5),
                            lambda m, v: m(v, edge_index, num_targets=targets),
                            lambda m, v: m((v, v[:targets]), edge_index, size=(30, targets)))
    for name in ("linear.weight", "att_src", "att_dst", "bias"):
        torch.testing.assert_close(grads[name], oracle[name.replace("linear", "lin")], **TOLERANCE)


@pytest.mark.parametrize("channels", [(6, 3), (3, 6)])   # both orders of aggregate / transform
def test_gcn_mean_normalization_on_a_block_against_dense_reference(channels):
    """PyG's GCNConv refuses bipartite input; the reference is dense: ``(D + I)^-1 (A + I) X W + b`` over the
    block's rows, the self-loop of target ``i`` being source ``i`` (an existing loop keeps its weight)."""
    torch.manual_seed(8)
    edge_index, targets = awkward_block(12, seed=8), 12
    weight = torch.rand(edge_index.size(1)) + 0.1
    x = torch.randn(30, channels[0])
    layer = GCNConv(*channels, normalization="mean")
    layer.bias.data.normal_()
    dense = torch.zeros(targets, 30).index_put_((edge_index[1], edge_index[0]), weight, accumulate=True)
    loops = torch.arange(targets)
    is_loop = edge_index[0] == edge_index[1]
    loop_weight = torch.ones(targets)
    loop_weight[edge_index[0, is_loop]] = weight[is_loop]                   # the last duplicate loop's weight
    dense[loops, loops] = loop_weight
    expected = (dense / dense.sum(1, keepdim=True)) @ x @ layer.linear.weight.t() + layer.bias
    torch.testing.assert_close(layer(x, edge_index, weight, num_targets=targets), expected, **TOLERANCE)


def test_gcn_none_normalization_uses_the_block_weights_as_given():
    torch.manual_seed(9)
    edge_index, targets = awkward_block(8, seed=9), 8
    weight = torch.rand(edge_index.size(1))
    x = torch.randn(30, 4)
    layer = GCNConv(4, 2, normalization="none", self_loops=False)
    dense = torch.zeros(targets, 30).index_put_((edge_index[1], edge_index[0]), weight, accumulate=True)
    torch.testing.assert_close(layer(x, edge_index, weight, num_targets=targets),
                               dense @ x @ layer.linear.weight.t() + layer.bias, **TOLERANCE)


def test_gcn_refuses_symmetric_normalization_on_a_block():
    layer = GCNConv(4, 2)
    with pytest.raises(ValueError, match="symmetric normalization .* needs the degree of every source"):
        layer(torch.randn(30, 4), awkward_block(8), num_targets=8)


@pytest.mark.parametrize("make", [lambda: GCNConv(4, 2, normalization="mean"), lambda: GATConv(4, 2),
                                  lambda: GINConv(nn.Linear(4, 2)), lambda: SAGEConv(4, 2)])
def test_layers_refuse_more_targets_than_sources(make):
    with pytest.raises(ValueError, match="num_targets must be between 0 and the number of source rows"):
        make()(torch.randn(5, 4), torch.tensor([[0], [1]]), num_targets=6)


@pytest.mark.parametrize("make", [lambda: GCNConv(4, 3, normalization="mean", cached=True),
                                  lambda: GATConv(4, 3, cached=True)])
def test_cached_layers_tell_a_block_from_the_full_graph(make):
    """Same edge_index, once as a full graph and once as a block: the cache must not mix them up, and a block
    (a new one every batch) is never cached."""
    layer = make().eval()
    edge_index = awkward_block(10)
    x = torch.randn(30, 4)
    full = layer(x, edge_index)
    cached = layer._cache
    block = layer(x, edge_index, num_targets=10)
    assert layer._cache is cached
    assert full.shape == (30, 3) and block.shape == (10, 3)
    fresh = make().eval()
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(block, fresh(x, edge_index, num_targets=10))
    torch.testing.assert_close(layer(x, edge_index), full)
