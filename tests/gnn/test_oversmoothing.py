"""Over-smoothing: MAD / MADGap against a dense reference, Dirichlet energy against x^T L x, PairNorm and GCNII
against PyG, and small depth sweeps that write their run directory."""

from __future__ import annotations

import itertools
import json
import math

import networkx as nx
import numpy as np
import pytest
import torch

from gnnseg.cli import main
from gnnseg.gnn import ops
from gnnseg.gnn.datasets import load_karate, load_planetoid
from gnnseg.gnn.layers import GCNIIConv, PairNorm
from gnnseg.gnn.smoothing_metrics import (
    HopRange,
    dirichlet_energy,
    hop_distances,
    mad_gap,
    mean_average_distance,
    smoothness,
)
from gnnseg.gnn.tasks.depth_sweeps import (
    GCNII_LAYER_WEIGHT_DECAY,
    SWEEP_CONFIGS,
    build_variant,
    depth_sweep,
    karate_smoothing,
    run_oversmoothing,
)
from gnnseg.gnn.tasks.node import optimizer_for
from tests.conftest import awkward_graph

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


# ----------------------------------------------------------------------------------------------- references
def graph_with_long_path() -> tuple[torch.Tensor, int]:
    """awkward_graph (30 nodes: loops, duplicates, 3 isolated nodes) plus a 14-node path 30..43 stored in one
    direction only, attached to node 0: hop distances up to ~16, several components."""
    path = torch.arange(30, 44)
    chain = torch.stack([torch.cat([torch.tensor([0]), path[:-1]]), path])
    return torch.cat([awkward_graph(seed=11), chain], dim=1), 44


def bfs_hops(edge_index: torch.Tensor, num_nodes: int) -> np.ndarray:
    """All-pairs hop distances by networkx BFS on the undirected graph (inf when unreachable)."""
    graph = nx.Graph()
    graph.add_nodes_from(range(num_nodes))
    graph.add_edges_from(edge_index.t().tolist())
    hops = np.full((num_nodes, num_nodes), np.inf)
    for source, lengths in nx.all_pairs_shortest_path_length(graph):
        for target, length in lengths.items():
            hops[source, target] = length
    return hops


def reference_mad(x: np.ndarray, mask: np.ndarray, target: np.ndarray | None = None) -> float:
    """victorchen96/MadGap ``mad_value`` (with ``target_idx``): dense N x N cosine distances, masked,
    per-node mean over nonzero entries, then the mean over nodes with a nonzero mean."""
    from sklearn.metrics import pairwise_distances

    distances = pairwise_distances(x, x, metric="cosine") * mask
    node_means = distances.sum(1) / ((distances != 0).sum(1) + 1e-8)
    if target is not None:
        node_means = node_means * target
    return node_means.sum() / ((node_means != 0).sum() + 1e-8)


