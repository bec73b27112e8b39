"""Graph validation, transforms, normalization and conversions."""

from __future__ import annotations

import networkx as nx
import pytest
import scipy.sparse as sp
import torch

from gnnseg.gnn import Graph, GraphValidationError, ops


def path_graph() -> Graph:
    # 0 - 1 - 2, both directions, plus an isolated node 3
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    return Graph(edge_index=edge_index, num_nodes=4, x=torch.tensor([[1.0, 1.0], [0.0, 2.0], [0.0, 0.0], [3.0, 1.0]]),
                 y=torch.tensor([0, 1, 1, 0]))


@pytest.mark.parametrize("edits,message", [
    (dict(edge_index=torch.tensor([[0, 5], [1, 0]])), "refers to node 5 but num_nodes is 4 \\(edge 1: \\[5, 0\\]\\)"),
    (dict(edge_index=torch.tensor([[0, -1], [1, 0]])), "negative node index -1"),
    (dict(edge_index=torch.tensor([[0, 1, 2]])), "shape \\(2, E\\)"),
    (dict(edge_index=torch.tensor([[0.0], [1.0]])), "int64"),
    (dict(x=torch.ones(3, 2)), "x must have shape \\(4, F\\)"),
    (dict(x=torch.tensor([[1.0, float("nan")]] * 4)), "non-finite value nan at index \\(0, 1\\)"),
    (dict(x=torch.tensor([[1.0, float("inf")]] * 4)), "non-finite value inf"),
    (dict(y=torch.tensor([0, 1])), "y must be one graph label or have 4 rows"),
    (dict(y=torch.tensor([0, -2, 1, 1])), "negative class label -2"),
    (dict(edge_weight=torch.ones(3)), "edge_weight must have shape \\(4,\\)"),
    (dict(train_mask=torch.ones(4)), "train_mask must be a bool tensor"),
])
def test_validate_names_the_problem(edits, message):
    graph = path_graph()
    for key, value in edits.items():
        setattr(graph, key, value)
    with pytest.raises(GraphValidationError, match=message):
        graph.validate()


def test_transforms_do_not_modify_input():
    directed = Graph(edge_index=torch.tensor([[0, 0, 1, 2], [1, 1, 2, 2]]), num_nodes=3,
                     edge_weight=torch.tensor([1.0, 2.0, 1.0, 5.0]))
    undirected = directed.to_undirected()
    assert undirected.is_undirected() and not directed.is_undirected()
    assert directed.num_edges == 4
    dense = undirected.to_scipy().toarray()
    assert dense[0, 1] == dense[1, 0] == 3.0      # duplicates summed in both directions
    assert dense[2, 2] == 10.0                    # the self-loop appears twice after symmetrizing
    no_loops = directed.remove_self_loops()
    assert (no_loops.edge_index[0] != no_loops.edge_index[1]).all()
    looped = directed.add_self_loops()
    loops = looped.edge_index[0] == looped.edge_index[1]
    assert int(loops.sum()) == 3
    assert looped.edge_weight[loops].tolist() == [1.0, 1.0, 5.0]  # node 2 keeps its own loop weight
    coalesced = directed.coalesce()
    assert coalesced.num_edges == 3 and coalesced.edge_weight.tolist() == [3.0, 1.0, 5.0]


def test_row_normalization_leaves_zero_rows():
    x = path_graph().row_normalize_features().x
    torch.testing.assert_close(x.sum(1), torch.tensor([1.0, 1.0, 0.0, 1.0]))


def test_csr_view_lists_incoming_edges():
    graph = Graph(edge_index=torch.tensor([[2, 0, 1, 2], [1, 1, 0, 0]]), num_nodes=3)
    row_ptr, sources, edge_ids = graph.csr()
    assert row_ptr.tolist() == [0, 2, 4, 4]
    assert sources.tolist() == [1, 2, 0, 2]
    assert torch.equal(graph.edge_index[0, edge_ids], sources)
    assert graph.in_degree().tolist() == [2, 2, 0]
    assert graph.csr() is graph.csr()  # cached


def test_symmetric_and_mean_normalization_by_hand():
    graph = path_graph()
    edges, weights = ops.normalize_edge_weights(graph.edge_index, 4, normalization="symmetric")
    matrix = torch.zeros(4, 4)
    matrix[edges[1], edges[0]] = weights
    degree = torch.tensor([2.0, 3.0, 2.0, 1.0])   # with self-loops
    adjacency = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1.0]])
    torch.testing.assert_close(matrix, adjacency / degree.sqrt()[:, None] / degree.sqrt()[None, :])
    edges, weights = ops.normalize_edge_weights(graph.edge_index, 4, normalization="mean")
    matrix = torch.zeros(4, 4)
    matrix[edges[1], edges[0]] = weights
    torch.testing.assert_close(matrix.sum(1), torch.ones(4))   # rows average over self + neighbors
    with pytest.raises(ValueError, match="'symmetric' or 'mean'"):
        ops.normalize_edge_weights(graph.edge_index, 4, normalization="row")


def test_isolated_node_without_self_loop_gets_zero_weight_not_inf():
    edges, weights = ops.normalize_edge_weights(torch.tensor([[0], [1]]), 3, self_loops=False)
    assert torch.isfinite(weights).all()


def test_sparse_dropout_only_touches_stored_values():
    x = torch.zeros(50, 40)
    x[::3, ::7] = 1.0
    sparse = ops.sparse_features(x)
    assert sparse.layout == torch.sparse_csr
    torch.manual_seed(0)
    dropped = ops.dropout(sparse, 0.5, training=True).to_dense()
    assert set(dropped.unique().tolist()) <= {0.0, 2.0}
    assert (dropped[x == 0] == 0).all()
    kept = float((dropped[x == 1] > 0).float().mean())
    assert 0.35 < kept < 0.65
    assert ops.dropout(sparse, 0.5, training=False) is sparse


def test_conversions_round_trip():
    graph = path_graph()
    networkx_graph = graph.to_networkx()
    assert isinstance(networkx_graph, nx.Graph) and networkx_graph.number_of_edges() == 2
    assert networkx_graph.nodes[3]["x"] == [3.0, 1.0]
    back = Graph.from_networkx(networkx_graph)
    assert back.num_nodes == 4 and torch.equal(back.coalesce().edge_index, graph.coalesce().edge_index)

    matrix = graph.to_scipy()
    assert isinstance(matrix, sp.csr_matrix) and matrix.nnz == 4
    from_matrix = Graph.from_scipy(matrix)
    assert from_matrix.edge_weight is None and torch.equal(from_matrix.edge_index, graph.coalesce().edge_index)
    with pytest.raises(GraphValidationError, match="square"):
        Graph.from_scipy(sp.csr_matrix((2, 3)))

    pytest.importorskip("torch_geometric")
    data = graph.to_pyg()
    assert data.num_nodes == 4 and torch.equal(data.x, graph.x)
    again = Graph.from_pyg(data)
    assert torch.equal(again.edge_index, graph.edge_index) and torch.equal(again.y, graph.y)
