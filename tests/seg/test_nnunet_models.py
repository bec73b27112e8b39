"""Models trained by nnU-Net v2, predicted by gnnseg: the networks, the model folder, and predictions against
``nnunetv2``'s own ``nnUNetPredictor`` on tiny random-weight models (2D PNG and anisotropic, transposed 3D NIfTI).

nnunetv2 and dynamic_network_architectures are test oracles only; the tests skip when they are not installed.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gnnseg.seg.io import MedicalImage, read_any
from gnnseg.seg.io.any_format import write_any
from gnnseg.seg.unet.case_recipes import nnunet_importance
from gnnseg.seg.unet.nnunet_models import open_nnunet_model, read_nnunet_checkpoint
from gnnseg.seg.unet.nnunet_networks import build_network, load_nnunet_weights
from gnnseg.seg.unet.nnunet_predict import predict_nnunet_folder
from tests.seg.torchvision_schemas import make_torchvision_importable

unet_module = pytest.importorskip("dynamic_network_architectures.architectures.unet",
                                  reason="dynamic_network_architectures (the oracle) is not installed")


def _resampling(order: int) -> dict:
    return {"is_seg": False, "order": order, "order_z": 0, "force_separate_z": None}


def _configuration(dims: int, spacing, patch, network_class: str, kernels, strides, features) -> dict:
    conv, norm = ("Conv2d", "InstanceNorm2d") if dims == 2 else ("Conv3d", "InstanceNorm3d")
    per_stage = "n_conv_per_stage" if network_class == "PlainConvUNet" else "n_blocks_per_stage"
    return {
        "data_identifier": f"nnUNetPlans_{dims}d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
        "patch_size": patch, "median_image_size_in_voxels": patch, "spacing": spacing,
        "normalization_schemes": None, "use_mask_for_norm": None,
        "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": _resampling(3),
        "resampling_fn_seg_kwargs": {**_resampling(1), "is_seg": True},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": _resampling(1),
        "architecture": {
            "network_class_name": f"dynamic_network_architectures.architectures.unet.{network_class}",
            "arch_kwargs": {
                "n_stages": len(features), "features_per_stage": features,
                "conv_op": f"torch.nn.modules.conv.{conv}", "kernel_sizes": kernels, "strides": strides,
                per_stage: [2] * len(features), "n_conv_per_stage_decoder": [1] * (len(features) - 1),
                "conv_bias": True, "norm_op": f"torch.nn.modules.instancenorm.{norm}",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
        "batch_dice": True,
    }


def with_network_class(architecture: dict, network_class: str) -> dict:
    """A plans ``architecture`` entry switched in place to ``network_class`` (``PlainConvUNet`` counts convs per
    stage, ``ResidualEncoderUNet`` blocks); returned for convenience."""
    architecture["network_class_name"] = f"dynamic_network_architectures.architectures.unet.{network_class}"
    kwargs = architecture["arch_kwargs"]
    counts = kwargs.pop("n_conv_per_stage", None) or kwargs.pop("n_blocks_per_stage")
    kwargs["n_conv_per_stage" if network_class == "PlainConvUNet" else "n_blocks_per_stage"] = counts
    return architecture


def plans_3d() -> tuple[dict, dict]:
    """Two channels (CT, MR), three labels, volumes stored with the coarse axis last (transpose [2, 0, 1])."""
    configuration = _configuration(3, [4.0, 0.8, 0.8], [8, 32, 32], "PlainConvUNet",
                                   [[1, 3, 3], [3, 3, 3], [3, 3, 3]], [[1, 1, 1], [1, 2, 2], [2, 2, 2]], [4, 8, 16])
    slices = _configuration(2, [0.8, 0.8], [32, 32], "PlainConvUNet", [[3, 3]] * 3, [[1, 1], [2, 2], [2, 2]],
                            [4, 8, 16])
    for planned in (configuration, slices):
        planned.update(normalization_schemes=["CTNormalization", "ZScoreNormalization"],
                       use_mask_for_norm=[False, True])
    intensities = {"max": 900.0, "mean": 40.0, "median": 35.0, "min": -900.0, "percentile_00_5": -500.0,
                   "percentile_99_5": 600.0, "std": 150.0}
    plans = {"dataset_name": "Dataset991_Tiny3d", "plans_name": "nnUNetPlans",
             "original_median_spacing_after_transp": [4.0, 0.8, 0.8], "original_median_shape_after_transp": [8, 32, 32],
             "image_reader_writer": "SimpleITKIO", "transpose_forward": [2, 0, 1], "transpose_backward": [1, 2, 0],
             "configurations": {"3d_fullres": configuration, "2d": slices},
             "experiment_planner_used": "ExperimentPlanner",
             "label_manager": "LabelManager",
             "foreground_intensity_properties_per_channel": {"0": intensities, "1": {**intensities, "mean": 5.0}}}
    dataset = {"channel_names": {"0": "CT", "1": "MR"}, "labels": {"background": 0, "a": 1, "b": 2},
               "numTraining": 2, "file_ending": ".nii.gz"}
    return plans, dataset


def plans_2d() -> tuple[dict, dict]:
    """Grey PNGs, a residual-encoder U-Net whose spacing (0.8, 1.2) makes every image resampled."""
    configuration = _configuration(2, [0.8, 1.2], [32, 32], "ResidualEncoderUNet", [[3, 3]] * 3,
                                   [[1, 1], [2, 2], [2, 2]], [4, 8, 16])
    configuration.update(normalization_schemes=["ZScoreNormalization"], use_mask_for_norm=[False])
    plans = {"dataset_name": "Dataset992_Tiny2d", "plans_name": "nnUNetResEncUNetMPlans",
             "original_median_spacing_after_transp": [999.0, 1.0, 1.0],
             "original_median_shape_after_transp": [1, 40, 40], "image_reader_writer": "NaturalImage2DIO",
             "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2], "configurations": {"2d": configuration},
             "experiment_planner_used": "nnUNetPlannerResEncM", "label_manager": "LabelManager",
             "foreground_intensity_properties_per_channel": {"0": {"max": 255.0, "mean": 120.0, "median": 118.0,
                                                                   "min": 0.0, "percentile_00_5": 2.0,
                                                                   "percentile_99_5": 250.0, "std": 40.0}}}
    dataset = {"channel_names": {"0": "EM"}, "labels": {"background": 0, "membrane": 1}, "numTraining": 2,
               "file_ending": ".png"}
    return plans, dataset


def oracle_network(plans: dict, dataset: dict, configuration: str, seed: int) -> nn.Module:
    """The network nnU-Net builds from the plans, with random weights (norm affines too)."""
    make_torchvision_importable()
    get_network_from_plans = pytest.importorskip(
        "nnunetv2.utilities.get_network_from_plans", reason="nnunetv2 (the oracle) is not installed"
    ).get_network_from_plans

    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    architecture = plans["configurations"][configuration]["architecture"]
    outputs = LabelManager(dataset["labels"], dataset.get("regions_class_order")).num_segmentation_heads
    network = get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                     architecture["_kw_requires_import"], len(dataset["channel_names"]), outputs,
                                     deep_supervision=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return network


def write_model_folder(root: Path, plans: dict, dataset: dict, configuration: str, folds=(0, 1),
                       trainer: str = "nnUNetTrainer", mirror_axes=None) -> Path:
    """``Trainer__Plans__configuration/`` with checkpoints shaped as ``nnUNetTrainer.save_checkpoint`` writes them."""
    folder = root / f"{trainer}__{plans['plans_name']}__{configuration}"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    dims = len(plans["configurations"][configuration]["patch_size"])
    for fold in folds:
        network = oracle_network(plans, dataset, configuration, seed=100 + fold)
        optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
        checkpoint = {
            "network_weights": network.state_dict(), "optimizer_state": optimizer.state_dict(),
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float64(0.5)], "ema_fg_dice": [np.float64(0.4)],
                        "dice_per_class_or_region": [[0.5, 0.6]], "train_losses": [np.float64(-0.3)],
                        "val_losses": [np.float64(-0.2)], "lrs": [0.01], "epoch_start_timestamps": [1.0],
                        "epoch_end_timestamps": [2.0]},
            "_best_ema": np.float64(0.4), "current_epoch": 1,
            "init_args": {"plans": plans, "configuration": configuration, "fold": fold, "dataset_json": dataset,
                          "device": torch.device("cpu")},
            "trainer_name": trainer,
            "inference_allowed_mirroring_axes": tuple(range(dims)) if mirror_axes is None else mirror_axes,
        }
        (folder / f"fold_{fold}").mkdir()
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def _blob_image(shape, rng, scale, offset, border) -> np.ndarray:
    """Smooth random structure inside a zero border (so that cropping to the nonzero region matters)."""
    from scipy.ndimage import gaussian_filter

    image = gaussian_filter(rng.normal(size=shape), 1.5) * scale + offset
    inner = tuple(slice(b, s - b) for b, s in zip(border, shape))
    out = np.zeros(shape)
    out[inner] = image[inner]
    return out


def write_cases_3d(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for case, (shape, spacing) in enumerate([((30, 36, 10), (0.7, 0.9, 3.0)), ((24, 40, 9), (0.8, 0.8, 4.0))]):
        affine = np.diag([*spacing[::-1], 1.0])
        for channel, (scale, offset) in enumerate([(800.0, 50.0), (60.0, 10.0)]):
            array = _blob_image(shape, rng, scale, offset, (2, 3, 1)).astype(np.float32)
            write_any(MedicalImage(array, spacing, affine), folder / f"case{case}_{channel:04d}.nii.gz")
    return folder


def write_cases_2d(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for case, shape in enumerate([(44, 50), (20, 24)]):
        array = np.clip(_blob_image(shape, rng, 300.0, 120.0, (0, 0)), 0, 255).astype(np.uint8)
        write_any(MedicalImage(array, (1.0, 1.0)), folder / f"img{case}_0000.png")
    return folder


@pytest.fixture
def nnunet_environment(tmp_path, monkeypatch):
    """nnunetv2 reads its folders from the environment when imported; point them at scratch space."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    make_torchvision_importable()
    pytest.importorskip("nnunetv2", reason="nnunetv2 (the oracle) is not installed")
    return tmp_path


