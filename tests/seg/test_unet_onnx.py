"""U-Net ONNX export: the numpy + onnxruntime predictor gives the PyTorch predictor's probabilities and labels (2D and
3D configurations, mirroring on and off, folds averaged), preprocesses exactly as gnnseg does, never imports torch,
and refuses bad folders and cases by name."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[test]')")
pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[test]')")

import onnx

from gnnseg.cli import main
from gnnseg.core.checkpoint import save_checkpoint
from gnnseg.seg.io import ImageFormatError, MedicalImage, read_any, write_raw_dataset
from gnnseg.seg.io.nifti import write_nifti
from gnnseg.seg.unet.case_preprocessing import preprocess_case
from gnnseg.seg.unet.fingerprint import extract_fingerprint
from gnnseg.seg.unet.inference_preprocessing import preprocess_for_prediction
from gnnseg.seg.unet.onnx_export import FullResolutionLogits, export_unet_folders, export_unet_onnx
from gnnseg.seg.unet.onnx_predictor import OnnxUNet, in_order, is_unet_onnx_export, predict_onnx_folder
from gnnseg.seg.unet.pipeline import predict_folder
from gnnseg.seg.unet.planner import plan_experiment
from gnnseg.seg.unet.predict import predict_case
from gnnseg.seg.unet.train import CHECKPOINT_FORMAT, build_network

PROBABILITY_TOLERANCE = 1e-4
CONFIGURATIONS = ("2d", "3d_fullres")


pytestmark = pytest.mark.usefixtures("one_thread")   # tiny networks: tests/conftest.py


def two_channel_case(shape, spacing, rng):
    """A CT and an MR channel inside a zero border (so cropping and masked z-scores have work), x the coarse axis."""
    ct, mr = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    inner = tuple(slice(1, s - 1) for s in shape)
    ct[inner] = rng.normal(40, 30, size=[s - 2 for s in shape])
    mr[inner] = rng.normal(100, 20, size=[s - 2 for s in shape])
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])   # array axes (z, y, x) as nibabel's (k, j, i)
    return [MedicalImage(ct, spacing, affine), MedicalImage(mr, spacing, affine)], \
        MedicalImage((ct > 60).astype(np.uint8), spacing, affine)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three training volumes whose last axis is the coarse one (so the plans transpose), and two test cases at
    other spacings (so prediction resamples both ways), one of them smaller than the 3D patch."""
    root = tmp_path_factory.mktemp("unet_onnx")
    rng = np.random.default_rng(0)
    training = [(f"c{k}", *two_channel_case((30, 26, 8), spacing, rng))
                for k, spacing in enumerate([(1.0, 1.0, 3.0), (1.2, 1.2, 2.5), (0.9, 0.9, 3.5)])]
    raw = write_raw_dataset(root / "raw", channel_names=["CT", "MR"], labels={"background": 0, "bright": 1},
                            file_ending=".nii.gz", training=training)
    plans = plan_experiment(extract_fingerprint(raw), memory_gb=0.05, device="cpu", base_features=4)
    assert plans.transpose_forward == (2, 0, 1) and plans.normalization_schemes == ("ct", "zscore")
    assert plans.use_mask_for_norm == (False, True)
    cases = {"t0": two_channel_case((28, 33, 7), (1.1, 0.8, 4.0), rng)[0],
             "t1": two_channel_case((20, 18, 5), (1.0, 1.3, 3.0), rng)[0]}
    inputs = root / "imagesTs"
    inputs.mkdir()
    for case_id, channels in cases.items():
        for index, channel in enumerate(channels):
            write_nifti(channel, inputs / f"{case_id}_{index:04d}.nii.gz")
    return {"root": root, "plans": plans, "cases": cases, "inputs": inputs}


def random_network(plans, configuration, seed):
    """The configuration's U-Net (with deep-supervision heads, as training builds it) with random weights, its norm
    layers moved off their initial values so that every parameter carries signal."""
    torch.manual_seed(seed)
    network = build_network(plans, configuration, deep_supervision=True)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if "norm" in name:
                parameter.add_(0.2 * torch.randn_like(parameter))
    return network.eval()


@pytest.fixture(scope="module")
def exports(dataset, tmp_path_factory):
    """Per configuration: a random network and its export (every axis may be mirrored)."""
    made = {}
    for configuration in CONFIGURATIONS:
        network = random_network(dataset["plans"], configuration, seed=1)
        folder = tmp_path_factory.mktemp("exports") / configuration
        dims = len(dataset["plans"].configuration(configuration).patch_size)
        export_unet_onnx(network, dataset["plans"], configuration, folder, mirror_axes=range(dims))
        made[configuration] = (network, folder)
    return made


