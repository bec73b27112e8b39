"""Leaving the process group: no rank leaves before every rank has arrived, and alone it is a no-op."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gnnseg.core.distributed import distributed_context, leave_process_group
from tests.core.ranks import become_rank, free_port

LATE_BY = 1.0                       # seconds rank 1 works on after rank 0 has finished


def worker(rank: int, world_size: int, port: int, root: str) -> None:
    become_rank(rank, world_size, port)
    distributed_context(backend="gloo")
    if rank == 1:
        time.sleep(LATE_BY)
    start = time.perf_counter()
    leave_process_group()
    torch.save({"waited": time.perf_counter() - start, "still_joined": dist.is_initialized()}, f"{root}/rank{rank}.pt")


def test_ranks_wait_for_each_other_before_leaving(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    early, late = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1))
    assert early["waited"] >= 0.8 * LATE_BY > late["waited"]
    assert not early["still_joined"] and not late["still_joined"]


def test_leaving_without_a_group_does_nothing():
    assert not dist.is_initialized()
    leave_process_group()
    assert not dist.is_initialized()
