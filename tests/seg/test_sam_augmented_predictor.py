"""The symmetries move pixels, prompts and masks consistently; test-time augmentation averages them correctly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnseg.seg.sam.inference.augmented_predictor import (
    AUGMENTATIONS,
    AugmentedPredictor,
    symmetries,
)
from gnnseg.seg.sam.inference.chain import make_predictor
from gnnseg.seg.sam.inference.symmetry import DIHEDRAL, Symmetry
from gnnseg.seg.sam.modeling.sam import build_sam
from tests.seg.stand_in_predictors import LeftHalfOfTheBox

HEIGHT, WIDTH = 5, 7


@pytest.mark.parametrize("symmetry", DIHEDRAL, ids=str)
def test_points_and_boxes_go_where_the_image_puts_their_pixels(symmetry):
    for x, y in [(0, 0), (6, 0), (2, 3), (6, 4)]:
        image = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        image[y, x] = 1
        moved = symmetry.image(image)
        row, column = np.argwhere(moved)[0]
        assert symmetry.points(np.array([x, y]), (HEIGHT, WIDTH)).tolist() == [column, row]
    box = np.array([[1.0, 1.0, 4.0, 2.0]])  # x0, y0, x1, y1 inclusive
    inside = np.zeros((HEIGHT, WIDTH), dtype=bool)
    inside[1:3, 1:5] = True
    x0, y0, x1, y1 = symmetry.boxes(box, (HEIGHT, WIDTH))[0].astype(int)
    expected = np.zeros(symmetry.image(inside).shape, dtype=bool)
    expected[y0 : y1 + 1, x0 : x1 + 1] = True
    assert np.array_equal(symmetry.image(inside), expected)


@pytest.mark.parametrize("symmetry", DIHEDRAL, ids=str)
def test_restore_undoes_the_symmetry_on_masks_with_leading_axes(symmetry):
    masks = np.arange(2 * HEIGHT * WIDTH).reshape(2, 1, HEIGHT, WIDTH)
    moved = np.stack([symmetry.image(mask) for mask in masks[:, 0]])[:, None]
    assert np.array_equal(symmetry.restore(moved), masks)


@pytest.mark.parametrize("symmetry", DIHEDRAL, ids=str)
def test_a_tensor_plane_moves_as_the_image_does(symmetry):
    image = np.arange(HEIGHT * WIDTH * 3).reshape(HEIGHT, WIDTH, 3)
    channels_first = torch.from_numpy(image).permute(2, 0, 1)
    assert np.array_equal(symmetry.plane(channels_first).permute(1, 2, 0).numpy(), symmetry.image(image))


def test_the_augmentations_hold_distinct_symmetries_starting_with_the_identity():
    assert [len(AUGMENTATIONS[name]) for name in ("none", "flip", "d4")] == [1, 2, 8]
    assert all(group[0] == Symmetry(0, False) for group in AUGMENTATIONS.values())
    image = np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH)
    assert len({symmetry.image(image).tobytes() + bytes(symmetry.image(image).shape) for symmetry in DIHEDRAL}) == 8
    with pytest.raises(ValueError, match="unknown test-time augmentation 'd8'.*'d4'"):
        symmetries("d8")


def test_flip_averages_a_copy_and_its_mirror_in_the_image_frame():
    predictor = AugmentedPredictor(LeftHalfOfTheBox(), "flip")
    predictor.set_image(np.zeros((6, 10), dtype=np.uint8))
    prediction = predictor.predict(boxes=np.array([2, 1, 7, 4]))
    probability = 1 / (1 + np.exp(-prediction.logits[0, 0]))
    # columns 2-4 are the left half as given, columns 5-7 the left half of the mirrored box: each seen once
    assert np.allclose(probability[1:5, 2:8], 0.5, atol=1e-4)
    assert probability[0].max() < 1e-4 and probability[:, :2].max() < 1e-4 and probability[:, 8:].max() < 1e-4
    assert not prediction.masks.any()  # one vote in two is not above one half
    assert prediction.iou.shape == (1, 1) and np.isclose(prediction.iou[0, 0], 0.25)


def test_without_copies_the_wrapper_returns_the_predictors_masks():
    inner = LeftHalfOfTheBox()
    predictor = AugmentedPredictor(inner, "none")
    predictor.set_image(np.zeros((6, 10), dtype=np.uint8))
    prediction = predictor.predict(boxes=np.array([[2, 1, 7, 4], [0, 0, 3, 5]]))
    inner.set_image(np.zeros((6, 10, 3), dtype=np.uint8))
    assert np.array_equal(prediction.masks, inner.predict(boxes=np.array([[2, 1, 7, 4], [0, 0, 3, 5]])).masks)


def test_prompts_are_checked_in_the_image_as_given():
    predictor = AugmentedPredictor(LeftHalfOfTheBox(), "d4")
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(boxes=np.array([0, 0, 2, 2]))
    predictor.set_image(np.zeros((6, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"box 0 \[7.0, 1.0, 2.0, 4.0\] must have x1 > x0"):
        predictor.predict(boxes=np.array([7, 1, 2, 4]))


@pytest.mark.parametrize("crop_margin", [None, 0.25], ids=["whole image", "box-centred"])
def test_a_model_sees_every_copy_once_and_its_masks_match_a_manual_average(crop_margin):
    from dataclasses import replace

    from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS

    model = build_sam(replace(SAM_CONFIGS["vit_mini"], crop_margin=crop_margin))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
    boxes = np.array([[5.0, 4.0, 30.0, 20.0], [20.0, 10.0, 50.0, 35.0]])
    predictor = make_predictor(model, augmentation="d4", cache_size=1)
    predictor.set_image(image)
    augmented = predictor.predict(boxes=boxes)
    assert predictor.encoder_calls == (0 if crop_margin else 8)  # the memo keeps all eight copies

    plain = make_predictor(model)
    probabilities = []
    for symmetry in DIHEDRAL:
        plain.set_image(symmetry.image(image))
        logits = plain.predict(boxes=symmetry.boxes(boxes, image.shape[:2])).logits
        probabilities.append(symmetry.restore(1 / (1 + np.exp(-logits))))
    mean = np.mean(probabilities, axis=0)
    assert augmented.masks.shape == (2, 1, 40, 56)
    assert np.allclose(1 / (1 + np.exp(-augmented.logits)), mean, atol=1e-5)
    assert np.array_equal(augmented.masks, mean > 0.5)
