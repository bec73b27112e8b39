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
:func:`selective_scan_sequential` is the recurrence as written, one position per step: the reference.
:func:`selective_scan` computes the same recurrence ``h_t = a_t h_{t-1} + v_t`` (``a_t = exp(Delta_t A)``,
``v_t = Delta_t B_t u_t``, per channel and state) with far fewer, larger steps. The sequence is cut into ``L / T``
chunks of ``T`` positions (``chunk``, 64) and all chunks advance together: ``T`` steps on ``(B, L / T, d_inner,
d_state)`` tensors give every chunk's states from a zero start and its cumulative decays. A second loop of ``L / T``
steps on ``(B, d_inner, d_state)`` tensors carries the state from chunk to chunk, and each position adds the
entering state times its cumulative decay. Only products of decays in (0, 1] and sums of inputs appear, so nothing
overflows in float32 however strong the decay. The Python loops are ``T + L / T`` steps instead of ``L``; each
step's tensors stay small enough for the cache, which on a CPU matters more than the arithmetic. Autograd gives the
gradients (the per-position tensors are unbound once, not indexed in the loops, so that the backward pass does not
build a full-size gradient per step). Memory is ``O(B L d_inner d_state)`` (docs/umamba.md).
A fused kernel (``mamba_ssm``'s CUDA scan) is used when installed and the tensors are on a GPU; it is never needed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


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
    decays = torch.exp(delta[..., None] * A).reshape(shape).unbind(2)
    inputs = ((delta * u)[..., None] * B[:, :, None, :]).reshape(shape).unbind(2)
    # all chunks advance together, one position per step: T steps on (B, chunks, d, n) tensors
    h, cumulative = decays[0].new_zeros(batch, chunks, channels, states), None
    states_local, decays_cumulative = [], []
    for decay, new in zip(decays, inputs):
        h = decay * h + new
        cumulative = decay if cumulative is None else cumulative * decay
        states_local.append(h)
        decays_cumulative.append(cumulative)
    # the state entering each chunk, carried from the chunk before (L / T steps on (B, d, n) tensors)
    carried, entering = h.new_zeros(batch, channels, states), []
    for chunk_decay, chunk_state in zip(cumulative.unbind(1), h.unbind(1)):
        entering.append(carried)
        carried = chunk_decay * carried + chunk_state
    full = torch.stack(states_local, 2) + torch.stack(decays_cumulative, 2) * torch.stack(entering, 1)[:, :, None]
    y = torch.einsum("bctdn,bctn->bctd", full, C.reshape(batch, chunks, chunk, states))
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
