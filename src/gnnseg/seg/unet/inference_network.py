"""A U-Net's copy for prediction on the CPU: the same parameters and sums, through PyTorch's faster kernels.

:func:`for_cpu_prediction` returns a copy of a network, its parameters shared and none copied, in which three kinds of
layer are computed another way (all timings on 2 cores, measured once):

- **Instance norms** as group norms of one channel each (:class:`GroupwiseInstanceNorm`): the same statistics (per
  image and channel, over space) and affine map. On the CPU PyTorch's group norm takes half the time of its instance
  norm for nnU-Net's activations (a 32-channel 32 x 112 x 128 activation: 21 ms against 41 ms), with the same
  precision against float64 (about 1e-6 of the values).
- **3D convolutions** always by oneDNN (:class:`OneDnnConv3d`). PyTorch sends a float32 convolution on the CPU with
  one image to its own slower kernel when batch x channels x the first two spatial sizes is at most 20480, a rule that
  measures a 2D input whole but leaves a 3D input's last axis out: nnU-Net's 3D bottleneck (256 channels, 4 x 14 x 16)
  then takes 26 ms where oneDNN takes 13, and a one-channel CT patch's first convolution 55 ms against 45. Larger
  inputs already go to oneDNN, which then runs the same kernel as before.
- **Transposed convolutions whose kernel equals their stride** (nnU-Net's upsampling) as one matrix product whose
  rows are written into place per kernel offset (:class:`BlockTransposedConv`): every output voxel is the same sum of
  input channels as before. PyTorch's oneDNN path for them converts its result out of a blocked layout: with freed
  memory kept for reuse (as gnnseg's command line runs), 66 ms against 30 at the top of a 3D nnU-Net (64 to 32
  channels, 16 x 56 x 64 to 32 x 112 x 128), 37 against 21 at the top of a 2D one (64 to 32 channels, 256 x 256 to
  512 x 512).

Together, with freed memory kept, they take a forward of the CT benchmark's 3d_fullres nnU-Net (32 x 112 x 128) from
1.17-1.24 s to 1.14-1.16 s (two runs) and one of the tiny 3D model's from 53 ms to 33; 2D forwards stay within
timing noise. Only layers of exactly these classes are replaced (subclasses may compute their weights otherwise).

The copy's state dict has the network's keys, so folds load into it as into the network.

The convolutions keep PyTorch's default layout. Channels-last convolutions with weights packed once for oneDNN were
measured too (a forward in 0.76-0.82x the time, as ``torch.compile``'s freezing makes them), but oneDNN's
channels-last kernels round their sums less precisely (2-5x the error of one layer against float64): a random-weight
nnU-Net's logits moved by 1e-3, and through nnU-Net's float16 window sums its labels on the CT benchmark case agreed
with nnunetv2's to a Dice of 0.998 only, where nnunetv2 run with AVX2 instead of AVX-512 kernels agrees with itself to
0.99999 (measured once).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GroupwiseInstanceNorm(nn.Module):
    """Instance norm (without running statistics) computed as a group norm with one channel per group; holds the
    replaced norm's ``weight`` and ``bias`` (or None) and ``eps``."""

    def __init__(self, norm: nn.modules.instancenorm._InstanceNorm) -> None:
        super().__init__()
        if norm.track_running_stats:
            raise ValueError(f"{type(norm).__name__} with running statistics is not a per-image norm")
        self.weight = norm.weight
        self.bias = norm.bias
        self.eps = norm.eps
        self.batched_dims = norm._get_no_batch_dim() + 1

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == self.batched_dims - 1:     # one image without its batch axis, as instance norm accepts it
            return F.group_norm(x[None], x.shape[0], self.weight, self.bias, self.eps)[0]
        return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)


class OneDnnConv3d(nn.Module):
    """A zero-padded 3D convolution computed by oneDNN whatever its input's size (float32 on the CPU, where PyTorch
    would pick its own kernel for small inputs); other inputs go through :func:`torch.nn.functional.conv3d`. Holds
    the replaced convolution's ``weight`` and ``bias``."""

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        if not is_zero_padded_conv3d(conv):
            raise ValueError(f"{conv} is not zero-padded by a number of voxels per axis, or not a Conv3d itself")
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:     # one image without its batch axis, as Conv3d accepts it
            return self(x[None])[0]
        if (x.device.type != "cpu" or x.dtype != torch.float32 or not torch.backends.mkldnn.is_available()
                or not torch.backends.mkldnn.enabled):
            return F.conv3d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        bias = None if self.bias is None else self.bias.contiguous()
        return torch.ops.aten.mkldnn_convolution(x.contiguous(), self.weight.contiguous(), bias, self.padding,
                                                 self.stride, self.dilation, self.groups)

    def extra_repr(self) -> str:
        channels_out, channels_in, *kernel = self.weight.shape
        return (f"{channels_in * self.groups}, {channels_out}, kernel_size={tuple(kernel)}, stride={self.stride}, "
                f"padding={self.padding}")


