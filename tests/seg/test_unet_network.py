"""The U-Net: shapes in 2D/3D with (an)isotropic strides, deep supervision, the Ronneberger preset's size,
nnU-Net's He initialisation, skip connections and gradient flow, a tiny overfit, and every argument error."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gnnseg.seg.unet import UNet, features_per_stage, init_weights_he, ronneberger_unet

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny networks: tests/conftest.py


def small_2d(**overrides) -> UNet:
    options = dict(dims=2, features_per_stage=[4, 8, 16], kernel_sizes=[[3, 3]] * 3,
                   strides=[[1, 1], [2, 2], [2, 2]])
    options.update(overrides)
    return UNet(1, 3, **options)


def anisotropic_3d(**overrides) -> UNet:
    options = dict(dims=3, features_per_stage=[4, 8, 16], kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
                   strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]])
    options.update(overrides)
    return UNet(1, 2, **options)


def stage_output_shapes(model: UNet, x: torch.Tensor) -> list[tuple[int, ...]]:
    shapes = []
    hooks = [stage.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
             for stage in model.encoder]
    model(x)
    for hook in hooks:
        hook.remove()
    return shapes


# ---------------------------------------------------------------- shapes

def test_2d_isotropic_output_and_stage_shapes():
    torch.manual_seed(0)
    model = small_2d()
    x = torch.randn(2, 1, 16, 24)
    out = model(x)
    assert out.shape == (2, 3, 16, 24)
    assert stage_output_shapes(model, x) == [(2, 4, 16, 24), (2, 8, 8, 12), (2, 16, 4, 6)]
    assert model.required_divisor == (4, 4)


def test_2d_anisotropic_strides():
    torch.manual_seed(0)
    model = small_2d(strides=[[1, 1], [1, 2], [2, 2]])
    x = torch.randn(1, 1, 8, 16)
    assert model(x).shape == (1, 3, 8, 16)
    assert stage_output_shapes(model, x) == [(1, 4, 8, 16), (1, 8, 8, 8), (1, 16, 4, 4)]
    assert model.required_divisor == (2, 4)
    # the transposed conv's kernel equals the stride of the level it upsamples, per axis
    assert [tuple(up.kernel_size) for up in model.upsamplers] == [(2, 2), (1, 2)]
    assert [tuple(up.stride) for up in model.upsamplers] == [(2, 2), (1, 2)]


def test_3d_anisotropic_output_and_stage_shapes():
    torch.manual_seed(0)
    model = anisotropic_3d()
    x = torch.randn(1, 1, 8, 32, 32)
    out = model(x)
    assert out.shape == (1, 2, 8, 32, 32)
    assert torch.isfinite(out).all()
    assert stage_output_shapes(model, x) == [(1, 4, 8, 32, 32), (1, 8, 8, 16, 16), (1, 16, 4, 8, 8)]
    assert model.required_divisor == (2, 4, 4)
    assert [tuple(up.kernel_size) for up in model.upsamplers] == [(2, 2, 2), (1, 2, 2)]
    # stage 0's (1, 3, 3) kernel is padded so that the depth axis keeps its size
    assert model.encoder[0][0].conv.kernel_size == (1, 3, 3) and model.encoder[0][0].conv.padding == (0, 1, 1)


def test_3d_isotropic_output_shape():
    torch.manual_seed(0)
    model = anisotropic_3d(kernel_sizes=[[3, 3, 3]] * 3, strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]])
    assert model(torch.randn(2, 1, 8, 8, 12)).shape == (2, 2, 8, 8, 12)


def test_block_is_conv_norm_leaky_relu_with_stride_on_first_conv():
    model = small_2d(convs_per_stage=3)
    stage = model.encoder[1]
    assert len(stage) == 3
    assert [block.conv.stride for block in stage] == [(2, 2), (1, 1), (1, 1)]
    block = stage[0]
    assert isinstance(block.norm, nn.InstanceNorm2d) and block.norm.affine and block.norm.eps == 1e-5
    assert isinstance(block.activation, nn.LeakyReLU) and block.activation.negative_slope == 0.01
    assert block.conv.bias is None  # redundant before a norm
    assert small_2d(norm=None).encoder[1][0].conv.bias is not None
    assert isinstance(small_2d(norm="batch").encoder[1][0].norm, nn.BatchNorm2d)
    assert isinstance(anisotropic_3d().encoder[1][0].norm, nn.InstanceNorm3d)
    # decoder convs take [upsampled, skip]: twice the skip's channels
    assert [level[0].conv.in_channels for level in model.decoder] == [16, 8]
    assert [level[0].conv.out_channels for level in model.decoder] == [8, 4]


# ---------------------------------------------------------------- deep supervision

def test_deep_supervision_outputs_full_resolution_first():
    torch.manual_seed(0)
    model = UNet(1, 3, dims=3, features_per_stage=[4, 8, 16, 16], kernel_sizes=[[3, 3, 3]] * 4,
                 strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], deep_supervision=True)
    outputs = model(torch.randn(2, 1, 8, 32, 32))
    assert isinstance(outputs, list) and len(outputs) == 3  # one per decoder level, none for the bottleneck
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 8, 32, 32), (2, 3, 8, 16, 16), (2, 3, 4, 8, 8)]
    assert len(model.heads) == 3


def test_deep_supervision_off_returns_the_full_resolution_head():
    torch.manual_seed(0)
    model = small_2d(deep_supervision=True).eval()
    x = torch.randn(2, 1, 16, 16)
    outputs = model(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 16, 16), (2, 3, 8, 8)]
    model.deep_supervision = False
    single = model(x)
    assert isinstance(single, torch.Tensor)
    torch.testing.assert_close(single, outputs[0])


def test_deep_supervision_cannot_be_switched_on_without_heads():
    model = small_2d()
    assert len(model.heads) == 1  # no unused parameters
    with pytest.raises(ValueError, match="built without deep supervision"):
        model.deep_supervision = True


# ---------------------------------------------------------------- presets and helpers

def test_ronneberger_preset_channels_and_parameter_count():
    model = ronneberger_unet()
    assert model.dims == 2 and model.in_channels == 1 and model.num_classes == 2
    assert [stage[-1].conv.out_channels for stage in model.encoder] == [64, 128, 256, 512, 1024]
    assert [stage[0].conv.in_channels for stage in model.encoder] == [1, 64, 128, 256, 512]
    assert all(block.conv.kernel_size == (3, 3) for stage in model.encoder for block in stage)
    assert [stage[0].conv.stride for stage in model.encoder] == [(1, 1)] + [(2, 2)] * 4
    assert [(up.in_channels, up.out_channels, up.kernel_size) for up in model.upsamplers] == [
        (1024, 512, (2, 2)), (512, 256, (2, 2)), (256, 128, (2, 2)), (128, 64, (2, 2))]
    assert [level[-1].conv.out_channels for level in model.decoder] == [512, 256, 128, 64]
    assert model.heads[-1].kernel_size == (1, 1) and model.heads[-1].out_channels == 2

    # The paper's count, by hand: 3x3 convs with biases, 2x2 up-convs with biases, a 1x1 head.
    widths = [64, 128, 256, 512, 1024]
    conv = lambda cin, cout, k=3: k * k * cin * cout + cout  # noqa: E731
    encoder = sum(conv(cin, w) + conv(w, w) for cin, w in zip([1] + widths[:-1], widths))
    decoder = sum(conv(2 * w, w, 2) + conv(2 * w, w) + conv(w, w) for w in widths[:-1])  # up-conv, 2 convs
    expected = encoder + decoder + conv(64, 2, 1)
    assert expected == 31_030_658
    assert sum(p.numel() for p in model.parameters()) == 31_030_658
    # nnU-Net flavour: instance norm (affine) replaces the conv biases, 5,888 more parameters
    assert sum(p.numel() for p in ronneberger_unet(norm="instance").parameters()) == 31_036_546

    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 48)).shape == (1, 2, 32, 48)
    assert model.required_divisor == (16, 16)


def test_features_per_stage_doubles_and_caps_like_nnunet():
    assert features_per_stage(6) == [32, 64, 128, 256, 320, 320]
    assert features_per_stage(7, dims=2) == [32, 64, 128, 256, 512, 512, 512]
    assert features_per_stage(4, base=8, cap=20) == [8, 16, 20, 20]
    with pytest.raises(ValueError, match="num_stages must be a positive integer, got 0"):
        features_per_stage(0)
    with pytest.raises(ValueError, match="base must be a positive integer, got -1"):
        features_per_stage(3, base=-1)
    with pytest.raises(ValueError, match="dims must be 2 or 3, got 4"):
        features_per_stage(3, dims=4)


def test_he_initialisation_matches_nnunet():
    model = ronneberger_unet()
    gain = math.sqrt(2.0 / (1 + 0.01**2))
    weight = model.encoder[4][1].conv.weight  # 1024 x 1024 x 3 x 3: ~9.4 M samples
    fan_in = 1024 * 9
    assert weight.mean().abs().item() < 1e-4
    assert weight.std().item() == pytest.approx(gain / math.sqrt(fan_in), rel=0.01)
    up = model.upsamplers[0].weight  # ConvTranspose weight (in, out, k, k): fan_in = out * k * k
    assert up.std().item() == pytest.approx(gain / math.sqrt(512 * 4), rel=0.01)
    biases = [m.bias for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(biases) == 18 + 4 + 1  # 18 convs, 4 up-convs, the head
    assert all(torch.count_nonzero(b) == 0 for b in biases)

    conv = nn.Conv3d(2, 3, 3)
    init_weights_he(conv)
    assert torch.count_nonzero(conv.bias) == 0
    norm = nn.InstanceNorm2d(4, affine=True)
    init_weights_he(norm)  # leaves norm layers alone
    assert torch.equal(norm.weight, torch.ones(4))


# ---------------------------------------------------------------- skip connections and gradients

def test_every_skip_connection_changes_the_output():
    torch.manual_seed(0)
    model = UNet(1, 2, dims=2, features_per_stage=[4, 8, 16, 16], kernel_sizes=[[3, 3]] * 4,
                 strides=[[1, 1], [2, 2], [2, 2], [2, 2]]).eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        reference = model(x)
        for level, convs in enumerate(model.decoder):
            skip_channels = model.upsamplers[level].out_channels

            def zero_skip(_module, inputs, skip_channels=skip_channels):
                (joined,) = inputs
                joined = joined.clone()
                joined[:, skip_channels:] = 0  # [upsampled, skip]: the skip is the second half
                return (joined,)

            hook = convs.register_forward_pre_hook(zero_skip)
            without_skip = model(x)
            hook.remove()
            change = (without_skip - reference).abs().mean() / reference.abs().mean()
            assert change > 0.1, f"decoder level {level}: zeroing the skip changed the output by only {change:.3g}"
        torch.testing.assert_close(model(x), reference)  # hooks removed: back to the reference


@pytest.mark.parametrize("norm", ["instance", "batch", None])
def test_gradient_reaches_every_parameter(norm):
    torch.manual_seed(0)
    model = anisotropic_3d(norm=norm, deep_supervision=True)
    x = torch.randn(2, 1, 8, 16, 16)
    outputs = model(x)
    loss = sum(F.cross_entropy(o, torch.randint(0, 2, (o.shape[0], *o.shape[2:]))) for o in outputs)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} has no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
        assert parameter.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_dropout_is_channel_dropout_and_off_in_eval():
    torch.manual_seed(0)
    model = small_2d(dropout=0.3)
    assert isinstance(model.encoder[0][0].dropout, nn.Dropout2d) and model.encoder[0][0].dropout.p == 0.3
    x = torch.randn(1, 1, 16, 16)
    assert not torch.equal(model(x), model(x))  # train: random channels dropped
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_tiny_network_overfits_a_thresholded_smooth_image():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16)
    target = (F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False) > 0).long().squeeze(1)
    model = UNet(1, 2, dims=2, features_per_stage=[4, 8, 16], kernel_sizes=[[3, 3]] * 3,
                 strides=[[1, 1], [2, 2], [2, 2]])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        start = (model(x).argmax(1) == target).float().mean().item()
    for _ in range(100):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == target).float().mean().item()
    assert start < 0.8
    assert accuracy > 0.95, f"pixel accuracy {accuracy:.3f} after 100 Adam steps"


# ---------------------------------------------------------------- argument errors

@pytest.mark.parametrize("overrides, message", [
    (dict(dims=1), "dims must be 2 or 3, got 1"),
    (dict(dims=4), "dims must be 2 or 3, got 4"),
    (dict(features_per_stage=[4, 8]), "kernel_sizes has 3 entries but features_per_stage has 2 stages"),
    (dict(kernel_sizes=[[3, 3]] * 2), "kernel_sizes has 2 entries but features_per_stage has 3 stages"),
    (dict(strides=[[1, 1], [2, 2]]), "strides has 2 entries but features_per_stage has 3 stages"),
    (dict(features_per_stage=[4]), "features_per_stage must be a sequence of at least 2 stage widths, got [4]"),
    (dict(features_per_stage=[4, 0, 16]), "features_per_stage[1] must be a positive integer, got 0"),
    (dict(features_per_stage=[4, 8, 2.5]), "features_per_stage[2] must be a positive integer, got 2.5"),
    (dict(kernel_sizes=[[3, 3], [3, 3, 3], [3, 3]]),
     "kernel_sizes[1] must have one value per spatial axis (2 for dims=2), got [3, 3, 3]"),
    (dict(kernel_sizes=[3, 3, 3]), "kernel_sizes[0] must have one value per spatial axis (2 for dims=2), got 3"),
    (dict(strides=[[1, 1], [2], [2, 2]]), "strides[1] must have one value per spatial axis (2 for dims=2), got [2]"),
    (dict(kernel_sizes=[[3, 3], [3, 0], [3, 3]]), "kernel_sizes[1][1] must be a positive integer, got 0"),
    (dict(strides=[[1, 1], [2, 2], [-2, 2]]), "strides[2][0] must be a positive integer, got -2"),
    (dict(kernel_sizes=[[3, 3], [2, 2], [3, 3]]), "kernel sizes must be odd (so that 'same' padding keeps the "
                                                  "size); got kernel_sizes[1] = [2, 2]"),
    (dict(strides=[[2, 2], [2, 2], [2, 2]]), "strides[0] must be all ones (stage 0 works at full resolution), "
                                             "got [2, 2]"),
    (dict(convs_per_stage=0), "convs_per_stage must be a positive integer, got 0"),
    (dict(norm="group"), "norm must be 'instance', 'batch' or None, got 'group'"),
    (dict(negative_slope=-0.1), "negative_slope must be a number >= 0, got -0.1"),
    (dict(dropout=1.0), "dropout must be a probability in [0, 1), got 1.0"),
    (dict(dropout=-0.1), "dropout must be a probability in [0, 1), got -0.1"),
])
def test_constructor_rejects_bad_arguments(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        small_2d(**overrides)


@pytest.mark.parametrize("in_channels, num_classes, message", [
    (0, 2, "in_channels must be a positive integer, got 0"),
    (1, 0, "num_classes must be a positive integer, got 0"),
    (1, -3, "num_classes must be a positive integer, got -3"),
])
def test_constructor_rejects_bad_channel_counts(in_channels, num_classes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        UNet(in_channels, num_classes, dims=2, features_per_stage=[4, 8], kernel_sizes=[[3, 3]] * 2,
             strides=[[1, 1], [2, 2]])


def test_forward_rejects_spatial_size_not_divisible_by_the_strides():
    model = anisotropic_3d()
    message = ("input spatial shape (8, 30, 32) (D, H, W) is not divisible by the product of the strides per axis "
               "(2, 4, 4); pad or crop it, e.g. to (8, 32, 32)")
    with pytest.raises(ValueError, match=re.escape(message)):
        model(torch.randn(1, 1, 8, 30, 32))
    with pytest.raises(ValueError, match=re.escape("input spatial shape (7, 32, 32) (D, H, W)")):
        model(torch.randn(1, 1, 7, 32, 32))
    with pytest.raises(ValueError, match=re.escape("input spatial shape (10, 10) (H, W) is not divisible by the "
                                                   "product of the strides per axis (4, 4)")):
        small_2d()(torch.randn(1, 1, 10, 10))


def test_forward_rejects_wrong_channels_and_dimensions():
    model = anisotropic_3d()
    with pytest.raises(ValueError, match=re.escape("UNet expects 1 input channel(s) (dimension 1), got 3 in input "
                                                   "of shape (1, 3, 8, 32, 32)")):
        model(torch.randn(1, 3, 8, 32, 32))
    with pytest.raises(ValueError, match=re.escape("UNet(dims=3) expects input of shape (B, C, D, H, W), i.e. 5 "
                                                   "dimensions; got shape (1, 8, 32, 32)")):
        model(torch.randn(1, 8, 32, 32))
    with pytest.raises(ValueError, match=re.escape("UNet(dims=2) expects input of shape (B, C, H, W), i.e. 4 "
                                                   "dimensions; got shape (16, 16)")):
        small_2d()(torch.randn(16, 16))
    with pytest.raises(ValueError, match="UNet expects a torch.Tensor, got ndarray"):
        small_2d()(torch.randn(1, 1, 16, 16).numpy())
