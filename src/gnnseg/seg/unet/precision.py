"""The numeric precision of a U-Net's forward passes: float32, or bfloat16 autocast.

Under bfloat16 autocast the convolutions take bfloat16 inputs and weights (8 bits of mantissa) while norms, the loss
and the window sums stay float32. On CPUs with bfloat16 instructions (AMX, AVX512-BF16) an nnU-Net forward then runs
about twice as fast; logits move by about 1 % of their range, so labels change only where two classes are nearly
tied. Training uses it as nnU-Net's mixed precision does on GPUs; prediction offers it as an opt-in speed-up.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn

from gnnseg.seg.unet.precision_names import PRECISION_NAMES

PRECISIONS = {name: getattr(torch, name) for name in PRECISION_NAMES}


def autocast(precision: str, device_type: str = "cpu") -> torch.autocast:
    """The forward pass's precision: float32 as is, or bfloat16 autocast."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return torch.autocast(device_type, dtype=PRECISIONS[precision], enabled=precision != "float32")


def has_fast_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 convolutions natively: a GPU that supports bfloat16 (Ampere or later), or
    a CPU with AMX / AVX512-BF16 as oneDNN reports it (a torch build without oneDNN: no)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class InPrecision(nn.Module):
    """``network`` run in ``precision``, returning float32 logits whatever it computed them in."""

    def __init__(self, network: nn.Module, precision: str) -> None:
        super().__init__()
        autocast(precision)   # checks the name
        self.network = network
        self.precision = precision

    def forward(self, image: Tensor) -> Tensor:
        with autocast(self.precision, image.device.type):
            return self.network(image).float()


def in_precision(network: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """``network`` itself for float32, else wrapped in :class:`InPrecision`; a CPU without bfloat16 instructions is
    warned about on stderr (it would run slower, not faster)."""
    autocast(precision)   # an unknown name is refused before anything is said or done
    if precision == "float32":
        return network
    if not has_fast_bfloat16(device):
        print(f"warning: this CPU has no bfloat16 instructions (AMX, AVX512-BF16): precision {precision} will be "
              "slower than float32", file=sys.stderr)
    return InPrecision(network, precision)
