"""The challenge runner, its scoring and the converter: synthetic cases with known answers, and our real data."""

from __future__ import annotations

import numpy as np
import pytest

from gnnseg.cli import main
from gnnseg.seg.io.challenge_npz import read_challenge_npz
from gnnseg.seg.sam.challenge import (
    evaluate_cases,
    predict_cases,
    score_case,
    write_cases,
)
from gnnseg.seg.sam.shipped import ModelChoice
from tests.conftest import require_dataset

FAST = ModelChoice(checkpoint="lite_medsam_fast")


def _disc(shape: tuple[int, int], centre: tuple[int, int], radius: int) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def _write_synthetic_cases(folder):
    (folder / "imgs").mkdir(parents=True)
    (folder / "gts").mkdir()
    disc = _disc((96, 128), (40, 60), 18)
    image = np.where(disc[..., None], 220, 30).astype(np.uint8).repeat(3, axis=2)
    np.savez(folder / "imgs" / "2DBox_disc.npz", imgs=image, boxes=np.array([[37, 17, 83, 63]]))
    np.savez(folder / "gts" / "2DBox_disc.npz", gts=disc.astype(np.uint16))
    ball = np.stack([_disc((64, 64), (32, 30), r) for r in (6, 10, 12, 12, 10, 6)])
    volume = np.where(ball, 200, 40).astype(np.uint8)
    spacing = np.array([2.0, 1.0, 1.0])
    np.savez(folder / "imgs" / "3DBox_ball.npz", imgs=volume, boxes=np.array([[16, 18, 0, 44, 46, 5]]),
             spacing=spacing)
    np.savez(folder / "gts" / "3DBox_ball.npz", gts=ball.astype(np.uint16), spacing=spacing)


def test_perfect_and_missing_predictions_score_one_and_zero(tmp_path):
    _write_synthetic_cases(tmp_path)
    (tmp_path / "pred").mkdir()
    with np.load(tmp_path / "gts" / "2DBox_disc.npz") as arrays:
        np.savez(tmp_path / "pred" / "2DBox_disc.npz", segs=arrays["gts"])
    result = evaluate_cases(tmp_path / "pred", tmp_path / "gts")
    assert result["per_case"]["2DBox_disc"] == {"dsc": 1.0, "nsd": 1.0, "labels": 1}
    assert result["missing"] == ["3DBox_ball.npz"] and result["per_case"]["3DBox_ball"]["dsc"] == 0.0
    assert result["dsc_mean"] == pytest.approx(0.5)


def test_a_shift_within_the_tolerance_keeps_nsd_and_costs_dice():
    truth = np.zeros((40, 40), np.uint16)
    truth[10:30, 10:30] = 1
    shifted = np.roll(truth, 1, axis=1)
    scores = score_case(shifted, truth)
    assert scores["nsd"] == pytest.approx(1.0) and scores["dsc"] == pytest.approx(0.95)
    with pytest.raises(ValueError, match="shape"):
        score_case(shifted[:30], truth)
    with pytest.raises(ValueError, match="no labelled object"):
        score_case(shifted, np.zeros_like(truth))


def test_runner_segments_synthetic_2d_and_3d_cases_and_never_overwrites(tmp_path):
    _write_synthetic_cases(tmp_path)
    summary = predict_cases(tmp_path / "imgs", tmp_path / "pred", choice=FAST, show_progress=False)
    assert summary["cases"] == 2 and set(summary["seconds"]) == {"2DBox_disc", "3DBox_ball"}
    scores = evaluate_cases(tmp_path / "pred", tmp_path / "gts")["per_case"]
    assert scores["2DBox_disc"]["dsc"] > 0.9 and scores["3DBox_ball"]["dsc"] > 0.8, scores
    with pytest.raises(FileExistsError, match="exist already"):
        predict_cases(tmp_path / "imgs", tmp_path / "pred", choice=FAST)
    with pytest.raises(FileNotFoundError, match="no .npz cases"):
        predict_cases(tmp_path, tmp_path / "other")


def test_runner_averages_mirrored_copies_and_refuses_an_unknown_augmentation_first(tmp_path):
    _write_synthetic_cases(tmp_path)
    with pytest.raises(ValueError, match="unknown test-time augmentation 'rotate'"):
        predict_cases(tmp_path / "imgs", tmp_path / "refused",
                      choice=ModelChoice(checkpoint="lite_medsam_fast", augmentation="rotate"))
    with pytest.raises(ValueError, match="zoom context must be a finite number >= 0"):
        predict_cases(tmp_path / "imgs", tmp_path / "refused",
                      choice=ModelChoice(checkpoint="lite_medsam_fast", zoom=float("inf")))
    assert not (tmp_path / "refused").exists()
    assert main(["seg", "lite", "predict", "--input", str(tmp_path / "imgs"), "--output", str(tmp_path / "pred"),
                 "--checkpoint", "lite_medsam_fast", "--tta", "flip", "--json"]) == 0
    scores = evaluate_cases(tmp_path / "pred", tmp_path / "gts")["per_case"]
    assert scores["2DBox_disc"]["dsc"] > 0.9 and scores["3DBox_ball"]["dsc"] > 0.8, scores


def test_converter_writes_readable_cases_from_the_real_datasets(tmp_path):
    require_dataset("kvasir_seg_subset/images")
    require_dataset("totalsegmentator_examples/example_seg.nii.gz")
    data = require_dataset("")
    summary = write_cases(data, tmp_path)
    assert summary["cases_2d"] == 40 and summary["cases_3d"] == 1
    volume = read_challenge_npz(tmp_path / "imgs" / "3DBox_CT_example.npz")
    assert volume.is_3d and volume.num_boxes == summary["objects_3d"] and volume.image.dtype == np.uint8
    with np.load(tmp_path / "gts" / "3DBox_CT_example.npz") as arrays:
        assert arrays["gts"].shape == volume.image.shape and arrays["gts"].max() == volume.num_boxes
    with pytest.raises(FileExistsError, match="imgs/ or gts/"):
        write_cases(data, tmp_path)