def features_with_ties(num_nodes: int, seed: int = 0) -> torch.Tensor:
    """Random rows, plus exact duplicates (distance exactly 0) and zero rows (distance 1 to everything)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, 6, generator=generator, dtype=torch.float64)
    x[[3, 7, 12, 31]] = torch.tensor([2.0, 0, 0, 0, 0, 0], dtype=torch.float64)   # same direction
    x[[5, 20]] = 0.0
    return x


# ----------------------------------------------------------------------------------------------- MAD / MADGap
def test_hop_distances_match_networkx_bfs():
    edge_index, n = graph_with_long_path()
    expected = bfs_hops(edge_index, n)
    adjacency = ops.SparseMatrix.from_edges(torch.cat([edge_index, edge_index.flip(0)], 1), None, (n, n)).matrix
    sources = torch.tensor([0, 5, 29, 30, 43])
    full = hop_distances(adjacency, sources, depth=n).numpy()
    np.testing.assert_array_equal(full, expected[sources.numpy()])
    limited = hop_distances(adjacency, sources, depth=4).numpy()
    np.testing.assert_array_equal(limited, np.where(expected[sources.numpy()] <= 4, expected[sources.numpy()],
                                                    np.inf))


@pytest.mark.parametrize("chunk_size", [1, 7, 44, 1000])
@pytest.mark.parametrize("rule", [HopRange(), HopRange.within(2), HopRange.beyond(3), HopRange(2, 5)])
def test_chunked_mad_equals_dense_reference(chunk_size, rule):
    edge_index, n = graph_with_long_path()
    x = features_with_ties(n)
    hops = bfs_hops(edge_index, n)
    mask = ((hops >= rule.min_hops) & (hops <= rule.max_hops)).astype(float)
    expected = reference_mad(x.numpy(), mask)
    got = mean_average_distance(x, edge_index, pairs=rule, chunk_size=chunk_size)
    assert got == pytest.approx(expected, rel=1e-6)
    target = np.zeros(n)
    target[::3] = 1.0
    subset = mean_average_distance(x, edge_index, pairs=rule, chunk_size=chunk_size,
                                   nodes=torch.from_numpy(target).bool())
    assert subset == pytest.approx(reference_mad(x.numpy(), mask, target), rel=1e-6)


def test_mad_gap_uses_three_and_eight_hops():
    edge_index, n = graph_with_long_path()
    x = features_with_ties(n, seed=1)
    hops = bfs_hops(edge_index, n)
    neighbor = reference_mad(x.numpy(), ((hops >= 1) & (hops <= 3)).astype(float))
    remote = reference_mad(x.numpy(), (hops >= 8).astype(float))     # unreachable pairs are remote
    result = mad_gap(x, edge_index, chunk_size=5)
    assert result.neighbor == pytest.approx(neighbor, rel=1e-6)
    assert result.remote == pytest.approx(remote, rel=1e-6)
    assert result.gap == pytest.approx(remote - neighbor, rel=1e-6)
    assert abs(remote - reference_mad(x.numpy(), (hops >= 7).astype(float))) > 1e-6   # the threshold matters
    report = smoothness(x.float(), edge_index, chunk_size=9)
    assert report["mad_gap"] == pytest.approx(remote - neighbor, rel=1e-5)
    assert report["mad"] == pytest.approx(mean_average_distance(x, edge_index), rel=1e-5)


def test_mad_edge_cases():
    karate = load_karate()
    assert math.isnan(mad_gap(karate.x, karate.edge_index).remote)   # the club is 5 hops wide: no remote pairs
    assert mean_average_distance(torch.ones(34, 3)) == 0.0             # complete smoothing
    assert mean_average_distance(torch.eye(34)) == pytest.approx(1.0)  # orthogonal rows
    with pytest.raises(ValueError, match="need edge_index"):
        mean_average_distance(karate.x, pairs=HopRange.within(3))
    with pytest.raises(ValueError, match="min_hops must be >= 1"):
        HopRange(0, 3)
    with pytest.raises(ValueError, match="outside 0..33"):
        mean_average_distance(karate.x, torch.tensor([[0], [40]]), pairs=HopRange.within(2))


# ----------------------------------------------------------------------------------------------- Dirichlet energy
def test_dirichlet_energy_is_the_laplacian_quadratic_form():
    edge_index, n = graph_with_long_path()
    graph_edges = torch.cat([edge_index, edge_index.flip(0)], dim=1)       # undirected, stored both ways
    one_way = torch.rand(edge_index.size(1), dtype=torch.float64) + 0.5
    weight = torch.cat([one_way, one_way])                                   # symmetric weights
    adjacency = torch.zeros(n, n, dtype=torch.float64)
    off_diagonal = graph_edges[0] != graph_edges[1]
    adjacency.index_put_((graph_edges[0, off_diagonal], graph_edges[1, off_diagonal]), weight[off_diagonal],
                         accumulate=True)
    degree = adjacency.sum(1)
    laplacian = torch.diag(degree) - adjacency
    smoothed = torch.diag((1 + degree).rsqrt())
    normalized_laplacian = torch.eye(n, dtype=torch.float64) - smoothed @ (adjacency + torch.eye(n,
                                                                          dtype=torch.float64)) @ smoothed
    x = torch.randn(n, 5, dtype=torch.float64)
    torch.testing.assert_close(dirichlet_energy(x, graph_edges, edge_weight=weight),
                               torch.trace(x.t() @ laplacian @ x))
    torch.testing.assert_close(dirichlet_energy(x, graph_edges, edge_weight=weight, normalized=True),
                               torch.trace(x.t() @ normalized_laplacian @ x))

    constant = torch.full((n, 5), 3.0, dtype=torch.float64)
    assert float(dirichlet_energy(constant, graph_edges)) == 0.0
    assert float(dirichlet_energy(constant, graph_edges, normalized=True)) > 0.1   # irregular graph
    kernel = (1 + degree).sqrt().unsqueeze(1)                                      # D~^1/2 1
    assert float(dirichlet_energy(kernel, graph_edges, edge_weight=weight, normalized=True)) == pytest.approx(
        0.0, abs=1e-9)


def test_propagation_smooths_monotonically():
    """Repeated A_hat = D~^-1/2 (A+I) D~^-1/2: the normalized energy never grows and MAD falls (Li et al. 2018)."""
    graph = load_karate()
    edge_index, weight = ops.normalize_edge_weights(graph.edge_index, 34)
    a_hat = ops.SparseMatrix.from_edges(edge_index, weight, (34, 34))
    x = torch.randn(34, 8, generator=torch.Generator().manual_seed(0))
    energies, mads = [], []
    for _ in range(40):
        energies.append(float(dirichlet_energy(x, graph.edge_index, normalized=True)))
        mads.append(mean_average_distance(x))
        x = a_hat @ x
    assert all(later <= earlier + 1e-6 for earlier, later in itertools.pairwise(energies))
    assert energies[-1] < 1e-3 * energies[0] and mads[-1] < 0.1 * mads[0]


# ----------------------------------------------------------------------------------------------- layers vs PyG
pyg = pytest.importorskip("torch_geometric.nn", reason="torch-geometric is the test oracle")


@pytest.mark.parametrize("mode,eps", [("PN", 1e-5), ("PN-SI", 0.0)])
@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_pairnorm_matches_pyg(mode, eps, scale):
    x = torch.randn(30, 7, generator=torch.Generator().manual_seed(2)) + 3.0
    ours, theirs = PairNorm(mode, scale, eps=eps), pyg.norm.PairNorm(scale, scale_individually=mode == "PN-SI",
                                                                     eps=eps)
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = ours(x_ours)
    torch.testing.assert_close(out, theirs(x_theirs), **TOLERANCE)
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    (theirs(x_theirs) * upstream).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, **TOLERANCE)


def test_pairnorm_fixes_the_total_pairwise_distance():
    x = torch.randn(25, 4, dtype=torch.float64) * 7 + 2
    for scale in (1.0, 3.0):
        out = PairNorm("PN", scale, eps=0.0)(x)
        assert float(torch.cdist(out, out).pow(2).sum()) == pytest.approx(2 * 25**2 * scale**2)
    si = PairNorm("PN-SI", 2.0, eps=0.0)(x)
    torch.testing.assert_close(si.norm(dim=1), torch.full((25,), 2.0, dtype=torch.float64))
    scs = PairNorm("PN-SCS", 2.0, eps=0.0)(x)   # the official code's formula
    torch.testing.assert_close(scs, 2.0 * x / x.norm(dim=1, keepdim=True) - x.mean(0, keepdim=True))
    with pytest.raises(ValueError, match="mode must be one of"):
        PairNorm("BN")


@pytest.mark.parametrize("shared_weights", [True, False])
@pytest.mark.parametrize("layer", [1, 7])
def test_gcnii_matches_pyg(shared_weights, layer):
    torch.manual_seed(layer)
    edge_index = awkward_graph(seed=layer)
    x, x0 = torch.randn(30, 8), torch.randn(30, 8)
    theirs = pyg.GCN2Conv(8, alpha=0.2, theta=0.5, layer=layer, shared_weights=shared_weights)
    ours = GCNIIConv(8, alpha=0.2, lambda_=0.5, layer=layer, shared_weights=shared_weights)
    assert ours.beta == pytest.approx(math.log(0.5 / layer + 1))
    ours.weight.data.copy_(theirs.weight1.data)
    if not shared_weights:
        ours.weight_initial.data.copy_(theirs.weight2.data)
    for edge_weight in (None, torch.rand(edge_index.size(1)) + 0.1):
        ours.zero_grad(), theirs.zero_grad()
        inputs = [(x.clone().requires_grad_(), x0.clone().requires_grad_()) for _ in range(2)]
        out_ours = ours(*inputs[0], edge_index, edge_weight)
        out_theirs = theirs(*inputs[1], edge_index, edge_weight)
        torch.testing.assert_close(out_ours, out_theirs, **TOLERANCE)
        upstream = torch.randn_like(out_ours)
        (out_ours * upstream).sum().backward()
        (out_theirs * upstream).sum().backward()
        for mine, oracle in zip(inputs[0], inputs[1]):
            torch.testing.assert_close(mine.grad, oracle.grad, **TOLERANCE)
        torch.testing.assert_close(ours.weight.grad, theirs.weight1.grad, **TOLERANCE)
        if not shared_weights:
            torch.testing.assert_close(ours.weight_initial.grad, theirs.weight2.grad, **TOLERANCE)


def test_gcnii_layers_get_their_own_weight_decay():
    model = build_variant("gcnii", 34, 2, depth=3)
    optimizer = optimizer_for(model, SWEEP_CONFIGS["gcnii"])
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert len(decay) == len(list(model.parameters()))            # every parameter is optimised, once
    assert {decay[id(p)] for p in model.convs.parameters()} == {GCNII_LAYER_WEIGHT_DECAY}
    linear = [*model.input.parameters(), *model.output.parameters()]
    assert {decay[id(p)] for p in linear} == {SWEEP_CONFIGS["gcnii"].weight_decay}
    assert GCNII_LAYER_WEIGHT_DECAY != SWEEP_CONFIGS["gcnii"].weight_decay


# ----------------------------------------------------------------------------------------------- sweeps
def test_depth_sweep_rows(planetoid_root):
    graph = load_planetoid("cora", planetoid_root)
    rows = depth_sweep(graph, [1, 3], ["gcn", "pairnorm"], epochs=4, show_progress=False)
    assert [(r["variant"], r["depth"]) for r in rows] == [("gcn", 1), ("gcn", 3), ("pairnorm", 1), ("pairnorm", 3)]
    # at depth 1 PairNorm has no hidden layer to normalize: the same network, the same numbers
    assert rows[0]["test_acc"] == rows[2]["test_acc"] and rows[0]["mad"] == pytest.approx(rows[2]["mad"])
    assert rows[1]["mad"] != pytest.approx(rows[3]["mad"])
    for row in rows:
        assert row["epochs_run"] == 4 and 0.0 <= row["test_acc"] <= 1.0
        assert 0.0 <= row["mad"] <= 2.0 and row["mad_gap"] == pytest.approx(row["mad_remote"] - row["mad_neighbor"])
        assert row["dirichlet"] > 0 and row["dirichlet_normalized"] > 0


def test_oversmooth_run_directory_and_cli(planetoid_root, tmp_path, capsys, last_json):
    code = main(["gnn", "oversmooth", "--dataset", "cora", "--root", str(planetoid_root), "--depths", "1,2",
                 "--remedies", "gcnii", "--epochs", "3", "--runs-dir", str(tmp_path), "--no-karate", "--json"])
    assert code == 0
    result = last_json()
    assert result["variants"] == ["gcn", "gcnii"] and result["depths"] == [1, 2]
    assert [(r["variant"], r["depth"]) for r in result["summary"]] == [("gcn", 1), ("gcn", 2), ("gcnii", 1),
                                                                        ("gcnii", 2)]
    (folder,) = (tmp_path / "gnn-oversmooth").iterdir()
    assert {p.name for p in folder.iterdir()} >= {"config.json", "metrics.json", "table.md", "oversmoothing.png"}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert len(metrics["per_run"]) == 4 and len(metrics["summary"]) == 4
    table = (folder / "table.md").read_text().splitlines()
    assert len(table) == 2 + 4 and table[2].startswith("| GCN | 1 |")
    assert (folder / "oversmoothing.png").stat().st_size > 10_000

    assert main(["gnn", "oversmooth", "--dataset", "cora", "--root", str(planetoid_root), "--remedies", "dropedge",
                 "--runs-dir", str(tmp_path)]) == 2
    assert "unknown remedies ['dropedge']" in capsys.readouterr().err


def test_karate_smoothing_figures(tmp_path):
    metrics = karate_smoothing(range(1, 3), propagation_depths=(1, 4, 32), folder=tmp_path)
    assert set(metrics["trained"]) == {"layers_1", "layers_2"}
    assert metrics["trained"]["layers_2"]["unlabeled_accuracy"] >= 0.85
    for name in ("karate_embeddings.png", "karate_propagation.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    mads = [metrics["propagation"][f"layers_{k}"]["mad"] for k in (1, 4, 32)]
    normalized = [metrics["propagation"][f"layers_{k}"]["dirichlet_normalized"] for k in (1, 4, 32)]
    assert mads[0] > mads[1] > mads[2] and mads[2] < 0.01          # pure propagation collapses the embedding
    assert normalized[0] > normalized[1] > normalized[2] and normalized[2] < 1e-3 * normalized[0]
    assert metrics["propagation"]["layers_32"]["dirichlet"] > 0.1     # ...onto sqrt(1 + d), not a constant


def test_run_on_karate_writes_the_karate_figures(tmp_path):
    result = run_oversmoothing("karate", None, depths=[1], remedies=[], epochs=2, runs_root=tmp_path,
                               show_progress=False)
    folder = tmp_path / "gnn-oversmooth" / result["run_dir"].rsplit("/", 1)[-1]
    assert {p.name for p in folder.iterdir()} >= {"karate_embeddings.png", "karate_propagation.png", "table.md"}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["karate"]["trained"]) == {f"layers_{k}" for k in range(1, 6)}
    assert metrics["per_run"][0]["mad_remote"] is None       # 5 hops wide: no remote pairs, NaN -> null


def test_run_rejects_unknown_models(tmp_path):
    with pytest.raises(ValueError, match="base model"):
        run_oversmoothing("karate", None, model="gat", runs_root=tmp_path)
    with pytest.raises(ValueError, match="positive layer counts"):
        run_oversmoothing("karate", None, depths=[0, 2], runs_root=tmp_path)
