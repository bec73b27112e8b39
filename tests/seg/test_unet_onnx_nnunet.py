"""ONNX export of nnU-Net v2 model folders: the torch-free predictor gives gnnseg's PyTorch nnU-Net predictor's
probabilities and labels (3D and 2D configurations, two folds, mirroring on and off, a case smaller than the patch),
preprocesses and maps logits back exactly as nnunetv2 does, agrees with nnunetv2's own predictor up to the float16 sums
that predictor keeps, and never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[test]')")
pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[test]')")
pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (pip install -e '.[test]')")

from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from gnnseg.cli import main
from gnnseg.seg.io import MedicalImage, read_any
from gnnseg.seg.io.nifti import write_nifti
from gnnseg.seg.unet.nnunet_models import open_nnunet_model
from gnnseg.seg.unet.nnunet_predict import NnUNetPredictor, predict_nnunet_folder
from gnnseg.seg.unet.onnx_export import export_unet_folders
from gnnseg.seg.unet.onnx_predictor import OnnxUNet, predict_onnx_folder

CONFIGURATIONS = ("3d_fullres", "2d")
MIRROR_AXES = {"3d_fullres": (0, 1, 2), "2d": (0, 1)}
LABELS = {"background": 0, "bright": 1, "dim": 2}


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny networks: tests/conftest.py


def architecture(dims: int) -> dict:
    """nnU-Net's default network class with 3 small stages, as a plans file names it."""
    kernels = [[1, 3, 3], [3, 3, 3], [3, 3, 3]] if dims == 3 else [[3, 3]] * 3
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2]] if dims == 3 else [[1, 1], [2, 2], [2, 2]]
    return {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {"n_stages": 3, "features_per_stage": [4, 8, 16],
                            "conv_op": f"torch.nn.modules.conv.Conv{dims}d", "kernel_sizes": kernels,
                            "strides": strides, "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [2, 2],
                            "conv_bias": True, "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
                            "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None,
                            "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                            "nonlin_kwargs": {"inplace": True}},
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def plans_document() -> dict:
    """Plans of a two-channel dataset (CT and masked z-score) whose last array axis is the coarse one (so the plans
    transpose), resampled to another spacing (so preprocessing and export resample, the coarse axis separately)."""
    resampling = {"resampling_fn_data": "resample_data_or_seg_to_shape",
                  "resampling_fn_seg": "resample_data_or_seg_to_shape",
                  "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                  "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                  "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                  "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                         "force_separate_z": None}}
    common = {"preprocessor_name": "DefaultPreprocessor", "batch_size": 2, "batch_dice": True,
              "normalization_schemes": ["CTNormalization", "ZScoreNormalization"], "use_mask_for_norm": [False, True],
              **resampling}
    intensities = {"0": {"max": 200.0, "mean": 40.0, "median": 40.0, "min": -60.0, "percentile_00_5": -30.0,
                         "percentile_99_5": 110.0, "std": 30.0},
                   "1": {"max": 180.0, "mean": 100.0, "median": 100.0, "min": 20.0, "percentile_00_5": 50.0,
                         "percentile_99_5": 150.0, "std": 20.0}}
    return {"dataset_name": "Dataset999_Tiny", "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
            "original_median_spacing_after_transp": [3.0, 1.0, 1.0], "original_median_shape_after_transp": [6, 20, 18],
            "transpose_forward": [2, 0, 1], "transpose_backward": [1, 2, 0],
            "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": intensities,
            "configurations": {
                "3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres", "patch_size": [4, 16, 16],
                               "median_image_size_in_voxels": [6, 22, 20], "spacing": [3.0, 0.9, 0.9],
                               "architecture": architecture(3), **common},
                "2d": {"data_identifier": "nnUNetPlans_2d", "patch_size": [16, 16],
                       "median_image_size_in_voxels": [22, 20], "spacing": [0.9, 0.9],
                       "architecture": architecture(2), **common}}}


