"""TinyViT image encoder: the small encoder of MobileSAM and Lite MedSAM.

TinyViT (Wu et al., ECCV 2022) is a four-stage hierarchy: a convolutional stem, a stage of inverted-residual
convolutions (MBConv), then three stages of windowed self-attention whose blocks also hold a depthwise 3x3
convolution between attention and MLP. Attention adds a learned bias per head and per relative offset
``(|dy|, |dx|)`` inside the window. Stages are joined by patch merging (1x1 conv, depthwise 3x3 conv with stride,
1x1 conv), and a neck maps the last stage to the 256-channel embedding the SAM decoder reads.

MobileSAM (Zhang et al. 2023) keeps the last merge at stride 1, so a 1024 input gives a 64 x 64 embedding through a
stride-4 stem (two 3x3 stride-2 convolutions). Lite MedSAM runs the same network at 256 input with a stride-1 stem
of 1x1 convolutions, again a 64 x 64 embedding. Both are ``patch_size`` here: the total stride from pixels to
embedding (16 for MobileSAM, 4 for Lite MedSAM); the stem takes what the patch mergings leave of it.

Parameter names follow the released MobileSAM / Lite MedSAM checkpoints (``patch_embed.seq``, ``layers.i.blocks``,
``layers.i.downsample``, ``c`` / ``bn`` in each convolution + batch norm, ``neck``), so their weights load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gnnseg.seg.sam.modeling.common import LayerNorm2d


class ConvBatchNorm(nn.Sequential):
    """Convolution without bias followed by batch norm (children ``c`` and ``bn``)."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, kernel, stride, kernel // 2, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chans))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)


