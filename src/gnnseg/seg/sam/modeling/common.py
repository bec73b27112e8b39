"""Small building blocks shared by SAM's encoder, prompt encoder and decoder.

Parameter names (``lin1``/``lin2``, ``layers.i``, ``weight``/``bias``) are those of the official
``segment-anything`` checkpoints, so their state dicts load without renaming.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a ``(B, C, H, W)`` map (eps 1e-6, as in SAM)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.channels = channels  # a plain int, so that traced exports see a constant shape

    def forward(self, x: Tensor) -> Tensor:
        # channels-last LayerNorm is one fused kernel; the result equals normalising over dim 1.
        y = F.layer_norm(x.permute(0, 2, 3, 1), (self.channels,), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class FeedForward(nn.Module):
    """Two linear layers with an activation between them: ``dim -> hidden -> dim``."""

    def __init__(self, dim: int, hidden: int, activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.act = activation()

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(self.act(self.lin1(x)))


class PerceptronStack(nn.Module):
    """``depth`` linear layers with ReLU between them (the decoder's hypernetworks and IoU head)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, depth: int) -> None:
        super().__init__()
        widths = [in_dim] + [hidden] * (depth - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(widths))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)
