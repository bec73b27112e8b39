"""A tiny end-to-end run: raw dataset -> plan -> preprocess -> train (and resume) -> predict -> metrics."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from gnnseg.cli import main
from gnnseg.seg.io import MedicalImage, read_image_2d, write_raw_dataset
from gnnseg.seg.unet.augment import AugmentationConfig
from gnnseg.seg.unet.loss import (
    DeepSupervisionLoss,
    DiceCrossEntropyLoss,
    deep_supervision_weights,
    soft_dice,
)
from gnnseg.seg.unet.pipeline import segment_image
from gnnseg.seg.unet.predict import sliding_window_logits
from gnnseg.seg.unet.sliding_window import gaussian_importance, window_starts
from gnnseg.seg.unet.splits import fold_cases, make_splits
from gnnseg.seg.unet.train import (
    TRAIN_CONFIG,
    TrainConfig,
    _as_json,
    _check_same_training,
)

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny networks: tests/conftest.py


def squares_dataset(root, count=6, size=40, seed=0):
    """Grey images with one bright square each: an easy, real segmentation problem."""
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(count):
        image = rng.normal(80, 10, size=(size, size))
        label = np.zeros((size, size), np.uint8)
        y, x = rng.integers(4, size - 16, 2)
        label[y:y + 12, x:x + 12] = 1
        image[label == 1] += 60
        cases.append((f"sq{k}", [MedicalImage(np.clip(image, 1, 255).astype(np.uint8), (1.0, 1.0))],
                      MedicalImage(label, (1.0, 1.0))))
    return write_raw_dataset(root, channel_names=["grey"], labels={"background": 0, "square": 1},
                             file_ending=".png", training=cases)


class Identity(torch.nn.Module):
    def forward(self, x):
        return x


def test_sliding_window_reconstructs_exactly_with_an_identity_network():
    image = torch.randn(3, 45, 70)
    torch.testing.assert_close(sliding_window_logits(Identity(), image, [32, 32], 3), image)
    volume = torch.randn(2, 9, 20, 33)           # smaller than the patch on one axis: padded, then cut
    out = sliding_window_logits(Identity(), volume, [16, 16, 16], 2, mirror_axes=(0, 1, 2))
    assert out.shape == volume.shape
    torch.testing.assert_close(out, volume)
    assert window_starts(100, 32, 0.5) == [0, 14, 27, 41, 54, 68]
    weights = gaussian_importance([9, 9])
    assert weights[4, 4] == 1.0 and weights.min() > 0 and weights[0, 0] < weights[2, 2]
    with pytest.raises(ValueError, match="step must be in"):
        sliding_window_logits(Identity(), image, [32, 32], 3, step=0)


class Weighting(torch.nn.Module):
    """Multiplies by a fixed, asymmetric map: mirroring the input does not mirror its output."""

    def __init__(self, weights):
        super().__init__()
        self.weights = weights

    def forward(self, x):
        return x * self.weights


def test_mirroring_averages_every_combination_of_the_axes():
    weights = torch.arange(12.0).reshape(3, 4) ** 2
    image = torch.randn(1, 3, 4)
    out = sliding_window_logits(Weighting(weights), image, [3, 4], 1, gaussian=False, mirror_axes=(0, 1))
    views = [weights, weights.flip(0), weights.flip(1), weights.flip(0, 1)]  # plain, each axis, both (nnU-Net v2)
    torch.testing.assert_close(out, image * sum(views) / 4)


class Recording(torch.nn.Module):
    """A fixed convolution that records the batch size of every forward."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(2, 3, 3, padding=1)
        self.batches = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.conv(x)


