"""Data-parallel mini-batch training: two CPU processes (gloo), each sampling its own shard of the seeds, end
with identical parameters and a falling loss, in one run folder that rank 0 alone writes, also when resumed."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp

from gnnseg.core.distributed import distributed_context, leave_process_group
from gnnseg.core.runs import close_runs
from gnnseg.gnn.datasets.synthetic import (
    SyntheticConfig,
    make_synthetic,
    write_synthetic,
)
from gnnseg.gnn.tasks.minibatch import MiniBatchConfig, train_minibatch
from gnnseg.gnn.tasks.minibatch_runs import run_minibatch_classification
from tests.core.ranks import become_rank, free_port

CONFIG = MiniBatchConfig(fanouts=(5, 3), batch_size=32, hidden=16, epochs=3, lr=0.01)


def worker(rank: int, world_size: int, port: int, root: str) -> None:
    """What torchrun would start: one rank of the job. Saves this rank's final weights for the test."""
    become_rank(rank, world_size, port)
    graph, _ = make_synthetic(SyntheticConfig(num_nodes=500, avg_degree=8, num_classes=4, num_features=8,
                                              feature_noise=2.0, homophily=0.7, label_noise=0.0, train_fraction=0.4,
                                              val_fraction=0.0, seed=2))
    graph.val_mask = None                        # no validation: the reported model is the last one
    context = distributed_context()
    result = train_minibatch(graph, CONFIG, seed=0, checkpoint=f"{root}/checkpoint.pt", show_progress=False,
                             context=context)
    # the user's path (gnnseg gnn train under torchrun): rank 0 makes the run folder, every rank learns its name
    small = {"fanouts": (3, 2), "batch_size": 64, "hidden": 8, "epochs": 1}
    summary = run_minibatch_classification("sage", "neighbor", f"synth:{root}/graph", None, runs_root=f"{root}/runs",
                                           overrides=small, show_progress=False)
    resumed = run_minibatch_classification("sage", "neighbor", f"synth:{root}/graph", None, overrides=small,
                                           resume_run=summary["run_dir"], show_progress=False)
    closed = [str(folder) for folder in close_runs("complete")]      # what the command line does at the end
    torch.save({"state": result.state_dict, "loss": result.history["loss"], "batches": result.batches,
                "test_acc": result.test_acc, "run_dir": summary["run_dir"], "run_test_acc": summary["test_acc_mean"],
                "resumed_run_dir": resumed["run_dir"], "closed": closed}, f"{root}/rank{rank}.pt")
    leave_process_group()


def test_two_ranks_stay_identical_and_learn(tmp_path):
    write_synthetic(SyntheticConfig(num_nodes=300, avg_degree=6, num_classes=3, num_features=4, seed=0),
                    tmp_path / "graph")
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1))
    for name, tensor in first["state"].items():
        torch.testing.assert_close(second["state"][name], tensor, rtol=0, atol=0, msg=name)
    # 200 training nodes: 100 per rank, in batches of 32 -> 4 batches per epoch and rank, 3 epochs
    assert first["batches"] == second["batches"] == 12
    assert first["loss"][-1] < first["loss"][0] and second["loss"][-1] < second["loss"][0]
    assert first["loss"] != second["loss"]                      # the ranks trained on different seeds
    assert first["test_acc"] == second["test_acc"] > 0.5        # rank 0's evaluation reaches every rank
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)          # written by rank 0 only
    assert saved["state"]["epoch"] == 3 and saved["world_size"] == 2
    for name, tensor in first["state"].items():
        torch.testing.assert_close(saved["model"][name], tensor, rtol=0, atol=0)
    (run_dir,) = (tmp_path / "runs" / "gnn-train").iterdir()
    assert first["run_dir"] == second["run_dir"] == str(run_dir)
    assert first["run_test_acc"] == second["run_test_acc"]
    # resumed, the run is still rank 0's alone: a rank closing it after rank 0 would write back stale metrics
    assert first["resumed_run_dir"] == second["resumed_run_dir"] == str(run_dir)
    assert first["closed"] == [str(run_dir)] * 2 and second["closed"] == []
    assert {"model.pt", "checkpoint_seed0.pt", "metrics.json"} <= {p.name for p in run_dir.iterdir()}
