"""Sparse building blocks shared by every layer: self-loops, normalization, SpMM, segment softmax.

Convention (as in PyG): ``edge_index[0]`` holds the source node ``j`` and ``edge_index[1]`` the target
node ``i`` of a message ``j -> i``. Aggregation sums messages at the target, so the aggregation matrix
has targets as rows and sources as columns: ``(A_hat @ X)[i] = sum_j A_hat[i, j] X[j]``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

# torch marks sparse CSR as beta; the operations used here are stable, so the notice is noise for users.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")

Normalization = Literal["symmetric", "mean", "none"]


def remove_self_loops(edge_index: Tensor, edge_weight: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Drop every edge ``i -> i``. Shapes: ``(2, E) -> (2, E')``."""
    keep = edge_index[0] != edge_index[1]
    return edge_index[:, keep], (None if edge_weight is None else edge_weight[keep])


def add_self_loops(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None,
                   fill_value: float = 1.0) -> tuple[Tensor, Tensor | None]:
    """Append one loop ``i -> i`` per node (existing loops are kept: call :func:`remove_self_loops` first)."""
    loops = torch.arange(num_nodes, device=edge_index.device).repeat(2, 1)
    edge_index = torch.cat([edge_index, loops], dim=1)
    if edge_weight is not None:
        edge_weight = torch.cat([edge_weight, edge_weight.new_full((num_nodes,), fill_value)])
    return edge_index, edge_weight


def add_remaining_self_loops(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None,
                             fill_value: float = 1.0) -> tuple[Tensor, Tensor]:
    """Give every node exactly one self-loop.

    A node that already had a loop keeps that loop's weight (the last one, if it had several); the others
    get ``fill_value``. Returns weights always, ones where none were given.
    """
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.size(1), device=edge_index.device)
    is_loop = edge_index[0] == edge_index[1]
    loop_weight = edge_weight.new_full((num_nodes,), fill_value)
    loop_weight[edge_index[0, is_loop]] = edge_weight[is_loop]
    loops = torch.arange(num_nodes, device=edge_index.device).repeat(2, 1)
    return (torch.cat([edge_index[:, ~is_loop], loops], dim=1),
            torch.cat([edge_weight[~is_loop], loop_weight]))


def normalize_edge_weights(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None,
                           normalization: Normalization = "symmetric", self_loops: bool = True,
                           num_targets: int | None = None) -> tuple[Tensor, Tensor]:
    """GCN propagation weights for every edge.

    ``symmetric``: ``D^-1/2 (A + I) D^-1/2`` (Kipf & Welling 2017, eq. 2).
    ``mean``: ``(D + I)^-1 (A + I)``, the row-normalized average over a node and its neighbors.
    ``none``: the weights as given (ones when there are none), after the optional self-loops; for
    propagation matrices a sampler has already normalized (FastGCN / LADIES blocks).
    ``D`` is the weighted in-degree after self-loops; nodes of degree 0 get weight 0, never inf.

    ``num_targets`` makes the edges a bipartite block (``gnnseg.gnn.sampling.blocks``): the edges point into
    the first ``num_targets`` of the ``num_nodes`` source nodes, which are the targets themselves; self-loops
    are added for the targets only and degrees are the targets' in-degrees within the block. Symmetric
    normalization also needs every *source's* degree in the whole graph, which a block does not hold, so it
    is refused there: use ``mean`` (exact when a block holds whole neighbourhoods) or ``none``.
    """
    if normalization not in ("symmetric", "mean", "none"):
        raise ValueError(f"normalization must be 'symmetric' or 'mean', or 'none' for weights used as given, "
                         f"got {normalization!r}")
    if normalization == "symmetric" and num_targets is not None:
        raise ValueError("symmetric normalization D^-1/2 (A+I) D^-1/2 needs the degree of every source node in "
                         "the whole graph, which a sampled block does not hold; use normalization='mean' "
                         "(row-normalized, exact for full neighbourhoods) or 'none' (weights as given)")
    rows = num_nodes if num_targets is None else num_targets
    if self_loops:
        edge_index, edge_weight = add_remaining_self_loops(edge_index, rows, edge_weight)
    elif edge_weight is None:
        edge_weight = torch.ones(edge_index.size(1), device=edge_index.device)
    if normalization == "none":
        return edge_index, edge_weight
    source, target = edge_index
    degree = torch.zeros(rows, dtype=edge_weight.dtype, device=edge_weight.device)
    degree.index_add_(0, target, edge_weight)
    if normalization == "symmetric":
        inv_sqrt = degree.pow(-0.5).masked_fill_(degree == 0, 0.0)
        return edge_index, inv_sqrt[source] * edge_weight * inv_sqrt[target]
    inverse = degree.reciprocal().masked_fill_(degree == 0, 0.0)
    return edge_index, edge_weight * inverse[target]


def target_count(num_sources: int, num_targets: int | None) -> int:
    """Rows a layer outputs: ``num_sources`` on a full graph (``num_targets=None``), else ``num_targets``.

    The block convention (``gnnseg.gnn.sampling.blocks``): a layer gets the ``num_sources`` source rows and
    the first ``num_targets`` of them are the targets, so ``num_targets`` may not exceed ``num_sources``.
    """
    if num_targets is None:
        return num_sources
    if not 0 <= num_targets <= num_sources:
        raise ValueError(f"num_targets must be between 0 and the number of source rows ({num_sources}), "
                         f"got {num_targets}: a block's targets are its first num_targets source nodes")
    return int(num_targets)


def tensor_key(tensor: Tensor | None) -> tuple:
    """Identity of a tensor's contents for caches: storage, shape and in-place version counter."""
    if tensor is None:
        return ()
    if is_sparse(tensor):
        tensor = tensor.values()
    return (tensor.data_ptr(), tuple(tensor.shape), tensor._version)