@pytest.mark.parametrize("batch_size, budget, expected", [
    (1, 1, [1] * 16),              # a budget below one window: one forward per view and window, as nnU-Net runs them
    (4, 1, [2] * 8),               # both windows in each forward, one per view
    (1, 4 * 12 ** 3, [4] * 4),     # four views of one window per forward
    (4, 10 ** 6, [16]),            # everything in one forward
    (4, 3 * 2 * 12 ** 3, [6, 6, 4]),
    (None, 8 * 12 ** 3, [8, 8]),   # by default as many windows as fit the budget with all their views: one
    (None, 2 * 8 * 12 ** 3, [16]),  # ... or both
    (None, 1, [1] * 16),
])
def test_windows_and_views_share_forwards_within_the_budget_and_the_numpy_twin_computes_the_same(
        batch_size, budget, expected):
    torch.manual_seed(0)
    network = Recording()
    volume = torch.randn(2, 12, 12, 18)                       # two windows of 12^3, 8 views each
    out = sliding_window_logits(network, volume, [12, 12, 12], 3, mirror_axes=(0, 1, 2), batch_size=batch_size,
                                stacked_voxels=budget)
    assert network.batches == expected
    windows = [volume[:, :, :, :12], volume[:, :, :, 6:]]
    with torch.no_grad():
        one_by_one = [sum(network(w[None].flip(axes)).flip(axes)[0] for axes in
                          [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]) / 8 for w in windows]
        # the numpy twin (the ONNX predictor's) batches the same way and computes the same
        from gnnseg.seg.unet.sliding_window import sliding_window_logits as numpy_windows

        network.batches = []
        in_numpy = numpy_windows(lambda batch: network(torch.from_numpy(batch)).numpy(), volume.numpy(), [12, 12, 12],
                                 3, mirror_axes=(0, 1, 2), batch_size=batch_size, stacked_voxels=budget)
    assert network.batches == expected
    np.testing.assert_allclose(in_numpy, out.numpy(), atol=1e-5)
    weights = torch.from_numpy(gaussian_importance([12, 12, 12]))
    expected_sum = torch.zeros(3, 12, 12, 18)
    counts = torch.zeros(12, 12, 18)
    for window, logits in zip((slice(0, 12), slice(6, 18)), one_by_one):
        expected_sum[..., window] += logits * weights
        counts[..., window] += weights
    torch.testing.assert_close(out, expected_sum / counts, atol=1e-5, rtol=1e-5)


def test_a_run_trained_before_a_setting_existed_resumes_with_its_default(tmp_path):
    """Runs written before the intensity shift and bfloat16 existed lack their keys; they trained without them,
    which is what the defaults mean."""
    stored = _as_json(AugmentationConfig(elastic_p=0.2))
    del stored["shift_p"], stored["shift_range"]
    (tmp_path / TRAIN_CONFIG).write_text(json.dumps({"augmentation": stored, "optimizer": "adamw", "epochs": 20}))
    trained = TrainConfig(optimizer="adamw", epochs=20, augmentation=AugmentationConfig(elastic_p=0.2))
    _check_same_training(tmp_path, trained)
    _check_same_training(tmp_path, replace(trained, epochs=40, validation_iterations=5))   # longer: the same run
    with pytest.raises(ValueError, match=r"shift_p 0\.0 -> 0\.5"):
        _check_same_training(tmp_path, replace(trained, augmentation=AugmentationConfig(elastic_p=0.2, shift_p=0.5)))
    with pytest.raises(ValueError, match=r"elastic_p 0\.2 -> 0\.0"):
        _check_same_training(tmp_path, replace(trained, augmentation=AugmentationConfig()))
    with pytest.raises(ValueError, match=r"precision 'float32' -> 'bfloat16'"):
        _check_same_training(tmp_path, replace(trained, precision="bfloat16"))
    with pytest.raises(ValueError, match=r"optimizer 'adamw' -> 'sgd'"):
        _check_same_training(tmp_path, TrainConfig(epochs=20, augmentation=AugmentationConfig(elastic_p=0.2)))


def test_loss_pieces():
    assert deep_supervision_weights(4) == pytest.approx([1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0.0])
    target = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    target[:, :, 2:6, 2:6] = 1
    perfect = torch.zeros(2, 2, 8, 8)
    perfect.scatter_(1, target, 50.0)
    assert soft_dice(perfect, target).item() == pytest.approx(1.0, abs=1e-4)
    loss = DeepSupervisionLoss(DiceCrossEntropyLoss())
    outputs = [perfect, torch.zeros(2, 2, 4, 4)]
    assert loss(outputs, target).item() == pytest.approx(DiceCrossEntropyLoss()(perfect, target).item())


