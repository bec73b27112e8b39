"""Planner rules on synthetic fingerprints, checked against hand-derived expectations."""

from __future__ import annotations

import numpy as np
import pytest

from gnnseg.seg.unet.fingerprint import Fingerprint
from gnnseg.seg.unet.plans import (
    activation_elements,
    load_plans,
    plan_experiment,
    pooling_and_kernels,
    save_plans,
    target_spacing,
)


def fingerprint(spacings, shapes, channels=("MR",), is_2d=False, relative=1.0) -> Fingerprint:
    return Fingerprint(dataset_name="synthetic", channel_names={str(i): c for i, c in enumerate(channels)},
                       labels={"background": 0, "organ": 1}, num_training=len(spacings),
                       spacings=[list(map(float, s)) for s in spacings], shapes_after_crop=[list(s) for s in shapes],
                       median_relative_size_after_cropping=relative,
                       foreground_intensity_properties_per_channel={"0": {"mean": 0.0}}, is_2d=is_2d)


def test_isotropic_volume_pools_every_axis_to_edge_four():
    topology = pooling_and_kernels([1.0, 1.0, 1.0], [128, 128, 128])
    assert topology["pools_per_axis"] == [5, 5, 5]              # 128 -> 64 -> 32 -> 16 -> 8 -> 4
    assert topology["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 5
    assert topology["kernel_sizes"] == [[3, 3, 3]] * 6
    assert topology["patch_size"] == [128, 128, 128]


def test_anisotropic_five_to_one_pools_in_plane_first():
    # hand-derived: z (5 mm) joins pooling once in-plane spacing reaches 4 mm (within 2x), stops below edge 8
    topology = pooling_and_kernels([5.0, 1.0, 1.0], [20, 200, 200])
    assert topology["strides"] == [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
    assert topology["kernel_sizes"] == [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
    assert topology["pools_per_axis"] == [2, 5, 5]
    assert topology["divisor"] == [4, 32, 32]
    assert topology["patch_size"] == [20, 224, 224]              # 200 padded up to a multiple of 32


def test_tiny_images_get_a_single_stage():
    topology = pooling_and_kernels([1.0, 1.0], [6, 6])
    assert topology["strides"] == [[1, 1]] and topology["kernel_sizes"] == [[3, 3]]
    assert topology["patch_size"] == [6, 6]


def test_target_spacing_anisotropy_rule():
    z = [5.0, 5.0, 6.0, 4.0, 3.5, 5.0, 5.5, 4.5, 5.0, 6.0]
    spacings = np.array([[s, 0.8, 0.8] for s in z])
    shapes = np.array([[24, 256, 256]] * 10)
    spacing = target_spacing(spacings, shapes)
    assert spacing[0] == pytest.approx(np.percentile(z, 10))      # 10th percentile, not the median 5.0
    assert spacing[1:].tolist() == pytest.approx([0.8, 0.8])
    # not anisotropic in voxels (many slices): the median stays
    many_slices = target_spacing(spacings, np.array([[200, 256, 256]] * 10))
    assert many_slices[0] == pytest.approx(np.median(z))
    # the 10th percentile never goes finer than the other axes
    fine = target_spacing(np.array([[5.0, 1.0, 1.0]] * 6 + [[0.5, 1.0, 1.0]] * 5), np.array([[20, 256, 256]] * 11))
    assert fine[0] == pytest.approx(1.0 + 1e-5)


def test_activation_count_by_hand():
    # one stage of 4 features on 8x8, then a stride-2 stage of 8 features; 2 classes
    elements = activation_elements([8, 8], [[1, 1], [2, 2]], [4, 8], num_classes=2)
    encoder = 2 * 4 * 64 + 2 * 8 * 16
    decoder = 2 * 4 * 64 + 4 * 64 + 2 * 64
    assert elements == encoder + decoder


def test_isotropic_plan_end_to_end():
    plans = plan_experiment(fingerprint([[1.0, 1.0, 1.0]] * 10, [[128, 128, 128]] * 10))
    full = plans["configurations"]["3d_fullres"]
    assert full["spacing"] == [1.0, 1.0, 1.0]
    assert full["network"]["features_per_stage"][:5] == [32, 64, 128, 256, 320]   # doubling, capped at 320
    assert all(p % d == 0 for p, d in zip(full["patch_size"], [2 ** (len(full["network"]["strides"]) - 1)] * 3))
    assert full["batch_size"] >= 2
    assert full["estimated_activation_elements"] / 2 * 2 <= 560e6
    assert plans["transpose_forward"] == [0, 1, 2]
    assert plans["normalization_schemes"] == ["zscore"] and plans["use_mask_for_norm"] == [False]
    assert "2d" in plans["configurations"]


def test_coarsest_axis_moves_first():
    plans = plan_experiment(fingerprint([[0.8, 0.8, 4.0]] * 5, [[300, 300, 40]] * 5, channels=("CT",), relative=0.5))
    assert plans["transpose_forward"] == [2, 0, 1] and plans["transpose_backward"] == [1, 2, 0]
    assert plans["configurations"]["3d_fullres"]["spacing"][0] == pytest.approx(4.0)
    assert plans["normalization_schemes"] == ["ct"] and plans["use_mask_for_norm"] == [False]


def test_two_dimensional_dataset_has_only_a_2d_configuration():
    plans = plan_experiment(fingerprint([[999.0, 1.0, 1.0]] * 30, [[1, 512, 512]] * 30, is_2d=True))
    assert list(plans["configurations"]) == ["2d"]
    two_d = plans["configurations"]["2d"]
    assert two_d["patch_size"] == [512, 512]
    # 5% cap: 30 images x 512^2 x 0.05 / 512^2 = 1.5 -> 2 (and never below 2)
    assert two_d["batch_size"] == 2


def test_memory_budget_shrinks_the_patch_and_cpu_counts_double():
    fp = fingerprint([[1.0, 1.0, 1.0]] * 50, [[256, 256, 256]] * 50)
    big = plan_experiment(fp, memory_gb=8)["configurations"]["3d_fullres"]["patch_size"]
    small = plan_experiment(fp, memory_gb=2)["configurations"]["3d_fullres"]["patch_size"]
    cpu = plan_experiment(fp, memory_gb=4, device="cpu")["configurations"]["3d_fullres"]["patch_size"]
    assert np.prod(small) < np.prod(big)
    assert cpu == small                          # 4 GB of float32 RAM ~ 2 GB of mixed-precision VRAM
    with pytest.raises(ValueError, match="memory_gb must be positive"):
        plan_experiment(fp, memory_gb=0)
    with pytest.raises(ValueError, match="device must be 'gpu' or 'cpu'"):
        plan_experiment(fp, device="tpu")


def test_plans_round_trip(tmp_path):
    plans = plan_experiment(fingerprint([[1.0, 1.0, 1.0]] * 3, [[64, 64, 64]] * 3))
    save_plans(plans, tmp_path / "plans.json")
    assert load_plans(tmp_path / "plans.json") == plans
    (tmp_path / "other.json").write_text('{"format": "nnUNetPlans"}')
    with pytest.raises(ValueError, match="not a gnnseg plans file"):
        load_plans(tmp_path / "other.json")


def test_budget_too_small_for_a_unet_is_refused():
    fp = fingerprint([[999.0, 1.0, 1.0]] * 2, [[1, 6, 5]] * 2, is_2d=True)
    with pytest.raises(ValueError, match="single resolution stage"):
        plan_experiment(fp)