def graph_key(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None) -> tuple:
    """What a cached per-graph quantity depends on; a layer recomputes when the key changes."""
    return (num_nodes, tensor_key(edge_index), tensor_key(edge_weight))


def _csr(rows: Tensor, cols: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    """A coalesced CSR matrix (duplicate entries summed)."""
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape, check_invariants=False).coalesce()
    rows, cols = coo.indices()
    row_ptr = torch.zeros(shape[0] + 1, dtype=torch.int64, device=rows.device)
    row_ptr[1:] = torch.bincount(rows, minlength=shape[0]).cumsum(0)
    return torch.sparse_csr_tensor(row_ptr, cols, coo.values(), shape, check_invariants=False)


class _SpMM(torch.autograd.Function):
    """``A @ X`` whose backward uses a precomputed CSR of ``A^T`` (no transpose per step)."""

    @staticmethod
    def forward(ctx, matrix: Tensor, transposed: Tensor, dense: Tensor) -> Tensor:  # type: ignore[override]
        ctx.transposed = transposed
        return torch.sparse.mm(matrix, dense)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return None, None, torch.sparse.mm(ctx.transposed, grad)


@dataclass(frozen=True)
class SparseMatrix:
    """A constant sparse aggregation matrix (rows = targets, columns = sources) and its transpose.

    ``matrix @ x`` is differentiable with respect to ``x`` only; the weights are fixed, as in GCN and SGC.
    """

    matrix: Tensor
    transposed: Tensor

    @classmethod
    def from_edges(cls, edge_index: Tensor, edge_weight: Tensor | None,
                   shape: tuple[int, int]) -> SparseMatrix:
        """Build from messages ``source -> target``; ``shape = (num_targets, num_sources)``."""
        source, target = edge_index
        if edge_weight is None:
            edge_weight = torch.ones(source.numel(), device=source.device)
        edge_weight = edge_weight.detach()
        return cls(_csr(target, source, edge_weight, shape), _csr(source, target, edge_weight, shape[::-1]))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.matrix.shape)  # type: ignore[return-value]

    @property
    def nnz(self) -> int:
        """Number of stored entries (duplicates merged)."""
        return int(self.matrix.values().numel())

    def __matmul__(self, dense: Tensor) -> Tensor:
        """``(num_targets, num_sources) @ (num_sources, F) -> (num_targets, F)``."""
        if dense.requires_grad:
            return _SpMM.apply(self.matrix, self.transposed, dense)
        return torch.sparse.mm(self.matrix, dense)


def normalized_adjacency(edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None,
                         normalization: Normalization = "symmetric", self_loops: bool = True,
                         num_targets: int | None = None) -> SparseMatrix:
    """GCN's ``A_hat`` (:func:`normalize_edge_weights`) as a :class:`SparseMatrix` of shape
    ``(num_targets, num_nodes)`` (``num_targets`` defaults to ``num_nodes``)."""
    shape = (target_count(num_nodes, num_targets), num_nodes)
    edge_index, weight = normalize_edge_weights(edge_index, num_nodes, edge_weight, normalization, self_loops,
                                                num_targets=num_targets)
    return SparseMatrix.from_edges(edge_index, weight, shape)


def segment_softmax(scores: Tensor, segment: Tensor, num_segments: int) -> Tensor:
    """Softmax of ``scores`` (shape ``(E, ...)``) over the entries that share a ``segment`` id (shape ``(E,)``).

    Used by attention to normalize over the incoming edges of each target node. Stable: the per-segment
    maximum is subtracted first.
    """
    index = segment.view(-1, *([1] * (scores.dim() - 1))).expand_as(scores)
    maxima = scores.new_full((num_segments, *scores.shape[1:]), float("-inf"))
    maxima = maxima.scatter_reduce(0, index, scores.detach(), reduce="amax", include_self=True)
    exp = (scores - maxima.gather(0, index)).exp()
    sums = exp.new_zeros((num_segments, *scores.shape[1:])).index_add_(0, segment, exp)
    return exp / (sums.gather(0, index) + 1e-16)


# ------------------------------------------------------------------------------------- sparse node features
def is_sparse(x: Tensor) -> bool:
    return x.layout in (torch.sparse_csr, torch.sparse_coo)


def sparse_features(x: Tensor, max_density: float = 0.1) -> Tensor:
    """``x`` as a CSR tensor when at most ``max_density`` of it is nonzero (bag-of-words features), else as is.

    Sparse features make input dropout and the first transform cost O(nonzeros) instead of O(N * F),
    as in tkipf/gcn.
    """
    if is_sparse(x) or x.numel() == 0:
        return x
    density = float((x != 0).sum()) / x.numel()
    return x.to_sparse_csr() if density <= max_density else x


def dense(x: Tensor) -> Tensor:
    return x.to_dense() if is_sparse(x) else x


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout that, for sparse ``x``, drops stored values only (dropping a zero changes nothing)."""
    if not training or p == 0.0:
        return x
    if not is_sparse(x):
        return torch.nn.functional.dropout(x, p=p, training=True)
    if x.layout != torch.sparse_csr:
        x = x.to_sparse_csr()
    values = x.values()
    keep = torch.rand_like(values) >= p
    return torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), values * keep / (1.0 - p), x.shape,
                                   check_invariants=False)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias`` for dense or sparse ``x`` of shape ``(N, in)``; ``weight (out, in)``."""
    out = torch.sparse.mm(x, weight.t()) if is_sparse(x) else x @ weight.t()
    return out if bias is None else out + bias
