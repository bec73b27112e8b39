"""Data-parallel fine-tuning: two CPU processes (gloo) that start from different weights end identical."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp

from gnnseg.core.distributed import leave_process_group
from gnnseg.seg.sam.modeling.sam import build_sam
from gnnseg.seg.sam.training.finetune import FinetuneConfig, finetune
from tests.core.ranks import become_rank, free_port
from tests.seg.test_sam_finetune import MODEL, disk_samples


def worker(rank: int, world_size: int, port: int, root: str) -> None:
    """One rank, as torchrun would start it; each rank draws different initial weights on purpose."""
    become_rank(rank, world_size, port)
    torch.manual_seed(100 + rank)
    model = build_sam(MODEL)
    config = FinetuneConfig(rounds=2, iterations_per_round=3, batch_size=2, warmup_iterations=1)
    finetune(model, disk_samples(8, seed=rank), disk_samples(2, seed=9), config, f"{root}/run", show_progress=False)
    torch.save(model.state_dict(), f"{root}/weights_{rank}.pt")
    leave_process_group()


def test_two_ranks_start_from_rank_zero_and_stay_identical(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"weights_{rank}.pt", weights_only=True) for rank in (0, 1))
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0, msg=name)
    state = torch.load(tmp_path / "run" / "checkpoint_latest.pt", weights_only=True)  # rank 0 writes it
    assert state["round"] == 2 and len(state["log"]["train_loss"]) == 2