def nnunet_predictions(model: Path, inputs: Path, output: Path, mirroring: bool) -> Path:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=None, checkpoint_name="checkpoint_final.pth")
    output.mkdir()
    predictor.predict_from_files_sequential(str(inputs), str(output), save_probabilities=True, overwrite=True)
    return output


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over the labels present in either map (1 when both are empty)."""
    labels = sorted(set(np.unique(a)) | set(np.unique(b)))
    scores = [2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k)) for k in labels]
    return float(np.mean(scores))


# ------------------------------------------------------------------------------------------------ networks

@pytest.mark.parametrize("network_class", ["PlainConvUNet", "ResidualEncoderUNet"])
@pytest.mark.parametrize("dims", [2, 3])
def test_networks_match_dynamic_network_architectures(network_class, dims):
    plans, dataset = plans_3d() if dims == 3 else plans_2d()
    configuration = next(iter(plans["configurations"]))
    architecture = with_network_class(plans["configurations"][configuration]["architecture"], network_class)
    reference = oracle_network(plans, dataset, configuration, seed=7).eval()
    reference.decoder.deep_supervision = False
    ours = build_network(architecture, len(dataset["channel_names"]), len(dataset["labels"])).eval()
    load_nnunet_weights(ours, reference.state_dict(), "oracle")
    x = torch.randn(2, len(dataset["channel_names"]), *plans["configurations"][configuration]["patch_size"])
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == expected.shape == (2, len(dataset["labels"]), *x.shape[2:])
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()


@pytest.mark.parametrize("patch", [(512, 512), (7, 9), (1, 40, 40), (32, 112, 128), (2, 3, 5)])
def test_window_weights_are_nnunetv2s_bit_for_bit(patch):
    make_torchvision_importable()
    oracle = pytest.importorskip("nnunetv2.inference.sliding_window_prediction",
                                 reason="nnunetv2 (the oracle) is not installed")
    expected = oracle.compute_gaussian(patch, 1 / 8, value_scaling_factor=10, device=torch.device("cpu"))
    ours = nnunet_importance(patch)
    assert ours.dtype == np.float32 and ours.shape == patch
    assert np.array_equal(ours, expected.float().numpy())


def test_weights_of_another_network_are_refused_naming_the_tensors():
    plans, dataset = plans_2d()
    architecture = plans["configurations"]["2d"]["architecture"]
    ours = build_network(architecture, 1, 2)
    state = dict(oracle_network(plans, dataset, "2d", seed=1).state_dict())
    state.pop("decoder.seg_layers.1.weight")
    with pytest.raises(ValueError, match=r"ckpt: network_weights lacks 1 tensors .*decoder\.seg_layers\.1\.weight"):
        load_nnunet_weights(ours, state, "ckpt")


def test_unknown_network_class_and_operator_are_refused():
    plans, _ = plans_2d()
    architecture = dict(plans["configurations"]["2d"]["architecture"])
    with pytest.raises(ValueError, match="network class 'x.Primus' is not supported"):
        build_network({**architecture, "network_class_name": "x.Primus"}, 1, 2)
    kwargs = {**architecture["arch_kwargs"], "nonlin": "os.system"}
    with pytest.raises(ValueError, match="nonlin 'os.system' is not one of the operators"):
        build_network({**architecture, "arch_kwargs": kwargs}, 1, 2)


# ------------------------------------------------------------------------------------------------ predictions

@pytest.mark.parametrize("mirroring", [True, False])
def test_3d_predictions_match_nnunetv2(nnunet_environment, mirroring):
    root = nnunet_environment
    plans, dataset = plans_3d()
    model = write_model_folder(root / "results", plans, dataset, "3d_fullres")
    inputs = write_cases_3d(root / "imagesTs")
    theirs = nnunet_predictions(model, inputs, root / "theirs", mirroring)
    result = predict_nnunet_folder(model, inputs, root / "ours", use_mirroring=mirroring, save_probabilities=True,
                                   show_progress=False)
    assert result["folds"] == ["0", "1"] and result["mirror_axes"] == ([0, 1, 2] if mirroring else [])
    for case in ("case0", "case1"):
        ours_seg, their_seg = read_any(root / "ours" / f"{case}.nii.gz"), read_any(theirs / f"{case}.nii.gz")
        assert ours_seg.array.shape == their_seg.array.shape == read_any(inputs / f"{case}_0000.nii.gz").array.shape
        assert np.allclose(ours_seg.affine, their_seg.affine, atol=1e-4)
        assert len(np.unique(their_seg.array)) >= 2          # not a constant map: the comparison means something
        assert dice(ours_seg.array, their_seg.array) >= 0.999
        ours_p = np.load(root / "ours" / f"{case}.npz")["probabilities"]
        their_p = np.load(theirs / f"{case}.npz")["probabilities"]
        assert ours_p.shape == their_p.shape and ours_p.dtype == np.float32
        assert np.abs(ours_p - their_p).max() <= 1e-3
        with open(theirs / f"{case}.pkl", "rb") as handle:
            their_properties = pickle.load(handle)
        ours_properties = json.loads((root / "ours" / f"{case}.json").read_text())
        their_box = [list(b) for b in their_properties["bbox_used_for_cropping"]]
        assert ours_properties["bbox_used_for_cropping"] == their_box


@pytest.mark.parametrize("configuration, labels, regions", [
    ("2d", {"background": 0, "a": 1, "b": 2}, None),
    ("3d_fullres", {"background": 0, "whole": [1, 2], "core": 2, "ignore": 3}, [1, 2]),
])
def test_slices_and_regions_match_nnunetv2(nnunet_environment, configuration, labels, regions):
    """A 2D configuration on volumes (slice by slice, the slicing axis keeps its spacing), and region-based labels
    with an ignore label (sigmoid outputs per region, painted in regions_class_order)."""
    root = nnunet_environment
    plans, dataset = plans_3d()
    dataset = {**dataset, "labels": labels, **({"regions_class_order": regions} if regions else {})}
    model = write_model_folder(root / "results", plans, dataset, configuration, folds=(0,))
    inputs = write_cases_3d(root / "imagesTs")
    theirs = nnunet_predictions(model, inputs, root / "theirs", mirroring=True)
    predict_nnunet_folder(model, inputs, root / "ours", save_probabilities=True, show_progress=False)
    for case in ("case0", "case1"):
        ours_seg, their_seg = read_any(root / "ours" / f"{case}.nii.gz"), read_any(theirs / f"{case}.nii.gz")
        assert len(np.unique(their_seg.array)) >= 2
        assert dice(ours_seg.array, their_seg.array) >= 0.999
        ours_p = np.load(root / "ours" / f"{case}.npz")["probabilities"]
        their_p = np.load(theirs / f"{case}.npz")["probabilities"]
        assert ours_p.shape == their_p.shape and ours_p.shape[0] == (2 if regions else 3)
        assert np.abs(ours_p - their_p).max() <= 1e-3


def test_2d_png_predictions_match_nnunetv2(nnunet_environment):
    root = nnunet_environment
    plans, dataset = plans_2d()
    model = write_model_folder(root / "results", plans, dataset, "2d", trainer="nnUNetTrainer_250epochs")
    inputs = write_cases_2d(root / "imagesTs")
    theirs = nnunet_predictions(model, inputs, root / "theirs", mirroring=True)
    predict_nnunet_folder(model, inputs, root / "ours", save_probabilities=True, show_progress=False)
    for case in ("img0", "img1"):
        ours_seg, their_seg = read_any(root / "ours" / f"{case}.png"), read_any(theirs / f"{case}.png")
        assert ours_seg.array.shape == their_seg.array.shape == read_any(inputs / f"{case}_0000.png").array.shape
        assert set(np.unique(their_seg.array)) == {0, 1}
        assert dice(ours_seg.array, their_seg.array) >= 0.999
        ours_p = np.load(root / "ours" / f"{case}.npz")["probabilities"]
        their_p = np.load(theirs / f"{case}.npz")["probabilities"]
        assert ours_p.shape == their_p.shape == (2, 1, *ours_seg.array.shape)
        assert np.abs(ours_p - their_p).max() <= 1e-3


def test_postprocessing_reduces_each_case_before_it_is_written(nnunet_environment):
    """The rule chosen on cross-validation is applied case by case (no file is written twice): the labels are the
    rule applied to the plain prediction, the probabilities stay the network's; a rule for labels the model lacks is
    refused before anything is predicted."""
    from gnnseg.seg.unet.postprocess import PostprocessingRule

    root = nnunet_environment
    plans, dataset = plans_3d()
    model = write_model_folder(root / "results", plans, dataset, "3d_fullres", folds=(0,))
    inputs = write_cases_3d(root / "imagesTs")
    rule = PostprocessingRule(((1,), (2,)))
    plain = predict_nnunet_folder(model, inputs, root / "plain", save_probabilities=True, show_progress=False)
    ruled = predict_nnunet_folder(model, inputs, root / "ruled", save_probabilities=True, postprocessing=rule,
                                  show_progress=False)
    assert ruled["postprocessing"] == [[1], [2]] and plain["postprocessing"] is None
    changed = 0
    for case in ("case0", "case1"):
        before = read_any(root / "plain" / f"{case}.nii.gz").array
        expected = rule.apply(before)
        np.testing.assert_array_equal(read_any(root / "ruled" / f"{case}.nii.gz").array, expected)
        changed += int((expected != before).sum())
        np.testing.assert_array_equal(np.load(root / "ruled" / f"{case}.npz")["probabilities"],
                                      np.load(root / "plain" / f"{case}.npz")["probabilities"])
    assert changed > 0                                          # the rule had something to remove
    with pytest.raises(ValueError, match=r"names labels \[5\]"):
        predict_nnunet_folder(model, inputs, root / "other", postprocessing=PostprocessingRule(((5,),)),
                              show_progress=False)
    assert not (root / "other").exists()


def test_half_precision_checkpoints_open_as_float32(nnunet_environment):
    """Weights saved in float16 become the float32 parameters the plans' network has (assigned, so cast first)."""
    root = nnunet_environment
    plans, dataset = plans_2d()
    model = write_model_folder(root / "results", plans, dataset, "2d", folds=(0,))
    path = model / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, weights_only=False)
    full = {key: value.clone() for key, value in checkpoint["network_weights"].items()}
    checkpoint["network_weights"] = {key: value.half() if value.is_floating_point() else value
                                     for key, value in full.items()}
    torch.save(checkpoint, path)
    opened = open_nnunet_model(model)
    assert {tensor.dtype for tensor in opened.network.parameters()} == {torch.float32}
    first = next(iter(opened.fold_weights[0]))
    assert torch.allclose(opened.fold_weights[0][first], full[first], atol=1e-2)
    inputs = write_cases_2d(root / "imagesTs")
    assert len(predict_nnunet_folder(model, inputs, root / "ours", show_progress=False)["predictions"]) == 2


