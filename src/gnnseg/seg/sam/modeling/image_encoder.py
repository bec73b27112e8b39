"""SAM's image encoder: a plain ViT with windowed and global attention and a convolutional neck.

Kirillov et al., "Segment Anything", ICCV 2023, built on ViTDet (Li et al., ECCV 2022):

- patch embedding: a ``patch x patch`` convolution with the same stride, giving a ``(B, H/p, W/p, D)`` token grid;
- an absolute position embedding, one vector per grid cell;
- ``depth`` pre-norm transformer blocks. Most attend within non-overlapping ``window x window`` windows (the grid is
  zero-padded to a multiple of the window); the blocks in ``global_attn_indexes`` attend over the whole grid.
  Attention logits get decomposed relative-position terms (MViTv2): one learned table per axis, indexed by the
  query-key offset and dotted with the query;
- a neck (1x1 conv, LayerNorm2d, 3x3 conv, LayerNorm2d) to ``out_chans`` channels: the ``(B, 256, H/p, W/p)``
  image embedding that the mask decoder reads.

Attention runs through ``scaled_dot_product_attention`` with the relative-position terms as an additive bias,
which is the same arithmetic as an explicit softmax and lets PyTorch pick a fused kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gnnseg.seg.sam.modeling.common import FeedForward, LayerNorm2d


def relative_position_table(query_len: int, key_len: int, table: Tensor) -> Tensor:
    """Gather the learned per-offset vectors for every (query, key) pair along one axis.

    ``table`` is ``(2 * max(query_len, key_len) - 1, head_dim)``; a table trained at another size is linearly
    interpolated to that length first. Returns ``(query_len, key_len, head_dim)``.
    """
    length = 2 * max(query_len, key_len) - 1
    if table.shape[0] != length:
        table = F.interpolate(table.T[None], size=length, mode="linear")[0].T
    q_scale = max(key_len / query_len, 1.0)
    k_scale = max(query_len / key_len, 1.0)
    q_coords = torch.arange(query_len, device=table.device)[:, None] * q_scale
    k_coords = torch.arange(key_len, device=table.device)[None, :] * k_scale
    offsets = (q_coords - k_coords) + (key_len - 1) * k_scale
    return table[offsets.long()]


class RelativePositionAttention(nn.Module):
    """Multi-head self-attention over a ``(B, H, W, D)`` token grid with decomposed relative positions."""

    def __init__(self, dim: int, heads: int, grid: tuple[int, int], *, qkv_bias: bool = True,
                 relative_positions: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.relative_positions = relative_positions
        if relative_positions:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid[0] - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid[1] - 1, self.head_dim))

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, dim = x.shape
        tokens = height * width
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        bias = self._position_bias(q, height, width) if self.relative_positions else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(batch, height, width, dim)
        return self.proj(out)

    def _position_bias(self, q: Tensor, height: int, width: int) -> Tensor:
        """``(B, heads, N, N)`` additive logits: q . R_h[dy] + q . R_w[dx] for every query-key pair."""
        r_h = relative_position_table(height, height, self.rel_pos_h)  # (H, H, c)
        r_w = relative_position_table(width, width, self.rel_pos_w)  # (W, W, c)
        grid_q = q.reshape(*q.shape[:2], height, width, self.head_dim)
        along_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, r_h)
        along_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, r_w)
        bias = along_h[..., :, None] + along_w[..., None, :]  # (B, heads, H, W, H, W)
        return bias.reshape(*q.shape[:2], height * width, height * width)


def split_windows(x: Tensor, window: int) -> tuple[Tensor, tuple[int, int]]:
    """``(B, H, W, D)`` -> ``(B * windows, window, window, D)``, zero-padding H and W up to multiples of ``window``."""
    batch, height, width, dim = x.shape
    pad_h, pad_w = -height % window, -width % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    padded = (height + pad_h, width + pad_w)
    x = x.view(batch, padded[0] // window, window, padded[1] // window, window, dim)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, dim), padded


def merge_windows(windows: Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Inverse of :func:`split_windows`: back to ``(B, H, W, D)`` with the padding removed."""
    rows, cols = padded[0] // window, padded[1] // window
    batch = windows.shape[0] // (rows * cols)
    x = windows.view(batch, rows, cols, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(batch, padded[0], padded[1], -1)
    return x[:, : size[0], : size[1]]


class EncoderBlock(nn.Module):
    """Pre-norm transformer block; ``window > 0`` attends within windows, ``window == 0`` over the whole grid."""

    def __init__(self, dim: int, heads: int, grid: tuple[int, int], window: int, mlp_ratio: float = 4.0,
                 relative_positions: bool = True) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attention_grid = (window, window) if window else grid
        self.attn = RelativePositionAttention(dim, heads, attention_grid, relative_positions=relative_positions)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window:
            size = (x.shape[1], x.shape[2])
            x, padded = split_windows(x, self.window)
            x = merge_windows(self.attn(x), self.window, padded, size)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """``(B, C, H, W)`` image -> ``(B, H/p, W/p, D)`` tokens with a strided ``p x p`` convolution."""

    def __init__(self, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    """``(B, 3, S, S)`` normalised image -> ``(B, out_chans, S/p, S/p)`` image embedding."""

    def __init__(self, *, img_size: int = 1024, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, out_chans: int = 256,
                 window_size: int = 14, global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
                 relative_positions: bool = True) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size = img_size
        grid = (img_size // patch_size, img_size // patch_size)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, *grid, embed_dim))
        self.blocks = nn.ModuleList(
            EncoderBlock(embed_dim, num_heads, grid, 0 if i in global_attn_indexes else window_size, mlp_ratio,
                         relative_positions)
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"image encoder expects {self.img_size}x{self.img_size} input, got {tuple(x.shape)}")
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
