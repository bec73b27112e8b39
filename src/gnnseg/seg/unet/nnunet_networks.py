"""The networks of nnU-Net v2 models, as plans describe them, in our own code and with their state-dict key names.

nnU-Net v2 builds its network from ``plans.json``: ``configurations[<name>].architecture`` names a class of the
``dynamic_network_architectures`` package (``network_class_name``) and its keyword arguments (``arch_kwargs``); the
trainer saves that network's ``state_dict()`` as the checkpoint's ``network_weights``. This module builds the same two
classes nnU-Net's planners use, :class:`PlainConvUNet` (the default plans) and :class:`ResidualEncoderUNet` (the
ResEnc presets), so that those weights load unchanged (:func:`load_nnunet_weights`) and give the same outputs.

Layout (``B`` batch, ``*spatial`` = ``(H, W)`` or ``(D, H, W)``):

- A *conv block* is ``conv -> [dropout] -> [norm] -> [nonlin]`` (``nonlin_first`` swaps norm and nonlin), held as the
  attributes ``conv``, ``dropout``, ``norm``, ``nonlin`` (their parameters' key names). Convs pad ``(k - 1) // 2``.
- **PlainConvUNet encoder**: stage ``s`` is ``n_conv_per_stage[s]`` blocks, the first with the stage's stride
  (strided convs, no pooling). **ResidualEncoderUNet encoder**: a stem (one block, stride 1) then per stage
  ``n_blocks_per_stage[s]`` ResNet-D basic blocks: ``block(conv1) -> block(conv2, no nonlin)`` plus a skip (average
  pooling with kernel = stride where the block strides, then a bias-free 1x1 conv block without nonlin where the
  width changes), added, then the nonlin.
- **Decoder** (both): from the bottleneck up, a transposed conv (kernel = stride = that encoder stage's stride),
  concatenation ``[upsampled, skip]``, ``n_conv_per_stage_decoder`` blocks with the skip stage's kernel. Every level
  has a 1x1 ``seg_layers`` head (they are all in the checkpoint); at inference (no deep supervision) only the last,
  full-resolution one runs: ``(B, C_in, *spatial) -> (B, num_classes, *spatial)``.

nnU-Net's classes also register each conv under a second name (``all_modules.<i>``) and the encoder again inside the
decoder (``decoder.encoder.*``); their state dicts therefore hold every tensor two or three times. Those aliases carry
no tensor of their own and are dropped on loading (after checking that each equals the tensor it aliases).

Operator classes come from the plans as dotted names (``"torch.nn.modules.conv.Conv3d"``). Only the torch.nn classes
in :data:`OPERATORS` are accepted; nothing is imported by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from gnnseg.seg.unet.network import init_weights_he

OPERATORS: dict[str, type[nn.Module]] = {
    cls.__name__: cls for cls in (
        nn.Conv2d, nn.Conv3d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.BatchNorm2d, nn.BatchNorm3d,
        nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.LeakyReLU, nn.ReLU, nn.PReLU, nn.ELU, nn.GELU)}
"""The operators a plans file may name (by their class name after ``torch.nn.``)."""

_TRANSPOSED = {nn.Conv2d: nn.ConvTranspose2d, nn.Conv3d: nn.ConvTranspose3d}
_AVERAGE_POOL = {nn.Conv2d: nn.AvgPool2d, nn.Conv3d: nn.AvgPool3d}


def operator_named(name: str | None, what: str, where: str) -> type[nn.Module] | None:
    """The torch.nn class a plans entry names (``None`` stays ``None``); anything outside :data:`OPERATORS` is
    refused, naming ``where`` and the value."""
    if name is None:
        return None
    module, _, class_name = str(name).rpartition(".")
    if not (module == "torch.nn" or module.startswith("torch.nn.")) or class_name not in OPERATORS:
        raise ValueError(f"{where}: {what} {name!r} is not one of the operators gnnseg builds "
                         f"(torch.nn.{', torch.nn.'.join(OPERATORS)})")
    return OPERATORS[class_name]


class OperatorSpec:
    """The operators of every conv block of one network: conv class, bias, norm, dropout and nonlin with kwargs."""

    def __init__(self, conv: type[nn.Module], conv_bias: bool, norm: type[nn.Module] | None,
                 norm_kwargs: Mapping[str, Any] | None, dropout: type[nn.Module] | None,
                 dropout_kwargs: Mapping[str, Any] | None, nonlin: type[nn.Module] | None,
                 nonlin_kwargs: Mapping[str, Any] | None, nonlin_first: bool = False):
        if conv not in _TRANSPOSED:
            raise ValueError(f"conv_op must be Conv2d or Conv3d, got {conv.__name__}")
        self.conv, self.conv_bias, self.nonlin_first = conv, bool(conv_bias), bool(nonlin_first)
        self.norm, self.norm_kwargs = norm, dict(norm_kwargs or {})
        self.dropout, self.dropout_kwargs = dropout, dict(dropout_kwargs or {})
        self.nonlin, self.nonlin_kwargs = nonlin, dict(nonlin_kwargs or {})

    @property
    def dims(self) -> int:
        return 2 if self.conv is nn.Conv2d else 3


def _as_tuple(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    return (int(value),) * dims if isinstance(value, int) else tuple(int(v) for v in value)


class ConvBlock(nn.Module):
    """``conv -> [dropout] -> [norm] -> [nonlin]``: ``(B, in, *spatial) -> (B, out, *spatial / stride)``."""

    def __init__(self, ops: OperatorSpec, in_channels: int, out_channels: int, kernel_size, stride, *,
                 bias: bool | None = None, dropout: bool = True, nonlin: bool = True):
        super().__init__()
        kernel_size, stride = _as_tuple(kernel_size, ops.dims), _as_tuple(stride, ops.dims)
        self.conv = ops.conv(in_channels, out_channels, kernel_size, stride,
                             padding=[(k - 1) // 2 for k in kernel_size], bias=ops.conv_bias if bias is None else bias)
        steps = ["conv"]
        if dropout and ops.dropout is not None:
            self.dropout = ops.dropout(**ops.dropout_kwargs)
            steps.append("dropout")
        if ops.norm is not None:
            self.norm = ops.norm(out_channels, **ops.norm_kwargs)
            steps.append("norm")
        if nonlin and ops.nonlin is not None:
            self.nonlin = ops.nonlin(**ops.nonlin_kwargs)
            steps.append("nonlin")
            if ops.nonlin_first and ops.norm is not None:
                steps[-1], steps[-2] = steps[-2], steps[-1]
        # the steps' names, not the modules: a module replaced under its name (as in the prediction copy's norms)
        # is the one called
        self._steps = tuple(steps)

    def forward(self, x: Tensor) -> Tensor:
        for step in self._steps:
            x = getattr(self, step)(x)
        return x


class StackedConvBlocks(nn.Module):
    """``count`` conv blocks, the first with ``stride`` (held as ``convs.<i>``)."""

    def __init__(self, count: int, ops: OperatorSpec, in_channels: int, out_channels: int, kernel_size, stride):
        super().__init__()
        self.convs = nn.Sequential(*[ConvBlock(ops, in_channels if i == 0 else out_channels, out_channels, kernel_size,
                                               stride if i == 0 else 1) for i in range(count)])

    def forward(self, x: Tensor) -> Tensor:
        return self.convs(x)


class BasicResidualBlock(nn.Module):
    """ResNet-D basic block: ``nonlin(conv2(conv1(x)) + skip(x))``, the stride in ``conv1`` and in the skip's
    average pooling; only ``conv1`` carries dropout."""

    def __init__(self, ops: OperatorSpec, in_channels: int, out_channels: int, kernel_size, stride):
        super().__init__()
        stride = _as_tuple(stride, ops.dims)
        self.conv1 = ConvBlock(ops, in_channels, out_channels, kernel_size, stride)
        self.conv2 = ConvBlock(ops, out_channels, out_channels, kernel_size, 1, dropout=False, nonlin=False)
        self.nonlin2 = ops.nonlin(**ops.nonlin_kwargs) if ops.nonlin is not None else nn.Identity()
        skip: list[nn.Module] = []
        if any(s != 1 for s in stride):
            skip.append(_AVERAGE_POOL[ops.conv](stride, stride))
        if in_channels != out_channels:
            skip.append(ConvBlock(ops, in_channels, out_channels, 1, 1, bias=False, dropout=False, nonlin=False))
        self.skip = nn.Sequential(*skip) if skip else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlin2(self.conv2(self.conv1(x)) + self.skip(x))


class StackedResidualBlocks(nn.Module):
    """``count`` basic residual blocks, the first with ``stride`` (held as ``blocks.<i>``)."""

    def __init__(self, count: int, ops: OperatorSpec, in_channels: int, out_channels: int, kernel_size, stride):
        super().__init__()
        self.blocks = nn.Sequential(*[BasicResidualBlock(ops, in_channels if i == 0 else out_channels, out_channels,
                                                         kernel_size, stride if i == 0 else 1) for i in range(count)])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class PlainConvEncoder(nn.Module):
    """Stages of stacked conv blocks; returns every stage's output (the skips, the bottleneck last)."""

    def __init__(self, ops: OperatorSpec, in_channels: int, features: Sequence[int], kernel_sizes, strides,
                 convs_per_stage: Sequence[int]):
        super().__init__()
        stages = []
        for s, width in enumerate(features):
            stages.append(nn.Sequential(StackedConvBlocks(convs_per_stage[s], ops, in_channels, width,
                                                          kernel_sizes[s], strides[s])))
            in_channels = width
        self.stages = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class ResidualEncoder(nn.Module):
    """A stem (one conv block at stride 1) then stages of residual blocks; returns every stage's output."""

    def __init__(self, ops: OperatorSpec, in_channels: int, features: Sequence[int], kernel_sizes, strides,
                 blocks_per_stage: Sequence[int], stem_channels: int | None = None):
        super().__init__()
        stem_channels = features[0] if stem_channels is None else stem_channels
        self.stem = StackedConvBlocks(1, ops, in_channels, stem_channels, kernel_sizes[0], 1)
        in_channels = stem_channels
        stages = []
        for s, width in enumerate(features):
            stages.append(StackedResidualBlocks(blocks_per_stage[s], ops, in_channels, width, kernel_sizes[s],
                                                strides[s]))
            in_channels = width
        self.stages = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class UNetDecoder(nn.Module):
    """Transposed conv up, concatenate the skip, stacked conv blocks; the last level's 1x1 head gives the logits."""

    def __init__(self, ops: OperatorSpec, features: Sequence[int], kernel_sizes, strides,
                 convs_per_stage: Sequence[int], num_classes: int):
        super().__init__()
        stages, transposed, heads = [], [], []
        for level in range(1, len(features)):
            below, skip = features[-level], features[-(level + 1)]
            stride = _as_tuple(strides[-level], ops.dims)
            transposed.append(_TRANSPOSED[ops.conv](below, skip, stride, stride, bias=ops.conv_bias))
            stages.append(StackedConvBlocks(convs_per_stage[level - 1], ops, 2 * skip, skip,
                                            kernel_sizes[-(level + 1)], 1))
            heads.append(ops.conv(skip, num_classes, 1, 1, 0, bias=True))
        self.stages = nn.ModuleList(stages)
        self.transpconvs = nn.ModuleList(transposed)
        self.seg_layers = nn.ModuleList(heads)

    def forward(self, skips: list[Tensor], deep_supervision: bool = False) -> Tensor | list[Tensor]:
        """The full-resolution logits; with ``deep_supervision`` every level's, full resolution first (as
        :class:`gnnseg.seg.unet.network.UNet` and nnU-Net's decoder return them for the deep supervision loss)."""
        x = skips[-1]
        outputs = []
        for level, (up, stage) in enumerate(zip(self.transpconvs, self.stages)):
            x = stage(torch.cat((up(x), skips[-(level + 2)]), 1))
            if deep_supervision:
                outputs.append(self.seg_layers[level](x))
        return outputs[::-1] if deep_supervision else self.seg_layers[-1](x)