def test_a_case_holding_nan_is_refused_naming_its_file(nnunet_environment):
    root = nnunet_environment
    plans, dataset = plans_3d()
    model = write_model_folder(root / "results", plans, dataset, "3d_fullres", folds=(0,))
    inputs = root / "imagesTs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for channel in (0, 1):                               # the model takes CT and MR; the MR channel holds a NaN
        image = rng.normal(size=(10, 30, 34)).astype(np.float32)
        image[4, 10, 10] = np.nan if channel else image[4, 10, 10]
        write_any(MedicalImage(image, (3.0, 0.8, 0.8)), inputs / f"scan_000{channel}.nii.gz")
    with pytest.raises(ValueError, match=r"scan_0000\.nii\.gz: image contains NaN"):
        predict_nnunet_folder(model, inputs, root / "never", show_progress=False)
    assert not any((root / "never").glob("*.nii.gz"))


def test_folds_and_checkpoint_are_chosen(nnunet_environment):
    root = nnunet_environment
    plans, dataset = plans_2d()
    model = write_model_folder(root / "results", plans, dataset, "2d", folds=(0, 1, 3))
    (model / "fold_all").mkdir()
    opened = open_nnunet_model(model)
    assert opened.folds == ("0", "1", "3") and opened.mirror_axes == (0, 1)
    assert open_nnunet_model(model, folds=[3]).folds == ("3",)
    (model / "fold_1" / "checkpoint_final.pth").rename(model / "fold_1" / "checkpoint_best.pth")
    assert open_nnunet_model(model).folds == ("0", "3")
    assert open_nnunet_model(model, checkpoint="checkpoint_best.pth").folds == ("1",)


