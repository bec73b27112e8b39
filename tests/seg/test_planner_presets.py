"""The ResEnc planner presets against nnU-Net v2's own planners (``nnunetv2`` 2.8.1, the oracle): the same raw
datasets fingerprinted and planned by both, every configuration's plan compared, and a ResEnc plan's network built by
gnnseg against ``dynamic_network_architectures``' with the same weights.

nnunetv2 reads its folders from the environment when imported, so it runs in a child process with its own
``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results``; the tests skip when it is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gnnseg.cli import main
from gnnseg.seg.io import MedicalImage, RawDataset, read_image_2d, read_nifti, write_raw_dataset
from gnnseg.seg.unet.fingerprint import extract_fingerprint
from gnnseg.seg.unet.nnunet_networks import build_network, load_nnunet_weights
from gnnseg.seg.unet.planner import plan_experiment
from gnnseg.seg.unet.planner_presets import (
    ENCODER_BLOCKS_PER_STAGE,
    PRESETS,
    preset_named,
    residual_encoder_unet_elements,
)
from gnnseg.seg.unet.plans import Plans

pytest.importorskip("nnunetv2", reason="nnunetv2 (the oracle) is not installed")
unet_module = pytest.importorskip("dynamic_network_architectures.architectures.unet",
                                  reason="dynamic_network_architectures (the oracle) is not installed")

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"
NNUNET_PLANNERS = {"default": "ExperimentPlanner", "resenc_m": "nnUNetPlannerResEncM",
                   "resenc_l": "nnUNetPlannerResEncL", "resenc_xl": "nnUNetPlannerResEncXL"}
SMALL_BUDGETS = {"resenc_m": 0.2, "resenc_l": 0.5}
"""Budgets (GB) small enough that the toy datasets' patches must shrink: the estimate-and-shrink loop runs."""

ORACLE = """
import json, sys, warnings
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.experiment_planners.residual_unets import residual_encoder_unet_planners as resenc
warnings.simplefilter("ignore")
jobs, attributes_file = json.loads(sys.argv[1]), sys.argv[2]
for number in sorted({job["dataset"] for job in jobs}):
    extractor = DatasetFingerprintExtractor(number, num_processes=1, verbose=False)
    extractor.num_foreground_voxels_for_intensitystats = 10_000   # planning reads no intensity statistics
    extractor.run()
attributes = {}
for job in jobs:
    cls = ExperimentPlanner if job["planner"] == "ExperimentPlanner" else getattr(resenc, job["planner"])
    planner = cls(job["dataset"], gpu_memory_target_in_gb=job["gb"], plans_name=job["plans_name"])
    planner.plan_experiment()
    attributes[job["planner"]] = {name: getattr(planner, name) for name in (
        "UNet_reference_val_3d", "UNet_reference_val_2d", "UNet_reference_val_corresp_GB", "max_dataset_covered",
        "UNet_blocks_per_stage_encoder", "UNet_blocks_per_stage_decoder", "UNet_base_num_features")}
    attributes[job["planner"]]["default_plans_name"] = cls.__init__.__defaults__[2]
    attributes[job["planner"]]["default_gb"] = cls.__init__.__defaults__[0]
with open(attributes_file, "w") as file:
    json.dump(attributes, file)
"""