class NnUNetNetwork(nn.Module):
    """An encoder and the U-Net decoder: ``(B, in_channels, *spatial) -> (B, num_classes, *spatial)`` logits, or with
    ``deep_supervision`` set (training) the list of every decoder level's logits, full resolution first."""

    def __init__(self, encoder: nn.Module, decoder: UNetDecoder, class_name: str):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.class_name = class_name
        self.deep_supervision = False

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        return self.decoder(self.encoder(x), self.deep_supervision)


def initialize_for_training(network: NnUNetNetwork) -> None:
    """nnU-Net's initialisation of a network to be trained: He-normal conv weights and zero biases, and for the
    residual blocks the norm before the addition set to zero, so that each block starts as its skip."""
    network.apply(init_weights_he)
    for module in network.modules():
        if isinstance(module, BasicResidualBlock) and getattr(module.conv2, "norm", None) is not None \
                and module.conv2.norm.weight is not None:
            nn.init.zeros_(module.conv2.norm.weight)
            nn.init.zeros_(module.conv2.norm.bias)


_COMMON_KWARGS = ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_conv_per_stage_decoder",
                  "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op", "dropout_op_kwargs", "nonlin",
                  "nonlin_kwargs", "deep_supervision")
ARCHITECTURES = {
    "PlainConvUNet": (*_COMMON_KWARGS, "n_conv_per_stage", "nonlin_first"),
    "ResidualEncoderUNet": (*_COMMON_KWARGS, "n_blocks_per_stage", "stem_channels"),
}
"""The ``dynamic_network_architectures`` classes built here and the ``arch_kwargs`` each accepts."""


