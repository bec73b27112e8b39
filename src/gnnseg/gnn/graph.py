"""The ``Graph`` container: edges, node features and labels, split masks; validation and conversions.

``edge_index`` has shape ``(2, E)``: row 0 holds sources, row 1 targets (messages flow ``source -> target``).
An undirected graph stores both directions. Transforms return new graphs and never modify their input.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch
from torch import Tensor

from gnnseg.gnn import ops

if TYPE_CHECKING:  # pragma: no cover
    import networkx
    import scipy.sparse
    import torch_geometric.data

MASK_NAMES = ("train_mask", "val_mask", "test_mask")


class GraphValidationError(ValueError):
    """A graph's tensors are inconsistent: the message names the field and the offending value."""


@dataclass(eq=False)
class Graph:
    """A graph with optional node features ``x (N, F)``, labels ``y`` (``(N,)`` per node, or a scalar for
    the whole graph), split masks ``(N,)``, edge weights ``(E,)`` and edge features ``edge_attr (E, D)``
    (e.g. bond features; row ``k`` belongs to edge ``edge_index[:, k]``). ``name`` is informational."""

    edge_index: Tensor
    num_nodes: int
    x: Tensor | None = None
    y: Tensor | None = None
    edge_weight: Tensor | None = None
    edge_attr: Tensor | None = None
    train_mask: Tensor | None = None
    val_mask: Tensor | None = None
    test_mask: Tensor | None = None
    name: str = "graph"
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.edge_index = torch.as_tensor(self.edge_index)
        self.num_nodes = int(self.num_nodes)

    # ----------------------------------------------------------------------------------- basic facts
    @property
    def num_edges(self) -> int:
        return int(self.edge_index.size(1))

    @property
    def num_features(self) -> int:
        return 0 if self.x is None else int(self.x.size(1))

    @property
    def num_edge_features(self) -> int:
        return 0 if self.edge_attr is None else int(self.edge_attr.size(1))

    @property
    def num_classes(self) -> int:
        return 0 if self.y is None else int(self.y.max().item()) + 1

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}", f"num_nodes={self.num_nodes}", f"num_edges={self.num_edges}"]
        if self.x is not None:
            parts.append(f"x={tuple(self.x.shape)}")
        if self.edge_attr is not None:
            parts.append(f"edge_attr={tuple(self.edge_attr.shape)}")
        if self.y is not None:
            parts.append(f"classes={self.num_classes}")
        for mask in MASK_NAMES:
            value = getattr(self, mask)
            if value is not None:
                parts.append(f"{mask.removesuffix('_mask')}={int(value.sum())}")
        return f"Graph({', '.join(parts)})"

    # ----------------------------------------------------------------------------------- validation
    def validate(self) -> Graph:
        """Check every field; raise :class:`GraphValidationError` naming the first problem. Returns self."""
        ei = self.edge_index
        if self.num_nodes < 0:
            raise GraphValidationError(f"num_nodes must be >= 0, got {self.num_nodes}")
        if ei.dim() != 2 or ei.size(0) != 2:
            raise GraphValidationError(f"edge_index must have shape (2, E), got {tuple(ei.shape)}")
        if ei.dtype != torch.int64:
            raise GraphValidationError(f"edge_index must be int64, got {ei.dtype}")
        if ei.numel():
            low, high = int(ei.min()), int(ei.max())
            if low < 0:
                column = int((ei < 0).any(0).nonzero()[0])
                raise GraphValidationError(
                    f"edge_index has a negative node index {low} (edge {column}: {ei[:, column].tolist()})")
            if high >= self.num_nodes:
                column = int((ei >= self.num_nodes).any(0).nonzero()[0])
                raise GraphValidationError(
                    f"edge_index refers to node {high} but num_nodes is {self.num_nodes} "
                    f"(edge {column}: {ei[:, column].tolist()})")
        if self.edge_weight is not None:
            if self.edge_weight.shape != (self.num_edges,):
                raise GraphValidationError(
                    f"edge_weight must have shape ({self.num_edges},), got {tuple(self.edge_weight.shape)}")
            _require_finite("edge_weight", self.edge_weight)
        if self.edge_attr is not None:
            if self.edge_attr.dim() != 2 or self.edge_attr.size(0) != self.num_edges:
                raise GraphValidationError(
                    f"edge_attr must have shape ({self.num_edges}, D), got {tuple(self.edge_attr.shape)}")
            _require_finite("edge_attr", self.edge_attr)
        if self.x is not None:
            if self.x.dim() != 2 or self.x.size(0) != self.num_nodes:
                raise GraphValidationError(
                    f"x must have shape ({self.num_nodes}, F), got {tuple(self.x.shape)}")
            _require_finite("x", self.x)
        if self.y is not None:
            graph_level = self.y.dim() == 0
            if not graph_level and self.y.shape[:1] != (self.num_nodes,):
                raise GraphValidationError(f"y must be one graph label or have {self.num_nodes} rows (one per "
                                           f"node), got shape {tuple(self.y.shape)}")
            if not self.y.is_floating_point() and self.y.numel() and int(self.y.min()) < 0:
                raise GraphValidationError(f"y has a negative class label {int(self.y.min())}")
        for name in MASK_NAMES:
            mask = getattr(self, name)
            if mask is None:
                continue
            if mask.dtype != torch.bool or mask.shape != (self.num_nodes,):
                raise GraphValidationError(
                    f"{name} must be a bool tensor of shape ({self.num_nodes},), "
                    f"got {mask.dtype} {tuple(mask.shape)}")
        return self

    # ----------------------------------------------------------------------------------- derived views
    def csr(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """Incoming-edge CSR, cached: ``(row_ptr (N+1,), sources (E,), edge_ids (E,) or None)``.

        ``sources[row_ptr[i]:row_ptr[i+1]]`` are the sources of the edges into node ``i``, and
        ``edge_ids`` maps each CSR slot back to its column in ``edge_index``; it is ``None`` for a graph made
        by :meth:`from_csr`, whose edges are stored in CSR order (slot ``k`` is edge ``k``).
        """
        if "csr" not in self._cache:
            target = self.edge_index[1]
            edge_ids = torch.argsort(target * max(self.num_nodes, 1) + self.edge_index[0], stable=True)
            row_ptr = torch.zeros(self.num_nodes + 1, dtype=torch.int64)
            row_ptr[1:] = torch.bincount(target, minlength=self.num_nodes).cumsum(0)
            self._cache["csr"] = (row_ptr, self.edge_index[0, edge_ids], edge_ids)
        return self._cache["csr"]

    @classmethod
    def from_csr(cls, row_ptr: Any, sources: Any, *, chunk_rows: int = 1 << 20, **fields_: Any) -> Graph:
        """A graph from an incoming-edge CSR (targets as rows): ``row_ptr (N+1,)`` offsets, ``sources (E,)``
        (int32 or int64, numpy arrays or tensors, memory-mapped ones included).

        Edge ``k`` is CSR slot ``k``, so :meth:`csr` is ready at once and needs no edge-id table: the only
        ``E``-sized allocation is ``edge_index (2, E)`` int64 (16 bytes per edge), whose first row is also the
        CSR's ``sources``. Targets are filled ``chunk_rows`` rows at a time. Raises
        :class:`GraphValidationError` for offsets that do not start at 0, decrease, or do not end at ``E``,
        and for sources outside ``[0, N)``.
        """
        row_ptr = torch.as_tensor(np.asarray(row_ptr)).to(torch.int64)
        num_nodes = row_ptr.numel() - 1
        num_edges = len(sources)
        if num_nodes < 0 or int(row_ptr[0]) != 0 or int(row_ptr[-1]) != num_edges:
            raise GraphValidationError(f"row_ptr must start at 0 and end at the number of sources ({num_edges}), "
                                       f"got {int(row_ptr[0]) if num_nodes >= 0 else None} .. "
                                       f"{int(row_ptr[-1]) if num_nodes >= 0 else None}")
        degree = row_ptr[1:] - row_ptr[:-1]
        if num_nodes and int(degree.min()) < 0:
            node = int((degree < 0).nonzero()[0])
            raise GraphValidationError(f"row_ptr decreases at node {node}: {int(row_ptr[node])} -> "
                                       f"{int(row_ptr[node + 1])}")
        edge_index = torch.empty((2, num_edges), dtype=torch.int64)
        for first in range(0, max(num_nodes, 1), chunk_rows):
            last = min(first + chunk_rows, num_nodes)
            begin, end = int(row_ptr[first]), int(row_ptr[last])
            chunk = torch.as_tensor(np.asarray(sources[begin:end]))
            edge_index[0, begin:end] = chunk
            edge_index[1, begin:end] = torch.repeat_interleave(torch.arange(first, last), degree[first:last],
                                                               output_size=end - begin)
        if num_edges:
            low, high = int(edge_index[0].min()), int(edge_index[0].max())
            if low < 0 or high >= num_nodes:
                bad = low if low < 0 else high
                slot = int((edge_index[0] == bad).nonzero()[0])
                raise GraphValidationError(f"sources refers to node {bad} (CSR slot {slot}) but the graph has "
                                           f"{num_nodes} nodes")
        graph = cls(edge_index=edge_index, num_nodes=num_nodes, **fields_)
        graph._cache["csr"] = (row_ptr, edge_index[0], None)
        return graph

    def in_degree(self) -> Tensor:
        """Number of incoming edges per node, shape ``(N,)``."""
        row_ptr = self.csr()[0]
        return row_ptr[1:] - row_ptr[:-1]

    def is_undirected(self) -> bool:
        """True when every edge ``u -> v`` has its reverse ``v -> u`` (weights ignored)."""
        forward = self._edge_keys(self.edge_index).unique()
        backward = self._edge_keys(self.edge_index.flip(0)).unique()
        return forward.numel() == backward.numel() and bool(torch.equal(forward, backward))

    def _edge_keys(self, edge_index: Tensor) -> Tensor:
        return edge_index[0] * max(self.num_nodes, 1) + edge_index[1]

    # ----------------------------------------------------------------------------------- transforms
    def _with_edges(self, edge_index: Tensor, edge_weight: Tensor | None,
                    edge_attr: Tensor | None = None) -> Graph:
        return replace(self, edge_index=edge_index, edge_weight=edge_weight, edge_attr=edge_attr, _cache={})

    def coalesce(self) -> Graph:
        """Sort edges and merge duplicates (their weights and edge features are summed, as PyG's default)."""
        keys = self._edge_keys(self.edge_index)
        unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        edge_index = torch.stack([unique // max(self.num_nodes, 1), unique % max(self.num_nodes, 1)])
        weight = attr = None
        if self.edge_weight is not None:
            weight = self.edge_weight.new_zeros(unique.numel()).index_add_(0, inverse, self.edge_weight)
        if self.edge_attr is not None:
            attr = self.edge_attr.new_zeros((unique.numel(), self.edge_attr.size(1))).index_add_(
                0, inverse, self.edge_attr)
        return self._with_edges(edge_index, weight, attr)

    def to_undirected(self) -> Graph:
        """Add the reverse of every edge, then merge duplicates (weights and edge features of ``u->v`` and
        ``v->u`` summed)."""
        edge_index = torch.cat([self.edge_index, self.edge_index.flip(0)], dim=1)
        weight = None if self.edge_weight is None else torch.cat([self.edge_weight, self.edge_weight])
        attr = None if self.edge_attr is None else torch.cat([self.edge_attr, self.edge_attr])
        return self._with_edges(edge_index, weight, attr).coalesce()

    def remove_self_loops(self) -> Graph:
        keep = self.edge_index[0] != self.edge_index[1]
        return self._with_edges(self.edge_index[:, keep],
                                None if self.edge_weight is None else self.edge_weight[keep],
                                None if self.edge_attr is None else self.edge_attr[keep])

    def add_self_loops(self, fill_value: float = 1.0) -> Graph:
        """Exactly one self-loop per node (an existing loop keeps its weight). Graphs with ``edge_attr``
        are refused: a self-loop has no natural edge feature."""
        if self.edge_attr is not None:
            raise GraphValidationError("add_self_loops cannot invent edge_attr rows for the new loops; "
                                       "drop edge_attr (replace(graph, edge_attr=None)) first")
        edge_index, weight = ops.add_remaining_self_loops(self.edge_index, self.num_nodes, self.edge_weight,
                                                          fill_value)
        return self._with_edges(edge_index, weight if self.edge_weight is not None else None)

    def row_normalize_features(self) -> Graph:
        """Scale each feature row to sum to 1 (rows of zeros stay zero), as in Kipf & Welling's preprocessing."""
        if self.x is None:
            raise GraphValidationError("row_normalize_features needs node features x, but x is None")
        sums = self.x.sum(dim=1, keepdim=True)
        return replace(self, x=self.x / sums.masked_fill(sums == 0, 1.0), _cache=self._cache)

    # ----------------------------------------------------------------------------------- conversions
    def to_scipy(self) -> scipy.sparse.csr_matrix:
        """Adjacency as ``scipy.sparse.csr_matrix`` with ``A[source, target] = weight`` (duplicates summed)."""
        import scipy.sparse as sp

        weight = np.ones(self.num_edges) if self.edge_weight is None else self.edge_weight.numpy()
        source, target = self.edge_index.numpy()
        return sp.csr_matrix((weight, (source, target)), shape=(self.num_nodes, self.num_nodes))

    @classmethod
    def from_scipy(cls, matrix: scipy.sparse.spmatrix, **fields_: Any) -> Graph:
        """Edges from the nonzeros of a square sparse matrix (``matrix[source, target]``); values become
        weights unless they are all one."""
        if matrix.shape[0] != matrix.shape[1]:
            raise GraphValidationError(f"adjacency matrix must be square, got shape {matrix.shape}")
        coo = matrix.tocoo()
        edge_index = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        values = torch.from_numpy(coo.data.astype(np.float32))
        weight = None if bool((values == 1).all()) else values
        return cls(edge_index=edge_index, num_nodes=matrix.shape[0], edge_weight=weight, **fields_)

    def to_networkx(self) -> networkx.Graph:
        """An undirected ``networkx.Graph`` when the edges are symmetric, else a ``DiGraph``.
        Features and labels become node attributes ``x`` and ``y``."""
        import networkx as nx

        graph = nx.Graph() if self.is_undirected() else nx.DiGraph()
        for node in range(self.num_nodes):
            attributes = {}
            if self.x is not None:
                attributes["x"] = self.x[node].tolist()
            if self.y is not None:
                attributes["y"] = self.y[node].tolist()
            graph.add_node(node, **attributes)
        weights = None if self.edge_weight is None else self.edge_weight.tolist()
        for k, (u, v) in enumerate(self.edge_index.t().tolist()):
            graph.add_edge(u, v, **({} if weights is None else {"weight": weights[k]}))
        return graph

    @classmethod
    def from_networkx(cls, graph: networkx.Graph, name: str = "networkx") -> Graph:
        """Nodes are relabeled 0..N-1 in ``graph.nodes`` order; undirected edges are stored both ways.
        A ``weight`` edge attribute becomes ``edge_weight`` when every edge has one."""
        index = {node: k for k, node in enumerate(graph.nodes)}
        pairs, weights = [], []
        for u, v, data in graph.edges(data=True):
            both_ways = not graph.is_directed() and u != v
            for source, target in ((u, v), (v, u)) if both_ways else ((u, v),):
                pairs.append((index[source], index[target]))
                weights.append(data.get("weight"))
        edge_index = torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2).t().contiguous()
        edge_weight = None
        if weights and all(w is not None for w in weights):
            edge_weight = torch.tensor(weights, dtype=torch.float32)
        return cls(edge_index=edge_index, num_nodes=len(index), edge_weight=edge_weight, name=name)

    def to_pyg(self) -> torch_geometric.data.Data:
        """A ``torch_geometric.data.Data`` with every field that is set, ``num_nodes`` and ``name`` (PyG is
        imported only here, and only when installed). :meth:`from_pyg` gives the same graph back."""
        Data = require_pyg_data("Graph.to_pyg").Data
        values = {f.name: getattr(self, f.name) for f in fields(self)
                  if f.name not in ("_cache", "num_nodes") and getattr(self, f.name) is not None}
        return Data(**values, num_nodes=self.num_nodes)

    @classmethod
    def from_pyg(cls, data: Any, name: str | None = None) -> Graph:
        """From a PyG ``Data`` object; any field it lacks stays ``None``. ``name``: the data's own ``name``
        attribute when it has a string one (as :meth:`to_pyg` writes), else ``"pyg"``.

        PyG's ``EdgeIndex`` becomes a plain tensor; node order and edge order are kept. Raises
        :class:`GraphValidationError` for data without ``edge_index`` (e.g. only a ``SparseTensor`` ``adj_t``) and
        for masks with several columns (PyG's way of storing several splits: pick one column first).
        """
        edge_index = getattr(data, "edge_index", None)
        if edge_index is None:
            hint = " (it has adj_t: build it without the ToSparseTensor transform)" if "adj_t" in data else ""
            raise GraphValidationError(f"the PyG data has no edge_index{hint}")
        for mask in MASK_NAMES:
            value = getattr(data, mask, None)
            if value is not None and value.dim() == 2:
                raise GraphValidationError(
                    f"{mask} has shape {tuple(value.shape)}: {value.size(1)} splits, one per column; pick one, "
                    f"e.g. data.{mask} = data.{mask}[:, 0], for every mask")
        if data.num_nodes is None:
            raise GraphValidationError("the PyG data has no num_nodes and no x to count nodes from")
        own_name = getattr(data, "name", None)
        values = {key: _plain_tensor(getattr(data, key, None))
                  for key in ("x", "y", "edge_weight", "edge_attr", *MASK_NAMES)}
        return cls(edge_index=_plain_tensor(edge_index), num_nodes=int(data.num_nodes),
                   name=name or (own_name if isinstance(own_name, str) else "pyg"), **values)


GraphLike = Union[Graph, "torch_geometric.data.Data", "torch_geometric.data.Dataset"]
"""What the trainers accept: a :class:`Graph`, a PyG ``Data`` or a PyG dataset holding one graph."""

GraphsLike = Union[Sequence[GraphLike], "torch_geometric.data.Dataset"]
"""What graph classification accepts: a list of graphs or a PyG dataset of many (:func:`as_graphs`)."""


def as_graph(data: GraphLike) -> Graph:
    """``data`` as a :class:`Graph`: a ``Graph`` as it is, a PyG ``Data`` through :meth:`Graph.from_pyg`, a PyG
    dataset (``InMemoryDataset``) through its one graph, named after the dataset. ``HeteroData``, a dataset of
    several graphs and anything else are refused by name."""
    if isinstance(data, Graph):
        return data
    pyg = sys.modules.get("torch_geometric.data")   # a PyG object exists only where PyG was imported
    if pyg is not None:
        if isinstance(data, pyg.HeteroData):
            raise GraphValidationError("heterogeneous graphs (HeteroData) are not supported; convert one with "
                                       "data.to_homogeneous() first")
        if isinstance(data, pyg.Data):
            return Graph.from_pyg(data)
        if isinstance(data, pyg.Dataset):
            name = str(getattr(data, "name", type(data).__name__))
            if len(data) != 1:
                raise GraphValidationError(f"the PyG dataset {name!r} holds {len(data)} graphs; node "
                                           f"classification trains on one: pass dataset[i]")
            graph = data[0]
            return Graph.from_pyg(graph, name=name) if isinstance(graph, pyg.Data) else as_graph(graph)
    raise TypeError(f"expected a gnnseg Graph, a torch_geometric Data or a one-graph PyG dataset, got "
                    f"{type(data).__module__}.{type(data).__qualname__}")


def as_graphs(data: GraphsLike) -> list[Graph]:
    """Many graphs (graph classification) as :class:`Graph` objects: a list of ``Graph`` or PyG ``Data``, or a PyG
    dataset of several graphs (``TUDataset``), each graph named ``<dataset>[i]``."""
    pyg = sys.modules.get("torch_geometric.data")
    if pyg is not None and isinstance(data, pyg.Dataset):
        name = str(getattr(data, "name", type(data).__name__))
        return [_graph_level_label(Graph.from_pyg(data[i], name=f"{name}[{i}]")) for i in range(len(data))]
    if isinstance(data, list | tuple):
        return [_graph_level_label(as_graph(item)) for item in data]
    raise TypeError(f"expected a list of graphs or a PyG dataset, got {type(data).__module__}."
                    f"{type(data).__qualname__}")


def _graph_level_label(graph: Graph) -> Graph:
    """PyG stores a graph's class as ``y`` of shape ``(1,)``; gnnseg's graphs hold it as a scalar."""
    if graph.y is not None and graph.y.dim() == 1 and graph.y.numel() == 1:
        return replace(graph, y=graph.y.reshape(()))
    return graph


def _plain_tensor(value: Any) -> Any:
    """PyG's tensor subclasses (``EdgeIndex``, ``Index``) as plain tensors; anything else as it is."""
    return value.as_subclass(Tensor) if isinstance(value, Tensor) and type(value) is not Tensor else value


def require_pyg_data(user: str) -> Any:
    """``torch_geometric.data``, or an ``ImportError`` saying that ``user`` needs PyG and how to install it."""
    try:
        import torch_geometric.data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{user} needs torch-geometric: pip install torch-geometric") from exc
    return torch_geometric.data


def _require_finite(name: str, tensor: Tensor) -> None:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = (~torch.isfinite(tensor)).nonzero()[0].tolist()
        raise GraphValidationError(
            f"{name} has a non-finite value {tensor[tuple(bad)].item()} at index {tuple(bad)}")
