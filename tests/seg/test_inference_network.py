"""The prediction copy of a U-Net computes the network's logits as precisely as the network (gnnseg's U-Nets,
nnU-Net's plain and residual networks, 2D and 3D), shares its parameters, takes folds by assignment and trains; its
3D convolutions run by oneDNN at every size and its block-wise transposed convolutions give PyTorch's outputs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.profiler import profile

from gnnseg.seg.unet.inference_network import (
    BlockTransposedConv,
    GroupwiseInstanceNorm,
    OneDnnConv3d,
    for_cpu_prediction,
    is_block_transposed_conv,
    prediction_network,
)
from gnnseg.seg.unet.network import UNet
from gnnseg.seg.unet.nnunet_networks import build_network
from tests.seg.test_nnunet_models import plans_2d, plans_3d, with_network_class

INSTANCE_NORMS = (nn.InstanceNorm2d, nn.InstanceNorm3d)


def randomised(network: nn.Module, seed: int) -> nn.Module:
    """The network with random weights everywhere, norms' affine maps included (not their identity defaults), and
    biases that give activations means far from zero (where a careless variance loses precision)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
            if name.endswith("bias"):
                parameter.add_(3.0)
    return network.eval()


def nnunet_network(network_class: str, dims: int) -> nn.Module:
    plans, dataset = plans_2d() if dims == 2 else plans_3d()
    architecture = with_network_class(next(iter(plans["configurations"].values()))["architecture"], network_class)
    return build_network(architecture, len(dataset["channel_names"]), len(dataset["labels"]))


def gnnseg_unet(dims: int, norm: str) -> nn.Module:
    return UNet(2, 3, dims=dims, features_per_stage=[8, 16, 24], kernel_sizes=[[3] * dims] * 3,
                strides=[[1] * dims, [2] * dims, [2] * dims], norm=norm)


NETWORKS = {
    "nnunet plain 2d": (lambda: nnunet_network("PlainConvUNet", 2), (1, 1, 40, 48)),
    "nnunet residual 2d": (lambda: nnunet_network("ResidualEncoderUNet", 2), (1, 1, 40, 48)),
    "nnunet plain 3d": (lambda: nnunet_network("PlainConvUNet", 3), (1, 2, 16, 24, 20)),
    "gnnseg instance 3d": (lambda: gnnseg_unet(3, "instance"), (2, 2, 12, 16, 16)),
    "gnnseg batch 2d": (lambda: gnnseg_unet(2, "batch"), (1, 2, 32, 24)),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_the_copy_computes_the_networks_logits_as_precisely_with_its_parameters(name):
    build, shape = NETWORKS[name]
    network = randomised(build(), seed=len(name))
    instance_norms = sum(isinstance(module, INSTANCE_NORMS) for module in network.modules())
    prediction_copy = for_cpu_prediction(network)
    image = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, got = network(image), prediction_copy(image)
        exact = copy.deepcopy(network).double()(image.double())
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= 1e-4 * float(expected.abs().max())
    # summed in another order, but no less precisely
    assert float((got.double() - exact).abs().max()) <= 2 * float((expected.double() - exact).abs().max()) + 1e-6
    assert not any(isinstance(module, INSTANCE_NORMS) for module in prediction_copy.modules())
    assert sum(isinstance(module, GroupwiseInstanceNorm) for module in prediction_copy.modules()) == instance_norms
    convs_3d = sum(isinstance(module, nn.Conv3d) for module in network.modules())
    assert sum(isinstance(module, OneDnnConv3d) for module in prediction_copy.modules()) == convs_3d
    block_transposed = sum(map(is_block_transposed_conv, network.modules()))
    assert block_transposed > 0
    assert sum(isinstance(module, BlockTransposedConv) for module in prediction_copy.modules()) == block_transposed
    assert not any(isinstance(module, (nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d))
                   for module in prediction_copy.modules())
    ours, theirs = prediction_copy.state_dict(), network.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[key].data_ptr() == theirs[key].data_ptr() for key in ours)        # shared, not copied
    assert sum(isinstance(module, INSTANCE_NORMS) for module in network.modules()) == instance_norms   # untouched


def test_folds_loaded_by_assignment_are_the_ones_computed():
    network = randomised(nnunet_network("PlainConvUNet", 2), seed=0)
    folds = [randomised(copy.deepcopy(network), seed=seed).state_dict() for seed in (1, 2)]
    prediction_copy = for_cpu_prediction(network)
    image = torch.randn(1, 1, 40, 48)
    with torch.inference_mode():
        outputs = []
        for weights in folds:
            network.load_state_dict(weights, assign=True)
            prediction_copy.load_state_dict(weights, assign=True)
            outputs.append(prediction_copy(image))
            assert torch.allclose(outputs[-1], network(image), atol=1e-4 * float(outputs[-1].abs().max()))
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-2)


@pytest.mark.parametrize("dims", [2, 3])
def test_with_gradients_the_copy_trains_the_shared_parameters(dims):
    network = randomised(gnnseg_unet(dims, "instance"), seed=5).train()
    prediction_copy = for_cpu_prediction(network).train()
    image = torch.randn(2, 2, 32, 24) if dims == 2 else torch.randn(1, 2, 8, 16, 12)
    loss = prediction_copy(image).square().mean()
    loss.backward()
    assert torch.allclose(loss, network(image).square().mean(), rtol=1e-5)
    assert all(parameter.grad is not None for parameter in network.parameters())