def test_splits_cover_every_case_once():
    cases = [f"c{k}" for k in range(11)]
    splits = make_splits(cases, 5)
    validated = sorted(c for split in splits for c in split["val"])
    assert validated == sorted(cases)
    for split in splits:
        assert not set(split["train"]) & set(split["val"])
    with pytest.raises(ValueError, match="fold 7 does not exist"):
        fold_cases(splits, 7)
    with pytest.raises(ValueError, match="3 cases cannot fill 5 folds"):
        make_splits(cases[:3], 5)


def run_cli(last_json, *args):
    """``gnnseg ARGS --json``, which must succeed; its last stdout line, parsed."""
    assert main([*map(str, args), "--json"]) == 0
    return last_json()


def train_squares(tmp_path, last_json, *options):
    """Plan, preprocess and train fold 0 of the squares dataset for 4 short epochs with ``options``; the train JSON."""
    dataset = squares_dataset(tmp_path / "raw")
    work = tmp_path / "work"
    run = partial(run_cli, last_json)
    run("seg", "plan", dataset.root, "--work-dir", work, "--base-features", "8", "--device", "cpu", "--memory-gb", "1")
    run("seg", "preprocess", work, "-c", "2d")
    return run("seg", "train", work, "-c", "2d", "-f", "0", "--epochs", "4", "--iterations", "8",
               "--runs-dir", tmp_path / "runs", *options)


def test_plan_preprocess_train_resume_predict_metrics(tmp_path, capsys, last_json, monkeypatch):
    dataset = squares_dataset(tmp_path / "raw")
    work = tmp_path / "work"

    run = partial(run_cli, last_json)

    planned = run("seg", "plan", dataset.root, "--work-dir", work, "--base-features", "8", "--device", "cpu",
                  "--memory-gb", "1")
    assert planned["configurations"]["2d"]["patch_size"] == [40, 40]
    assert run("seg", "preprocess", work, "-c", "2d")["cases"] == 6
    augmenting = ["--elastic", "0.2", "--intensity-shift", "0.5", "--label-intensity-shift", "0.3", "--no-mirroring"]
    first = run("seg", "train", work, "-c", "2d", "-f", "0", "--epochs", "2", "--iterations", "8",
                "--runs-dir", tmp_path / "runs", *augmenting)
    run_dir = first["run_dir"]
    augmentation = json.loads((Path(run_dir) / "train_config.json").read_text())["augmentation"]
    assert (augmentation["elastic_p"], augmentation["shift_p"], augmentation["label_shift_p"],
            augmentation["mirror_axes"]) == (0.2, 0.5, 0.3, [])
    with pytest.raises(SystemExit):
        main(["seg", "train", str(work), "--elastic", "1.5"])
    assert "probability must be a number in [0, 1]" in capsys.readouterr().err
    resumed = run("seg", "train", work, "-c", "2d", "-f", "0", "--epochs", "5", "--iterations", "8",
                  "--resume", run_dir, *augmenting)
    for wrong in (["--resume", str(tmp_path / "nowhere")], ["--resume", run_dir, "-f", "1", *augmenting],
                  ["--resume", run_dir, "-f", "0"]):                     # the last one would mirror again
        assert main(["seg", "train", str(work), "-c", "2d", "--epochs", "6", "--iterations", "8", *wrong]) == 2  # named
    assert main(["seg", "train", str(work), "-c", "2d", "--epochs", "6", "--resume", run_dir, *augmenting]) == 2
    refusals = capsys.readouterr().err
    assert "nowhere" in refusals and "not '2d' fold 1" in refusals
    assert "other training settings" in refusals and "mirror_axes [] -> None" in refusals
    assert "iterations_per_epoch 8 -> 250" in refusals                # another schedule is another run
    state = torch.load(f"{run_dir}/checkpoint_latest.pth", weights_only=True)
    assert state["epoch"] == 5 and len(state["log"]["train_loss"]) == 5
    assert state["log"]["train_loss"][-1] < state["log"]["train_loss"][0]
    assert resumed["validation"]["mean_dice"]["square"] > 0.8

    predicted = run("seg", "predict", "-i", dataset.root / "imagesTr", "-o", tmp_path / "pred", "-m", run_dir)
    assert len(predicted["predictions"]) == 6
    mask = read_image_2d(predicted["predictions"][0]).array
    assert mask.shape == (40, 40) and set(np.unique(mask)) <= {0, 1}
    scores = run("seg", "metrics", "--pred", tmp_path / "pred", "--gt", dataset.root / "labelsTr")
    assert scores["cases"] == 6 and scores["mean"]["1"]["dice"] > 0.8
    assert (tmp_path / "runs" / "seg-train").exists() and (tmp_path / "pred").exists()
    assert main(["seg", "predict", "-i", str(dataset.root / "imagesTr"), "-o", str(tmp_path / "pred"),
                 "-m", run_dir]) == 2      # refuses to overwrite earlier predictions
    assert predicted["mirror_axes"] == []                 # mirroring is the default, but the run was trained without
    halved = run("seg", "predict", "-i", dataset.root / "imagesTr", "-o", tmp_path / "bf16", "-m", run_dir,
                 "--precision", "bfloat16")
    assert halved["precision"] == "bfloat16" and predicted["precision"] == "float32"
    for fast, exact in zip(halved["predictions"], predicted["predictions"], strict=True):
        assert np.mean(read_image_2d(fast).array == read_image_2d(exact).array) > 0.98

    def with_an_island(*args, **kwargs):                  # the network's labels plus a stray blob in a corner
        image, probabilities = segment_image(*args, **kwargs)
        image.array[:3, :3] = 1
        return image, probabilities

    monkeypatch.setattr("gnnseg.seg.unet.pipeline.segment_image", with_an_island)
    largest = run("seg", "predict", "-i", dataset.root / "imagesTr", "-o", tmp_path / "largest", "-m", run_dir,
                  "--keep-largest", "1")
    assert largest["keep_largest"] == [1]
    for path, raw in zip(largest["predictions"], predicted["predictions"], strict=True):
        kept = read_image_2d(path).array
        assert kept[:3, :3].max() == 0 and ndimage.label(kept == 1)[1] == 1
        assert np.array_equal(kept, read_image_2d(raw).array)   # the island gone, the rest as predicted
    assert main(["seg", "predict", "-i", str(dataset.root / "imagesTr"), "-o", str(tmp_path / "other"),
                 "-m", run_dir, "--keep-largest", "7"]) == 2
    assert "not foreground labels of this model" in capsys.readouterr().err


