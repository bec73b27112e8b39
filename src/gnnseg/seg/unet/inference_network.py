"""A U-Net's copy for prediction on the CPU: its instance norms computed as group norms of one channel each.

Instance norm is group norm with one channel per group: the same statistics (per image and channel, over space), the
same affine map. PyTorch computes the two with different kernels, and on the CPU its group norm takes half the time
of its instance norm for nnU-Net's activations (a 32-channel 32 x 112 x 128 activation: 21 ms against 41 ms), with
the same precision against float64 (about 1e-6 of the values; measured once). :func:`for_cpu_prediction` returns a
copy of a network, its parameters shared and none copied, in which every instance norm without running statistics
is a :class:`GroupwiseInstanceNorm`; its state dict has the network's keys, so folds load into it as into the network.

The convolutions stay as they are, in PyTorch's default layout. Channels-last convolutions with weights packed once
for oneDNN were measured too (a forward in 0.76-0.82x the time, as ``torch.compile``'s freezing makes them), but
oneDNN's channels-last kernels round their sums less precisely (2-5x the error of one layer against float64): a
random-weight nnU-Net's logits moved by 1e-3, and through nnU-Net's float16 window sums its labels on the CT benchmark
case agreed with nnunetv2's to a Dice of 0.998 only, where nnunetv2 run with AVX2 instead of AVX-512 kernels agrees
with itself to 0.99999 (measured once). Group norm keeps the logits as close to nnunetv2's as that.
"""

from __future__ import annotations

import copy
import itertools

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


def _replace_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)) \
                and not child.track_running_stats:
            setattr(module, name, GroupwiseInstanceNorm(child))
        else:
            _replace_norms(child)


def sharing_copy(network: nn.Module) -> nn.Module:
    """A copy of ``network``'s modules whose parameters and buffers are ``network``'s own tensors (none copied):
    assigning other weights to it (``load_state_dict(..., assign=True)``) leaves ``network`` as it was."""
    shared = {id(tensor): tensor for tensor in itertools.chain(network.parameters(), network.buffers())}
    return copy.deepcopy(network, memo=shared)


def for_cpu_prediction(network: nn.Module) -> nn.Module:
    """A :func:`sharing_copy` of ``network`` whose instance norms are :class:`GroupwiseInstanceNorm`; ``network``
    itself is left as it was."""
    prediction_copy = sharing_copy(network)
    _replace_norms(prediction_copy)
    return prediction_copy


def prediction_network(network: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """The network prediction loads folds into: :func:`for_cpu_prediction`'s copy for float32 on a CPU, else
    ``network`` itself (bfloat16 autocast and GPUs run the network as it is)."""
    return for_cpu_prediction(network) if precision == "float32" and torch.device(device).type == "cpu" else network