class BlockTransposedConv(nn.Module):
    """A transposed convolution whose kernel equals its stride (no padding, dilation or groups): each input voxel
    becomes its own block of output voxels, ``weight[:, :, offset]`` applied to the input's channels at each offset
    of the block. Computed as one matrix product over all offsets, then each offset's voxels written into place with
    the bias. Where gradients are recorded, PyTorch's own layer runs (writes into place record none). Holds the
    replaced layer's ``weight`` and ``bias``."""

    def __init__(self, transposed: nn.ConvTranspose2d | nn.ConvTranspose3d) -> None:
        super().__init__()
        if not is_block_transposed_conv(transposed):
            raise ValueError(f"{transposed} does not map each input voxel to a block of its own")
        self.weight, self.bias = transposed.weight, transposed.bias

    def forward(self, x: Tensor) -> Tensor:
        kernel = tuple(self.weight.shape[2:])
        if x.dim() == len(kernel) + 1:     # one image without its batch axis
            return self(x[None])[0]
        channels_in, channels_out = self.weight.shape[:2]
        if x.dim() != len(kernel) + 2 or x.shape[1] != channels_in:
            raise ValueError(f"{type(self).__name__} takes (batch, {channels_in}, *{len(kernel)} spatial sizes), "
                             f"got {tuple(x.shape)}")
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, self.weight, self.bias)):
            transposed = F.conv_transpose3d if len(kernel) == 3 else F.conv_transpose2d
            return transposed(x, self.weight, self.bias, stride=kernel)
        batch, _, *spatial = x.shape
        weight = self.weight.reshape(channels_in, -1).t()
        out = x.new_empty(batch, channels_out, *(size * k for size, k in zip(spatial, kernel)))
        blocks = out.view(batch, channels_out, *itertools.chain.from_iterable(zip(spatial, kernel)))
        bias = 0.0 if self.bias is None else self.bias.view(channels_out, *[1] * len(spatial))
        for image in range(batch):
            per_offset = torch.mm(weight, x[image].reshape(channels_in, -1)).view(channels_out, *kernel, *spatial)
            for offset in itertools.product(*map(range, kernel)):
                into = blocks[(image, slice(None), *itertools.chain.from_iterable((slice(None), o) for o in offset))]
                torch.add(per_offset[(slice(None), *offset)], bias, out=into)
        return out

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}, kernel_size=stride={tuple(self.weight.shape[2:])}"


def is_zero_padded_conv3d(module: nn.Module) -> bool:
    """Whether ``module`` is a 3D convolution that :class:`OneDnnConv3d` computes."""
    return type(module) is nn.Conv3d and module.padding_mode == "zeros" and not isinstance(module.padding, str)


def is_block_transposed_conv(module: nn.Module) -> bool:
    """Whether ``module`` is a 2D or 3D transposed convolution that :class:`BlockTransposedConv` computes."""
    return (type(module) in (nn.ConvTranspose2d, nn.ConvTranspose3d) and module.padding_mode == "zeros"
            and tuple(module.stride) == tuple(module.kernel_size) and module.groups == 1
            and not any(module.padding) and not any(module.output_padding) and set(module.dilation) == {1})


def _prediction_replacement(module: nn.Module) -> nn.Module | None:
    """The replacement of one layer in the prediction copy, or None to keep it (and look inside it)."""
    if isinstance(module, (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)) \
            and not module.track_running_stats:
        return GroupwiseInstanceNorm(module)
    if is_zero_padded_conv3d(module):
        return OneDnnConv3d(module)
    if is_block_transposed_conv(module):
        return BlockTransposedConv(module)
    return None


def _replace(module: nn.Module, replacement: Callable[[nn.Module], nn.Module | None]) -> None:
    for name, child in module.named_children():
        new = replacement(child)
        if new is None:
            _replace(child, replacement)
        else:
            setattr(module, name, new)


def sharing_copy(network: nn.Module) -> nn.Module:
    """A copy of ``network``'s modules whose parameters and buffers are ``network``'s own tensors (none copied):
    assigning other weights to it (``load_state_dict(..., assign=True)``) leaves ``network`` as it was."""
    shared = {id(tensor): tensor for tensor in itertools.chain(network.parameters(), network.buffers())}
    return copy.deepcopy(network, memo=shared)


def for_cpu_prediction(network: nn.Module) -> nn.Module:
    """A :func:`sharing_copy` of ``network`` whose instance norms are :class:`GroupwiseInstanceNorm`, 3D convolutions
    :class:`OneDnnConv3d` and block-wise transposed convolutions :class:`BlockTransposedConv`; ``network`` itself is
    left as it was."""
    prediction_copy = sharing_copy(network)
    _replace(prediction_copy, _prediction_replacement)
    return prediction_copy


def prediction_network(network: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """The network prediction loads folds into: :func:`for_cpu_prediction`'s copy for float32 on a CPU, else
    ``network`` itself (bfloat16 autocast and GPUs run the network as it is)."""
    return for_cpu_prediction(network) if precision == "float32" and torch.device(device).type == "cpu" else network
