"""Samplers: uniform neighbours (GraphSAGE), FastGCN and LADIES, and the blocks they feed to the layers."""

from __future__ import annotations

import itertools
import pickle
import sys
import time

import pytest
import torch
from torch import nn

from gnnseg.gnn import ops
from gnnseg.gnn.graph import Graph
from gnnseg.gnn.layers import GATConv, GCNConv, GINConv, SAGEConv
from gnnseg.gnn.sampling import Block, FastGCNSampler, LADIESSampler, NeighborSampler
from gnnseg.gnn.sampling.blocks import Relabeler
from gnnseg.gnn.sampling.importance import draw_without_replacement
from gnnseg.gnn.sampling.neighbor import (
    distinct_offsets,
    padded_key_offsets,
    resolve_backend,
    sample_slots,
    sorted_key_offsets,
)
from tests.conftest import awkward_graph

SAMPLERS = {
    "neighbor": lambda graph, sizes: NeighborSampler(graph, sizes),                    # numba where it imports
    "neighbor-torch": lambda graph, sizes: NeighborSampler(graph, sizes, backend="torch"),
    "neighbor-replace": lambda graph, sizes: NeighborSampler(graph, sizes, replace=True),
    "fastgcn": lambda graph, sizes: FastGCNSampler(graph, sizes),
    "ladies": lambda graph, sizes: LADIESSampler(graph, sizes),
}


HAVE_NUMBA = resolve_backend("auto") == "numba"
NO_NUMBA = "numba is not installed (pip install 'gnnseg[fast]')"
# every behaviour test of the neighbour sampler runs on both of its backends
BACKENDS = ["torch", pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason=NO_NUMBA))]


def awkward() -> Graph:
    """30 nodes, directed, with self-loops, duplicate edges and isolated nodes 27-29."""
    return Graph(awkward_graph(seed=0), 30)


def random_graph(num_nodes: int = 200, num_edges: int = 1500, seed: int = 0) -> Graph:
    """Undirected, coalesced, no self-loops; degrees well above small fanouts."""
    generator = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=generator)
    return Graph(edge_index, num_nodes).remove_self_loops().to_undirected()


def check_chain(blocks: list[Block], seeds: torch.Tensor, num_nodes: int) -> None:
    """The block conventions: valid blocks, targets first, each block's sources the next block's targets."""
    for block in blocks:
        block.validate(num_nodes)
        assert torch.equal(block.target_nodes, block.source_nodes[:block.num_targets])
    for lower, upper in itertools.pairwise(blocks):
        assert torch.equal(lower.target_nodes, upper.source_nodes)
    assert torch.equal(blocks[-1].target_nodes, seeds)


