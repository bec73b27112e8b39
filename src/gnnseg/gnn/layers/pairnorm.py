"""PairNorm (Zhao & Akoglu, ICLR 2020): keep the total pairwise distance of node representations constant."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

PairNormMode = Literal["PN", "PN-SI", "PN-SCS"]
MODES = ("PN", "PN-SI", "PN-SCS")


class PairNorm(nn.Module):
    """Center the node representations, then rescale them (no parameters, no graph).

    * ``"PN"`` (the paper's Eq. 9, the default): ``x_c = x - mean_i x_i``, then
      ``s * x_c / sqrt(eps + mean_i ||x_c,i||^2)``; the sum of squared pairwise distances becomes
      ``2 N^2 s^2`` whatever the depth, so deep stacks cannot collapse the nodes to one point.
    * ``"PN-SI"`` (scale individually): every centered row scaled to norm ``s``:
      ``s * x_c,i / sqrt(eps + ||x_c,i||^2)``. The official README uses it for deep GCN and GAT.
    * ``"PN-SCS"`` (scale and center simultaneously, from the official code, not the paper):
      ``s * x_i / sqrt(eps + ||x_i||^2) - mean_i x_i``.

    ``eps`` sits inside the square root, as in the official ``layers.py`` (LingxiaoShawn/PairNorm, 1e-6).
    PyG's ``PairNorm`` is the same for ``"PN"`` with ``eps=1e-5`` and for ``"PN-SI"`` with ``eps=0``.
    Used after each hidden graph layer, before the activation. Shapes: ``(N, F) -> (N, F)``.
    """

    def __init__(self, mode: PairNormMode = "PN", scale: float = 1.0, eps: float = 1e-6) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"PairNorm mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not scale > 0:
            raise ValueError(f"PairNorm scale must be positive, got {scale}")
        self.mode, self.scale, self.eps = mode, scale, eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=0, keepdim=True)
        if self.mode == "PN-SCS":
            return self.scale * x / torch.sqrt(self.eps + x.pow(2).sum(dim=1, keepdim=True)) - mean
        x = x - mean
        if self.mode == "PN":
            return self.scale * x / torch.sqrt(self.eps + x.pow(2).sum(dim=1).mean())
        return self.scale * x / torch.sqrt(self.eps + x.pow(2).sum(dim=1, keepdim=True))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, scale={self.scale}"
