"""Layer-wise importance sampling: FastGCN (Chen, Ma & Xiao, ICLR 2018) and LADIES (Zou et al., NeurIPS 2019).

Both estimate one GCN layer ``A_hat H W`` for the target nodes ``T`` of a layer from a fixed number ``s`` of
nodes drawn for the layer below, and both reweight and renormalize the sampled part of ``A_hat``:

* **FastGCN** draws from one distribution over all nodes, the same for every layer and batch:
  ``q(u) = ||A_hat[:, u]||^2 / sum_v ||A_hat[:, v]||^2`` (the importance distribution of FastGCN's
  Sec. 3.2 and its Algorithm 2).
* **LADIES** restricts the same quantity to the rows of the targets, so only their neighbours can be drawn:
  ``p(u) = ||A_hat[T, u]||^2 / ||A_hat[T, :]||_F^2`` (LADIES Sec. 4, "layer-dependent"; the papers' equation
  numbers were not checked here, the formulas were, against the authors' code).

``s`` nodes ``S`` are drawn without replacement (sequentially, each draw proportional to the probabilities
of the nodes left; capped at the number of nodes with nonzero probability), the sampled columns are divided
by their probability and every row is normalized to sum to one:
``P[i, u] = (A_hat[i, u] / p(u)) / sum_{v in S'} (A_hat[i, v] / p(v))`` for ``u`` in ``S'``, the sampled nodes
(plus, for LADIES, the targets themselves, for their self-loops). This follows the authors' code
(``acbull/LADIES``, ``pytorch_ladies.py``: ``fastgcn_sampler`` / ``ladies_sampler``, ``np.random.choice(...,
p=p, replace=False)``, ``U[:, after_nodes].multiply(1/p[after_nodes])``, ``row_normalize``), whose ``A_hat`` is
the row-normalized ``(D + I)^-1 (A + I)`` (the default here; ``normalization="symmetric"`` gives Kipf &
Welling's ``D^-1/2 (A + I) D^-1/2``). A row whose targets have no sampled neighbour stays zero.

The blocks follow :mod:`gnnseg.gnn.sampling.blocks`: the layer's targets are the first source nodes, the
sampled nodes follow; edges carry ``P`` as ``edge_weight``, so ``GCNConv(..., normalization="none",
self_loops=False)`` computes ``P (H W)`` on them (``SAGEConv``'s mean aggregator takes the same weights).
Two choices the block convention makes: FastGCN's targets are also source nodes, but get edges only where
they were sampled (as the reference, which adds nothing); LADIES adds each layer's own targets where the
reference adds the batch's output nodes (the layer's targets include them, and every deeper layer's targets
are a superset). Each block's targets are the previous layer's targets plus its sampled nodes.

Cost per layer: FastGCN ``O(N)`` for the draw (one key per node) plus ``O(sum of the targets' degrees)``
to pick the sampled columns from their rows; LADIES ``O(sum of the targets' degrees)`` (its distribution
lives on those rows). The normalized ``A_hat`` is built once, as a coalesced CSR (duplicate edges summed).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gnnseg.gnn import ops
from gnnseg.gnn.graph import Graph
from gnnseg.gnn.sampling.blocks import (
    Block,
    FullNeighborhood,
    Generator,
    Relabeler,
    as_generator,
    check_seeds,
    check_sizes,
    segment_slots,
)


def draw_without_replacement(probabilities: Tensor, count: int,
                             generator: torch.Generator | None = None) -> Tensor:
    """Indices of ``min(count, #nonzero)`` distinct entries, drawn one after another with probability
    proportional to ``probabilities`` among those left (as ``np.random.choice(..., replace=False, p=p)``).

    Efraimidis & Spirakis (2006): the ``count`` smallest keys ``E_u / p_u``, ``E_u ~ Exp(1)``, are such a
    sample. ``O(n)`` for ``n`` entries. Returns sorted indices.
    """
    count = min(count, int((probabilities > 0).sum()))
    keys = torch.empty(probabilities.shape, dtype=torch.float64).exponential_(generator=generator)
    keys = (keys / probabilities.to(torch.float64)).masked_fill_(probabilities <= 0, float("inf"))
    return torch.topk(keys, count, largest=False, sorted=False).indices.sort().values


def _isin_sorted(values: Tensor, sorted_set: Tensor) -> Tensor:
    """``values[k] in sorted_set`` for every ``k`` (binary search; ``sorted_set`` ascending)."""
    if sorted_set.numel() == 0:
        return torch.zeros(values.shape, dtype=torch.bool)
    position = torch.searchsorted(sorted_set, values).clamp_max_(sorted_set.numel() - 1)
    return sorted_set[position] == values


class LayerwiseSampler:
    """What FastGCN and LADIES share: ``A_hat`` as a CSR with targets as rows, and the block builder.

    ``num_samples[k]`` nodes are drawn for the ``k + 1``-th layer below the seeds (the reference's
    ``samp_num_list`` order; its default is 64 per layer).
    """

    includes_targets = False   # whether the targets' own columns join the sampled ones (LADIES: yes)

    def __init__(self, graph: Graph, num_samples: Sequence[int], *,
                 normalization: ops.Normalization = "mean") -> None:
        if normalization not in ("mean", "symmetric"):
            raise ValueError(f"normalization of A_hat must be 'mean' (the reference code's) or 'symmetric', "
                             f"got {normalization!r}")
        self.num_samples = check_sizes(num_samples, "num_samples")
        self.normalization = normalization
        self.num_nodes = num_nodes = graph.num_nodes
        edge_index, weight = ops.normalize_edge_weights(graph.edge_index, num_nodes, graph.edge_weight,
                                                        normalization, self_loops=True)
        source, target = edge_index
        adjacency = torch.sparse_coo_tensor(torch.stack([target, source]), weight, (num_nodes, num_nodes),
                                            check_invariants=False)
        adjacency = adjacency.coalesce().to_sparse_csr()               # duplicates summed; rows = targets
        self.row_ptr = adjacency.crow_indices()
        self.columns = adjacency.col_indices()
        self.values = adjacency.values()
        self.relabel = Relabeler(num_nodes)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_samples={list(self.num_samples)}, "
                f"normalization={self.normalization!r}, num_nodes={self.num_nodes})")

    def _draw(self, columns: Tensor, values: Tensor, count: int,
              generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Draw one layer's nodes, given the entries ``A_hat[T, :]`` of the targets' rows (``columns``,
        ``values``). Returns the sampled nodes (sorted global ids) and ``p(column)`` for every entry."""
        raise NotImplementedError

    def sample(self, seeds: Tensor | Sequence[int], generator: Generator = None) -> list[Block]:
        """Blocks for the (unique) ``seeds``, input layer first; ``blocks[-1].target_nodes`` equals ``seeds``.
        ``generator``: a ``torch.Generator``, an int seed, or ``None`` for torch's global RNG."""
        targets = check_seeds(seeds, self.num_nodes, unique=False)     # the relabeler finds repeated seeds
        generator = as_generator(generator)
        blocks = []
        for count in self.num_samples:
            slots, owner = segment_slots(self.row_ptr, targets)        # the entries of A_hat[T, :]
            columns, values = self.columns[slots], self.values[slots]
            sampled, probability = self._draw(columns, values, count, generator)
            kept = torch.cat([sampled, targets]).unique() if self.includes_targets else sampled
            keep = _isin_sorted(columns, kept) & (values != 0)
            columns, owner = columns[keep], owner[keep]
            weight = values[keep].to(torch.float64) / probability[keep]            # A_hat[i, u] / p(u)
            row_sum = torch.zeros(targets.numel(), dtype=torch.float64).index_add_(0, owner, weight)
            weight = weight / row_sum.masked_fill(row_sum == 0, 1.0)[owner]        # rows sum to one
            source_nodes, local = self.relabel(targets, torch.cat([sampled, columns]),
                                               check_targets=not blocks)     # later targets: earlier sources
            blocks.append(Block(source_nodes, targets.numel(), torch.stack([local[sampled.numel():], owner]),
                                edge_weight=weight.to(self.values.dtype)))
            targets = source_nodes
        blocks.reverse()
        return blocks

    def full_neighborhood(self) -> FullNeighborhood:
        """The layer these blocks estimate: ``A_hat`` itself (self-loops included) as block weights, for exact
        layer-wise evaluation (the reference evaluates with the full ``A_hat``)."""
        return FullNeighborhood(self.row_ptr, self.columns, self.values)

    __call__ = sample


class FastGCNSampler(LayerwiseSampler):
    """FastGCN: every layer draws ``num_samples[k]`` nodes from ``q(u) ∝ ||A_hat[:, u]||^2`` over all nodes.

    ``probabilities`` holds ``q`` for every node, ``(N,)`` (float64, sums to one).
    """

    def __init__(self, graph: Graph, num_samples: Sequence[int], *,
                 normalization: ops.Normalization = "mean") -> None:
        super().__init__(graph, num_samples, normalization=normalization)
        squares = torch.zeros(self.num_nodes, dtype=self.values.dtype)
        squares = squares.index_add_(0, self.columns, self.values ** 2).to(torch.float64)   # column norms
        self.probabilities = squares / squares.sum()

    def _draw(self, columns: Tensor, values: Tensor, count: int,
              generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        return draw_without_replacement(self.probabilities, count, generator), self.probabilities[columns]


class LADIESSampler(LayerwiseSampler):
    """LADIES: every layer draws ``num_samples[k]`` nodes from ``p(u) ∝ ||A_hat[T, u]||^2``, ``T`` the layer's
    targets, and the targets' own columns join the sampled ones (the reference's "output nodes for
    self-loop")."""

    includes_targets = True

    def probabilities(self, targets: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        """``(nodes, p)``: the nodes ``u`` with a nonzero ``A_hat[T, u]`` (sorted) and ``p(u)`` (float64,
        sums to one) for the targets ``T``."""
        targets = check_seeds(targets, self.num_nodes)
        slots, _ = segment_slots(self.row_ptr, targets)
        nodes, probabilities, _ = self._distribution(self.columns[slots], self.values[slots])
        return nodes, probabilities

    @staticmethod
    def _distribution(columns: Tensor, values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(nodes, p, inverse)``: the distinct columns, their probabilities, each entry's node position."""
        nodes, inverse = torch.unique(columns, return_inverse=True)
        squares = torch.zeros(nodes.numel(), dtype=torch.float64)
        squares.index_add_(0, inverse, values.to(torch.float64) ** 2)
        total = squares.sum()
        return nodes, (squares / total if total > 0 else squares), inverse

    def _draw(self, columns: Tensor, values: Tensor, count: int,
              generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        nodes, probabilities, inverse = self._distribution(columns, values)
        sampled = nodes[draw_without_replacement(probabilities, count, generator)]
        return sampled, probabilities[inverse]