# ------------------------------------------------------------------------------------------ neighbour sampler
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("replace,reuse", [(False, False), (True, False), (False, True), (True, True)])
def test_every_sampled_edge_is_an_edge_of_the_graph(replace, reuse, backend):
    graph = awkward()
    seeds = torch.tensor([3, 0, 28, 1, 17])
    sampler = NeighborSampler(graph, [4, 3, 2], replace=replace, reuse=reuse, backend=backend)
    blocks = sampler.sample(seeds, generator=0)
    check_chain(blocks, seeds, graph.num_nodes)
    for block in blocks:
        source = block.source_nodes[block.edge_index[0]]
        target = block.target_nodes[block.edge_index[1]]
        assert torch.equal(graph.edge_index[:, block.edge_ids], torch.stack([source, target]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_fanout_is_respected_and_small_neighbourhoods_are_taken_whole(backend):
    graph = random_graph()
    degree = graph.in_degree()
    seeds = torch.arange(0, 200, 7)
    for fanouts in ([3, 2], [10, 5]):
        blocks = NeighborSampler(graph, fanouts, backend=backend).sample(seeds, generator=1)
        for block, fanout in zip(reversed(blocks), fanouts):
            counts = torch.bincount(block.edge_index[1], minlength=block.num_targets)
            assert torch.equal(counts, degree[block.target_nodes].clamp_max(fanout))


@pytest.mark.parametrize("backend", BACKENDS)
def test_with_replacement_draws_exactly_fanout_per_node_with_neighbours(backend):
    graph = awkward()
    degree = graph.in_degree()
    block = NeighborSampler(graph, [6], replace=True, backend=backend).sample(torch.arange(30), generator=2)[0]
    counts = torch.bincount(block.edge_index[1], minlength=30)
    assert torch.equal(counts, torch.where(degree > 0, 6, 0))
    assert block.edge_ids.unique().numel() < block.num_edges          # repeats happen with replacement


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_replacement_never_repeats_an_edge_or_a_neighbour(backend):
    graph = random_graph()
    blocks = NeighborSampler(graph, [5, 5], backend=backend).sample(torch.arange(0, 200, 3), generator=3)
    for block in blocks:
        assert block.edge_ids.unique().numel() == block.num_edges
        pairs = block.edge_index[1] * block.num_sources + block.edge_index[0]
        assert pairs.unique().numel() == block.num_edges                # graph is coalesced: no neighbour twice


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_blocks_and_different_seeds_differ(backend):
    graph = random_graph()
    sampler = NeighborSampler(graph, [4, 3], backend=backend)
    seeds = torch.arange(0, 200, 5)

    def signature(blocks):
        return [(b.source_nodes.tolist(), b.edge_index.tolist()) for b in blocks]

    first = signature(sampler.sample(seeds, generator=7))
    assert signature(sampler.sample(seeds, generator=7)) == first
    assert signature(sampler.sample(seeds, generator=torch.Generator().manual_seed(7))) == first
    assert signature(sampler.sample(seeds, generator=8)) != first
    torch.manual_seed(0)
    global_rng = signature(sampler.sample(seeds))
    torch.manual_seed(0)
    assert signature(sampler.sample(seeds)) == global_rng


@pytest.mark.parametrize("backend", BACKENDS)
def test_reused_samples_draw_each_node_once_and_share_its_edges_with_every_layer(backend):
    """reuse=True (PyG's NeighborLoader): a block's edges are the first edges of the block below, each node
    draws its neighbours at the hop where it first appears, and only there."""
    graph = random_graph()
    fanouts = [5, 3, 2]
    seeds = torch.tensor([4, 11, 0, 37])
    blocks = NeighborSampler(graph, fanouts, reuse=True, backend=backend).sample(seeds, generator=3)
    check_chain(blocks, seeds, graph.num_nodes)
    for lower, upper in itertools.pairwise(blocks):
        assert torch.equal(lower.edge_index[:, :upper.num_edges], upper.edge_index)
        assert torch.equal(lower.edge_ids[:upper.num_edges], upper.edge_ids)
    # in the input block, a node first seen at hop h (0: the seeds) has min(degree, fanouts[h]) edges
    first_hop = torch.zeros(blocks[0].num_targets, dtype=torch.int64)
    for hop, block in enumerate(reversed(blocks[1:]), start=1):
        first_hop[block.num_targets:] = hop
    degree = graph.in_degree()[blocks[0].target_nodes]
    expected = torch.minimum(degree, torch.tensor(fanouts)[first_hop])
    drawn = torch.bincount(blocks[0].edge_index[1], minlength=blocks[0].num_targets)
    assert torch.equal(drawn, expected)
    independent = NeighborSampler(graph, fanouts, backend=backend).sample(seeds, generator=3)
    # drawn edges: each node once, against every target of every layer drawing afresh
    assert blocks[0].num_edges < sum(block.num_edges for block in independent)


def test_distinct_offsets_are_uniform_subsets():
    """Floyd's algorithm: every 2-subset of 5 positions equally likely (10 subsets), across 40 000 rows."""
    rows = 40_000
    chosen = distinct_offsets(torch.full((rows,), 5), 2, torch.Generator().manual_seed(0))
    assert chosen.shape == (rows, 2) and bool((chosen[:, 0] != chosen[:, 1]).all())  # distinct
    low, high = chosen.min(dim=1).values, chosen.max(dim=1).values
    frequency = torch.bincount(low * 5 + high, minlength=25).float() / rows
    subsets = frequency[frequency > 0]
    assert subsets.numel() == 10
    assert float((subsets - 0.1).abs().max()) < 0.01                                # ~5 standard errors


@pytest.mark.parametrize("draw", [distinct_offsets, padded_key_offsets, sorted_key_offsets])
def test_distinct_offsets_are_uniform_subsets_of_rows_of_any_length(draw):
    """Rows of different lengths in one call: distinct offsets within each row's length, and in a row of 4
    each of the 6 subsets of 2 equally likely."""
    degree = torch.tensor([4, 7, 2, 4] * 10_000)
    chosen = draw(degree, 2, torch.Generator().manual_seed(3))
    assert chosen.shape == (degree.numel(), 2) and bool((chosen[:, 0] != chosen[:, 1]).all())
    assert bool((chosen >= 0).all()) and bool((chosen < degree.unsqueeze(1)).all())
    fours = chosen[degree == 4]
    low, high = fours.min(dim=1).values, fours.max(dim=1).values
    frequency = torch.bincount(low * 4 + high, minlength=16).float() / fours.size(0)
    subsets = frequency[frequency > 0]
    assert subsets.numel() == 6
    assert float((subsets - 1 / 6).abs().max()) < 0.015                              # ~5 standard errors


def test_sampled_rows_take_every_short_row_and_fanout_distinct_edges_of_long_ones():
    """Rows shorter than the fanout keep every edge in CSR order; longer ones draw ``fanout`` distinct edges,
    whichever way: Floyd's algorithm (a row far longer than the fanout), a padded key matrix (long rows of
    similar lengths) or flat sorted keys (long rows of unequal lengths)."""
    degree = torch.tensor([3, 0, 40, 12, 500_000, 9, 300, 11])
    row_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(degree, 0)])
    cases = [(torch.tensor([5, 2, 0, 4, 1, 3]), 4), (torch.tensor([5, 2, 0, 4, 1, 3]), 10),   # Floyd: the hub
             (torch.tensor([5, 2, 0, 1, 3]), 10),                                             # padded: 40, 12
             (torch.tensor([6, 2, 7, 3, 0]), 10)]                                             # sorted: 300, 40, ...
    for nodes, fanout in cases:
        slots, owner = sample_slots(row_ptr, nodes, fanout, generator=torch.Generator().manual_seed(fanout))
        assert torch.equal(owner, torch.repeat_interleave(degree[nodes].clamp_max(fanout)))
        for position, node in enumerate(nodes.tolist()):
            mine = slots[owner == position]
            assert bool(((mine >= row_ptr[node]) & (mine < row_ptr[node + 1])).all())
            assert mine.unique().numel() == mine.numel()
            if degree[node] <= fanout:
                assert torch.equal(mine, torch.arange(int(row_ptr[node]), int(row_ptr[node + 1])))


