"""U-Mamba: the parallel selective scan equals the recurrence, and the networks fit the U-Net pipeline."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from gnnseg.seg.unet.mamba import (
    Mamba,
    MambaLayer,
    selective_scan,
    selective_scan_sequential,
)
from gnnseg.seg.unet.network import UNet, mamba_stages_for
from gnnseg.seg.unet.train import TrainConfig, load_trained_network
from tests.seg.test_unet_pipeline import train_squares


def scan_inputs(batch, length, channels, states, seed, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    def tensor(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype)
    return [tensor(batch, length, channels).requires_grad_(),
            F.softplus(tensor(batch, length, channels)).detach().requires_grad_(),
            (-torch.rand(channels, states, generator=generator, dtype=dtype) * 6 - 0.05).requires_grad_(),
            tensor(batch, length, states).requires_grad_(), tensor(batch, length, states).requires_grad_(),
            tensor(channels).requires_grad_()]


@pytest.mark.parametrize("batch, length, channels, states, chunk", [
    (1, 1, 1, 1, 64), (2, 37, 5, 4, 8), (1, 130, 3, 16, 64), (3, 16, 2, 5, 16), (2, 9, 4, 3, 4),
])
def test_parallel_scan_equals_the_recurrence_with_gradients(batch, length, channels, states, chunk):
    inputs = scan_inputs(batch, length, channels, states, seed=length)
    reference = selective_scan_sequential(*inputs)
    parallel = selective_scan(*inputs, chunk=chunk)
    torch.testing.assert_close(parallel, reference, atol=1e-5, rtol=1e-5)
    upstream = torch.randn_like(reference)
    expected = torch.autograd.grad((reference * upstream).sum(), inputs)
    actual = torch.autograd.grad((parallel * upstream).sum(), inputs)
    for name, a, e in zip(("u", "delta", "A", "B", "C", "D"), actual, expected):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5, msg=f"gradient of {name}")


def test_scan_is_stable_under_strong_decay_in_float32():
    inputs = [t.detach().float() for t in scan_inputs(2, 300, 4, 8, seed=3)]
    inputs[1] = inputs[1] * 20  # decays of exp(-100) per step: the naive cumulative-sum form overflows
    parallel = selective_scan(*inputs, chunk=64)
    assert torch.isfinite(parallel).all()
    torch.testing.assert_close(parallel, selective_scan_sequential(*inputs), atol=1e-4, rtol=1e-4)


def test_mamba_block_shapes_and_the_sequential_path():
    torch.manual_seed(0)
    block = Mamba(12, d_state=4)
    x = torch.randn(2, 33, 12)
    assert block(x).shape == (2, 33, 12)
    torch.testing.assert_close(block(x), block(x, sequential=True), atol=1e-5, rtol=1e-5)
    assert {"in_proj.weight", "conv1d.weight", "x_proj.weight", "dt_proj.bias", "A_log", "D",
            "out_proj.weight"} <= set(block.state_dict())  # mamba_ssm's parameter names
    with pytest.raises(ValueError, match="positive"):
        Mamba(0)


@pytest.mark.parametrize("spatial", [(6, 10), (3, 4, 5)])
def test_mamba_layer_keeps_the_feature_map_shape(spatial):
    layer = MambaLayer(8)
    x = torch.randn(2, 8, *spatial)
    assert layer(x).shape == x.shape


@pytest.mark.parametrize("network", ["umamba_bot", "umamba_enc"])
@pytest.mark.parametrize("dims, strides, size", [
    (2, [[1, 1], [2, 2], [2, 2]], (16, 24)),
    (3, [[1, 1, 1], [1, 2, 2], [2, 2, 2]], (4, 8, 12)),  # anisotropic first pooling
])
def test_umamba_networks_give_unet_shapes(network, dims, strides, size):
    stages = mamba_stages_for(network, 3)
    model = UNet(1, 3, dims=dims, features_per_stage=[4, 8, 16], kernel_sizes=[[3] * dims] * 3, strides=strides,
                 deep_supervision=True, mamba_stages=stages)
    outputs = model(torch.randn(2, 1, *size))
    assert outputs[0].shape == (2, 3, *size) and len(outputs) == 2
    mamba_layers = [m for m in model.modules() if isinstance(m, MambaLayer)]
    assert len(mamba_layers) == len(stages) == (1 if network == "umamba_bot" else 3)


def test_network_choices_are_checked():
    assert mamba_stages_for("unet", 5) == () and mamba_stages_for("umamba_bot", 5) == (4,)
    with pytest.raises(ValueError, match="unknown network"):
        mamba_stages_for("transunet", 5)
    with pytest.raises(ValueError, match="network must be one of"):
        TrainConfig(network="vnet")
    with pytest.raises(ValueError, match="encoder stages 0..2"):
        UNet(1, 2, dims=2, features_per_stage=[4, 8, 16], kernel_sizes=[[3, 3]] * 3,
             strides=[[1, 1], [2, 2], [2, 2]], mamba_stages=[3])


@pytest.mark.slow
def test_umamba_bot_trains_through_the_pipeline_and_reloads(tmp_path, last_json):
    trained = train_squares(tmp_path, last_json, "--network", "umamba_bot")
    state = torch.load(f"{trained['run_dir']}/checkpoint_latest.pth", weights_only=True)
    assert state["network_kind"] == "umamba_bot"
    assert state["log"]["train_loss"][-1] < state["log"]["train_loss"][0]
    network, _, _ = load_trained_network(f"{trained['run_dir']}/checkpoint_latest.pth")
    assert network.mamba_stages == (len(network.features_per_stage) - 1,)