class ConvStem(nn.Module):
    """Pixels -> ``dim`` channels at ``1 / stride`` resolution: two conv + BN with GELU between (stride 1 or 4)."""

    def __init__(self, in_chans: int, dim: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 4):
            raise ValueError(f"the TinyViT stem has stride 1 (1x1 convolutions) or 4 (two 3x3 stride-2), got {stride}")
        kernel, step = (1, 1) if stride == 1 else (3, 2)
        self.seq = nn.Sequential(ConvBatchNorm(in_chans, dim // 2, kernel, step), nn.GELU(),
                                 ConvBatchNorm(dim // 2, dim, kernel, step))

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise 3x3, 1x1 project (zero-initialised BN), residual, GELU."""

    def __init__(self, dim: int, expand_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBatchNorm(dim, hidden)
        self.conv2 = ConvBatchNorm(hidden, hidden, kernel=3, groups=hidden)
        self.conv3 = ConvBatchNorm(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: Tensor) -> Tensor:
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(x + self.conv3(y))


class PatchMerging(nn.Module):
    """``(B, C, H, W)`` -> ``(B, out_dim, H / stride, W / stride)`` through 1x1, depthwise 3x3 (strided), 1x1."""

    def __init__(self, dim: int, out_dim: int, stride: int = 2) -> None:
        super().__init__()
        self.conv1 = ConvBatchNorm(dim, out_dim)
        self.conv2 = ConvBatchNorm(out_dim, out_dim, kernel=3, stride=stride, groups=out_dim)
        self.conv3 = ConvBatchNorm(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


def window_offset_index(window: int) -> Tensor:
    """``(w*w, w*w)`` index into a table of ``w*w`` biases: token pair -> ``|dy| * w + |dx|``.

    This is the order in which TinyViT's reference enumerates the distinct offsets (row-major from the first
    token), so released ``attention_biases`` tables are read correctly.
    """
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()


class WindowAttention(nn.Module):
    """Multi-head self-attention over the tokens of one window, with a learned bias per relative offset.

    The LayerNorm is part of the module (as in the reference), so it also sees the zero padding of partial windows.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("offset_index", window_offset_index(window), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, _ = x.shape
        # the reference lays q, k, v out per head: (head, [q | k | v])
        qkv = self.qkv(self.norm(x)).view(batch, tokens, self.num_heads, 3, self.head_dim)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)
        bias = self.attention_biases[:, self.offset_index].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class TinyViTBlock(nn.Module):
    """Windowed attention + residual, depthwise 3x3 convolution, MLP + residual; ``(B, H, W, C)`` in and out."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = ConvBatchNorm(dim, dim, kernel=3, groups=dim)
        self.mlp = _NormedMLP(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        batch, height, width, channels = x.shape
        w = self.window
        pad_h, pad_w = (-height) % w, (-width) % w
        windows = F.pad(x, (0, 0, 0, pad_w, 0, pad_h)) if pad_h or pad_w else x
        rows, cols = (height + pad_h) // w, (width + pad_w) // w
        windows = windows.view(batch, rows, w, cols, w, channels).transpose(2, 3).reshape(-1, w * w, channels)
        attended = self.attn(windows).view(batch, rows, cols, w, w, channels).transpose(2, 3)
        attended = attended.reshape(batch, rows * w, cols * w, channels)[:, :height, :width]
        x = x + attended
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class _NormedMLP(nn.Module):
    """LayerNorm, linear, GELU, linear (the reference's ``Mlp``; parameter names ``norm``, ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class ConvStage(nn.Module):
    """Stage 0: MBConv blocks on ``(B, C, H, W)``, then patch merging."""

    def __init__(self, dim: int, depth: int, out_dim: int, stride: int, expand_ratio: float = 4.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


class AttentionStage(nn.Module):
    """Stages 1-3: TinyViT blocks, then patch merging (none after the last stage); ``(B, C, H, W)`` in and out."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, out_dim: int | None, stride: int,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, num_heads, window, mlp_ratio) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride) if out_dim is not None else None

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(nn.Module):
    """``(B, 3, S, S)`` normalised image -> ``(B, out_chans, S / patch_size, S / patch_size)`` image embedding.

    Args:
        img_size: input side ``S``.
        patch_size: total stride, 4 (Lite MedSAM) or 16 (MobileSAM); the stem takes what the mergings leave.
        embed_dims, depths, num_heads, window_sizes: per stage (stage 0 is convolutional and has no heads or window).
        merge_strides: strides of the three patch mergings; MobileSAM's ``(2, 2, 1)`` keeps the last stage's
            resolution. The image is reduced by ``stem stride * prod(merge_strides)`` in all.
    """

    def __init__(self, *, img_size: int = 256, patch_size: int = 4, in_chans: int = 3,
                 embed_dims: Sequence[int] = (64, 128, 160, 320), depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (2, 4, 5, 10), window_sizes: Sequence[int] = (7, 7, 14, 7),
                 merge_strides: Sequence[int] = (2, 2, 1), mlp_ratio: float = 4.0, mbconv_expand_ratio: float = 4.0,
                 out_chans: int = 256) -> None:
        super().__init__()
        if not len(embed_dims) == len(depths) == len(num_heads) == len(window_sizes) == len(merge_strides) + 1 == 4:
            raise ValueError("TinyViT needs 4 stages: embed_dims, depths, num_heads, window_sizes of length 4 "
                             "and merge_strides of length 3")
        merged = math.prod(merge_strides)
        stem_stride = patch_size // merged
        if patch_size % merged or img_size % patch_size:
            raise ValueError(f"img_size {img_size} and patch_size {patch_size} do not fit merge strides "
                             f"{tuple(merge_strides)}")
        self.img_size = img_size
        self.patch_embed = ConvStem(in_chans, embed_dims[0], stem_stride)
        stages: list[nn.Module] = [ConvStage(embed_dims[0], depths[0], embed_dims[1], merge_strides[0],
                                             mbconv_expand_ratio)]
        for i in range(1, 4):
            last = i == 3
            stages.append(AttentionStage(embed_dims[i], depths[i], num_heads[i], window_sizes[i],
                                         None if last else embed_dims[i + 1], 1 if last else merge_strides[i],
                                         mlp_ratio))
        self.layers = nn.ModuleList(stages)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(_init_linear)

    def features(self, x: Tensor) -> Tensor:
        """The last stage's ``(B, embed_dims[-1], h, w)`` map, before the neck."""
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"image encoder expects {self.img_size}x{self.img_size} input, got {tuple(x.shape)}")
        return self.neck(self.features(x))


def _init_linear(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights and zero biases, as TinyViT initialises."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
