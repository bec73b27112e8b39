"""Planner rules on synthetic fingerprints, checked against hand-derived expectations; the plans file read through
its views."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from gnnseg.seg.io import MedicalImage, write_raw_dataset
from gnnseg.seg.unet.fingerprint import Fingerprint
from gnnseg.seg.unet.pipeline import plan_dataset
from gnnseg.seg.unet.planner import activation_elements, plan_experiment, pooling_and_kernels, target_spacing
from gnnseg.seg.unet.plans import PLANS_VERSION, IntensityProperties, Plans

STATISTICS = {"mean": 0.0, "median": 0.0, "std": 1.0, "min": -3.0, "max": 3.0, "percentile_99_5": 2.5,
              "percentile_00_5": -2.5}


def fingerprint(spacings, shapes, channels=("MR",), is_2d=False, relative=1.0) -> Fingerprint:
    return Fingerprint(dataset_name="synthetic", channel_names={str(i): c for i, c in enumerate(channels)},
                       labels={"background": 0, "organ": 1}, num_training=len(spacings),
                       spacings=[list(map(float, s)) for s in spacings], shapes_after_crop=[list(s) for s in shapes],
                       median_relative_size_after_cropping=relative,
                       foreground_intensity_properties_per_channel={"0": STATISTICS}, is_2d=is_2d)


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
    full = plans.configuration("3d_fullres")
    assert full.spacing == (1.0, 1.0, 1.0)
    assert full.network.features_per_stage[:5] == (32, 64, 128, 256, 320)   # doubling, capped at 320
    assert all(p % d == 0 for p, d in zip(full.patch_size, [2 ** (full.network.num_stages - 1)] * 3))
    assert full.batch_size >= 2
    assert full.estimated_activation_elements / 2 * 2 <= 560e6
    assert plans.transpose_forward == (0, 1, 2)
    assert plans.normalization_schemes == ("zscore",) and plans.use_mask_for_norm == (False,)
    assert "2d" in plans.configurations


def test_coarsest_axis_moves_first():
    plans = plan_experiment(fingerprint([[0.8, 0.8, 4.0]] * 5, [[300, 300, 40]] * 5, channels=("CT",), relative=0.5))
    assert plans.transpose_forward == (2, 0, 1) and plans.transpose_backward == (1, 2, 0)
    assert plans.configuration("3d_fullres").spacing[0] == pytest.approx(4.0)
    assert plans.normalization_schemes == ("ct",) and plans.use_mask_for_norm == (False,)


def test_two_dimensional_dataset_has_only_a_2d_configuration():
    plans = plan_experiment(fingerprint([[999.0, 1.0, 1.0]] * 30, [[1, 512, 512]] * 30, is_2d=True))
    assert list(plans.configurations) == ["2d"]
    two_d = plans.configuration("2d")
    assert two_d.patch_size == (512, 512)
    # 5% cap: 30 images x 512^2 x 0.05 / 512^2 = 1.5 -> 2 (and never below 2)
    assert two_d.batch_size == 2


def test_memory_budget_shrinks_the_patch_and_cpu_counts_double():
    fp = fingerprint([[1.0, 1.0, 1.0]] * 50, [[256, 256, 256]] * 50)
    big = plan_experiment(fp, memory_gb=8).configuration("3d_fullres").patch_size
    small = plan_experiment(fp, memory_gb=2).configuration("3d_fullres").patch_size
    cpu = plan_experiment(fp, memory_gb=4, device="cpu").configuration("3d_fullres").patch_size
    assert np.prod(small) < np.prod(big)
    assert cpu == small                          # 4 GB of float32 RAM ~ 2 GB of mixed-precision VRAM
    with pytest.raises(ValueError, match="memory_gb must be positive"):
        plan_experiment(fp, memory_gb=0)
    with pytest.raises(ValueError, match="device must be 'gpu' or 'cpu'"):
        plan_experiment(fp, device="tpu")


def test_plans_round_trip(tmp_path):
    plans = plan_experiment(fingerprint([[1.0, 1.0, 1.0]] * 3, [[64, 64, 64]] * 3))
    plans.save(tmp_path / "plans.json")
    assert Plans.load(tmp_path / "plans.json") == plans
    assert Plans.load(tmp_path / "plans.json").to_json() == json.loads((tmp_path / "plans.json").read_text())


def ct_volumes_dataset(root):
    """Three CT volumes of 5 x 0.8 x 0.8 mm stored (x, y, z) in RAS, as NIfTI keeps them: a real plans file of a 3D,
    anisotropic, CT dataset comes from them."""
    rng = np.random.default_rng(0)
    affine = np.diag([0.8, 0.8, 5.0, 1.0])
    cases = []
    for k in range(3):
        image = rng.normal(40, 20, size=(12, 48, 40)).astype(np.int16)
        label = np.zeros((12, 48, 40), np.uint8)
        label[3:9, 10 + k:30 + k, 8:28] = 1
        image[label == 1] += 100
        cases.append((f"ct{k}", [MedicalImage(image, (5.0, 0.8, 0.8), affine)],
                      MedicalImage(label, (5.0, 0.8, 0.8), affine)))
    return write_raw_dataset(root, channel_names=["CT"], labels={"background": 0, "liver": 1},
                             file_ending=".nii.gz", training=cases)


def test_the_views_read_a_generated_plans_file_as_written(tmp_path):
    """The pipeline's plans.json read through Plans / Configuration: nnU-Net's keys as fields, and the file written
    again from the view is the same, byte for byte."""
    dataset = ct_volumes_dataset(tmp_path / "raw")
    plan_dataset(dataset.root, tmp_path / "work", memory_gb=1.0, device="cpu", base_features=8)
    path = tmp_path / "work" / "plans.json"
    document = json.loads(path.read_text())
    plans = Plans.load(path)

    assert document["format"] == PLANS_VERSION and plans.dataset_name == document["dataset_name"] == "raw"
    assert plans.channel_names == {"0": "CT"} and plans.labels == {"background": 0, "liver": 1}
    assert plans.axis_codes == "RAS" and plans.file_ending == ".nii.gz" and plans.raw_dataset == str(dataset.root)
    assert plans.transpose_forward == (0, 1, 2) and plans.transpose_backward == (0, 1, 2)   # z is the coarsest
    assert plans.original_median_spacing_after_transp == pytest.approx((5.0, 0.8, 0.8))
    assert plans.normalization_schemes == ("ct",) and plans.use_mask_for_norm == (False,)
    statistics = plans.foreground_intensity_properties_per_channel["0"]
    assert isinstance(statistics, IntensityProperties) and statistics.percentile_00_5 < statistics.mean < 200
    assert plans.resampling.image_order == 3 and plans.resampling.label_order == 1
    assert sorted(plans.configurations) == ["2d", "3d_fullres"]
    full = plans.configuration("3d_fullres")
    entry = document["configurations"]["3d_fullres"]
    assert list(full.spacing) == entry["spacing"] and list(full.patch_size) == entry["patch_size"]
    assert full.batch_size == entry["batch_size"] and full.network.dims == 3
    assert [list(s) for s in full.network.strides] == entry["network"]["strides"]
    assert full.network.strides[0] == (1, 1, 1) and full.network.num_stages == len(full.network.features_per_stage)
    assert full.network.kernel_sizes[0] == (1, 3, 3)         # 5 mm against 0.8 mm: no kernel across the slices yet
    assert plans.configuration("2d").network.dims == 2

    assert plans.to_json() == document
    plans.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()
    older = {key: value for key, value in document.items() if key not in ("axis_codes", "raw_dataset", "file_ending")}
    before = Plans.from_json(older)                 # a checkpoint's plans from before axis codes were recorded
    assert before.axis_codes is None and before.raw_dataset is None and before == replace(
        plans, axis_codes=None, raw_dataset=None, file_ending=None)


def test_a_plans_file_that_is_not_one_is_refused_by_name(tmp_path):
    plans = plan_experiment(fingerprint([[1.0, 1.0, 1.0]] * 3, [[64, 64, 64]] * 3))
    path = tmp_path / "plans.json"

    def refused(document) -> str:
        path.write_text(json.dumps(document))
        with pytest.raises(ValueError) as error:
            Plans.load(path)
        assert str(path) in str(error.value)
        return str(error.value)

    assert "not a gnnseg plans file (format 'nnUNetPlans'" in refused({"format": "nnUNetPlans"})
    def without(key: str) -> dict:
        return {k: v for k, v in plans.to_json().items() if k != key}

    assert "format None, expected 'gnnseg.plans/1'" in refused(without("format"))
    assert "format 'gnnseg.plans/2'" in refused({**plans.to_json(), "format": "gnnseg.plans/2"})
    assert "lacks 'transpose_forward'" in refused(without("transpose_forward"))
    broken = plans.to_json()
    del broken["configurations"]["2d"]["patch_size"]
    broken["configurations"]["2d"]["patchsize"] = [64, 64]
    message = refused(broken)
    assert "configurations['2d'] lacks 'patch_size' and has unknown 'patchsize'" in message
    del broken["configurations"]["3d_fullres"]["network"]["strides"]
    assert "configurations['3d_fullres'].network lacks 'strides'" in refused(broken)
    assert "must be a JSON object, not list" in refused([1, 2])
    path.write_text("{not json")
    with pytest.raises(ValueError, match="is not a JSON file"):
        Plans.load(path)
    with pytest.raises(FileNotFoundError, match="run `gnnseg seg plan` first"):
        Plans.load(tmp_path / "nowhere.json")
    with pytest.raises(ValueError, match=r"'3d_lowres' is not in the plans \(have \['2d', '3d_fullres'\]\)"):
        plans.configuration("3d_lowres")


def test_budget_too_small_for_a_unet_is_refused():
    fp = fingerprint([[999.0, 1.0, 1.0]] * 2, [[1, 6, 5]] * 2, is_2d=True)
    with pytest.raises(ValueError, match="single resolution stage"):
        plan_experiment(fp)