def _per_stage(value, count: int, name: str, where: str) -> list:
    values = [value] * count if isinstance(value, int) else list(value)
    if len(values) != count:
        raise ValueError(f"{where}: {name} has {len(values)} entries, the network has {count}")
    return values


def build_network(architecture: Mapping[str, Any], in_channels: int, num_classes: int,
                  where: str = "plans") -> NnUNetNetwork:
    """The network of a plans configuration's ``architecture`` entry (``network_class_name`` + ``arch_kwargs``), for
    inference (deep supervision off). Unknown classes, keyword arguments or operators are refused naming ``where``."""
    class_path = str(architecture.get("network_class_name", ""))
    class_name = class_path.rpartition(".")[2]
    if class_name not in ARCHITECTURES:
        raise ValueError(f"{where}: network class {class_path!r} is not supported (gnnseg builds "
                         f"{', '.join(ARCHITECTURES)} from dynamic_network_architectures)")
    kwargs = dict(architecture.get("arch_kwargs") or {})
    unknown = sorted(set(kwargs) - set(ARCHITECTURES[class_name]))
    if unknown:
        raise ValueError(f"{where}: {class_name} arch_kwargs {unknown} are not supported "
                         f"(known: {', '.join(ARCHITECTURES[class_name])})")
    ops = OperatorSpec(operator_named(kwargs["conv_op"], "conv_op", where), kwargs.get("conv_bias", False),
                       operator_named(kwargs.get("norm_op"), "norm_op", where), kwargs.get("norm_op_kwargs"),
                       operator_named(kwargs.get("dropout_op"), "dropout_op", where), kwargs.get("dropout_op_kwargs"),
                       operator_named(kwargs.get("nonlin"), "nonlin", where), kwargs.get("nonlin_kwargs"),
                       kwargs.get("nonlin_first", False))
    stages = int(kwargs["n_stages"])
    features = _per_stage(kwargs["features_per_stage"], stages, "features_per_stage", where)
    kernels = _per_stage(kwargs["kernel_sizes"], stages, "kernel_sizes", where)
    strides = _per_stage(kwargs["strides"], stages, "strides", where)
    decoder_convs = _per_stage(kwargs["n_conv_per_stage_decoder"], stages - 1, "n_conv_per_stage_decoder", where)
    if class_name == "PlainConvUNet":
        encoder: nn.Module = PlainConvEncoder(ops, in_channels, features, kernels, strides,
                                              _per_stage(kwargs["n_conv_per_stage"], stages, "n_conv_per_stage", where))
    else:
        encoder = ResidualEncoder(ops, in_channels, features, kernels, strides,
                                  _per_stage(kwargs["n_blocks_per_stage"], stages, "n_blocks_per_stage", where),
                                  kwargs.get("stem_channels"))
    return NnUNetNetwork(encoder, UNetDecoder(ops, features, kernels, strides, decoder_convs, num_classes), class_name)


