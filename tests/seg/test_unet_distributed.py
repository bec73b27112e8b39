"""Data-parallel U-Net training: two CPU processes (gloo) end with identical weights and a falling loss."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp

import gnnseg.seg.unet.train as train_module
from gnnseg.core.distributed import leave_process_group
from gnnseg.seg.unet.case_preprocessing import preprocess_dataset
from gnnseg.seg.unet.fingerprint import extract_fingerprint
from gnnseg.seg.unet.planner import plan_experiment
from gnnseg.seg.unet.plans import Plans
from tests.core.ranks import become_rank, free_port
from tests.seg.test_unet_pipeline import squares_dataset


def worker(rank: int, world_size: int, port: int, root: str, plans: Plans) -> None:
    """What torchrun would start: one rank of the job. Saves this rank's final weights for the test."""
    become_rank(rank, world_size, port)
    built = []
    original = train_module.build_network
    train_module.build_network = lambda *a, **k: built.append(original(*a, **k)) or built[-1]
    config = train_module.TrainConfig(epochs=3, iterations_per_epoch=4, validation_iterations=1)
    train_module.train_fold(f"{root}/pre", plans, "2d", "all", f"{root}/run", config)
    torch.save(built[0].state_dict(), f"{root}/weights_{rank}.pt")
    leave_process_group()


def test_two_ranks_stay_identical_and_learn(tmp_path):
    dataset = squares_dataset(tmp_path / "raw", count=4)
    plans = plan_experiment(extract_fingerprint(dataset), base_features=8, device="cpu", memory_gb=1)
    preprocess_dataset(dataset, plans, "2d", tmp_path / "pre")
    mp.spawn(worker, args=(2, free_port(), str(tmp_path), plans), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"weights_{rank}.pt", weights_only=True) for rank in (0, 1))
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0, msg=name)
    state = torch.load(tmp_path / "run" / "checkpoint_latest.pth", weights_only=True)   # written by rank 0 only
    assert state["epoch"] == 3
    assert state["log"]["train_loss"][-1] < state["log"]["train_loss"][0]
    for name in first:
        torch.testing.assert_close(state["network"][name], first[name], rtol=0, atol=0)