def test_prediction_uses_the_copy_only_in_float32_on_the_cpu():
    network = randomised(gnnseg_unet(2, "instance"), seed=6)
    assert prediction_network(network, "bfloat16", torch.device("cpu")) is network
    assert prediction_network(network, "float32", torch.device("meta")) is network
    assert prediction_network(network, "float32", torch.device("cpu")) is not network


@pytest.mark.parametrize("norm", [nn.InstanceNorm2d(3, affine=True), nn.InstanceNorm3d(3)])
def test_an_image_without_batch_axis_is_normalised_as_instance_norm_does(norm):
    spatial = (6, 6) if isinstance(norm, nn.InstanceNorm2d) else (6, 6, 6)
    image = torch.randn(3, *spatial) * 4 + 2
    assert image.dim() == norm._get_no_batch_dim()
    assert torch.allclose(GroupwiseInstanceNorm(norm)(image), norm(image), atol=1e-5)


def test_norms_with_running_statistics_stay_as_they_are():
    network = nn.Sequential(nn.Conv2d(1, 4, 3), nn.InstanceNorm2d(4, affine=True, track_running_stats=True))
    assert isinstance(for_cpu_prediction(network)[1], nn.InstanceNorm2d)
    with pytest.raises(ValueError, match="InstanceNorm2d with running statistics is not a per-image norm"):
        GroupwiseInstanceNorm(network[1])


def _kernels(run) -> set[str]:
    with torch.inference_mode(), profile() as recorded:
        run()
    return {event.key for event in recorded.key_averages()}


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
def test_a_small_3d_input_is_convolved_by_onednn_with_pytorchs_values():
    conv = nn.Conv3d(256, 64, 3, padding=1)
    image = torch.randn(1, 256, 4, 14, 16)          # 1 x 256 x 4 x 14 <= 20480: PyTorch picks its own kernel
    # PyTorch's rule as of this torch; should it change, this line says so before the replacement is needed no more
    assert "aten::slow_conv3d_forward" in _kernels(lambda: conv(image))
    ours = OneDnnConv3d(conv)
    assert "aten::mkldnn_convolution" in _kernels(lambda: ours(image))
    with torch.inference_mode():
        expected = conv(image)
        assert float((ours(image) - expected).abs().max()) <= 1e-5 * float(expected.abs().max())
        assert torch.allclose(ours(image[0]), expected[0], atol=1e-4)                  # without batch axis
    in_double = copy.deepcopy(conv).double()
    assert torch.allclose(OneDnnConv3d(in_double)(image.double()), in_double(image.double()))   # not float32


def test_a_convolution_padded_otherwise_stays_as_it_is():
    network = nn.Sequential(nn.Conv3d(1, 2, 3, padding="same"), nn.Conv3d(2, 2, 3, padding=1, padding_mode="reflect"))
    assert all(isinstance(module, nn.Conv3d) for module in for_cpu_prediction(network))
    with pytest.raises(ValueError, match="not zero-padded"):
        OneDnnConv3d(network[0])


@pytest.mark.parametrize(("dims", "kernel", "bias", "batch"), [(2, (2, 2), True, 2), (3, (2, 2, 2), True, 1),
                                                              (3, (1, 2, 2), False, 3), (2, (2, 2), True, None)])
def test_a_block_transposed_conv_gives_pytorchs_outputs(dims, kernel, bias, batch):
    layer = (nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d)(6, 4, kernel, kernel, bias=bias)
    shape = (6, *(5, 7, 3)[:dims])
    image = torch.randn(shape) if batch is None else torch.randn(batch, *shape)     # None: no batch axis
    with torch.inference_mode():
        expected, got = layer(image), BlockTransposedConv(layer)(image)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6)


def test_a_block_transposed_conv_names_a_wrong_input_and_trains_a_bias_alone():
    layer = nn.ConvTranspose3d(6, 4, 2, 2)
    ours = BlockTransposedConv(layer)
    with pytest.raises(ValueError, match=r"takes \(batch, 6, \*3 spatial sizes\), got \(1, 5, 2, 2, 2\)"):
        ours(torch.randn(1, 5, 2, 2, 2))
    layer.weight.requires_grad_(False)
    image = torch.randn(1, 6, 2, 3, 2)
    ours(image).sum().backward()
    assert layer.bias.grad is not None and torch.allclose(layer.bias.grad, torch.full((4,), 4.0 * 6 * 4))


def test_only_layers_of_exactly_these_classes_are_replaced():
    class Standardised(nn.Conv3d):       # computes its weight in forward: a snapshot of it would be wrong
        pass

    network = nn.Sequential(Standardised(1, 2, 3, padding=1), nn.Conv3d(2, 2, 3, padding=1))
    replaced = for_cpu_prediction(network)
    assert type(replaced[0]) is Standardised and isinstance(replaced[1], OneDnnConv3d)
    assert "kernel_size=(3, 3, 3)" in repr(replaced[1])


def test_only_transposed_convs_that_give_each_voxel_its_own_block_are_replaced():
    overlapping = nn.ConvTranspose2d(4, 2, 3, stride=2)
    padded = nn.ConvTranspose3d(4, 2, 2, stride=2, padding=1)
    assert not is_block_transposed_conv(overlapping) and not is_block_transposed_conv(padded)
    assert is_block_transposed_conv(nn.ConvTranspose3d(4, 2, (1, 2, 2), stride=(1, 2, 2)))
    with pytest.raises(ValueError, match="does not map each input voxel to a block of its own"):
        BlockTransposedConv(overlapping)
    network = for_cpu_prediction(nn.Sequential(overlapping, padded))
    assert isinstance(network[0], nn.ConvTranspose2d) and isinstance(network[1], nn.ConvTranspose3d)