def write_model_folder(folder, configuration: str, folds=(0, 1)):
    """An nnU-Net v2 results folder as ``nnUNetv2_train`` leaves it: plans, dataset.json and per fold a checkpoint of
    nnU-Net's own network (built by nnunetv2, weights moved off their initial values)."""
    plans = plans_document()
    dataset = {"channel_names": {"0": "CT", "1": "MR"}, "labels": LABELS, "numTraining": 3, "file_ending": ".nii.gz"}
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    planned = PlansManager(plans).get_configuration(configuration)
    for fold in folds:
        torch.manual_seed(fold)
        network = get_network_from_plans(planned.network_arch_class_name, planned.network_arch_init_kwargs,
                                         planned.network_arch_init_kwargs_req_import, 2, len(LABELS),
                                         allow_init=True, deep_supervision=True)
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
        (folder / f"fold_{fold}").mkdir()
        torch.save({"network_weights": network.state_dict(), "trainer_name": "nnUNetTrainer", "current_epoch": 1,
                    "init_args": {"plans": plans, "configuration": configuration, "fold": fold,
                                  "dataset_json": dataset, "device": "cpu"},
                    "inference_allowed_mirroring_axes": MIRROR_AXES[configuration]},
                   folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def case(shape, spacing, seed):
    """Two channels inside a zero border, ``(C, z, y, x)`` with spacing ``(sz, sy, sx)`` as nnU-Net's readers give."""
    rng = np.random.default_rng(seed)
    data = np.zeros((2, *shape), np.float32)
    data[(slice(None), *[slice(1, s - 1) for s in shape])] = rng.normal(50, 30, size=(2, *[s - 2 for s in shape]))
    return data, spacing


CASES = {"large": case((20, 18, 7), (1.0, 1.1, 3.2), 0),
         "smaller_than_the_patch": case((10, 9, 5), (1.0, 1.0, 3.0), 1)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Per configuration: the nnU-Net model folder and its export."""
    root = tmp_path_factory.mktemp("nnunet_onnx")
    made = {}
    for configuration in CONFIGURATIONS:
        folder = write_model_folder(root / configuration, configuration)
        export_unet_folders(folder, root / f"{configuration}_onnx")
        made[configuration] = (folder, root / f"{configuration}_onnx")
    return made


def test_the_command_exports_a_model_folder_with_its_files_folds_and_mirroring(models, tmp_path, last_json):
    folder, _ = models["3d_fullres"]
    export = tmp_path / "export"
    assert main(["seg", "export-onnx", "--unet", str(folder), "-o", str(export), "--json"]) == 0
    printed = last_json()
    assert printed["graphs"] == ["fold_0.onnx", "fold_1.onnx"] and printed["mirror_axes"] == [0, 1, 2]
    settings = json.loads((export / "inference.json").read_text())
    assert settings["plans_format"] == "nnunet" and settings["folds"] == ["0", "1"]
    assert settings["source"]["trainer"] == "nnUNetTrainer" and settings["labels"] == LABELS
    assert (export / "plans.json").read_text() == (folder / "plans.json").read_text()
    assert (export / "dataset.json").read_text() == (folder / "dataset.json").read_text()
    assert main(["seg", "export-onnx", "--unet", str(folder), "--unet", str(folder), "-o",
                 str(tmp_path / "two")]) == 2                   # a model folder holds its folds itself
    assert not (tmp_path / "two").exists()
    assert main(["seg", "export-onnx", "--unet", str(folder), "--unet-folds", "1", "-o", str(tmp_path / "one"),
                 "--json"]) == 0
    assert last_json()["graphs"] == ["network.onnx"]
    assert json.loads((tmp_path / "one" / "inference.json").read_text())["folds"] == ["1"]


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
@pytest.mark.parametrize("mirror", [False, True])
def test_onnx_matches_gnnseg_pytorch_nnunet_predictor_in_float32(models, configuration, mirror):
    folder, export = models[configuration]
    onnx_model = OnnxUNet(export, threads=1, half_precision=False)
    torch_predictor = NnUNetPredictor(open_nnunet_model(folder), use_mirroring=mirror, half_precision=False)
    for data, spacing in CASES.values():
        expected = torch_predictor.predict(data, spacing, return_probabilities=True)
        labels, probabilities = onnx_model.predict_case(data, spacing, mirror=mirror, with_probabilities=True)
        np.testing.assert_allclose(probabilities, expected.probabilities, atol=1e-4, rtol=0)
        top_two = np.sort(expected.probabilities, axis=0)[-2:]
        decided = top_two[1] - top_two[0] > 2e-4
        assert np.array_equal(labels[decided], expected.segmentation[decided])
        assert np.mean(labels == expected.segmentation) >= 0.999
        labels_only, _ = onnx_model.predict_case(data, spacing, mirror=mirror)
        assert np.array_equal(labels_only, labels)


def nnunetv2_predictor(folder, mirror: bool) -> nnUNetPredictor:
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirror,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0, 1),
                                                   checkpoint_name="checkpoint_final.pth")
    return predictor


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_preprocessing_and_the_way_back_are_nnunetv2s(models, configuration):
    folder, export = models[configuration]
    onnx_model = OnnxUNet(export, threads=1, half_precision=False)
    reference = nnunetv2_predictor(folder, mirror=False)
    preprocessor = reference.configuration_manager.preprocessor_class(verbose=False)
    for data, spacing in CASES.values():
        theirs, _, properties = preprocessor.run_case_npy(data.copy(), None, {"spacing": list(spacing)},
                                                          reference.plans_manager, reference.configuration_manager,
                                                          reference.dataset_json)
        ours, geometry = onnx_model.cases.preprocess(data, spacing)
        assert np.array_equal(ours, theirs)
        logits = onnx_model.logits(ours)
        segmentation, probabilities = convert_predicted_logits_to_segmentation_with_correct_shape(
            torch.from_numpy(logits.copy()), reference.plans_manager, reference.configuration_manager,
            reference.label_manager, properties, return_probabilities=True)
        labels, our_probabilities = onnx_model.cases.outputs(logits.copy(), geometry, with_probabilities=True)
        assert np.array_equal(labels, segmentation)
        np.testing.assert_allclose(our_probabilities, probabilities, atol=1e-6, rtol=0)


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
@pytest.mark.parametrize("mirror", [False, True])
def test_in_half_precision_the_labels_are_nnunetv2s(models, configuration, mirror):
    """nnunetv2 2.8.1 sums the weighted window logits and the weights in float16, subnormal where only the Gaussian's
    tails reach (image borders), so there its probabilities move by up to about 0.1; the export does the same by
    default, and gnnseg's PyTorch predictor too. Differences of 1e-6 between onnxruntime's and PyTorch's logits can
    round a subnormal sum the other way, so the labels are compared, not the probabilities."""
    folder, export = models[configuration]
    onnx_model = OnnxUNet(export, threads=1)
    reference = nnunetv2_predictor(folder, mirror)
    torch_predictor = NnUNetPredictor(open_nnunet_model(folder), use_mirroring=mirror)
    for data, spacing in CASES.values():
        segmentation = reference.predict_single_npy_array(data, {"spacing": list(spacing)}, None, None, False)
        labels, _ = onnx_model.predict_case(data, spacing, mirror=mirror)
        assert np.mean(labels == segmentation) >= 0.999
        assert np.mean(labels == torch_predictor.predict(data, spacing).segmentation) >= 0.999


def test_a_folder_is_segmented_as_gnnseg_segments_it_with_the_model_folder(models, tmp_path):
    folder, export = models["3d_fullres"]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name, (data, spacing) in CASES.items():
        affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
        affine[:3, 3] = [5.0, -3.0, 12.0]
        for channel in range(2):
            write_nifti(MedicalImage(data[channel], spacing, affine), inputs / f"{name}_{channel:04d}.nii.gz")
    ours = predict_onnx_folder(export, inputs, tmp_path / "onnx", threads=1)
    theirs = predict_nnunet_folder(folder, inputs, tmp_path / "torch")
    assert ours["mirror_axes"] == theirs["mirror_axes"] == [0, 1, 2]     # nnU-Net mirrors unless told not to
    assert [Path(p).name for p in ours["predictions"]] == [Path(p).name for p in theirs["predictions"]]
    for mine, reference in zip(ours["predictions"], theirs["predictions"]):
        mine, reference = read_any(mine), read_any(reference)
        np.testing.assert_allclose(mine.affine, reference.affine)
        assert mine.array.dtype == reference.array.dtype == np.uint8
        assert np.mean(mine.array == reference.array) >= 0.999


def test_an_nnunet_export_segments_where_torch_cannot_be_imported(models, tmp_path):
    _, export = models["2d"]
    data, spacing = CASES["large"]
    np.save(tmp_path / "case.npy", data)
    script = (
        "import sys, importlib.abc\n"
        "import numpy as np\n"
        "class NoTorch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is not importable in this test')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from gnnseg.seg.unet.onnx_predictor import OnnxUNet\n"
        f"labels, _ = OnnxUNet(sys.argv[1], threads=1).predict_case(np.load(sys.argv[2]), {spacing!r}, mirror=True)\n"
        "np.save(sys.argv[3], labels)\n"
        "assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')], 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(export), str(tmp_path / "case.npy"),
                           str(tmp_path / "labels.npy")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    expected, _ = OnnxUNet(export, threads=1).predict_case(data, spacing, mirror=True)
    assert np.array_equal(np.load(tmp_path / "labels.npy"), expected)
