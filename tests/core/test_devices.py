"""``--device`` as written: checked before any work, with the reason a GPU cannot be used."""

from __future__ import annotations

import pytest
import torch

from gnnseg.core.devices import resolve_device

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU PyTorch can use")


def test_the_cpu_is_always_there_and_none_means_the_gpu_where_there_is_one():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected


@no_gpu
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_asking_for_a_gpu_torch_cannot_see_says_why(name):
    with pytest.raises(ValueError, match="asks for a GPU, but this torch") as error:
        resolve_device(name)
    assert "--device cpu" in str(error.value)


@pytest.mark.parametrize("name, message", [("banana", "not one PyTorch knows"), ("cuda:x", "not one PyTorch knows"),
                                           ("meta", "runs on cpu or cuda")])
def test_names_that_are_not_devices_are_refused(name, message):
    with pytest.raises(ValueError, match=message):
        resolve_device(name)
