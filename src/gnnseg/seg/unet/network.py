"""The U-Net (Ronneberger et al., MICCAI 2015) in nnU-Net v2's plain-convolution form, for 2D and 3D images.

The layout follows ``PlainConvUNet`` from nnU-Net v2 (Isensee et al., Nature Methods 2021;
``dynamic_network_architectures``), written here in our own code:

- **Encoder**: ``S`` stages. Stage ``s`` is ``convs_per_stage`` blocks of
  ``Conv -> [Dropout] -> [Norm] -> LeakyReLU``. The first conv of a stage carries the stage's stride and does the
  downsampling (no pooling layers); stage 0 has stride 1 on every axis.
- **Decoder**: for every level below the top, a transposed conv with ``kernel = stride`` = that level's encoder
  stride (anisotropic strides such as ``(1, 2, 2)`` work), concatenation with the encoder's skip
  ``[upsampled, skip]``, then ``convs_per_stage`` conv blocks of stride 1.
- **Head**: a 1x1(x1) conv to ``num_classes`` logits. With deep supervision each decoder level has its own head.

Shapes use ``B`` for batch, ``C`` for channels and ``*spatial`` for ``(H, W)`` in 2D or ``(D, H, W)`` in 3D.
The input's spatial size must be a multiple of :attr:`UNet.required_divisor` (the product of the strides per axis).

U-Mamba (Ma, Li & Wang 2024, arXiv 2401.04722) is this network with Mamba layers (:mod:`gnnseg.seg.unet.mamba`:
LayerNorm + Mamba over the flattened positions) after chosen encoder stages, before their output becomes a skip:
``mamba_stages=[S - 1]`` is U-Mamba_Bot (the bottleneck only), every stage is U-Mamba_Enc
(:func:`mamba_stages_for`). U-Mamba wraps Mamba around residual conv blocks; here both networks keep nnU-Net's plain
conv blocks, so that a comparison with the U-Net isolates the Mamba layers.

One deliberate difference from nnU-Net: a conv followed by a normalization has no bias. InstanceNorm (and BatchNorm
in training) subtracts the per-channel mean, so such a bias would be a parameter that never receives a gradient.
Without normalization (``norm=None``) every conv has a bias. Transposed convs and heads always have one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral
from typing import Literal

import torch
from torch import Tensor, nn

from gnnseg.seg.unet.mamba import MambaLayer

Norm = Literal["instance", "batch"] | None
"""Normalization after each conv: per-sample-per-channel (nnU-Net's default), per-batch, or none."""

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_TRANSPOSED_CONV = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_INSTANCE_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_DROPOUT = {2: nn.Dropout2d, 3: nn.Dropout3d}
_AXIS_NAMES = {2: "H, W", 3: "D, H, W"}
NETWORKS = ("unet", "umamba_bot", "umamba_enc")
"""Network choices of the training pipeline: the plain U-Net and the two U-Mamba variants."""


def mamba_stages_for(network: str, num_stages: int) -> tuple[int, ...]:
    """Encoder stages followed by a Mamba layer: none (``unet``), the bottleneck (``umamba_bot``) or all
    (``umamba_enc``)."""
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose one of {list(NETWORKS)}")
    return {"unet": (), "umamba_bot": (num_stages - 1,), "umamba_enc": tuple(range(num_stages))}[network]


def features_per_stage(num_stages: int, *, dims: Literal[2, 3] = 3, base: int = 32,
                       cap: int | None = None) -> list[int]:
    """nnU-Net's channel widths: ``base`` at stage 0, doubled at every stage, capped.

    The cap defaults to nnU-Net's: 320 in 3D and 512 in 2D (memory grows with the volume in 3D).
    ``features_per_stage(6, dims=3)`` -> ``[32, 64, 128, 256, 320, 320]``.
    """
    _check_dims(dims)
    if cap is None:
        cap = 320 if dims == 3 else 512
    for name, value in (("num_stages", num_stages), ("base", base), ("cap", cap)):
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return [min(base * 2**stage, cap) for stage in range(num_stages)]


def init_weights_he(module: nn.Module, negative_slope: float = 1e-2) -> None:
    """nnU-Net's ``InitWeights_He``: Kaiming-normal conv weights (for a LeakyReLU of ``negative_slope``), zero biases.

    Applies to (transposed) convs only; use as ``model.apply(init_weights_he)``. Norm layers keep their
    default ones/zeros.
    """
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=negative_slope)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ConvBlock(nn.Module):
    """``Conv -> [Dropout] -> [Norm] -> LeakyReLU``, padded so that only the stride changes the size.

    Shapes: ``(B, in_channels, *spatial)`` -> ``(B, out_channels, *(spatial // stride))``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, dims: Literal[2, 3], kernel_size: Sequence[int],
                 stride: Sequence[int], norm: Norm = "instance", negative_slope: float = 0.01,
                 dropout: float = 0.0) -> None:
        super().__init__()
        padding = tuple((k - 1) // 2 for k in kernel_size)
        self.conv = _CONV[dims](in_channels, out_channels, tuple(kernel_size), tuple(stride), padding,
                                bias=norm is None)
        self.dropout = _DROPOUT[dims](dropout) if dropout > 0 else nn.Identity()
        if norm == "instance":
            self.norm = _INSTANCE_NORM[dims](out_channels, eps=1e-5, affine=True)
        elif norm == "batch":
            self.norm = _BATCH_NORM[dims](out_channels, eps=1e-5, affine=True)
        else:
            self.norm = nn.Identity()
        self.activation = nn.LeakyReLU(negative_slope, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.norm(self.dropout(self.conv(x))))


def _conv_stage(num_convs: int, in_channels: int, out_channels: int, *, first_stride: Sequence[int],
                **block_options) -> nn.Sequential:
    """``num_convs`` conv blocks; only the first one strides."""
    ones = (1,) * len(first_stride)
    return nn.Sequential(*(ConvBlock(in_channels if i == 0 else out_channels, out_channels,
                                     stride=first_stride if i == 0 else ones, **block_options)
                           for i in range(num_convs)))


class UNet(nn.Module):
    """A 2D or 3D U-Net with strided-conv downsampling, transposed-conv upsampling and optional deep supervision.

    Arguments (one entry per stage, stage 0 at full resolution):

    - ``features_per_stage``: channels of each encoder stage (and of the decoder level at the same resolution).
    - ``kernel_sizes``: conv kernel per stage and axis, odd, e.g. ``[[1, 3, 3], [3, 3, 3], ...]``.
    - ``strides``: downsampling factor per stage and axis; ``strides[0]`` is all ones.
    - ``convs_per_stage``: conv blocks per encoder stage and per decoder level (nnU-Net: 2).
    - ``deep_supervision``: also return logits from the lower decoder levels (see :meth:`forward`).
      A network built with it can be switched off later (``model.deep_supervision = False``, as nnU-Net does for
      inference) but not on: without it, only the full-resolution head exists, so no parameter goes unused.
    - ``norm``, ``negative_slope``, ``dropout``: normalization, LeakyReLU slope and channel-dropout probability
      of every conv block.
    - ``mamba_stages``: encoder stages followed by a Mamba layer (U-Mamba; see :func:`mamba_stages_for`).

    Weights are initialised with :func:`init_weights_he`.
    """

    def __init__(self, in_channels: int, num_classes: int, *, dims: Literal[2, 3],
                 features_per_stage: Sequence[int], kernel_sizes: Sequence[Sequence[int]],
                 strides: Sequence[Sequence[int]], convs_per_stage: int = 2, deep_supervision: bool = False,
                 norm: Norm = "instance", negative_slope: float = 0.01, dropout: float = 0.0,
                 mamba_stages: Sequence[int] = ()) -> None:
        super().__init__()
        _check_dims(dims)
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("convs_per_stage", convs_per_stage)):
            _check_positive_int(name, value)
        if norm not in ("instance", "batch", None):
            raise ValueError(f"norm must be 'instance', 'batch' or None, got {norm!r}")
        if not (isinstance(negative_slope, (int, float)) and negative_slope >= 0):
            raise ValueError(f"negative_slope must be a number >= 0, got {negative_slope!r}")
        if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        features = _check_features(features_per_stage)
        kernels = _check_per_axis("kernel_sizes", kernel_sizes, dims, len(features))
        stride_list = _check_per_axis("strides", strides, dims, len(features))
        even = [(stage, k) for stage, k in enumerate(kernels) if any(size % 2 == 0 for size in k)]
        if even:
            raise ValueError(f"kernel sizes must be odd (so that 'same' padding keeps the size); "
                             f"got kernel_sizes[{even[0][0]}] = {list(even[0][1])}")
        if any(s != 1 for s in stride_list[0]):
            raise ValueError(f"strides[0] must be all ones (stage 0 works at full resolution), "
                             f"got {list(stride_list[0])}")

        self.in_channels, self.num_classes, self.dims = in_channels, num_classes, dims
        self.features_per_stage: tuple[int, ...] = features
        self.kernel_sizes: tuple[tuple[int, ...], ...] = kernels
        self.strides: tuple[tuple[int, ...], ...] = stride_list
        self.convs_per_stage = convs_per_stage
        block = dict(dims=dims, norm=norm, negative_slope=negative_slope, dropout=dropout)

        bad = [stage for stage in mamba_stages if not 0 <= stage < len(features)]
        if bad:
            raise ValueError(f"mamba_stages {list(mamba_stages)} must be encoder stages 0..{len(features) - 1}")
        self.mamba_stages = tuple(sorted(set(mamba_stages)))
        self.encoder = nn.ModuleList()
        channels = in_channels
        for stage, width in enumerate(features):
            convs = _conv_stage(convs_per_stage, channels, width, first_stride=stride_list[stage],
                                kernel_size=kernels[stage], **block)
            self.encoder.append(nn.Sequential(*convs, MambaLayer(width)) if stage in self.mamba_stages else convs)
            channels = width

        # Decoder level i (i = 0 is the deepest) brings stage S-1-i up to the resolution of stage S-2-i.
        self.upsamplers, self.decoder = nn.ModuleList(), nn.ModuleList()
        for below in range(len(features) - 1, 0, -1):
            skip = below - 1
            self.upsamplers.append(_TRANSPOSED_CONV[dims](features[below], features[skip], stride_list[below],
                                                          stride_list[below], bias=True))
            self.decoder.append(_conv_stage(convs_per_stage, 2 * features[skip], features[skip],
                                            first_stride=(1,) * dims, kernel_size=kernels[skip], **block))

        # heads[-1] is always the full-resolution head; with deep supervision heads[i] serves decoder level i.
        head_levels = range(len(self.decoder)) if deep_supervision else [len(self.decoder) - 1]
        self.heads = nn.ModuleList(_CONV[dims](features[len(features) - 2 - level], num_classes, 1, bias=True)
                                   for level in head_levels)
        self._deep_supervision = deep_supervision
        self.apply(init_weights_he)

    @property
    def deep_supervision(self) -> bool:
        return self._deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool) -> None:
        if enabled and len(self.heads) < len(self.decoder):
            raise ValueError("this UNet was built without deep supervision, so it has no heads for the lower "
                             "decoder levels; build it with deep_supervision=True")
        self._deep_supervision = bool(enabled)

    @property
    def required_divisor(self) -> tuple[int, ...]:
        """Per axis, the product of all strides: the input's spatial size must be a multiple of it."""
        return tuple(math.prod(stride[axis] for stride in self.strides) for axis in range(self.dims))

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """``x (B, in_channels, *spatial)`` -> logits ``(B, num_classes, *spatial)``.

        With deep supervision: a list of ``S - 1`` logit tensors, full resolution first, then each lower
        decoder level (``(B, num_classes, *(spatial // prod(strides[:s + 1])))`` for ``s = 0 .. S-2``).
        """
        self._check_input(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()  # the bottleneck feeds the decoder; it is not a skip
        outputs = []
        for level, (upsample, convs) in enumerate(zip(self.upsamplers, self.decoder)):
            x = convs(torch.cat([upsample(x), skips.pop()], dim=1))
            if self._deep_supervision:
                outputs.append(self.heads[level](x))
        if not self._deep_supervision:
            return self.heads[-1](x)
        return outputs[::-1]

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise ValueError(f"UNet expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != self.dims + 2:
            raise ValueError(f"UNet(dims={self.dims}) expects input of shape (B, C, {_AXIS_NAMES[self.dims]}), "
                             f"i.e. {self.dims + 2} dimensions; got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects {self.in_channels} input channel(s) (dimension 1), "
                             f"got {x.shape[1]} in input of shape {tuple(x.shape)}")
        spatial, divisor = tuple(x.shape[2:]), self.required_divisor
        if any(size % d for size, d in zip(spatial, divisor)):
            padded = tuple(-(-size // d) * d for size, d in zip(spatial, divisor))
            raise ValueError(f"input spatial shape {spatial} ({_AXIS_NAMES[self.dims]}) is not divisible by the "
                             f"product of the strides per axis {divisor}; pad or crop it, e.g. to {padded}")


def ronneberger_unet(in_channels: int = 1, num_classes: int = 2, *, norm: Norm = None,
                     dropout: float = 0.0) -> UNet:
    """The original U-Net's configuration (Ronneberger, Fischer & Brox, MICCAI 2015): 2D, 5 stages of
    64-128-256-512-1024 channels, two 3x3 convs per stage, 2x2 down/up-sampling, a 1x1 conv head.

    With the defaults (no normalization, like the paper) it has exactly the paper's 31,030,658 parameters
    for 1 input channel and 2 classes. Differences from the paper, none of which changes the parameter count:
    'same' padding instead of valid convolutions (so output size = input size, no tile overlap needed),
    LeakyReLU(0.01) instead of ReLU, and downsampling by the stride of each stage's first 3x3 conv instead of
    2x2 max pooling. The paper's dropout at the end of the contracting path is approximated by ``dropout``,
    which applies to every conv block. ``norm='instance'`` gives the nnU-Net flavour.

    Shapes: ``(B, in_channels, H, W)`` -> ``(B, num_classes, H, W)``, with ``H`` and ``W`` multiples of 16.
    """
    return UNet(in_channels, num_classes, dims=2, features_per_stage=[64, 128, 256, 512, 1024],
                kernel_sizes=[[3, 3]] * 5, strides=[[1, 1]] + [[2, 2]] * 4, convs_per_stage=2,
                norm=norm, negative_slope=0.01, dropout=dropout)


def _check_dims(dims: object) -> None:
    if dims not in (2, 3) or isinstance(dims, bool):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_features(features: Sequence[int]) -> tuple[int, ...]:
    if isinstance(features, (str, bytes)) or not isinstance(features, Sequence) or len(features) < 2:
        raise ValueError(f"features_per_stage must be a sequence of at least 2 stage widths, got {features!r}")
    for stage, width in enumerate(features):
        _check_positive_int(f"features_per_stage[{stage}]", width)
    return tuple(int(width) for width in features)


def _check_per_axis(name: str, values: Sequence[Sequence[int]], dims: int,
                    num_stages: int) -> tuple[tuple[int, ...], ...]:
    """``values`` as one ``dims``-tuple of positive ints per stage, or a ValueError naming the bad entry."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a sequence with one entry per stage, got {values!r}")
    if len(values) != num_stages:
        raise ValueError(f"{name} has {len(values)} entries but features_per_stage has {num_stages} stages; "
                         f"they must match")
    checked = []
    for stage, entry in enumerate(values):
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != dims:
            raise ValueError(f"{name}[{stage}] must have one value per spatial axis ({dims} for dims={dims}), "
                             f"got {entry!r}")
        for axis, value in enumerate(entry):
            _check_positive_int(f"{name}[{stage}][{axis}]", value)
        checked.append(tuple(int(value) for value in entry))
    return tuple(checked)
