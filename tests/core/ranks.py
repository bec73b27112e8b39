"""What torchrun does for a test's ``mp.spawn`` worker: a free rendezvous port and the rank's environment."""

from __future__ import annotations

import os
import socket

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def become_rank(rank: int, world_size: int, port: int) -> None:
    """Set the variables torchrun would set for ``rank`` and keep the rank to one thread (ranks share the CPU)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
