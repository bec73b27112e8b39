"""Preprocessing: normalisation schemes, cropping, resampling of images and labels, the case files."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pytest

from gnnseg.seg.io import MedicalImage, write_raw_dataset
from gnnseg.seg.unet.case_preprocessing import load_preprocessed, preprocess_case, preprocess_dataset
from gnnseg.seg.unet.cropping import crop_to_nonzero
from gnnseg.seg.unet.fingerprint import Fingerprint, extract_fingerprint
from gnnseg.seg.unet.inference_preprocessing import normalize
from gnnseg.seg.unet.planner import plan_experiment
from gnnseg.seg.unet.plans import IntensityProperties, Plans
from gnnseg.seg.unet.resampling import resample_image, resample_labels, separate_axis

STATISTICS = IntensityProperties(mean=100.0, median=100.0, std=50.0, min=-2000.0, max=3000.0,
                                 percentile_99_5=1000.0, percentile_00_5=-1000.0)


def volume_plans() -> Plans:
    """Plans of one-channel MR volumes at 2 x 1 x 1 mm: z-score normalisation, no transposition, and configurations
    3d_fullres at (2, 1, 1) mm and 2d at (1, 1) mm."""
    return plan_experiment(Fingerprint(
        dataset_name="volumes", channel_names={"0": "MR"}, labels={"background": 0, "organ": 1}, num_training=4,
        spacings=[[2.0, 1.0, 1.0]] * 4, shapes_after_crop=[[24, 30, 30]] * 4, median_relative_size_after_cropping=1.0,
        foreground_intensity_properties_per_channel={"0": asdict(STATISTICS)}, is_2d=False))


def plans_for(schemes, use_mask):
    return replace(volume_plans(), normalization_schemes=tuple(schemes), use_mask_for_norm=tuple(use_mask))


def test_ct_normalization_clips_then_standardizes():
    data = np.array([[[-2000.0, 0.0, 100.0, 3000.0]]])
    out = normalize(data, np.ones((1, 4), bool), plans_for(["ct"], [False]))
    np.testing.assert_allclose(out[0, 0], [(-1000 - 100) / 50, -2.0, 0.0, (1000 - 100) / 50])


def test_zscore_inside_the_nonzero_region_only():
    data = np.array([[[0.0, 2.0, 4.0, 6.0]]])
    seg = np.array([[[-1, 0, 0, 1]]], np.int8)
    out = normalize(data, seg[0] >= 0, plans_for(["zscore"], [True]))
    inside = np.array([2.0, 4.0, 6.0])
    np.testing.assert_allclose(out[0, 0], [0.0, *((inside - inside.mean()) / inside.std())], rtol=1e-6)
    whole = normalize(data, seg[0] >= 0, plans_for(["zscore"], [False]))
    assert abs(whole.mean()) < 1e-6 and abs(whole.std() - 1) < 1e-5


def test_crop_to_nonzero_marks_outside_voxels():
    data = np.zeros((1, 6, 6), np.float32)
    data[0, 1:4, 2:5] = 1.0
    data[0, 2, 3] = 0.0                      # a hole inside: filled, so still "inside"
    seg = np.zeros((1, 6, 6), np.int16)
    cropped, cropped_seg, box = crop_to_nonzero(data, seg)
    assert box == [(1, 4), (2, 5)] and cropped.shape == (1, 3, 3)
    assert (cropped_seg >= 0).all()
    data[0, 3, 4] = 0.0                      # a corner notch: outside the nonzero region
    _, notch_seg, _ = crop_to_nonzero(data, seg)
    assert notch_seg[0, 2, 2] == -1


def test_resampling_shapes_and_label_volume():
    seg = np.zeros((1, 20, 40, 40), np.int16)
    seg[0, 5:15, 10:30, 10:30] = 2
    up = resample_labels(seg, (2.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    assert up.shape == (1, 40, 40, 40) and set(np.unique(up)) == {0, 2}
    assert abs((up == 2).sum() - 2 * (seg == 2).sum()) <= 0.05 * (up == 2).sum()
    image = np.random.default_rng(0).normal(size=(2, 10, 16, 16)).astype(np.float32)
    down = resample_image(image, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    assert down.shape == (2, 5, 8, 8) and down.dtype == np.float32
    assert separate_axis((5.0, 1.0, 1.0), (5.0, 1.0, 1.0)) == 0
    assert separate_axis((1.0, 1.0, 1.0), (1.5, 1.5, 1.5)) is None
    anisotropic = resample_image(image, (5.0, 1.0, 1.0), (5.0, 0.5, 0.5))
    np.testing.assert_allclose(anisotropic[:, :, ::2, ::2].mean(), image.mean(), atol=0.05)


def test_preprocess_case_geometry_and_errors():
    rng = np.random.default_rng(0)
    volume = rng.normal(100, 20, size=(1, 12, 30, 30)).astype(np.float32)
    seg = np.zeros((1, 12, 30, 30), np.int16)
    seg[0, 4:8, 10:20, 10:20] = 1
    plans = volume_plans()
    assert plans.configuration("3d_fullres").spacing == (2.0, 1.0, 1.0)
    assert plans.configuration("2d").spacing == (1.0, 1.0)
    data, out_seg, properties = preprocess_case(volume, seg, (4.0, 1.0, 1.0), plans, "3d_fullres")
    assert data.shape == (1, 24, 30, 30) and out_seg.shape == (1, 24, 30, 30)
    assert properties["original_shape"] == [12, 30, 30] and properties["spacing"] == [2.0, 1.0, 1.0]
    data_2d, _, properties_2d = preprocess_case(volume, seg, (4.0, 1.0, 1.0), plans, "2d")
    assert data_2d.shape == (1, 12, 30, 30) and properties_2d["spacing"] == [4.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="configuration '3d_lowres' is not in the plans"):
        preprocess_case(volume, seg, (4.0, 1.0, 1.0), plans, "3d_lowres")
    with pytest.raises(ValueError, match="NaN or infinite"):
        preprocess_case(np.full_like(volume, np.nan), seg, (4.0, 1.0, 1.0), plans, "2d")
    with pytest.raises(ValueError, match="the plans expect 1"):
        preprocess_case(np.concatenate([volume, volume]), seg, (4.0, 1.0, 1.0), plans, "2d")


def test_preprocess_dataset_end_to_end(tmp_path):
    rng = np.random.default_rng(1)
    cases = []
    for k in range(3):
        image = rng.integers(1, 200, size=(24, 24)).astype(np.uint8)
        label = np.zeros((24, 24), np.uint8)
        label[5 + k:12 + k, 6:14] = 1
        cases.append((f"c{k}", [MedicalImage(image, (1.0, 1.0))], MedicalImage(label, (1.0, 1.0))))
    dataset = write_raw_dataset(tmp_path / "raw", channel_names=["grey"], labels={"background": 0, "spot": 1},
                                file_ending=".png", training=cases)
    plans = plan_experiment(extract_fingerprint(dataset))
    folder = preprocess_dataset(dataset, plans, "2d", tmp_path / "pre")
    data, seg, properties = load_preprocessed(folder, "c1")
    assert data.shape == (1, 1, 24, 24) and seg.shape == (1, 1, 24, 24)
    assert (seg == 1).sum() == 56
    assert len(properties["class_locations"]["1"]) == 56
    assert all(seg[0][tuple(c)] == 1 for c in properties["class_locations"]["1"])


def test_a_region_dataset_is_preprocessed_with_its_labels_as_written(tmp_path):
    """Regions are applied at training time (as nnU-Net): the preprocessed maps keep the label values, the ignore
    label included, and foreground oversampling draws from each region (any of its labels)."""
    label = np.zeros((16, 16), np.uint8)
    label[2:10, 2:10], label[4:8, 4:8], label[5:7, 5:7], label[15, :] = 1, 2, 3, 4
    cases = [(f"c{k}", [MedicalImage(np.full((16, 16), 20 + k, np.uint8), (1.0, 1.0))], MedicalImage(label, (1.0, 1.0)))
             for k in range(2)]
    dataset = write_raw_dataset(tmp_path / "raw", channel_names=["grey"], file_ending=".png", training=cases,
                                labels={"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3,
                                        "ignore": 4}, extra={"regions_class_order": [1, 2, 3]})
    fingerprint = extract_fingerprint(dataset)
    assert fingerprint.regions_class_order == [1, 2, 3]
    plans = plan_experiment(fingerprint)
    assert Plans.from_json(plans.to_json()).regions_class_order == (1, 2, 3)
    _, seg, properties = load_preprocessed(preprocess_dataset(dataset, plans, "2d", tmp_path / "pre"), "c0")
    np.testing.assert_array_equal(seg[0, 0], label)
    assert {key: len(value) for key, value in properties["class_locations"].items()} == {
        "(1, 2, 3)": 64, "(2, 3)": 16, "3": 4}


def test_fingerprint_weighs_every_case_equally(tmp_path):
    """nnU-Net samples the same number of foreground voxels per case; a case with a tiny object counts
    as much as one with a large object."""
    small_image = np.full((10, 10), 50, np.uint8)
    small_label = np.zeros((10, 10), np.uint8)
    small_label[0, 0] = 1
    small_image[0, 0] = 10
    large_image = np.full((10, 10), 50, np.uint8)
    large_label = np.zeros((10, 10), np.uint8)
    large_label[:, :5] = 1
    large_image[:, :5] = 210
    dataset = write_raw_dataset(tmp_path / "raw", channel_names=["grey"], labels={"background": 0, "x": 1},
                                file_ending=".png",
                                training=[("a", [MedicalImage(small_image, (1.0, 1.0))],
                                           MedicalImage(small_label, (1.0, 1.0))),
                                          ("b", [MedicalImage(large_image, (1.0, 1.0))],
                                           MedicalImage(large_label, (1.0, 1.0)))])
    stats = extract_fingerprint(dataset).foreground_intensity_properties_per_channel["0"]
    assert stats["mean"] == pytest.approx(110.0)          # (10 + 210) / 2, not (10 + 50 * 210) / 51
    assert stats["std"] == pytest.approx(100.0)
    assert (stats["min"], stats["max"], stats["percentile_99_5"]) == (10, 210, 210)
    assert 10 < stats["percentile_00_5"] < 15                # interpolated inside the light case's share
    values = np.random.default_rng(0).normal(size=101)
    from gnnseg.seg.unet.fingerprint import weighted_percentile
    for percent in (0.5, 50, 99.5):                            # equal weights: exactly numpy's percentile
        assert weighted_percentile(values, np.ones(101), percent) == pytest.approx(np.percentile(values, percent))
