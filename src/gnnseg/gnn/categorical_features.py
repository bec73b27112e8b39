"""Integer-coded features (OGB's molecule features) for models: summed embeddings and one-hot columns.

``CategoricalEmbedding(vocabulary, width)`` maps codes ``(N, K)`` (column ``k`` in ``0 .. vocabulary[k] - 1``)
to ``sum_k E_k[codes[:, k]]`` ``(N, width)``: OGB's ``AtomEncoder`` / ``BondEncoder``
(``ogb/graphproppred/mol_encoder.py``, one ``nn.Embedding`` per column, Xavier-uniform initialised), written
here so that models do not import ogb. ``categorical_one_hot(codes, vocabulary)`` gives the concatenated
one-hot columns ``(N, sum(vocabulary))``; a linear layer on them is the same sum of one learned row per
column, plus a bias, which is how a GINE layer's own edge map (``GINEConv.edge_lin``) becomes a per-layer
``BondEncoder`` as in OGB's GIN. Codes outside a column's vocabulary raise, naming column, row and value.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def check_codes(codes: Tensor, vocabulary: Sequence[int], what: str = "features") -> None:
    """Raise ValueError unless ``codes`` is an integer ``(N, len(vocabulary))`` tensor within the vocabulary."""
    if codes.is_floating_point() or codes.dim() != 2 or codes.size(1) != len(vocabulary):
        raise ValueError(f"{what} must be integer codes of shape (N, {len(vocabulary)}), got {codes.dtype} "
                         f"{tuple(codes.shape)} (one-hot float features need a model built for them)")
    if not codes.numel():
        return
    outside = (codes < 0) | (codes >= torch.tensor(vocabulary, device=codes.device))
    if bool(outside.any()):
        row, column = (int(i) for i in outside.nonzero()[0])
        raise ValueError(f"{what} column {column} row {row} holds code {int(codes[row, column])}, outside "
                         f"0..{vocabulary[column] - 1}")


class CategoricalEmbedding(nn.Module):
    """``(N, K)`` integer codes -> ``(N, width)``: the sum of one learned ``width`` vector per column's code."""

    def __init__(self, vocabulary: Sequence[int], width: int) -> None:
        super().__init__()
        if not vocabulary or min(vocabulary) < 1:
            raise ValueError(f"vocabulary sizes must be positive, got {tuple(vocabulary)}")
        self.vocabulary = tuple(int(size) for size in vocabulary)
        self.embeddings = nn.ModuleList(nn.Embedding(size, width) for size in self.vocabulary)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for embedding in self.embeddings:
            nn.init.xavier_uniform_(embedding.weight)

    def forward(self, codes: Tensor) -> Tensor:
        check_codes(codes, self.vocabulary)
        return sum(embedding(codes[:, column]) for column, embedding in enumerate(self.embeddings))


def categorical_one_hot(codes: Tensor, vocabulary: Sequence[int]) -> Tensor:
    """``(N, K)`` integer codes -> float32 ``(N, sum(vocabulary))``: each column's one-hot block, in order."""
    check_codes(codes, vocabulary)
    offsets = torch.tensor([0, *vocabulary[:-1]], device=codes.device).cumsum(0)
    out = torch.zeros((codes.size(0), sum(vocabulary)), dtype=torch.float32, device=codes.device)
    return out.scatter_(1, codes + offsets, 1.0)
