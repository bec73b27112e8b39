"""Over-smoothing diagnostics: MAD, MADGap (Chen et al., AAAI 2020) and Dirichlet energy.

All of them take node representations ``x (N, F)`` and the graph's ``edge_index (2, E)``.

* **MAD** (mean average distance): ``D_ij = 1 - cos(x_i, x_j)`` over the node pairs a rule selects; each
  node averages its *nonzero* distances, and MAD is the mean of the nonzero node averages (the paper's
  Eqs. 1-4; the reference ``mad_value`` in victorchen96/MadGap ``madgap.py``). Zero vectors have cosine
  similarity 0 with every vector (distance 1), as in scikit-learn's ``cosine_distances`` that the reference
  calls; a node's pair with itself never counts.
* **MADGap** = ``MAD_remote - MAD_neighbor``: pairs at most 3 hops apart against pairs at least 8 hops apart
  (the paper's defaults). Pairs in different connected components are infinitely far apart, so they are
  remote.
* **Dirichlet energy** ``1/2 sum_ij a_ij ||x_i - x_j||^2 = tr(X^T L X)`` (zero exactly for constant signals),
  and its degree-normalized form ``1/2 sum_ij a_ij ||x_i / sqrt(1 + d_i) - x_j / sqrt(1 + d_j)||^2 =
  tr(X^T (I - D~^-1/2 (A + I) D~^-1/2) X)`` (Cai & Wang 2020; Rusch et al. 2023 divide by N), which is
  zero for ``x ~ sqrt(1 + d)`` but not for constant signals on irregular graphs. Both are reported.

Memory: MAD and MADGap never form an ``N x N`` matrix. Rows are processed in chunks of ``chunk_size``:
a ``(chunk, N)`` block of cosine distances and, when the rule depends on hops, a ``(chunk, N)`` block of
hop distances found by breadth-first search from the chunk's nodes (sparse-dense products with the
adjacency, at most ``max hops`` of them). Dirichlet energy works on the edge list: ``O(E x F)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gnnseg.gnn import ops

DEFAULT_CHUNK_SIZE = 1024
NEIGHBOR_HOPS, REMOTE_HOPS = 3, 8  # Chen et al. 2020: MAD_neb over orders <= 3, MAD_rmt over orders >= 8


@dataclass(frozen=True)
class HopRange:
    """The node pairs ``(i, j)``, ``i != j``, whose shortest-path distance lies in ``[min_hops, max_hops]``.

    Distances ignore edge directions and weights; nodes in different components are ``inf`` apart.
    ``HopRange()`` selects every pair; ``HopRange.within(3)`` pairs at most 3 hops apart;
    ``HopRange.beyond(8)`` pairs at least 8 hops apart (unreachable ones included).
    """

    min_hops: int = 1
    max_hops: float = math.inf

    def __post_init__(self) -> None:
        if self.min_hops < 1:
            raise ValueError(f"min_hops must be >= 1 (a node's pair with itself never counts), got {self.min_hops}")
        if self.max_hops < self.min_hops:
            raise ValueError(f"max_hops ({self.max_hops}) must be >= min_hops ({self.min_hops})")
        if self.max_hops != math.inf and self.max_hops != int(self.max_hops):
            raise ValueError(f"max_hops must be a whole number of hops or inf, got {self.max_hops}")

    @classmethod
    def within(cls, hops: int) -> HopRange:
        return cls(1, hops)

    @classmethod
    def beyond(cls, hops: int) -> HopRange:
        return cls(hops, math.inf)

    @property
    def needs_hops(self) -> bool:
        """False for the rule "all pairs", which needs no graph search."""
        return not (self.min_hops == 1 and self.max_hops == math.inf)

    @property
    def search_depth(self) -> int:
        """How many BFS levels decide membership: up to ``max_hops``, or up to ``min_hops - 1`` when open-ended."""
        if not self.needs_hops:
            return 0
        return int(self.max_hops) if self.max_hops != math.inf else self.min_hops - 1

    def select(self, hops: Tensor) -> Tensor:
        """Bool mask of the pairs in range, from hop distances (``inf`` beyond the searched depth)."""
        return (hops >= self.min_hops) & (hops <= self.max_hops)


ALL_PAIRS = HopRange()


@dataclass(frozen=True)
class MADGap:
    """``gap = remote - neighbor``; NaN parts mean the graph has no such pairs."""

    neighbor: float
    remote: float

    @property
    def gap(self) -> float:
        return self.remote - self.neighbor


def mean_average_distance(x: Tensor, edge_index: Tensor | None = None, *, pairs: HopRange = ALL_PAIRS,
                          nodes: Tensor | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE) -> float:
    """MAD of ``x (N, F)`` over the pairs in ``pairs`` (``edge_index`` is needed unless it is all pairs).

    ``nodes`` (indices or a bool mask) restricts the nodes whose averages enter the mean (the reference's
    ``target_idx``); their partners are still all nodes. Returns 0.0 when every selected pair has distance 0
    (complete smoothing) and NaN when the rule selects no pair at all.
    """
    (value,) = _mean_average_distances(x, edge_index, [pairs], nodes, chunk_size)
    return value


def mad_gap(x: Tensor, edge_index: Tensor, *, neighbor_hops: int = NEIGHBOR_HOPS, remote_hops: int = REMOTE_HOPS,
            nodes: Tensor | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE) -> MADGap:
    """``MAD(pairs >= remote_hops apart) - MAD(pairs <= neighbor_hops apart)`` in one pass over the rows."""
    neighbor, remote = _mean_average_distances(
        x, edge_index, [HopRange.within(neighbor_hops), HopRange.beyond(remote_hops)], nodes, chunk_size)
    return MADGap(neighbor, remote)


def dirichlet_energy(x: Tensor, edge_index: Tensor, *, edge_weight: Tensor | None = None,
                     normalized: bool = False) -> Tensor:
    """``1/2 sum_(j->i) a_ij ||x_i - x_j||^2`` over the edges, or with ``normalized`` every ``x_i`` divided
    by ``sqrt(1 + d_i)`` first (``d_i`` the weighted in-degree without self-loops).

    For an undirected graph stored both ways this is ``tr(X^T L X)`` with ``L = D - A``, resp.
    ``tr(X^T (I - D~^-1/2 (A+I) D~^-1/2) X)``. Self-loops contribute nothing and are dropped. Returns a
    differentiable 0-dim tensor; ``x (N, F)`` or ``(N,)``, ``edge_index (2, E)``, ``edge_weight (E,)``.
    """
    x = ops.dense(x)
    if x.dim() == 1:
        x = x.unsqueeze(1)
    _check(x, edge_index)
    edge_index, edge_weight = ops.remove_self_loops(edge_index, edge_weight)
    source, target = edge_index
    weight = x.new_ones(source.numel()) if edge_weight is None else edge_weight.to(x.dtype)
    if normalized:
        degree = x.new_zeros(x.size(0)).index_add_(0, target, weight)
        x = x * (1.0 + degree).rsqrt().unsqueeze(1)
    difference = x.index_select(0, target) - x.index_select(0, source)           # (E, F)
    return 0.5 * (weight * difference.pow(2).sum(dim=1)).sum()


def smoothness(x: Tensor, edge_index: Tensor, *, neighbor_hops: int = NEIGHBOR_HOPS,
               remote_hops: int = REMOTE_HOPS, chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict[str, float]:
    """Every diagnostic of one representation: ``mad`` (all pairs), ``mad_neighbor``, ``mad_remote``,
    ``mad_gap``, ``dirichlet`` and ``dirichlet_normalized``. One pass over the rows serves all three MADs."""
    mad, neighbor, remote = _mean_average_distances(
        x, edge_index, [ALL_PAIRS, HopRange.within(neighbor_hops), HopRange.beyond(remote_hops)], None, chunk_size)
    with torch.no_grad():
        return {"mad": mad, "mad_neighbor": neighbor, "mad_remote": remote, "mad_gap": remote - neighbor,
                "dirichlet": float(dirichlet_energy(x, edge_index)),
                "dirichlet_normalized": float(dirichlet_energy(x, edge_index, normalized=True))}


# ----------------------------------------------------------------------------------------------- internals
def _check(x: Tensor, edge_index: Tensor | None) -> None:
    if x.dim() != 2:
        raise ValueError(f"x must have shape (N, F), got {tuple(x.shape)}")
    if edge_index is None:
        return
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= x.size(0)):
        raise ValueError(f"edge_index refers to nodes outside 0..{x.size(0) - 1} "
                         f"(min {int(edge_index.min())}, max {int(edge_index.max())})")


def _row_indices(nodes: Tensor | None, num_nodes: int) -> Tensor:
    if nodes is None:
        return torch.arange(num_nodes)
    nodes = torch.as_tensor(nodes)
    if nodes.dtype == torch.bool:
        if nodes.shape != (num_nodes,):
            raise ValueError(f"a bool nodes mask must have shape ({num_nodes},), got {tuple(nodes.shape)}")
        return nodes.nonzero().flatten()
    return nodes.flatten().long()


def _undirected_adjacency(edge_index: Tensor, num_nodes: int) -> Tensor:
    """0/1 adjacency (CSR, float32) of the graph with directions ignored and without self-loops."""
    edge_index, _ = ops.remove_self_loops(edge_index.cpu())
    both = torch.cat([edge_index, edge_index.flip(0)], dim=1)
    return ops.SparseMatrix.from_edges(both, torch.ones(both.size(1)), (num_nodes, num_nodes)).matrix


def hop_distances(adjacency: Tensor, sources: Tensor, depth: int) -> Tensor:
    """Breadth-first hop distances from each of ``sources (c,)`` to every node, searched ``depth`` levels deep.

    ``adjacency`` is a symmetric ``(N, N)`` sparse matrix. Returns ``(c, N)`` float32: 0 for the source
    itself, the hop count up to ``depth``, ``inf`` beyond (or unreachable). Memory ``O(c x N)``.
    """
    num_nodes = adjacency.size(0)
    columns = torch.arange(sources.numel())
    distances = torch.full((num_nodes, sources.numel()), math.inf)
    distances[sources, columns] = 0.0
    reached = distances == 0
    frontier = reached.float()
    for hop in range(1, depth + 1):
        new = (torch.sparse.mm(adjacency, frontier) > 0) & ~reached
        if not bool(new.any()):
            break
        distances[new] = float(hop)
        reached |= new
        frontier = new.float()
    return distances.t()


def _mean_average_distances(x: Tensor, edge_index: Tensor | None, rules: list[HopRange], nodes: Tensor | None,
                            chunk_size: int) -> list[float]:
    """MAD for several pair rules, sharing each chunk's cosine distances and hop search."""
    x = ops.dense(x).detach()
    _check(x, edge_index)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    num_nodes = x.size(0)
    depth = max(rule.search_depth for rule in rules)
    if depth and edge_index is None:
        raise ValueError("pairs selected by hop distance need edge_index")
    adjacency = _undirected_adjacency(edge_index, num_nodes) if depth else None
    unit = x.cpu().double()
    norms = unit.norm(dim=1, keepdim=True)
    unit = unit / norms.masked_fill(norms == 0, 1.0)  # zero rows stay zero: cosine 0, distance 1
    rows = _row_indices(nodes, num_nodes)
    node_sums = [torch.zeros(()) for _ in rules]   # sum over nodes of their nonzero average
    node_counts = [0 for _ in rules]                # nodes with a nonzero average
    pair_counts = [0 for _ in rules]                # selected pairs (distance zero or not)
    for start in range(0, rows.numel(), chunk_size):
        chunk = rows[start:start + chunk_size]
        local = torch.arange(chunk.numel())
        distance = (1.0 - unit[chunk] @ unit.t()).clamp_(0.0, 2.0)            # (c, N)
        hops = hop_distances(adjacency, chunk, depth) if adjacency is not None else None
        for k, rule in enumerate(rules):
            if rule.needs_hops:
                selected = rule.select(hops)
            else:
                selected = torch.ones_like(distance, dtype=torch.bool)
            selected[local, chunk] = False                                     # never a node with itself
            masked = distance * selected
            nonzero = (masked > 0).sum(dim=1)
            averages = masked.sum(dim=1) / nonzero.clamp(min=1)
            node_sums[k] = node_sums[k] + averages.sum()
            node_counts[k] += int((averages > 0).sum())
            pair_counts[k] += int(selected.sum())
    return [math.nan if pairs == 0 else (float(total) / count if count else 0.0)
            for total, count, pairs in zip(node_sums, node_counts, pair_counts)]