def test_bfloat16_training_learns_and_keeps_float32_weights(tmp_path, last_json):
    from gnnseg.seg.unet.precision import autocast
    from gnnseg.seg.unet.train import as_float32

    conv = torch.nn.Conv2d(1, 2, 3)
    with autocast("bfloat16"):
        logits = conv(torch.randn(1, 1, 8, 8))
    assert logits.dtype == torch.bfloat16 and as_float32([logits])[0].dtype == torch.float32
    with autocast("float32"):
        assert conv(torch.randn(1, 1, 8, 8)).dtype == torch.float32

    trained = train_squares(tmp_path, last_json, "--precision", "bfloat16")
    run_dir = Path(trained["run_dir"])
    assert json.loads((run_dir / "train_config.json").read_text())["precision"] == "bfloat16"
    state = torch.load(run_dir / "checkpoint_latest.pth", weights_only=True)
    assert {tensor.dtype for tensor in state["network"].values() if tensor.is_floating_point()} == {torch.float32}
    assert state["log"]["train_loss"][-1] < state["log"]["train_loss"][0]
    assert trained["validation"]["mean_dice"]["square"] > 0.8


def test_guards_against_misuse(tmp_path):
    from gnnseg.seg.unet.splits import load_or_create_splits
    from gnnseg.seg.unet.train import TrainConfig

    cases = [f"c{k}" for k in range(6)]
    load_or_create_splits(tmp_path / "splits.json", cases)
    with pytest.raises(ValueError, match="made for other cases .*1 new"):
        load_or_create_splits(tmp_path / "splits.json", cases + ["c6"])
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)
    assert (TrainConfig(optimizer="adamw").lr, TrainConfig().lr) == (1e-3, 0.01)
    with pytest.raises(ValueError, match="precision must be one of .*'float16'"):
        TrainConfig(precision="float16")