def _is_alias(key: str) -> bool:
    return key.startswith("decoder.encoder.") or ".all_modules." in key


def _aliased(key: str, network: nn.Module) -> str | None:
    """The key of ``network`` that the alias ``key`` names (``decoder.encoder.X`` is ``encoder.X``; ``all_modules.<i>``
    is the i-th operator of that conv block, in the order they run), or None when it names nothing there."""
    if key.startswith("decoder.encoder."):
        key = key[len("decoder."):]
    if ".all_modules." not in key:
        return key
    block_path, _, rest = key.partition(".all_modules.")
    index, _, parameter = rest.partition(".")
    try:
        block = network.get_submodule(block_path)
    except AttributeError:
        return None
    steps = getattr(block, "_steps", None)
    if steps is None or not index.isdigit() or int(index) >= len(steps):
        return None
    return f"{block_path}.{steps[int(index)]}.{parameter}"


def _same_view(a: Tensor, b: Tensor) -> bool:
    """Whether two tensors are views of the same memory with the same layout (as aliases loaded from one checkpoint
    are: ``torch.save`` keeps shared storage shared), so that they are equal without comparing their values."""
    return (a.device == b.device and a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
            and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
            and a.storage_offset() == b.storage_offset())


def load_nnunet_weights(network: NnUNetNetwork, state: Mapping[str, Tensor], source: str, *,
                        assign: bool = False) -> dict[str, Tensor]:
    """Load an nnU-Net ``network_weights`` state dict (as ``dynamic_network_architectures`` saves it, aliases and
    all, or without a ``module.`` / ``_orig_mod.`` prefix from DDP or ``torch.compile``) into ``network``; returns the
    canonical state dict (the aliases left out) that was loaded.

    Every tensor must find its place and every parameter must be given; otherwise one ``ValueError`` names
    ``source`` and the first keys missing or unexpected. An alias that differs from the tensor it aliases is refused.
    ``assign`` makes the given tensors the network's parameters instead of copying them in (no copy; the network may
    then be built on the ``meta`` device, skipping its initialisation).
    """
    state = {key.removeprefix("module.").removeprefix("_orig_mod."): value for key, value in state.items()}
    canonical = {key: value for key, value in state.items() if not _is_alias(key)}
    aliases = {key: _aliased(key, network) for key in state if _is_alias(key)}
    expected = network.state_dict()
    for alias, target in aliases.items():
        if target in canonical and not (_same_view(canonical[target], state[alias])
                                        or torch.equal(canonical[target], state[alias])):
            raise ValueError(f"{source}: {alias} differs from {target}, which it should alias")
    unexpected = sorted(key for key in state if aliases.get(key, key) not in expected)
    missing = sorted(set(expected) - set(canonical))
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"lacks {len(missing)} tensors the plans' {network.class_name} needs "
                            f"(e.g. {', '.join(missing[:3])})")
        if unexpected:
            problems.append(f"holds {len(unexpected)} tensors it has no place for (e.g. {', '.join(unexpected[:3])})")
        raise ValueError(f"{source}: network_weights {' and '.join(problems)}; were the weights trained with these "
                         "plans?")
    shapes = [k for k in expected if tuple(canonical[k].shape) != tuple(expected[k].shape)]
    if shapes:
        key = shapes[0]
        raise ValueError(f"{source}: network_weights[{key!r}] has shape {tuple(canonical[key].shape)}, the plans' "
                         f"network needs {tuple(expected[key].shape)} ({len(shapes)} tensors differ)")
    if assign:
        canonical = {key: value.to(expected[key].dtype) if value.is_floating_point() else value
                     for key, value in canonical.items()}
    network.load_state_dict(canonical, strict=True, assign=assign)
    return canonical
