"""Layers under ``torch.compile`` compute what they compute eagerly (within 1e-5), on full graphs and blocks."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from gnnseg.gnn.graph import Graph
from gnnseg.gnn.layers import GATConv, GCNConv, SAGEConv
from gnnseg.gnn.sampling import NeighborSampler
from tests.conftest import awkward_graph

TOLERANCE = dict(atol=1e-5, rtol=1e-5)
LAYERS = {
    "gcn": lambda: GCNConv(6, 5),
    "gcn-mean": lambda: GCNConv(6, 5, normalization="mean"),
    "gat": lambda: GATConv(6, 4, heads=3),
    "sage": lambda: SAGEConv(6, 5),
    "sage-pool": lambda: SAGEConv(6, 5, aggregator="pool"),
}
ON_BLOCKS = ("gcn-mean", "gat", "sage", "sage-pool")       # symmetric GCN has no block form


@functools.cache
def compile_problem() -> str | None:
    """Why ``torch.compile`` cannot run here (no C++ compiler, an unsupported platform), or ``None``."""
    try:
        torch.compile(lambda value: value * 2 + 1)(torch.ones(3))
    except Exception as error:           # whatever fails, the tests skip naming it
        return f"torch.compile is unavailable on this platform: {type(error).__name__}: {error}"
    return None


@pytest.fixture(autouse=True)
def _needs_compile():
    problem = compile_problem()
    if problem:
        pytest.skip(problem)
    torch._dynamo.reset()


def eager_and_compiled(layer: nn.Module, x: torch.Tensor, call) -> None:
    """Same output and same gradients (input and parameters) eagerly and compiled."""
    layer.eval()
    compiled = torch.compile(layer)
    results = []
    for module in (layer, compiled):
        layer.zero_grad(set_to_none=True)
        inputs = x.clone().requires_grad_()
        out = call(module, inputs)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), inputs.grad, {name: p.grad.clone() for name, p in layer.named_parameters()}))
    (eager_out, eager_grad, eager_params), (compiled_out, compiled_grad, compiled_params) = results
    torch.testing.assert_close(compiled_out, eager_out, **TOLERANCE)
    torch.testing.assert_close(compiled_grad, eager_grad, **TOLERANCE)
    assert eager_params.keys() == compiled_params.keys() and eager_params
    for name, grad in eager_params.items():
        torch.testing.assert_close(compiled_params[name], grad, **TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(LAYERS))
def test_compiled_layer_equals_eager_on_a_full_graph(name):
    torch.manual_seed(0)
    edge_index = awkward_graph(num_nodes=30, num_edges=120, seed=1)      # self-loops, duplicates, isolated nodes
    eager_and_compiled(LAYERS[name](), torch.randn(30, 6), lambda module, x: module(x, edge_index))


@pytest.mark.slow
@pytest.mark.parametrize("name", ON_BLOCKS)
def test_compiled_layer_equals_eager_on_a_sampled_block(name):
    torch.manual_seed(0)
    graph = Graph(awkward_graph(num_nodes=30, num_edges=120, seed=2), 30)
    block = NeighborSampler(graph, [4]).sample(torch.tensor([0, 3, 7, 28]), generator=0)[0]
    eager_and_compiled(LAYERS[name](), torch.randn(block.num_sources, 6),
                       lambda module, x: module(x, block.edge_index, num_targets=block.num_targets))