def stacked(channels):
    return np.stack([channel.array for channel in channels]), channels[0].spacing


def assert_same_segmentation(onnx_labels, onnx_probabilities, torch_labels, torch_probabilities):
    """Probabilities within the tolerance; labels identical wherever the two best classes are further apart than it
    (a near-tie may go either way) and on at least 99.9% of the voxels."""
    assert onnx_probabilities.shape == torch_probabilities.shape
    np.testing.assert_allclose(onnx_probabilities, torch_probabilities, atol=PROBABILITY_TOLERANCE, rtol=0)
    top_two = np.sort(torch_probabilities, axis=0)[-2:]
    decided = top_two[1] - top_two[0] > 2 * PROBABILITY_TOLERANCE
    assert np.array_equal(onnx_labels[decided], torch_labels[decided])
    assert np.mean(onnx_labels == torch_labels) >= 0.999


def test_the_graph_has_a_dynamic_batch_and_the_plans_patch(dataset, exports):
    _, folder = exports["3d_fullres"]
    (image,) = onnx.load(folder / "network.onnx").graph.input
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    assert [d.dim_value for d in dims[1:]] == [2, *dataset["plans"].configuration("3d_fullres").patch_size]
    settings = json.loads((folder / "inference.json").read_text())
    assert settings["graphs"] == ["network.onnx"] and settings["mirror_axes"] == [0, 1, 2]
    assert settings["labels"] == {"background": 0, "bright": 1} and settings["step_size"] == 0.5
    assert [n["scheme"] for n in settings["normalization"]] == ["ct", "zscore"]
    assert settings["verified_max_abs_difference"]["network.onnx"] < 1e-3
    assert json.loads((folder / "dataset.json").read_text())["file_ending"] == ".nii.gz"


def test_numpy_preprocessing_gives_gnnseg_arrays(dataset):
    plans = dataset["plans"]
    for channels in dataset["cases"].values():
        data, spacing = stacked(channels)
        for configuration in CONFIGURATIONS:
            ours, geometry = preprocess_for_prediction(data, spacing, plans, configuration)
            theirs, _, properties = preprocess_case(data, None, spacing, plans, configuration)
            assert np.array_equal(ours, theirs) and ours.dtype == theirs.dtype
            assert list(geometry.spacing) == properties["spacing"]
            assert [list(b) for b in geometry.box] == properties["bbox"]
            assert list(geometry.shape_after_crop) == properties["shape_after_crop"]
            assert list(geometry.original_shape) == properties["original_shape"]
            assert ours.shape[1:] != data.shape[1:]              # resampled (and transposed)


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
@pytest.mark.parametrize("mirror", [False, True])
def test_onnx_predictor_matches_pytorch(dataset, exports, configuration, mirror):
    network, folder = exports[configuration]
    model = OnnxUNet(folder, threads=1)
    dims = len(model.patch_size)
    assert model.mirror_axes(mirror) == (tuple(range(dims)) if mirror else ())
    assert model.mirror_axes(None) == ()                          # gnnseg's pipeline mirrors only when told
    for channels in dataset["cases"].values():
        data, spacing = stacked(channels)
        torch_labels, torch_probabilities = predict_case(FullResolutionLogits(network), data, spacing,
                                                         dataset["plans"], configuration,
                                                         mirror_axes=model.mirror_axes(mirror))
        labels, probabilities = model.predict_case(data, spacing, mirror=mirror, with_probabilities=True)
        assert labels.shape == data.shape[1:] and labels.dtype == np.int16
        assert_same_segmentation(labels, probabilities, torch_labels, torch_probabilities)
        assert 0.05 < np.mean(labels == 1) < 0.95               # a random network still segments something
        labels_only, none = model.predict_case(data, spacing, mirror=mirror)
        assert none is None and np.array_equal(labels_only, labels)   # class by class: the same argmax


class MeanOfLogits(torch.nn.Module):
    """The PyTorch side of a fold ensemble: the folds' full-resolution logits averaged (nnU-Net v2's rule)."""

    def __init__(self, networks):
        super().__init__()
        self.networks = torch.nn.ModuleList(networks)

    def forward(self, x):
        return torch.stack([network(x)[0] for network in self.networks]).mean(0)


