"""Folder scoring: pairing by file name, which labels count, missing predictions, the two means, 3D spacing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gnnseg.seg.folder_scoring import LabelMap, score_folders
from gnnseg.seg.io import MedicalImage, write_image_2d, write_nifti
from gnnseg.seg.metrics import normalized_surface_dice

PERFECT = {"dice": 1.0, "nsd": 1.0, "hd95": 0.0}
MISSED = {"dice": 0.0, "nsd": 0.0, "hd95": math.inf}


def _label_map(*regions: tuple[int, slice, slice]) -> np.ndarray:
    labels = np.zeros((8, 8), np.uint8)
    for label, rows, columns in regions:
        labels[rows, columns] = label
    return labels


@pytest.fixture
def folders(tmp_path):
    """``a.png``: label 1 half found (Dice 2/3), label 2 exact, label 3 predicted only; ``b.png``: label 1 exact;
    ``c.png``: no prediction; the prediction folder also holds files no truth pairs with."""
    truth, predicted = tmp_path / "truth", tmp_path / "pred"
    truth.mkdir()
    predicted.mkdir()
    top, right = (slice(0, 2), slice(0, 4)), (slice(4, 8), slice(4, 8))
    write_image_2d(_label_map((1, *top), (2, *right)), truth / "a.png")
    write_image_2d(_label_map((1, slice(0, 2), slice(0, 2)), (2, *right), (3, slice(6, 8), slice(0, 2))),
                   predicted / "a.png")
    square = _label_map((1, slice(0, 4), slice(0, 4)))
    write_image_2d(square, truth / "b.png")
    write_image_2d(square, predicted / "b.png")
    write_image_2d(square, truth / "c.png")
    write_image_2d(square, predicted / "extra.png")
    write_image_2d(square, predicted / ".hidden.png")
    (predicted / "notes.txt").write_text("not a label map")
    return predicted, truth


def test_pairs_by_file_name_and_skips_a_truth_without_prediction(folders):
    scores = score_folders(*folders)
    assert list(scores.per_case) == ["a.png", "b.png"] and scores.missing == ["c.png"]
    case = scores.per_case["a.png"]
    assert case[1]["dice"] == pytest.approx(2 * 4 / (4 + 8))
    assert case[2] == PERFECT and case[3] == MISSED
    assert scores.per_case["b.png"] == {1: PERFECT}


def test_labels_count_from_the_truth_the_union_or_a_list(folders):
    assert list(score_folders(*folders, labels="union").per_case["a.png"]) == [1, 2, 3]
    assert list(score_folders(*folders, labels="truth").per_case["a.png"]) == [1, 2]
    assert list(score_folders(*folders, labels=[2, 5]).per_case["a.png"]) == [2, 5]
    assert score_folders(*folders, labels=[5]).per_case["a.png"][5] == PERFECT     # absent from both maps
    with pytest.raises(ValueError, match="labels must be 'truth', 'union' or a list"):
        score_folders(*folders, labels="all")


def test_means_per_label_over_its_cases_and_per_case_over_its_labels(folders):
    scores = score_folders(*folders)
    per_label = scores.mean_per_label()
    assert list(per_label) == [1, 2, 3]
    assert per_label[1]["dice"] == pytest.approx((2 / 3 + 1) / 2)            # cases a and b
    assert per_label[2] == PERFECT and per_label[3] == MISSED                # case a alone
    per_case = scores.mean_per_case()
    assert per_case["a.png"]["dice"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert per_case["a.png"]["hd95"] == math.inf and per_case["b.png"] == PERFECT


def test_a_missing_prediction_scored_as_empty_gets_zero_for_every_truth_label(folders):
    scores = score_folders(*folders, labels="truth", missing="empty")
    assert list(scores.per_case) == ["a.png", "b.png", "c.png"] and scores.missing == ["c.png"]
    assert scores.per_case["c.png"] == {1: MISSED}
    assert scores.mean_per_case()["c.png"]["dice"] == 0.0
    with pytest.raises(ValueError, match="missing must be 'skip' or 'empty'"):
        score_folders(*folders, missing="zero")


def test_a_truth_without_labels_is_an_error_only_when_its_labels_count(folders):
    predicted, truth = folders
    write_image_2d(np.zeros((8, 8), np.uint8), truth / "d.png")
    write_image_2d(np.zeros((8, 8), np.uint8), predicted / "d.png")
    scores = score_folders(predicted, truth)
    assert scores.per_case["d.png"] == {} and scores.mean_per_case()["d.png"] == {}
    with pytest.raises(ValueError, match="d.png: the ground truth holds no labelled object"):
        score_folders(predicted, truth, labels="truth")


def test_bad_folders_and_shapes_are_named(folders, tmp_path):
    predicted, truth = folders
    write_image_2d(np.zeros((8, 9), np.uint8), truth / "e.png")
    write_image_2d(np.zeros((8, 8), np.uint8), predicted / "e.png")
    with pytest.raises(ValueError, match=r"e.png: prediction shape \(8, 8\) != ground truth \(8, 9\)"):
        score_folders(predicted, truth)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_image_2d(np.zeros((8, 8), np.uint8), elsewhere / "z.png")
    with pytest.raises(FileNotFoundError, match=f"no file names shared by {predicted} and {elsewhere}"):
        score_folders(predicted, elsewhere)
    with pytest.raises(FileNotFoundError, match=f"the prediction folder {tmp_path / 'nowhere'} does not exist"):
        score_folders(tmp_path / "nowhere", truth)
    with pytest.raises(FileNotFoundError, match="holds no label maps"):
        score_folders(predicted, elsewhere, suffixes=(".nii.gz",))


def test_3d_cases_are_measured_in_the_truth_files_spacing(tmp_path):
    """A cube one slice off: Dice 3/4 at any spacing; at 3 mm slices the shift is beyond the 2 mm tolerance."""
    truth = np.zeros((8, 8, 8), np.uint8)
    truth[2:6, 2:6, 2:6] = 1
    predicted = np.roll(truth, 1, axis=0)
    for folder, spacing in (("thick", (3.0, 1.0, 1.0)), ("thin", (1.0, 1.0, 1.0))):
        for side, array in (("truth", truth), ("pred", predicted)):
            (tmp_path / folder / side).mkdir(parents=True)
            write_nifti(MedicalImage(array, spacing), tmp_path / folder / side / "cube.nii.gz")
    thick = score_folders(tmp_path / "thick" / "pred", tmp_path / "thick" / "truth").per_case["cube.nii.gz"][1]
    thin = score_folders(tmp_path / "thin" / "pred", tmp_path / "thin" / "truth").per_case["cube.nii.gz"][1]
    assert thick["dice"] == thin["dice"] == 2 * 48 / (64 + 64)
    assert thin["nsd"] == 1.0 and thin["hd95"] == 1.0
    assert thick["hd95"] == 3.0
    assert thick["nsd"] == normalized_surface_dice(predicted, truth, 2.0, (3.0, 1.0, 1.0)) < 1.0


def test_files_are_read_by_the_readers_given(tmp_path):
    """Challenge-style npz files: ``segs`` against ``gts``, in the truth's spacing."""
    truth = np.zeros((8, 8, 8), np.uint16)
    truth[2:6, 2:6, 2:6] = 7
    (tmp_path / "pred").mkdir()
    (tmp_path / "gts").mkdir()
    np.savez(tmp_path / "pred" / "case.npz", segs=np.roll(truth, 1, axis=0))
    np.savez(tmp_path / "gts" / "case.npz", gts=truth, spacing=np.array([3.0, 1.0, 1.0]))

    def read_gts(path):
        with np.load(path) as arrays:
            return LabelMap(arrays["gts"], tuple(arrays["spacing"]))

    scores = score_folders(tmp_path / "pred", tmp_path / "gts", suffixes=(".npz",),
                           read_prediction=lambda path: LabelMap(np.load(path)["segs"], None), read_truth=read_gts)
    assert scores.per_case["case.npz"][7]["dice"] == 0.75 and scores.per_case["case.npz"][7]["hd95"] == 3.0