def test_fold_weights_are_the_checkpoints_and_never_written_to(nnunet_environment):
    """Folds are assigned, not copied, into the network: predicting with two folds must leave each fold's tensors as
    its checkpoint holds them, and the network holding fold 0's. The checkpoint is read, not left mapped: the file
    may be rewritten (a training run continuing) without touching the opened model."""
    from gnnseg.seg.unet.nnunet_predict import NnUNetPredictor

    root = nnunet_environment
    plans, dataset = plans_2d()
    model = write_model_folder(root / "results", plans, dataset, "2d", folds=(0, 1))
    saved = [torch.load(model / f"fold_{k}" / "checkpoint_final.pth", weights_only=False)["network_weights"]
             for k in (0, 1)]
    opened = open_nnunet_model(model)
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"rewritten")
    predictor = NnUNetPredictor(opened)
    predictor.predict(np.random.default_rng(0).normal(size=(1, 1, 40, 36)).astype(np.float32), (999.0, 1.0, 1.0))
    for weights, checkpoint in zip(opened.fold_weights, saved):
        assert all(torch.equal(tensor, checkpoint[key]) for key, tensor in weights.items())
    for network in (opened.network, predictor.fold_network):      # fold 0 again once the case is done
        assert all(torch.equal(tensor, saved[0][key]) for key, tensor in network.state_dict().items())
    first = next(iter(opened.fold_weights[0]))
    assert not torch.equal(opened.fold_weights[0][first], opened.fold_weights[1][first])