def test_folds_are_one_graph_each_and_their_logits_are_averaged(dataset, tmp_path):
    plans = dataset["plans"]
    networks = [random_network(plans, "3d_fullres", seed) for seed in (2, 3)]
    result = export_unet_onnx(networks, plans, "3d_fullres", tmp_path / "folds", mirror_axes=[1, 2], folds=[3, 4])
    assert result["graphs"] == ["fold_3.onnx", "fold_4.onnx"]
    model = OnnxUNet(tmp_path / "folds", threads=1)
    data, spacing = stacked(dataset["cases"]["t0"])
    labels, probabilities = model.predict_case(data, spacing, mirror=True, with_probabilities=True)
    torch_labels, torch_probabilities = predict_case(MeanOfLogits(networks), data, spacing, plans, "3d_fullres",
                                                     mirror_axes=(1, 2))
    assert_same_segmentation(labels, probabilities, torch_labels, torch_probabilities)
    first_fold_alone = predict_case(FullResolutionLogits(networks[0]), data, spacing, plans, "3d_fullres",
                                    mirror_axes=(1, 2))[1]
    assert np.abs(probabilities - first_fold_alone).max() > 0.01             # both graphs count


def write_run(folder, network, plans, configuration, mirror_axes, fold=0):
    """A run folder as `seg train` leaves it, for a network that was not trained: checkpoint and train config."""
    folder.mkdir(parents=True)
    save_checkpoint({"format": CHECKPOINT_FORMAT, "network": network.state_dict(), "plans": plans.to_json(),
                     "configuration": configuration, "deep_supervision": True, "network_kind": "unet", "fold": fold,
                     "epoch": 1}, folder / "checkpoint_final.pth")
    (folder / "train_config.json").write_text(json.dumps({"fold": fold, "configuration": configuration,
                                                          "augmentation": {"mirror_axes": mirror_axes}}))
    return folder


@pytest.fixture(scope="module")
def three_folds(dataset, tmp_path_factory):
    """An export of three random 3D networks as folds 0-2."""
    plans, folder = dataset["plans"], tmp_path_factory.mktemp("three_folds") / "export"
    networks = [random_network(plans, "3d_fullres", seed) for seed in (2, 3, 4)]
    export_unet_onnx(networks, plans, "3d_fullres", folder, mirror_axes=[1, 2], folds=[0, 1, 2])
    return folder


def test_folds_side_by_side_give_the_logits_of_folds_one_after_another(dataset, three_folds):
    in_turn = OnnxUNet(three_folds, threads=1)
    side_by_side = OnnxUNet(three_folds, threads=2)
    assert (in_turn.side_by_side, side_by_side.side_by_side, OnnxUNet(three_folds, threads=8).side_by_side) == (1, 2, 2)
    data, spacing = stacked(dataset["cases"]["t0"])
    preprocessed, _ = in_turn.cases.preprocess(data, spacing)
    expected = in_turn.logits(preprocessed, mirror=True)
    assert np.array_equal(side_by_side.logits(preprocessed, mirror=True), expected)   # summed in fold order
    reordered = OnnxUNet(three_folds, threads=1)
    reordered.sessions = [reordered.sessions[k] for k in (2, 0, 1)]
    assert not np.array_equal(reordered.logits(preprocessed, mirror=True), expected)  # which the order can change


def test_in_order_yields_each_result_in_turn_and_never_runs_more_than_asked():
    running, most = [], [0]
    lock = threading.Lock()
    first_three = threading.Barrier(3, timeout=30)     # broken unless the first three run at once

    def work(item):
        with lock:
            running.append(item)
            most[0] = max(most[0], len(running))
        if item < 3:
            first_three.wait()
        time.sleep(0.05 if item % 2 == 0 else 0.01)     # later items often finish first
        with lock:
            running.remove(item)
        return np.full(2, item)

    assert [int(r[0]) for r in in_order(work, range(7), 3)] == list(range(7))
    assert most[0] == 3
    assert [int(r[0]) for r in in_order(lambda item: np.full(2, item), range(3), 1)] == [0, 1, 2]


def test_when_one_item_fails_in_order_raises_its_error_and_stops_the_others_early():
    stop = threading.Event()
    steps = []

    def work(item):
        if item == 0:
            time.sleep(0.1)
            raise RuntimeError("fold 0 failed")
        for step in range(200):                 # 10 s unless told to stop
            if stop.is_set():
                raise RuntimeError("stopped")
            steps.append(step)
            time.sleep(0.05)
        return np.zeros(1)

    began = time.perf_counter()
    with pytest.raises(RuntimeError, match="fold 0 failed"):
        list(in_order(work, range(2), 2, stop=stop))
    assert stop.is_set() and time.perf_counter() - began < 5 and len(steps) < 100


