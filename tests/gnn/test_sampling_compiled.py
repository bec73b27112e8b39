"""The compiled (numba) neighbour sampler against the torch one, its oracle: the same rules on every layer and
the same distribution (chi-square tests over many draws with fixed seeds)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from gnnseg.gnn.graph import Graph
from gnnseg.gnn.sampling import Block, NeighborSampler
from gnnseg.gnn.sampling.neighbor import resolve_backend

pytestmark = pytest.mark.skipif(resolve_backend("auto") != "numba",
                                reason="numba is not installed (pip install 'gnnseg[fast]')")
BACKENDS = ("torch", "numba")
SIGNIFICANCE = 1e-3        # a p-value below this fails: the draws are seeded, so a pass is a pass every time


def spread_graph(num_nodes: int = 300, seed: int = 0) -> Graph:
    """Undirected, coalesced, no self-loops; in-degrees from 1 to about 40, so fanouts 15, 10, 5 meet rows
    both shorter and longer than themselves."""
    generator = torch.Generator().manual_seed(seed)
    degree = torch.randint(1, 20, (num_nodes,), generator=generator)
    targets = torch.repeat_interleave(torch.arange(num_nodes), degree)
    sources = torch.randint(0, num_nodes, (targets.numel(),), generator=generator)
    return Graph(torch.stack([sources, targets]), num_nodes).remove_self_loops().to_undirected()


def incoming(graph: Graph, node: int) -> list[int]:
    """Edge ids of the edges into ``node``, sorted."""
    return sorted((graph.edge_index[1] == node).nonzero().flatten().tolist())


def check_layer_rules(graph: Graph, block: Block, drawing: torch.Tensor, fanout: int) -> None:
    """Each drawing target: at most ``fanout`` edges, all distinct, all true edges into it, and all of them
    when its degree is at most ``fanout``; targets that do not draw have no edges here."""
    block.validate(graph.num_nodes)
    source = block.source_nodes[block.edge_index[0]]
    target = block.target_nodes[block.edge_index[1]]
    assert torch.equal(graph.edge_index[:, block.edge_ids], torch.stack([source, target]))   # true edges
    for position in range(block.num_targets):
        ids = block.edge_ids[block.edge_index[1] == position].tolist()
        if not bool(drawing[position]):
            assert ids == []
            continue
        node = int(block.target_nodes[position])
        everything = incoming(graph, node)
        assert len(set(ids)) == len(ids) == min(fanout, len(everything))
        assert set(ids) <= set(everything)
        if len(everything) <= fanout:
            assert sorted(ids) == everything


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reuse", [False, True])
def test_every_layer_of_a_15_10_5_stack_keeps_the_fanouts(backend, reuse):
    graph = spread_graph()
    fanouts = [15, 10, 5]
    seeds = torch.arange(0, 300, 11)
    blocks = NeighborSampler(graph, fanouts, reuse=reuse, backend=backend).sample(seeds, generator=4)
    assert torch.equal(blocks[-1].target_nodes, seeds)
    for lower, upper in itertools.pairwise(blocks):
        assert torch.equal(lower.target_nodes, upper.source_nodes)
    for hop, (block, fanout) in enumerate(zip(reversed(blocks), fanouts)):
        if not reuse:                          # every target of every layer draws afresh
            check_layer_rules(graph, block, torch.ones(block.num_targets, dtype=torch.bool), fanout)
            continue
        # reusing: the input block holds every draw; the nodes first seen at this hop drew this hop's fanout
        first = 0 if hop == 0 else blocks[len(blocks) - hop].num_targets
        drawing = torch.zeros(blocks[0].num_targets, dtype=torch.bool)
        drawing[first:block.num_targets] = True
        edges = (block.edge_index[1] >= first).nonzero().flatten()
        hop_edges = Block(blocks[0].source_nodes, blocks[0].num_targets, block.edge_index[:, edges],
                          edge_ids=block.edge_ids[edges])
        check_layer_rules(graph, hop_edges, drawing, fanout)


def draws_of_one_node(backend: str, replace: bool, draws: int) -> np.ndarray:
    """How often each of node 0's 12 neighbours was drawn in ``draws`` samples of fanout 4."""
    hub = torch.stack([torch.arange(1, 13), torch.zeros(12, dtype=torch.int64)])     # 12 edges into node 0
    graph = Graph(hub, 13)
    sampler = NeighborSampler(graph, [4], replace=replace, backend=backend)
    generator = torch.Generator().manual_seed(11)
    counts = np.zeros(13, dtype=np.int64)
    for _ in range(draws):
        block = sampler.sample([0], generator=generator)[0]
        np.add.at(counts, block.source_nodes[block.edge_index[0]].numpy(), 1)
    return counts[1:]


