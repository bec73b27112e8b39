"""The Mamba block (Gu & Dao 2023, arXiv 2312.00752) in plain PyTorch, with a parallel selective scan.

One block, for a sequence ``x`` of shape ``(B, L, d_model)``:

1. ``in_proj`` to ``2 * d_inner`` channels, split into the main branch ``u`` and the gate ``z``;
2. a causal depthwise 1D convolution (width ``d_conv``) over ``u``, then SiLU;
3. input-dependent parameters from ``x_proj``: a low-rank ``dt`` (projected up by ``dt_proj``, then softplus gives
   the step ``Delta > 0`` per channel), and ``B``, ``C`` of size ``d_state`` per position;
4. the selective scan (S6), per channel ``d`` and state ``n``, with ``A = -exp(A_log)``:
   ``h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t`` and ``y_t = C_t . h_t + D u_t``;
5. ``y * SiLU(z)``, then ``out_proj`` back to ``d_model``.

Parameter names are those of ``mamba_ssm.Mamba`` (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``,
``out_proj``) and so is the initialisation (S4D-real ``A``, ``Delta`` between 0.001 and 0.1).

The scan
--------
:func:`selective_scan_sequential` is the recurrence as written: one step per position, the reference.
:func:`selective_scan` computes the same thing in parallel. Within a chunk of ``T`` positions, with the cumulative
log-decay ``S_t = sum_{r<=t} Delta_r A`` (non-increasing), the state is
``h_t = sum_{s<=t} exp(S_t - S_s) v_s`` with ``v_s = Delta_s B_s u_s``. The sum is taken in log space, positive and
negative ``v`` separately (``logcumsumexp``), so no exponential overflows however strong the decay. The sum
``S_t + log(...)`` cancels two numbers of the size of ``|S|``, so it is formed in float64 whatever the input's
precision, and chunks bound ``|S|``. The state entering each chunk is carried by a short loop over chunks
(``L / T`` steps on ``(B, d_inner, d_state)`` tensors). Autograd gives the gradients.
Memory is ``O(B L d_inner d_state)``: the time goes to elementwise work over that tensor (docs/umamba.md).
A fused kernel (``mamba_ssm``'s CUDA scan) is used when installed and the tensors are on a GPU; it is never needed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

_FLOOR = -1e30
"""Stands for log(0) in the log-space sums: finite, so that gradients of logcumsumexp stay finite."""


def selective_scan_sequential(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """The reference recurrence. ``u``, ``delta``: ``(b, L, d)``; ``A``: ``(d, n)``; ``B``, ``C``: ``(b, L, n)``;
    ``D``: ``(d,)``. Returns ``y`` ``(b, L, d)``."""
    batch, length, channels = u.shape
    h = u.new_zeros(batch, channels, A.shape[1])
    outputs = []
    for t in range(length):
        decay = torch.exp(delta[:, t, :, None] * A)
        h = decay * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        outputs.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(outputs, dim=1) + u * D


def _signed_log(values: Tensor, sign: float) -> Tensor:
    """``log(sign * values)`` where positive, else :data:`_FLOOR` (with gradients only where positive)."""
    chosen = sign * values
    return torch.where(chosen > 0, torch.log(chosen.clamp_min(1e-37)), torch.full_like(values, _FLOOR))


def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, *,
                   chunk: int = 64) -> Tensor:
    """The selective scan of :func:`selective_scan_sequential`, computed in parallel (see the module docstring)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if u.is_cuda and _fused_scan is not None:
        return _fused_scan(u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), A,
                           B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), D).transpose(1, 2)
    batch, length, channels = u.shape
    states = A.shape[1]
    pad = (-length) % chunk
    if pad:  # padded steps have Delta = 0: no decay and no input, so they leave the state alone
        u, delta = F.pad(u, (0, 0, 0, pad)), F.pad(delta, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))
    chunks = u.shape[1] // chunk
    shape = (batch, chunks, chunk, channels, states)
    exact = torch.float64
    log_decay = (delta.to(exact)[..., None] * A.to(exact)).reshape(shape)
    inputs = ((delta * u).to(exact)[..., None] * B.to(exact)[:, :, None, :]).reshape(shape)
    cumulative = torch.cumsum(log_decay, dim=2)
    positive = torch.logcumsumexp(_signed_log(inputs, 1.0) - cumulative, dim=2)
    negative = torch.logcumsumexp(_signed_log(inputs, -1.0) - cumulative, dim=2)
    local = torch.exp(cumulative + positive) - torch.exp(cumulative + negative)  # state from this chunk's inputs
    chunk_decay = torch.exp(cumulative[:, :, -1])
    carried, entering = local.new_zeros(batch, channels, states), []
    for index in range(chunks):
        entering.append(carried)
        carried = chunk_decay[:, index] * carried + local[:, index, -1]
    h = local + torch.exp(cumulative) * torch.stack(entering, dim=1)[:, :, None]
    y = torch.einsum("bctdn,bctn->bctd", h, C.to(exact).reshape(batch, chunks, chunk, states)).to(u.dtype)
    return y.reshape(batch, chunks * chunk, channels)[:, :length] + u[:, :length] * D


try:  # an optional fused CUDA kernel; gnnseg never requires it
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _fused_scan  # type: ignore
except ImportError:  # the usual case on CPUs
    _fused_scan = None


class Mamba(nn.Module):
    """``(B, L, d_model)`` -> ``(B, L, d_model)``; defaults as ``mamba_ssm.Mamba`` (d_state 16, d_conv 4, expand 2)."""

    def __init__(self, d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | None = None, dt_min: float = 0.001, dt_max: float = 0.1, chunk: int = 64) -> None:
        super().__init__()
        if d_model < 1 or d_state < 1 or d_conv < 1 or expand < 1:
            raise ValueError("d_model, d_state, d_conv and expand must be positive")
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.d_state, self.chunk = d_state, chunk
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        # S4D-real initialisation: A = -(1..d_state) for every channel; Delta log-uniform in [dt_min, dt_max]
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)

    def forward(self, x: Tensor, *, sequential: bool = False) -> Tensor:
        length = x.shape[1]
        u, z = self.in_proj(x).chunk(2, dim=-1)
        u = F.silu(self.conv1d(u.transpose(1, 2))[..., :length].transpose(1, 2))
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        A = -torch.exp(self.A_log.float())
        if sequential:
            y = selective_scan_sequential(u, delta, A, B, C, self.D)
        else:
            y = selective_scan(u, delta, A, B, C, self.D, chunk=self.chunk)
        return self.out_proj(y * F.silu(z))


class MambaLayer(nn.Module):
    """U-Mamba's layer: ``(B, C, *spatial)`` -> same shape, by LayerNorm + Mamba over the flattened positions.

    The positions (``H x W`` or ``D x H x W``) are the sequence, in row-major order; the channels are the model
    width. As in U-Mamba, the output replaces the input (the conv blocks around it carry the residual paths), and
    the layer runs in float32 under autocast.
    """

    def __init__(self, channels: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.mamba = Mamba(channels, d_state=d_state, d_conv=d_conv, expand=expand)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, *spatial = x.shape
        with torch.autocast(x.device.type, enabled=False):
            tokens = x.float().reshape(batch, channels, -1).transpose(1, 2)
            out = self.mamba(self.norm(tokens))
        return out.transpose(1, 2).reshape(batch, channels, *spatial).to(x.dtype)