# ------------------------------------------------------------------------------------------------ bad input

def test_folder_without_plans_is_refused_naming_the_file(nnunet_environment):
    root = nnunet_environment
    plans, dataset = plans_2d()
    model = write_model_folder(root / "results", plans, dataset, "2d")
    (model / "plans.json").unlink()
    inputs = write_cases_2d(root / "imagesTs")
    with pytest.raises(FileNotFoundError, match=r"plans\.json: missing \(nnU-Net plans\)"):
        predict_nnunet_folder(model, inputs, root / "out", show_progress=False)
    assert not (root / "out").exists()


def test_requested_fold_without_checkpoint_is_refused(nnunet_environment):
    root = nnunet_environment
    plans, dataset = plans_2d()
    model = write_model_folder(root / "results", plans, dataset, "2d")
    (model / "fold_2").mkdir()
    with pytest.raises(FileNotFoundError, match=r"fold_2/checkpoint_final\.pth: checkpoint missing \(fold 2\)"):
        open_nnunet_model(model, folds=[0, 2])
    for fold in (0, 1):
        (model / f"fold_{fold}" / "checkpoint_final.pth").unlink()
    with pytest.raises(FileNotFoundError, match="no fold_<k> folder holds checkpoint_final.pth"):
        open_nnunet_model(model)


