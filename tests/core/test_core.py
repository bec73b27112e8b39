"""Seeding, run directories and checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gnnseg.core import CheckpointError, load_checkpoint, new_run, save_checkpoint, seed_everything


def test_seed_everything_repeats_random_streams():
    seed_everything(7)
    first = torch.rand(5)
    seed_everything(7)
    torch.testing.assert_close(torch.rand(5), first)
    with pytest.raises(ValueError, match="non-negative"):
        seed_everything(-1)


def test_new_run_never_reuses_a_directory(tmp_path):
    first, second = new_run("task", tmp_path), new_run("task", tmp_path)
    assert first.path != second.path
    assert first.path.parent == tmp_path / "task"
    first.save_config({"lr": 0.1})
    first.log_metrics(acc=torch.tensor(0.5))
    first.log_metrics(loss=float("nan"))
    metrics = json.loads((first.path / "metrics.json").read_text())
    assert metrics == {"acc": 0.5, "loss": None}
    config = json.loads((first.path / "config.json").read_text())
    assert config["lr"] == 0.1 and config["machine"]["torch"] == torch.__version__
    with pytest.raises(ValueError, match="plain folder name"):
        new_run("../escape", tmp_path)


def test_checkpoint_round_trip_and_errors(tmp_path):
    payload = {"state_dict": {"w": torch.arange(6.0).view(2, 3)}, "epoch": 3, "name": "x"}
    path = save_checkpoint(payload, tmp_path / "sub" / "model.pt")
    loaded = load_checkpoint(path, required_keys=("state_dict", "epoch"))
    torch.testing.assert_close(loaded["state_dict"]["w"], payload["state_dict"]["w"])
    assert loaded["epoch"] == 3
    assert not list((tmp_path / "sub").glob(".*tmp*")), "temporary file left behind"

    with pytest.raises(CheckpointError, match="lacks keys \\['optimizer'\\]"):
        load_checkpoint(path, required_keys=("optimizer",))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        load_checkpoint(tmp_path)
    for text in (b"not a checkpoint", b"hello world\n", b"e"):   # torch says 101, 'pop from empty list', ...
        corrupt = tmp_path / "corrupt.pt"
        corrupt.write_bytes(text)
        with pytest.raises(CheckpointError, match="corrupt.pt: not a PyTorch checkpoint") as caught:
            load_checkpoint(corrupt)
        assert "\n" not in str(caught.value)


class Custom:
    """A class a stranger's checkpoint could smuggle in."""


def test_checkpoint_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"obj": Custom()}, path)
    with pytest.raises(CheckpointError, match="holds Python objects besides tensors") as caught:
        load_checkpoint(path)
    assert "weights_only=False" not in str(caught.value) and "\n" not in str(caught.value)  # never that advice


def test_machine_info_names_the_cpu_model(monkeypatch):
    from gnnseg.core import cpu_info, machine_info

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.partition(":")[2].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        if names:
            assert machine_info()["processor"] == names[0]       # not just "x86_64"

    class Unreadable:
        def __init__(self, path):
            self.path = path

        def read_text(self):
            raise OSError(f"{self.path}: unreadable")

    cpu_info.cpu_model_and_flags.cache_clear()
    monkeypatch.setattr(cpu_info, "Path", Unreadable)
    try:
        model, flags = cpu_info.cpu_model_and_flags()
        assert model and flags == ""                             # the platform's word for it, never an error
    finally:
        cpu_info.cpu_model_and_flags.cache_clear()