def run_nnunet_planners(scratch: Path, jobs: list[dict]) -> dict[str, dict]:
    """Run nnU-Net's fingerprint and planners on ``jobs``; the numbers each planner class planned with, by class."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **{name: str(scratch / name) for name in
                                                     ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
    attributes = scratch / "planner_attributes.json"
    result = subprocess.run([sys.executable, "-c", ORACLE, json.dumps(jobs), str(attributes)], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(attributes.read_text())


def anisotropic_volumes(root: Path) -> None:
    """Five 3D cases, z coarse (3 mm against 0.8 mm in plane), shapes and spacings varying a little."""
    rng = np.random.default_rng(0)
    cases = []
    for k in range(5):
        shape, spacing = (14 + k, 88 + 4 * k, 72), (3.0 + 0.1 * k, 0.8, 0.8)
        image = rng.normal(100, 20, shape).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        label[4:10, 20:60, 16:50] = 1
        label[6:9, 30:40, 20:30] = 2
        image[label > 0] += 80
        cases.append((f"vol{k}", [MedicalImage(image, spacing)], MedicalImage(label, spacing)))
    write_raw_dataset(root, channel_names=["MR"], labels={"background": 0, "organ": 1, "lesion": 2},
                      file_ending=".nii.gz", training=cases)


def png_images(root: Path) -> None:
    """Six 2D cases of 150 x 200 pixels, two channels."""
    rng = np.random.default_rng(1)
    cases = []
    for k in range(6):
        label = np.zeros((150, 200), np.uint8)
        label[30 + k:90, 40:120 + k] = 1
        channels = [MedicalImage(np.clip(rng.normal(90 + 60 * label, 15), 0, 255).astype(np.uint8), (1.0, 1.0))
                    for _ in range(2)]
        cases.append((f"img{k}", channels, MedicalImage(label, (1.0, 1.0))))
    write_raw_dataset(root, channel_names=["red", "green"], labels={"background": 0, "spot": 1},
                      file_ending=".png", training=cases)


def totalsegmentator_ct(root: Path) -> None:
    """The shared TotalSegmentator example CT (30 x 101 x 122 at 3 mm), its organs as one label."""
    folder = SHARED / "totalsegmentator_examples"
    ct, organs = read_nifti(folder / "example_ct_sm.nii.gz"), read_nifti(folder / "example_seg.nii.gz")
    label = MedicalImage((organs.array > 0).astype(np.uint8), organs.spacing, organs.affine)
    write_raw_dataset(root, channel_names=["CT"], labels={"background": 0, "organs": 1}, file_ending=".nii.gz",
                      training=[("ct_sm", [ct], label)])


SHARED_CT = SHARED / "totalsegmentator_examples" / "example_ct_sm.nii.gz"
DATASETS = {"Dataset501_Aniso3D": anisotropic_volumes, "Dataset502_Images2D": png_images,
            "Dataset503_TotalSegCT": totalsegmentator_ct}


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> dict[str, dict]:
    """Per dataset: gnnseg's fingerprint and nnU-Net's plans files by plans name; under "planner_attributes" the
    numbers of each nnU-Net planner class (one nnU-Net run for all)."""
    scratch = tmp_path_factory.mktemp("nnunet")
    jobs, datasets = [], {}
    for folder, build in DATASETS.items():
        if build is totalsegmentator_ct and not SHARED_CT.is_file():
            continue                                     # the shared dataset is optional; the toy ones are not
        build(scratch / "nnUNet_raw" / folder)
        number = int(folder[len("Dataset"):len("Dataset") + 3])
        datasets[folder] = number
        for preset, planner in NNUNET_PLANNERS.items():
            jobs.append({"dataset": number, "planner": planner, "gb": PRESETS[preset].reference_gb,
                         "plans_name": PRESETS[preset].plans_name})
        for preset, gb in SMALL_BUDGETS.items():
            jobs.append({"dataset": number, "planner": NNUNET_PLANNERS[preset], "gb": gb,
                         "plans_name": f"small_{preset}"})
    results = {"planner_attributes": run_nnunet_planners(scratch, jobs)}
    for folder in datasets:
        preprocessed = scratch / "nnUNet_preprocessed" / folder
        results[folder] = {
            "fingerprint": extract_fingerprint(RawDataset.open(scratch / "nnUNet_raw" / folder)),
            "nnunet": {path.stem: json.loads(path.read_text()) for path in preprocessed.glob("*.json")}}
    return results


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_numbers_are_those_of_nnunets_planner_classes(planned, preset):
    """The presets' references, budgets, coverage, blocks and plans names, read off nnU-Net's planner objects."""
    theirs, mine = planned["planner_attributes"][NNUNET_PLANNERS[preset]], PRESETS[preset]
    assert (mine.reference_elements[3], mine.reference_elements[2]) == (theirs["UNet_reference_val_3d"],
                                                                        theirs["UNet_reference_val_2d"])
    assert mine.reference_gb == theirs["UNet_reference_val_corresp_GB"] == theirs["default_gb"]
    assert mine.max_dataset_fraction == theirs["max_dataset_covered"]
    assert mine.plans_name == theirs["default_plans_name"]
    assert theirs["UNet_base_num_features"] == 32
    if mine.is_residual_encoder:
        assert list(ENCODER_BLOCKS_PER_STAGE) == theirs["UNet_blocks_per_stage_encoder"]
        assert {mine.decoder_convs_per_stage} == set(theirs["UNet_blocks_per_stage_decoder"])


def plan_rows(ours: Plans, theirs: dict) -> dict[str, tuple[dict, dict]]:
    """Per configuration nnU-Net planned (cascade pointers aside): what both planners chose, side by side."""
    rows = {}
    for name, config in theirs["configurations"].items():
        if "architecture" not in config:
            continue
        arch = config["architecture"]["arch_kwargs"]
        nnunet = {"spacing": [round(float(s), 6) for s in config["spacing"]],
                  "patch_size": list(config["patch_size"]), "batch_size": config["batch_size"],
                  "strides": arch["strides"], "kernel_sizes": arch["kernel_sizes"],
                  "features_per_stage": list(arch["features_per_stage"]),
                  "network_class_name": config["architecture"]["network_class_name"]}
        mine = ours.configuration(name)
        gnnseg = {"spacing": [round(float(s), 6) for s in mine.spacing], "patch_size": list(mine.patch_size),
                  "batch_size": mine.batch_size, "strides": [list(s) for s in mine.network.strides],
                  "kernel_sizes": [list(k) for k in mine.network.kernel_sizes],
                  "features_per_stage": list(mine.network.features_per_stage),
                  "network_class_name": (mine.architecture or {}).get(
                      "network_class_name", "dynamic_network_architectures.architectures.unet.PlainConvUNet")}
        if "n_blocks_per_stage" in arch:
            nnunet["arch_kwargs"] = arch
            gnnseg["arch_kwargs"] = json.loads(json.dumps(mine.architecture["arch_kwargs"]))
        rows[name] = (gnnseg, nnunet)
    return rows


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("dataset", list(DATASETS))
def test_presets_plan_as_nnunet_at_its_budgets(planned, dataset, preset):
    if dataset not in planned:
        pytest.skip(f"shared dataset missing: {SHARED_CT}")
    theirs = planned[dataset]["nnunet"][PRESETS[preset].plans_name]
    ours = plan_experiment(planned[dataset]["fingerprint"], planner=preset)
    rows = plan_rows(ours, theirs)
    assert set(rows) == set(ours.configurations)        # both plan the same configurations (no 3d_lowres here)
    for name, (gnnseg, nnunet) in rows.items():
        assert gnnseg == nnunet, name
        if preset != "default":                          # the whole entry nnU-Net writes, key for key
            assert ours.to_json()["configurations"][name]["architecture"] == json.loads(
                json.dumps(theirs["configurations"][name]["architecture"]))
    assert ours.plans_name == (None if preset == "default" else theirs["plans_name"])


@pytest.mark.parametrize("preset", list(SMALL_BUDGETS))
@pytest.mark.parametrize("dataset", ["Dataset501_Aniso3D", "Dataset502_Images2D"])
def test_small_budget_shrinks_the_patch_as_nnunet_does(planned, dataset, preset):
    theirs = planned[dataset]["nnunet"][f"small_{preset}"]
    ours = plan_experiment(planned[dataset]["fingerprint"], planner=preset, memory_gb=SMALL_BUDGETS[preset])
    shrunk = 0
    for name, (gnnseg, nnunet) in plan_rows(ours, theirs).items():
        assert gnnseg == nnunet, name
        config = ours.configuration(name)
        shrunk += any(p < m for p, m in zip(config.patch_size, config.median_image_size_in_voxels))
    assert shrunk >= 1                                   # the estimate-and-shrink loop did run


def test_cpu_budget_is_half_the_gpu_one_and_presets_differ(planned):
    fingerprint = planned["Dataset501_Aniso3D"]["fingerprint"]
    gpu = plan_experiment(fingerprint, planner="resenc_m", memory_gb=0.4, device="gpu")
    cpu = plan_experiment(fingerprint, planner="resenc_m", memory_gb=0.8, device="cpu")
    assert gpu.to_json()["configurations"] == cpu.to_json()["configurations"]
    assert cpu.memory_budget == {"device": "cpu", "memory_gb": 0.8, "base_features": 32}
    default = plan_experiment(fingerprint)
    assert default.plans_name is None and "architecture" not in default.to_json()["configurations"]["3d_fullres"]
    resenc = plan_experiment(fingerprint, planner="resenc_l")
    assert resenc.configuration("3d_fullres").batch_size > default.configuration("3d_fullres").batch_size


def test_unknown_planner_is_refused_with_the_names():
    with pytest.raises(ValueError, match="unknown planner 'resenc_s'; choose one of default, resenc_m"):
        preset_named("resenc_s")


def test_resenc_plans_round_trip_through_the_file(planned, tmp_path):
    plans = plan_experiment(planned["Dataset502_Images2D"]["fingerprint"], planner="resenc_m")
    loaded = Plans.load(plans.save(tmp_path / "plans.json"))
    assert loaded == plans and loaded.to_json() == plans.to_json()
    document = plans.to_json()
    del document["configurations"]["2d"]["architecture"]["arch_kwargs"]
    with pytest.raises(ValueError, match=r"configurations\['2d'\]\.architecture lacks 'arch_kwargs'"):
        Plans.from_json(document)


@pytest.mark.parametrize("patch, strides, classes", [
    ((20, 64, 48), [(1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)], 3),
    ((96, 80), [(1, 1), (2, 2), (2, 2), (2, 2), (2, 2)], 2),
    ((7, 33), [(1, 1), (1, 2), (2, 2)], 4)])            # floor division of odd sizes
def test_activation_estimate_equals_dynamic_network_architectures(patch, strides, classes):
    dims, stages = len(patch), len(strides)
    features = [min(32 * 2 ** s, 320 if dims == 3 else 512) for s in range(stages)]
    blocks, decoder = [1, 3, 4, 6, 6, 6][:stages], [1] * (stages - 1)
    network = unet_module.ResidualEncoderUNet(
        input_channels=1, n_stages=stages, features_per_stage=features,
        conv_op=torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d, kernel_sizes=3, strides=strides,
        n_blocks_per_stage=blocks, num_classes=classes, n_conv_per_stage_decoder=decoder, conv_bias=True)
    assert residual_encoder_unet_elements(patch, strides, features, blocks, decoder, classes) == \
        int(network.compute_conv_feature_map_size(patch))


def _reference_network(architecture: dict, in_channels: int, num_classes: int, deep_supervision: bool):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    return get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                  architecture["_kw_requires_import"], in_channels, num_classes,
                                  deep_supervision=deep_supervision)


@pytest.mark.parametrize("dataset, configuration, base_features",
                         [("Dataset502_Images2D", "2d", 8), ("Dataset501_Aniso3D", "3d_fullres", 32)])
def test_resenc_plan_builds_the_network_dynamic_network_architectures_builds(planned, dataset, configuration,
                                                                              base_features):
    plans = plan_experiment(planned[dataset]["fingerprint"], planner="resenc_m", memory_gb=0.2,
                            base_features=base_features)
    config = plans.configuration(configuration)
    channels, classes = len(plans.channel_names), len(plans.labels)
    torch.manual_seed(0)
    reference = _reference_network(config.architecture, channels, classes, deep_supervision=True).eval()
    for module in reference.modules():                   # non-trivial norms, so a misplaced one would show
        if isinstance(module, (torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d)):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    ours = build_network(config.architecture, channels, classes).eval()
    load_nnunet_weights(ours, reference.state_dict(), "dynamic_network_architectures' network")
    divisor = np.prod(np.array(config.network.strides), axis=0)
    x = torch.randn(2, channels, *(2 * divisor))           # the smallest input with a 2-voxel bottleneck: quick
    with torch.no_grad():
        theirs = reference(x)
        ours.deep_supervision = True
        deep = ours(x)
        ours.deep_supervision = False
        final = ours(x)
    assert len(deep) == len(theirs) == config.network.num_stages - 1
    for mine, other in zip(deep, theirs):
        assert mine.shape == other.shape
        torch.testing.assert_close(mine, other, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(final, theirs[0], atol=1e-5, rtol=1e-5)


def squares(root: Path) -> RawDataset:
    """Six 40 x 40 images, each with a bright square of its own position."""
    rng = np.random.default_rng(2)
    cases = []
    for k in range(6):
        label = np.zeros((40, 40), np.uint8)
        label[5 + 3 * k:20 + 3 * k, 8:24] = 1
        image = np.clip(rng.normal(60 + 120 * label, 10), 0, 255).astype(np.uint8)
        cases.append((f"sq{k}", [MedicalImage(image, (1.0, 1.0))], MedicalImage(label, (1.0, 1.0))))
    return write_raw_dataset(root, channel_names=["grey"], labels={"background": 0, "square": 1},
                             file_ending=".png", training=cases)


def test_cli_plans_trains_and_predicts_a_resenc_network(tmp_path, last_json, capsys, one_thread):
    """``seg plan --planner resenc_m``, then ``seg train`` builds nnU-Net's ResidualEncoderUNet (deep supervision on)
    and ``seg predict`` runs the trained run; U-Mamba variants of it are refused."""
    dataset, work = squares(tmp_path / "raw"), tmp_path / "work"

    def run(*args):
        assert main([*map(str, args), "--json"]) == 0
        return last_json()

    planned = run("seg", "plan", dataset.root, "--work-dir", work, "--planner", "resenc_m", "--device", "cpu",
                  "--memory-gb", "1", "--base-features", "8")
    assert planned["planner"] == "resenc_m" and planned["configurations"]["2d"]["patch_size"] == [40, 40]
    plans = Plans.load(work / "plans.json")
    assert plans.plans_name == "nnUNetResEncUNetMPlans"
    assert plans.configuration("2d").architecture["arch_kwargs"]["n_blocks_per_stage"] == [1, 3, 4, 6]
    run("seg", "preprocess", work, "-c", "2d")
    assert main(["seg", "train", str(work), "-c", "2d", "--network", "umamba_bot", "--epochs", "1"]) == 2
    assert "is a dynamic_network_architectures.architectures.unet.ResidualEncoderUNet" in capsys.readouterr().err
    trained = run("seg", "train", work, "-c", "2d", "-f", "0", "--epochs", "1", "--iterations", "3",
                  "--runs-dir", tmp_path / "runs")
    from gnnseg.seg.unet.train import load_trained_network

    network, _, _ = load_trained_network(Path(trained["run_dir"]) / "checkpoint_latest.pth")
    assert network.class_name == "ResidualEncoderUNet"
    network.deep_supervision = True                      # what training fed the deep supervision loss
    outputs = network(torch.zeros(1, 1, 40, 40))
    assert [tuple(o.shape[2:]) for o in outputs] == [(40, 40), (20, 20), (10, 10)]
    predicted = run("seg", "predict", "-i", dataset.root / "imagesTr", "-o", tmp_path / "pred", "-m",
                    trained["run_dir"])
    assert len(predicted["predictions"]) == 6
    run("seg", "export-onnx", "--unet", trained["run_dir"], "-o", tmp_path / "export")   # ONNX takes ResEnc too
    exported = run("seg", "predict", "-i", dataset.root / "imagesTr", "-o", tmp_path / "onnx_pred", "-m",
                   tmp_path / "export")
    for torch_file, onnx_file in zip(sorted(predicted["predictions"]), sorted(exported["predictions"])):
        assert np.array_equal(read_image_2d(torch_file).array, read_image_2d(onnx_file).array)


def test_cli_refuses_an_unknown_planner(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["seg", "plan", str(tmp_path), "--planner", "resenc_s"])
    assert "invalid choice: 'resenc_s'" in capsys.readouterr().err