def test_unknown_trainer_is_refused(nnunet_environment):
    root = nnunet_environment
    plans, dataset = plans_2d()
    model = write_model_folder(root / "results", plans, dataset, "2d", trainer="MyFancyTrainer")
    with pytest.raises(ValueError, match=r"fold_0/checkpoint_final\.pth: trainer 'MyFancyTrainer' is not one"):
        open_nnunet_model(model)


class Payload:
    """Stands for anything a pickle could smuggle in."""


def test_checkpoint_with_a_pickled_object_is_refused_naming_it(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "trainer_name": "nnUNetTrainer", "init_args": {"configuration": "2d"},
                "extra": Payload()}, path)
    with pytest.raises(ValueError, match=r"checkpoint_final\.pth: refused, it would unpickle .*Payload"):
        read_nnunet_checkpoint(path)


def test_numpy_scalars_in_the_logging_are_allowed(tmp_path):
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": {"w": torch.ones(2)}, "trainer_name": "nnUNetTrainer", "_best_ema": np.float64(0.5),
                "init_args": {"configuration": "2d", "device": torch.device("cpu")},
                "logging": {"train_losses": [np.float32(-0.1), np.float64(-0.2)]}}, path)
    checkpoint = read_nnunet_checkpoint(path)
    assert checkpoint["_best_ema"] == 0.5 and torch.equal(checkpoint["network_weights"]["w"], torch.ones(2))


