"""Which device a command runs on: ``--device`` as the user wrote it, or the GPU where there is one.

The training commands (``seg train``, ``seg finetune``, ``seg distill``) and U-Net prediction take ``--device``
(``cpu``, ``cuda`` or ``cuda:N``). A name that asks for a GPU PyTorch cannot see is refused here, before the model runs
or any output is written, with the reason (a CPU build of torch, or fewer GPUs than the index), instead of torch's
error from deep inside the first ``.to(device)``.
"""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device | None = None, local_rank: int = 0) -> torch.device:
    """``name`` as a :class:`torch.device`, checked; ``None``: GPU ``local_rank`` (its rank's under torchrun) where
    PyTorch sees one, else the CPU."""
    if name is None:
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {name!r} is not one PyTorch knows: give cpu, cuda or cuda:N") from error
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device {name!r}: gnnseg runs on cpu or cuda (cuda:N), not {device.type}")
    if not torch.cuda.is_available():
        build = f"this torch {torch.__version__} is a CPU build" if torch.version.cuda is None \
            else f"this torch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU"
        raise ValueError(f"device {name!r} asks for a GPU, but {build}; use --device cpu or leave --device out")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"device {name!r}: PyTorch sees {count} GPU{'s' if count != 1 else ''} "
                         f"(cuda:0 to cuda:{count - 1})")
    return device