def test_a_failing_fold_ends_the_prediction_with_its_own_error(dataset, three_folds, monkeypatch):
    model = OnnxUNet(three_folds, threads=2)
    assert model.side_by_side == 2
    original = model.window_logits

    def window_logits(fold, batch):
        if fold == 0:
            raise RuntimeError("fold 0's session failed")
        return original(fold, batch)

    monkeypatch.setattr(model, "window_logits", window_logits)
    data, spacing = stacked(dataset["cases"]["t0"])
    with pytest.raises(RuntimeError, match="fold 0's session failed"):
        model.predict_case(data, spacing, mirror=True)


def test_a_thread_count_below_one_is_refused(exports):
    with pytest.raises(ValueError, match="threads must be at least 1, got 0"):
        OnnxUNet(exports["2d"][1], threads=0)


def test_runs_of_several_folds_export_one_graph_each_and_must_agree(dataset, tmp_path):
    plans = dataset["plans"]
    runs = [write_run(tmp_path / f"run{fold}", random_network(plans, "2d", seed=fold), plans, "2d", [0, 1], fold=fold)
            for fold in (0, 1)]
    result = export_unet_folders(runs, tmp_path / "folds")
    assert result["graphs"] == ["fold_0.onnx", "fold_1.onnx"] and result["mirror_axes"] == [0, 1]
    settings = json.loads((tmp_path / "folds" / "inference.json").read_text())
    assert settings["source"]["run_dirs"] == [str(run.resolve()) for run in runs]
    assert OnnxUNet(tmp_path / "folds", threads=1).predict_case(*stacked(dataset["cases"]["t1"]))[0].shape == \
        dataset["cases"]["t1"][0].array.shape
    other = write_run(tmp_path / "other", random_network(plans, "2d", seed=3), plans, "2d", [1], fold=2)
    with pytest.raises(ValueError, match="other plans, configuration or mirroring"):
        export_unet_folders([runs[0], other], tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()


def test_a_run_exported_by_the_command_predicts_the_pipelines_files(dataset, tmp_path, last_json):
    plans = dataset["plans"]
    run = write_run(tmp_path / "run", random_network(plans, "3d_fullres", seed=5), plans, "3d_fullres", [1, 2])
    assert main(["seg", "export-onnx", "--unet", str(run), "-o", str(tmp_path / "export"), "--json"]) == 0
    exported = last_json()
    assert exported["mirror_axes"] == [1, 2] and exported["graphs"] == ["network.onnx"]
    assert is_unet_onnx_export(tmp_path / "export")
    settings = json.loads((tmp_path / "export" / "inference.json").read_text())
    assert settings["folds"] == [0] and settings["source"]["checkpoint"] == "checkpoint_final.pth"
    ours = predict_onnx_folder(tmp_path / "export", dataset["inputs"], tmp_path / "onnx", mirror=True)
    theirs = predict_folder(run, dataset["inputs"], tmp_path / "torch", mirror=True, device="cpu")
    assert ours["mirror_axes"] == theirs["mirror_axes"] == [1, 2]
    assert [Path(p).name for p in ours["predictions"]] == [Path(p).name for p in theirs["predictions"]] == \
        ["t0.nii.gz", "t1.nii.gz"]
    for mine, reference in zip(ours["predictions"], theirs["predictions"]):
        mine, reference = read_any(mine), read_any(reference)
        np.testing.assert_allclose(mine.affine, reference.affine)
        np.testing.assert_allclose(mine.spacing, reference.spacing)
        assert mine.array.shape == reference.array.shape
        assert np.mean(mine.array == reference.array) >= 0.999
    with pytest.raises(FileExistsError, match="2 outputs already exist"):
        predict_onnx_folder(tmp_path / "export", dataset["inputs"], tmp_path / "onnx")


WITHOUT_TORCH = (
    "import sys, importlib.abc\n"
    "class NoTorch(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ImportError('torch is not importable in this test')\n"
    "sys.meta_path.insert(0, NoTorch())\n"
)
"""A script's first lines that make torch unimportable in its process."""


def test_the_onnx_predictor_runs_where_torch_cannot_be_imported(dataset, exports, tmp_path):
    _, folder = exports["2d"]
    script = WITHOUT_TORCH + (
        "from gnnseg.seg.unet.onnx_predictor import predict_onnx_folder\n"
        "done = predict_onnx_folder(sys.argv[1], sys.argv[2], sys.argv[3], mirror=True, threads=1)\n"
        "assert len(done['predictions']) == 2, done\n"
        "assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')], 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(folder), str(dataset["inputs"]), str(tmp_path / "out")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    written = read_any(tmp_path / "out" / "t0.nii.gz")
    assert written.array.shape == dataset["cases"]["t0"][0].array.shape


def test_seg_predict_runs_an_export_without_torch(dataset, exports, tmp_path):
    _, folder = exports["2d"]
    script = WITHOUT_TORCH + (
        "from gnnseg.cli import main\n"
        "code = main(['seg', 'predict', '-m', sys.argv[1], '-i', sys.argv[2], '-o', sys.argv[3], '--disable-tta',\n"
        "             '--precision', 'float32'])\n"
        "assert code == 0, code\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(folder), str(dataset["inputs"]), str(tmp_path / "out")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "t0.nii.gz").is_file()
    assert main(["seg", "predict", "-m", str(folder), "-i", str(dataset["inputs"]), "-o", str(tmp_path / "again"),
                 "--folds", "0"]) == 2
    assert not (tmp_path / "again").exists()


def test_an_export_into_a_folder_that_holds_anything_is_refused_untouched(dataset, exports, tmp_path):
    network, _ = exports["2d"]
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        export_unet_onnx(network, dataset["plans"], "2d", target, mirror_axes=[0, 1])
    assert [p.name for p in target.iterdir()] == ["notes.txt"] and (target / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]           # no temporary folder left behind
    assert main(["seg", "export-onnx", "--unet", str(tmp_path / "no_run"), "-o", str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()


def test_a_network_that_does_not_fit_the_plans_is_refused_leaving_nothing(dataset, exports, tmp_path):
    network_2d, _ = exports["2d"]
    with pytest.raises(ValueError, match=r"does not take a patch \(1, 2, 6, 28, 24\)"):
        export_unet_onnx(network_2d, dataset["plans"], "3d_fullres", tmp_path / "wrong", mirror_axes=[0])
    with pytest.raises(ValueError, match="mirror_axes \\[0, 3\\] must be distinct axes of the 3D patch"):
        export_unet_onnx(network_2d, dataset["plans"], "3d_fullres", tmp_path / "wrong", mirror_axes=[0, 3])
    assert list(tmp_path.iterdir()) == []


TORCH_FREE_MODULES = ("gnnseg.seg.unet.onnx_predictor", "gnnseg.seg.unet.case_recipes",
                      "gnnseg.seg.unet.sliding_window", "gnnseg.seg.unet.inference_preprocessing",
                      "gnnseg.seg.unet.case_inputs",
                      "gnnseg.seg.unet.plans", "gnnseg.seg.unet.resampling", "gnnseg.seg.unet.cropping",
                      "gnnseg.seg.unet.nnunet_plans", "gnnseg.seg.unet.nnunet_preprocessing",
                      "gnnseg.seg.unet.nnunet_resampling")


def test_the_onnx_predictors_modules_import_no_torch():
    """What the ONNX predictor stands on stays torch-free (the package's __init__ loads the network lazily)."""
    script = ("import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in TORCH_FREE_MODULES)
              + "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3])")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"importing the ONNX predictor's modules loaded {result.stdout.strip()}"


def test_an_incomplete_export_is_named(exports, tmp_path):
    _, folder = exports["2d"]
    for missing in ("network.onnx", "inference.json"):
        broken = tmp_path / missing
        shutil.copytree(folder, broken)
        (broken / missing).unlink()
        with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
            OnnxUNet(broken)
    assert not is_unet_onnx_export(tmp_path / "inference.json") and is_unet_onnx_export(folder)


def test_a_case_with_the_wrong_number_of_channels_is_refused(dataset, exports, tmp_path):
    _, folder = exports["3d_fullres"]
    model = OnnxUNet(folder, threads=1)
    data, spacing = stacked(dataset["cases"]["t0"])
    with pytest.raises(ValueError, match="data has 1 channels, the plans expect 2"):
        model.predict_case(data[:1], spacing)
    inputs = tmp_path / "one_channel"
    inputs.mkdir()
    shutil.copy(dataset["inputs"] / "t0_0000.nii.gz", inputs)
    with pytest.raises(ImageFormatError, match=r"\{'t0': 1\} do not have the 2 channel files"):
        predict_onnx_folder(folder, inputs, tmp_path / "out")
    assert not (tmp_path / "out").exists()