def test_existing_output_is_not_overwritten(nnunet_environment):
    root = nnunet_environment
    plans, dataset = plans_2d()
    model = write_model_folder(root / "results", plans, dataset, "2d")
    inputs = write_cases_2d(root / "imagesTs")
    (root / "out").mkdir()
    (root / "out" / "img1.png").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="1 outputs already exist"):
        predict_nnunet_folder(model, inputs, root / "out", show_progress=False)
    assert sorted(os.listdir(root / "out")) == ["img1.png"] and (root / "out" / "img1.png").read_bytes() == b"mine"


# ------------------------------------------------------------------------------------------------ command line

def test_command_line_detects_an_nnunet_model_folder(nnunet_environment, capsys):
    from gnnseg.cli import main

    root = nnunet_environment
    plans, dataset = plans_2d()
    model = write_model_folder(root / "results", plans, dataset, "2d")
    inputs = write_cases_2d(root / "imagesTs")
    code = main(["seg", "predict", "-i", str(inputs), "-o", str(root / "out"), "-m", str(model), "-f", "1",
                 "--disable-tta", "--save-probabilities", "--step-size", "0.75", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["folds"] == ["1"] and result["mirror_axes"] == [] and result["step_size"] == 0.75
    assert sorted(os.listdir(root / "out")) == ["dataset.json", "img0.json", "img0.npz", "img0.png", "img1.json",
                                                "img1.npz", "img1.png"]
    (model / "plans.json").unlink()
    code = main(["seg", "predict", "-i", str(inputs), "-o", str(root / "out2"), "-m", str(model)])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.endswith("plans.json: missing (nnU-Net plans)") and len(error.splitlines()) == 1
    assert not (root / "out2").exists()