def test_rotation_is_a_rotation_on_non_square_patches():
    from gnnseg.seg.unet.augment import AugmentationConfig, spatial_transform

    image = torch.zeros(1, 1, 32, 64)
    image[0, 0, 12:20, 28:36] = 1.0                                      # an 8 x 8 square in the centre
    config = AugmentationConfig(rotation_p=1.0, scale_p=0.0, rotation_max_degrees=90.0)
    rotated, _ = spatial_transform(image, image.long(), config, torch.Generator().manual_seed(0))
    assert rotated.sum().item() == pytest.approx(64, rel=0.1)            # area kept: no stretching


def test_replanning_needs_overwrite_and_redoes_stale_preprocessing(tmp_path, capsys):
    dataset = squares_dataset(tmp_path / "raw")
    work = tmp_path / "work"
    plan = ["seg", "plan", str(dataset.root), "--work-dir", str(work), "--device", "cpu", "--memory-gb", "1"]
    assert main([*plan, "--base-features", "8"]) == 0
    assert main(["seg", "preprocess", str(work), "-c", "2d"]) == 0
    marker = work / "preprocessed" / "2d" / f"{dataset.case_ids()[0]}.json"
    first = marker.stat().st_mtime_ns
    assert main(["seg", "preprocess", str(work), "-c", "2d"]) == 0
    assert marker.stat().st_mtime_ns == first                     # same plan: done cases are kept
    assert main([*plan, "--base-features", "16"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*plan, "--base-features", "16", "--overwrite"]) == 0
    assert main(["seg", "preprocess", str(work), "-c", "2d"]) == 0
    assert marker.stat().st_mtime_ns > first                      # new plan: the case was redone


def test_a_volume_stored_otherwise_is_predicted_in_the_training_axis_order(tmp_path, monkeypatch):
    """The fingerprint and plans record where the training volumes' axes point; predict_image hands the network
    an LAS scan in RAS order (here a stand-in that labels the first half of the stored x axis, i.e. the
    patient's right in RAS) and puts the labels back on the scan's own grid."""
    from gnnseg.seg.unet import pipeline
    from gnnseg.seg.unet.fingerprint import extract_fingerprint
    from gnnseg.seg.unet.planner import plan_experiment

    ras = np.diag([2.0, 2.0, 3.0, 1.0])
    rng = np.random.default_rng(0)
    volumes = [rng.normal(size=(6, 8, 10)).astype(np.float32) for _ in range(2)]
    training = [(f"c{k}", [MedicalImage(v, (3.0, 2.0, 2.0), ras)],
                 MedicalImage((v > 1).astype(np.uint8), (3.0, 2.0, 2.0), ras)) for k, v in enumerate(volumes)]
    dataset = write_raw_dataset(tmp_path / "raw", channel_names=["CT"], labels={"background": 0, "organ": 1},
                                file_ending=".nii.gz", training=training)
    plans = plan_experiment(extract_fingerprint(dataset))
    assert plans.axis_codes == "RAS"

    def first_half_of_x(network, data, spacing, plans, configuration, **options):
        labels = np.zeros(data.shape[1:], np.int16)
        labels[..., : data.shape[-1] // 2] = 1
        return labels, np.stack([1 - labels, labels]).astype(np.float32)

    monkeypatch.setattr(pipeline, "predict_case", first_half_of_x)
    las = np.diag([-2.0, 2.0, 3.0, 1.0])
    las[0, 3] = 18.0                                   # the same grid as RAS, x stored from the other side
    scan = MedicalImage(volumes[0][:, :, ::-1].copy(), (3.0, 2.0, 2.0), las)
    labels = pipeline.predict_image(None, [scan], plans, "3d_fullres")
    np.testing.assert_allclose(labels.affine, las)
    assert labels.array[..., 5:].all() and not labels.array[..., :5].any()   # the RAS first half, stored last
    _, probabilities = pipeline.segment_image(None, [scan], plans, "3d_fullres")
    np.testing.assert_array_equal(probabilities[1], labels.array)       # the probabilities are put back as well
    labels_only, nothing = pipeline.segment_image(None, [scan], plans, "3d_fullres", with_probabilities=False)
    assert nothing is None and np.array_equal(labels_only.array, labels.array)   # not put back when not wanted
    as_trained = pipeline.predict_image(None, [MedicalImage(volumes[0], (3.0, 2.0, 2.0), ras)], plans, "3d_fullres")
    assert as_trained.array[..., :5].all() and not as_trained.array[..., 5:].any()
