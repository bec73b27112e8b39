"""The model registry both trainers build from, and the declarations StackedGNN reads from its layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gnnseg.gnn import models
from gnnseg.gnn.graph import Graph
from gnnseg.gnn.layers import GCNConv, GCNIIConv, GINEConv, GraphLayer
from gnnseg.gnn.sampling import NeighborSampler
from gnnseg.gnn.tasks.minibatch import MiniBatchConfig
from gnnseg.gnn.tasks.node import NodeConfig
from tests.conftest import awkward_graph


def test_the_registry_builds_every_model_by_name_with_the_settings_its_builder_takes():
    for name in models.BUILDERS:
        model = models.build_model(name, 6, 3, hidden_channels=8, num_layers=2, K=3, heads=2, cached=False)
        assert isinstance(model, models.StackedGNN)
        assert model(torch.randn(30, 6), awkward_graph()).shape == (30, 3)
    assert models.build_model("sgc", 6, 3, K=3, hidden_channels=8).layers[0].K == 3     # hidden: not SGC's
    assert models.build_model("gat", 6, 3, hidden_channels=4, heads=2).layers[0].heads == 2


def test_unknown_models_get_one_error_listing_the_known_names():
    with pytest.raises(ValueError, match="unknown model 'mlp'; choose one of gcn, gat, sgc, gin, sage, sampled_gcn"):
        models.build_model("mlp", 6, 3)
    with pytest.raises(ValueError, match="unknown model 'sage'; choose one of gcn, sgc, gin, gat"):
        NodeConfig(model="sage")
    with pytest.raises(ValueError, match="unknown model 'sgc'; choose one of sage, gcn, gat, gin"):
        MiniBatchConfig(model="sgc")


def test_cached_value_keeps_one_value_per_key_only_when_cached():
    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    layer = GraphLayer()
    assert [layer.cached_value((1,), compute) for _ in range(2)] == [1, 2]      # cached = False
    layer.cached = True
    assert [layer.cached_value((1,), compute) for _ in range(2)] == [3, 3]
    assert layer.cached_value((2,), compute) == 4 and layer.cached_value((2,), compute) == 4
    assert layer.cached_value(None, compute) == 5 and layer.cached_value((2,), compute) == 4   # None: a block
    layer.reset_cache()
    assert layer.cached_value((2,), compute) == 6


def test_reset_parameters_drops_the_cached_adjacency():
    layer = GCNConv(4, 3, cached=True)
    x, edge_index = torch.randn(30, 4), awkward_graph()
    first = layer.normalized_adjacency(edge_index, 30)
    assert layer.normalized_adjacency(edge_index, 30) is first
    layer.reset_parameters()
    assert layer.normalized_adjacency(edge_index, 30) is not first
    assert layer(x, edge_index).shape == (30, 3)


def test_stacks_take_graph_layers_and_refuse_blocks_for_layers_without_a_block_form():
    with pytest.raises(TypeError, match="layer 0 is a Linear, not a GraphLayer"):
        models.StackedGNN([nn.Linear(3, 2)])
    assert GCNConv.has_block_form and not GCNIIConv.has_block_form and not GINEConv.has_block_form
    assert models.NodeLinear.rowwise and models.NodeLinear.accepts_output_nodes
    block = NeighborSampler(Graph(awkward_graph(), 30), [2]).sample([0, 1], generator=0)[0]
    with pytest.raises(ValueError, match="GINEConv has no block form"):
        models.apply_on_block(GINEConv(nn.Linear(4, 4), 4, edge_dim=2), torch.randn(block.num_sources, 4), block)