def test_with_replacement_draws_are_uniform():
    row_ptr = torch.tensor([0, 4])
    slots, owner = sample_slots(row_ptr, torch.zeros(1, dtype=torch.int64), 40_000, replace=True,
                                generator=torch.Generator().manual_seed(1))
    assert bool((owner == 0).all())
    frequency = torch.bincount(slots, minlength=4).float() / slots.numel()
    assert float((frequency - 0.25).abs().max()) < 0.01


def hub_graph(num_leaves: int) -> Graph:
    """A star: node 0 linked both ways to nodes 1..num_leaves."""
    leaves = torch.arange(1, num_leaves + 1)
    hub = torch.zeros(num_leaves, dtype=torch.int64)
    return Graph(torch.stack([torch.cat([leaves, hub]), torch.cat([hub, leaves])]), num_leaves + 1)


def largest_allocation(function) -> int:
    """Bytes of the largest single CPU tensor allocation while ``function`` runs (torch's profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        function()
    return max((event.cpu_memory_usage for event in prof.events()), default=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("replace", [False, True])
def test_a_hub_with_two_million_neighbours_costs_no_more_than_a_leaf(replace, backend):
    num_leaves = 2_000_000
    graph = hub_graph(num_leaves)
    sampler = NeighborSampler(graph, [10, 10], replace=replace, backend=backend)      # builds the graph's CSR once
    sampler.sample(torch.tensor([5]), generator=0)                    # numba: loads (or compiles) the kernel
    seeds = torch.tensor([0, 5, 17])                                  # the hub and two leaves (hub at hop 2 too)
    start = time.perf_counter()
    blocks = sampler.sample(seeds, generator=0)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"sampling around a hub took {elapsed:.2f} s"
    hub_edges = blocks[-1].edge_index[1] == 0
    assert int(hub_edges.sum()) == 10
    if not replace:
        assert blocks[-1].source_nodes[blocks[-1].edge_index[0, hub_edges]].unique().numel() == 10
    check_chain(blocks, seeds, graph.num_nodes)
    if backend == "numba":      # its arrays are numba's, invisible to torch's profiler: the time above is the test
        return
    # No tensor proportional to the hub's degree: the largest allocation stays tiny (a hub-sized int64
    # tensor would be 16 MB; the instrument itself is checked on one).
    assert largest_allocation(lambda: torch.zeros(num_leaves, dtype=torch.int64)) >= 8 * num_leaves
    assert largest_allocation(lambda: sampler.sample(seeds, generator=1)) < 64 * 1024


@pytest.mark.parametrize("backend", BACKENDS)
def test_isolated_seeds_get_no_edges_but_stay_targets(backend):
    graph = awkward()                                                  # 27, 28, 29 have no edges
    seeds = torch.tensor([27, 4, 29])
    blocks = NeighborSampler(graph, [5, 5], backend=backend).sample(seeds, generator=0)
    top = blocks[-1]
    assert top.target_nodes.tolist() == [27, 4, 29]
    assert not bool(((top.edge_index[1] == 0) | (top.edge_index[1] == 2)).any())
    only_isolated = NeighborSampler(graph, [5, 5], backend=backend).sample(torch.tensor([28]), generator=0)
    assert [b.num_edges for b in only_isolated] == [0, 0]
    assert [b.source_nodes.tolist() for b in only_isolated] == [[28], [28]]
    layer = SAGEConv(3, 2)
    x = torch.randn(1, 3)
    out = layer(x, only_isolated[-1].edge_index, num_targets=1)
    torch.testing.assert_close(out, layer.lin_l.bias + layer.lin_r(x))   # the root term only


def test_relabel_keeps_targets_first_then_new_nodes_in_order_of_appearance():
    relabel = Relabeler(13)
    sources, local = relabel(torch.tensor([9, 4, 7]), torch.tensor([4, 12, 9, 3, 12, 7]))
    assert sources.tolist() == [9, 4, 7, 12, 3]
    assert local.tolist() == [1, 3, 0, 4, 3, 2]
    # the scratch table is left clean: a second call with other nodes knows nothing of the first
    sources, local = relabel(torch.tensor([3]), torch.tensor([12, 0, 12]))
    assert sources.tolist() == [3, 12, 0] and local.tolist() == [1, 2, 1]
    # repeated targets are refused by name, and leave the table clean too
    with pytest.raises(ValueError, match=r"seed node 5 appears more than once \(positions \[1, 2\]\)"):
        relabel(torch.tensor([2, 5, 5]), torch.tensor([7, 2]))
    sources, local = relabel(torch.tensor([7]), torch.tensor([5, 2]))
    assert sources.tolist() == [7, 5, 2] and local.tolist() == [1, 2]


def test_block_validation_names_the_problem():
    good = Block(torch.tensor([4, 9, 2]), 2, torch.tensor([[2, 0], [0, 1]]))
    assert good.validate(10) is good and good.size == (3, 2) and good.target_nodes.tolist() == [4, 9]
    assert torch.equal(good.to("cpu").edge_index, good.edge_index)
    cases = [
        (Block(torch.tensor([4, 9, 2]), 4, torch.zeros(2, 0, dtype=torch.int64)), "num_targets must be between 0"),
        (Block(torch.tensor([4, 4]), 1, torch.zeros(2, 0, dtype=torch.int64)), "holds a node more than once"),
        (Block(torch.tensor([4, 12]), 1, torch.zeros(2, 0, dtype=torch.int64)), "refers to node 12, outside"),
        (Block(torch.tensor([4, 9, 2]), 2, torch.tensor([[3], [0]])), "source 3 but the block has 3 source"),
        (Block(torch.tensor([4, 9, 2]), 2, torch.tensor([[0], [2]])), "target 2 but the block has 2 targets"),
        (Block(torch.tensor([4, 9, 2]), 2, torch.tensor([[0], [1]]), edge_weight=torch.ones(2)),
         r"edge_weight must have shape \(1,\)"),
    ]
    for block, message in cases:
        with pytest.raises(ValueError, match=message):
            block.validate(10)


@pytest.mark.parametrize("fanouts,message", [
    ([0], r"fanouts\[0\] must be a positive integer, got 0"),
    ([5, -1], r"fanouts\[1\] must be a positive integer, got -1"),
    ([2.5], r"fanouts\[0\] must be a positive integer, got 2.5"),
    ([], "fanouts must name at least one layer"),
])
def test_bad_fanouts_are_named(fanouts, message):
    with pytest.raises(ValueError, match=message):
        NeighborSampler(awkward(), fanouts)
    with pytest.raises(TypeError, match="fanouts must be a sequence"):
        NeighborSampler(awkward(), 5)


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("seeds,message", [
    ([3, 30], "seed node 30 .position 1. is out of range for a graph of 30 nodes"),
    ([-1], "seed node -1 .position 0. is out of range"),
    ([4, 2, 4], r"seed node 4 appears more than once \(positions \[0, 2\]\)"),
    ([], "no seed nodes"),
    ([[1, 2]], "must be a 1-D tensor"),
    ([1.0, 2.0], "must be integer node ids"),
])
def test_bad_seeds_are_named(name, seeds, message):
    sampler = SAMPLERS[name](awkward(), [2])
    nodes = torch.tensor(seeds) if seeds else torch.tensor([], dtype=torch.int64)
    with pytest.raises(ValueError, match=message):
        sampler.sample(nodes)
    with pytest.raises(ValueError, match=message):                 # the exact layer's blocks check alike
        sampler.full_neighborhood().block(nodes)


def test_backend_names_are_checked_and_auto_takes_numba_where_it_imports():
    assert NeighborSampler(awkward(), [2], backend="torch").backend == "torch"
    assert NeighborSampler(awkward(), [2]).backend == ("numba" if HAVE_NUMBA else "torch")
    with pytest.raises(ValueError, match="unknown sampler backend 'cuda'; choose one of auto, numba, torch"):
        NeighborSampler(awkward(), [2], backend="cuda")


def test_without_numba_auto_falls_back_to_torch_and_numba_is_refused_by_name(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)                     # as if numba were not installed
    monkeypatch.delitem(sys.modules, "gnnseg.gnn.sampling.compiled", raising=False)
    assert resolve_backend("auto") == "torch"
    assert NeighborSampler(awkward(), [2]).sample([1, 2], generator=0)[-1].target_nodes.tolist() == [1, 2]
    with pytest.raises(ImportError, match=r"sampler backend 'numba' needs numba.*pip install 'gnnseg\[fast\]'"):
        resolve_backend("numba")


def test_bad_generator_is_named():
    with pytest.raises(ValueError, match="generator must be a torch.Generator, an int seed or None"):
        NeighborSampler(awkward(), [2]).sample([1], generator="seven")


class SampleBatch:
    """A DataLoader ``collate_fn``: each item is ``(seed nodes, generator seed)``, so the blocks do not depend
    on which worker samples them (picklable, for any multiprocessing start method)."""

    def __init__(self, sampler: NeighborSampler) -> None:
        self.sampler = sampler

    def __call__(self, item: tuple[torch.Tensor, int]) -> list[Block]:
        return self.sampler.sample(*item)


@pytest.mark.parametrize("backend", BACKENDS)
def test_blocks_and_samplers_travel_to_dataloader_workers(backend):
    graph = random_graph()
    sampler = NeighborSampler(graph, [3, 2], backend=backend)
    copy = pickle.loads(pickle.dumps(sampler))
    ours, theirs = sampler.sample([1, 2, 3], generator=5), copy.sample([1, 2, 3], generator=5)
    assert all(torch.equal(a.edge_index, b.edge_index) and torch.equal(a.source_nodes, b.source_nodes)
               for a, b in zip(ours, theirs))
    batches = [(torch.tensor([1, 2, 3]), 5), (torch.tensor([7, 8]), 6)]
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=1,
                                         collate_fn=SampleBatch(sampler))
    received = list(loader)
    assert torch.equal(received[0][0].source_nodes, ours[0].source_nodes)
    assert torch.equal(received[1][-1].target_nodes, torch.tensor([7, 8]))


# ---------------------------------------------------------------------------------------- FastGCN and LADIES
def dense_normalized_adjacency(graph: Graph, normalization: str) -> torch.Tensor:
    """``A_hat`` with targets as rows, from dense matrices: ``A + I`` (duplicate edges summed), then rows
    normalized (``mean``) or ``D^-1/2 (A + I) D^-1/2`` (``symmetric``)."""
    n = graph.num_nodes
    adjacency = torch.zeros(n, n, dtype=torch.float64)
    adjacency.index_put_((graph.edge_index[1], graph.edge_index[0]), torch.ones(graph.num_edges, dtype=torch.float64),
                         accumulate=True)
    adjacency += torch.eye(n, dtype=torch.float64)
    degree = adjacency.sum(1)
    if normalization == "mean":
        return adjacency / degree[:, None]
    return adjacency / degree.sqrt()[:, None] / degree.sqrt()[None, :]


def small_graph() -> Graph:
    """Directed, duplicate edges, no self-loops (so ``A + I`` is unambiguous), one isolated node."""
    edge_index = awkward_graph(num_nodes=25, num_edges=70, seed=3)
    return Graph(edge_index, 25).remove_self_loops()


@pytest.mark.parametrize("normalization", ["mean", "symmetric"])
def test_fastgcn_probabilities_equal_the_dense_column_norms(normalization):
    graph = small_graph()
    a_hat = dense_normalized_adjacency(graph, normalization)
    expected = (a_hat ** 2).sum(0) / (a_hat ** 2).sum()                 # q(u) ∝ ||A_hat[:, u]||^2
    sampler = FastGCNSampler(graph, [5], normalization=normalization)
    torch.testing.assert_close(sampler.probabilities, expected, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("normalization", ["mean", "symmetric"])
def test_ladies_probabilities_equal_the_dense_restricted_column_norms(normalization):
    graph = small_graph()
    a_hat = dense_normalized_adjacency(graph, normalization)
    targets = torch.tensor([0, 5, 9, 13])
    rows = a_hat[targets]
    expected = (rows ** 2).sum(0) / (rows ** 2).sum()                     # p(u) ∝ ||A_hat[T, u]||^2
    nodes, probabilities = LADIESSampler(graph, [5], normalization=normalization).probabilities(targets)
    assert torch.equal(nodes, expected.nonzero().flatten())
    torch.testing.assert_close(probabilities, expected[nodes], atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("method", ["fastgcn", "ladies"])
@pytest.mark.parametrize("normalization", ["mean", "symmetric"])
def test_importance_blocks_equal_the_dense_reweighted_rows(method, normalization):
    """Each block's weights are ``A_hat[T, S'] / p(S')`` with rows normalized, ``S'`` the sampled nodes (and,
    for LADIES, the targets), computed densely; every edge is a nonzero of ``A_hat``."""
    graph = small_graph()
    a_hat = dense_normalized_adjacency(graph, normalization)
    sampler_type = FastGCNSampler if method == "fastgcn" else LADIESSampler
    sampler = sampler_type(graph, [8, 6, 10], normalization=normalization)
    seeds = torch.tensor([2, 11, 7])
    blocks = sampler.sample(seeds, generator=4)
    check_chain(blocks, seeds, graph.num_nodes)
    if method == "fastgcn":   # the seeds' layer draws first from the generator: exactly these 8 nodes
        drawn = draw_without_replacement(sampler.probabilities, 8, torch.Generator().manual_seed(4))
        assert torch.equal(blocks[-1].source_nodes, Relabeler(graph.num_nodes)(seeds, drawn)[0])
        top_sources = blocks[-1].source_nodes[blocks[-1].edge_index[0]]
        assert bool(torch.isin(top_sources, drawn).all())              # no edge from an undrawn target
    for block in blocks:
        targets, sources = block.target_nodes, block.source_nodes
        rows = a_hat[targets]
        if method == "fastgcn":
            probabilities = (a_hat ** 2).sum(0) / (a_hat ** 2).sum()
        else:
            probabilities = (rows ** 2).sum(0) / (rows ** 2).sum()
        sampled = sources[block.num_targets:]
        assert bool((probabilities[sampled] > 0).all())
        # the nodes an edge may come from: everything drawn (among the sources) and, for LADIES, the targets
        edge_sources = sources[block.edge_index[0]]
        assert bool((rows[block.edge_index[1], edge_sources] != 0).all())
        columns = sources if method == "ladies" else torch.cat([sampled, edge_sources]).unique()
        reweighted = torch.zeros_like(rows)
        reweighted[:, columns] = rows[:, columns] / probabilities[columns]
        sums = reweighted.sum(1, keepdim=True)
        expected = reweighted / sums.masked_fill(sums == 0, 1.0)
        got = torch.zeros(block.num_targets, graph.num_nodes, dtype=torch.float64)
        got.index_put_((block.edge_index[1], edge_sources), block.edge_weight.double(), accumulate=True)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_importance_draw_follows_the_probabilities_and_skips_zeros():
    probabilities = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(4)
    for _ in range(4000):
        counts[draw_without_replacement(probabilities, 1, generator)] += 1
    torch.testing.assert_close(counts / 4000, probabilities.float(), atol=0.03, rtol=0)
    assert draw_without_replacement(probabilities, 10, generator).tolist() == [0, 1, 2]   # capped, no zero


def test_ladies_draws_only_neighbours_of_the_targets_and_fastgcn_anywhere():
    graph = random_graph(num_nodes=300, num_edges=600, seed=5)
    seeds = torch.tensor([1, 2])
    neighbours = set(graph.edge_index[0, torch.isin(graph.edge_index[1], seeds)].tolist()) | {1, 2}
    for generator in range(5):
        block = LADIESSampler(graph, [8]).sample(seeds, generator=generator)[0]
        assert set(block.source_nodes.tolist()) <= neighbours
    drawn = set()
    for generator in range(5):
        drawn |= set(FastGCNSampler(graph, [8]).sample(seeds, generator=generator)[0].source_nodes.tolist())
    assert not drawn <= neighbours


@pytest.mark.parametrize("sampler_type", [FastGCNSampler, LADIESSampler])
def test_importance_samplers_are_reproducible_and_size_bounded(sampler_type):
    graph = random_graph()
    sampler = sampler_type(graph, [16, 8])
    seeds = torch.arange(0, 200, 10)
    first, again = sampler.sample(seeds, generator=3), sampler.sample(seeds, generator=3)
    other = sampler.sample(seeds, generator=4)
    assert all(torch.equal(a.source_nodes, b.source_nodes) and torch.equal(a.edge_weight, b.edge_weight)
               for a, b in zip(first, again))
    assert any(not torch.equal(a.source_nodes, b.source_nodes) for a, b in zip(first, other))
    assert first[1].num_sources <= first[1].num_targets + 16                  # at most 16 drawn for layer 1
    assert first[0].num_sources <= first[0].num_targets + 8


def test_importance_sampler_options_are_checked():
    with pytest.raises(ValueError, match="normalization of A_hat must be 'mean'"):
        FastGCNSampler(awkward(), [4], normalization="none")
    with pytest.raises(ValueError, match=r"num_samples\[0\] must be a positive integer, got 0"):
        LADIESSampler(awkward(), [0])


# ----------------------------------------------------------------------------------------- blocks into layers
LAYERS = {
    "gcn": lambda a, b: GCNConv(a, b, normalization="mean"),
    "gin": lambda a, b: GINConv(nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, b)), eps=0.1),
    "gat": lambda a, b: GATConv(a, b, heads=2, concat=False),
    "sage-mean": lambda a, b: SAGEConv(a, b),
    "sage-pool": lambda a, b: SAGEConv(a, b, aggregator="pool", normalize=True),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_two_layers_on_full_neighbourhood_blocks_equal_the_full_graph(name):
    """The oracle: with a fanout at least the largest degree every block holds whole neighbourhoods, so a
    stack run block by block must give the full-graph outputs of the seeds (awkward graph: self-loops,
    duplicate edges, isolated nodes)."""
    torch.manual_seed(0)
    graph = awkward()
    fanout = int(graph.in_degree().max())
    x = torch.randn(30, 6)
    first, second = LAYERS[name](6, 8).eval(), LAYERS[name](8, 3).eval()
    full = second(torch.relu(first(x, graph.edge_index)), graph.edge_index)
    seeds = torch.tensor([5, 0, 28, 1, 13])
    blocks = NeighborSampler(graph, [fanout, fanout]).sample(seeds, generator=0)
    h = x[blocks[0].source_nodes]
    h = torch.relu(first(h, blocks[0].edge_index, num_targets=blocks[0].num_targets))
    out = second(h, blocks[1].edge_index, num_targets=blocks[1].num_targets)
    torch.testing.assert_close(out, full[seeds], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler_name", list(SAMPLERS))
@pytest.mark.parametrize("name", list(LAYERS))
def test_every_sampler_feeds_every_layer(sampler_name, name):
    torch.manual_seed(1)
    graph = random_graph()
    sampler = SAMPLERS[sampler_name](graph, [5, 4])
    seeds = torch.tensor([3, 50, 120])
    blocks = sampler.sample(seeds, generator=2)
    first, second = LAYERS[name](6, 8), LAYERS[name](8, 3)
    if name == "gcn" and blocks[0].edge_weight is not None:
        first, second = (GCNConv(a, b, normalization="none", self_loops=False) for a, b in ((6, 8), (8, 3)))
    takes_weights = isinstance(first, GCNConv) or name == "sage-mean"    # importance weights, where defined
    h = torch.randn(graph.num_nodes, 6)[blocks[0].source_nodes]
    for layer, block in zip((first, second), blocks):
        weights = (block.edge_weight,) if takes_weights else ()
        h = layer(h, block.edge_index, *weights, num_targets=block.num_targets)
        assert h.shape[0] == block.num_targets
    assert h.shape == (3, 3) and bool(torch.isfinite(h).all())
    h.sum().backward()                                                 # gradients flow through the blocks
    assert all(p.grad is not None for p in first.parameters() if p.requires_grad)


def test_gcn_on_a_fastgcn_block_is_the_sampled_propagation():
    graph = small_graph()
    block = FastGCNSampler(graph, [6]).sample([1, 4, 8], generator=0)[0]
    x = torch.randn(block.num_sources, 5)
    layer = GCNConv(5, 2, normalization="none", self_loops=False)
    propagation = torch.zeros(block.num_targets, block.num_sources)
    propagation.index_put_((block.edge_index[1], block.edge_index[0]), block.edge_weight, accumulate=True)
    torch.testing.assert_close(layer(x, block.edge_index, block.edge_weight, num_targets=block.num_targets),
                               propagation @ x @ layer.linear.weight.t() + layer.bias)


def test_symmetric_normalization_is_refused_on_blocks_by_the_helper_too():
    with pytest.raises(ValueError, match="needs the degree of every source"):
        ops.normalize_edge_weights(torch.tensor([[3], [0]]), 4, normalization="symmetric", num_targets=2)
    edges, weights = ops.normalize_edge_weights(torch.tensor([[3, 2], [0, 0]]), 4, normalization="mean",
                                                num_targets=2)
    assert edges[:, -2:].tolist() == [[0, 1], [0, 1]]                   # self-loops for the targets only
    assert weights.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