@pytest.mark.parametrize("replace", [False, True])
def test_one_nodes_neighbours_are_drawn_uniformly_by_both_backends(replace):
    draws = 3000
    torch_counts, numba_counts = (draws_of_one_node(backend, replace, draws) for backend in BACKENDS)
    for counts in (torch_counts, numba_counts):
        assert counts.sum() == 4 * draws
        assert stats.chisquare(counts).pvalue > SIGNIFICANCE              # uniform over the 12 neighbours
    assert stats.chi2_contingency(np.stack([torch_counts, numba_counts])).pvalue > SIGNIFICANCE
    biased = numba_counts.copy()                                          # the test has the power to notice
    biased[0] += 250                                                      # a quarter more of one neighbour
    biased[1] -= 250
    assert stats.chi2_contingency(np.stack([torch_counts, biased])).pvalue < SIGNIFICANCE


def binned_contingency(first: list[int], second: list[int], bins: int = 8) -> float:
    """Chi-square p-value that two samples of one integer statistic come from one distribution, over bins
    of the pooled sample's quantiles (every bin well filled)."""
    pooled = np.concatenate([first, second])
    edges = np.unique(np.quantile(pooled, np.linspace(0, 1, bins + 1)[1:-1]))
    table = np.stack([np.bincount(np.searchsorted(edges, sample, side="right"), minlength=edges.size + 1)
                      for sample in (first, second)])
    return float(stats.chi2_contingency(table[:, table.sum(0) > 0]).pvalue)


@pytest.mark.parametrize("reuse", [False, True])
def test_every_layer_of_the_stack_has_the_torch_samplers_distribution(reuse):
    """Over 1500 draws of a [15, 10, 5] stack around four seeds: per layer, the number of source nodes and of
    edges, and how often each node is among the layer's sources, match between the backends."""
    graph = spread_graph(num_nodes=80, seed=2)
    seeds = torch.tensor([0, 17, 33, 61])
    draws = 1500
    sizes: dict[str, list[list[int]]] = {}
    inclusion: dict[str, np.ndarray] = {}
    for backend in BACKENDS:
        sampler = NeighborSampler(graph, [15, 10, 5], reuse=reuse, backend=backend)
        generator = torch.Generator().manual_seed(3)
        sizes[backend] = [[] for _ in range(6)]
        inclusion[backend] = np.zeros((3, graph.num_nodes), dtype=np.int64)
        for _ in range(draws):
            for layer, block in enumerate(sampler.sample(seeds, generator=generator)):
                sizes[backend][2 * layer].append(block.num_sources)
                sizes[backend][2 * layer + 1].append(block.num_edges)
                inclusion[backend][layer, block.source_nodes.numpy()] += 1
    for statistic in range(6):
        torch_values, numba_values = sizes["torch"][statistic], sizes["numba"][statistic]
        assert abs(np.mean(torch_values) - np.mean(numba_values)) < 0.05 * np.mean(torch_values)
        assert binned_contingency(torch_values, numba_values) > SIGNIFICANCE, f"statistic {statistic}"
    for layer in range(3):
        table = np.stack([inclusion["torch"][layer], inclusion["numba"][layer]])
        table = table[:, (table.sum(0) > 0) & (table.min(0) < draws)]     # nodes in every draw say nothing
        assert stats.chi2_contingency(table).pvalue > SIGNIFICANCE, f"layer {layer}"


def test_a_repeated_seed_is_named_and_leaves_the_sampler_usable():
    graph = spread_graph()
    sampler = NeighborSampler(graph, [5, 5], backend="numba")
    with pytest.raises(ValueError, match=r"seed node 7 appears more than once \(positions \[1, 3\]\)"):
        sampler.sample([4, 7, 9, 7], generator=0)
    blocks = sampler.sample([7, 4], generator=0)                 # the scratch table was left clean
    assert blocks[-1].target_nodes.tolist() == [7, 4]
    assert blocks[0].source_nodes.unique().numel() == blocks[0].num_sources
    assert bool((sampler.compiled.table == -1).all())
