"""The numpy post-processing shared by the PyTorch and ONNX predictors equals torch's interpolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gnnseg.seg.sam.inference.prediction import EmbeddingMemo, bilinear_resize, to_input_coords, whole_image_masks


@pytest.mark.parametrize("source, target", [((16, 16), (64, 64)), ((16, 16), (37, 53)), ((40, 30), (13, 7)),
                                            ((5, 9), (5, 20)), ((1, 4), (3, 4))])
def test_bilinear_resize_equals_torch_interpolate(source, target):
    array = np.random.default_rng(0).normal(size=(2, 3, *source)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(array), target, mode="bilinear", align_corners=False).numpy()
    actual = bilinear_resize(array, target)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("target, region", [((64, 64), ((0, 64), (0, 64))), ((64, 64), ((10, 30), (0, 17))),
                                            ((37, 53), ((36, 37), (5, 53))), ((13, 7), ((2, 9), (3, 4))),
                                            ((16, 16), ((4, 12), (0, 16)))])
def test_a_region_of_the_resize_is_that_part_of_the_whole_resize(target, region):
    array = np.random.default_rng(2).normal(size=(2, 1, 16, 16)).astype(np.float32)
    (top, bottom), (left, right) = region
    part = bilinear_resize(array, target, region)
    np.testing.assert_array_equal(part, bilinear_resize(array, target)[..., top:bottom, left:right])


def test_square_layout_thresholds_resized_probabilities_as_medsam_does():
    low_res = np.random.default_rng(1).normal(scale=3, size=(2, 1, 16, 16)).astype(np.float32)
    logits, masks = whole_image_masks(low_res, "square", 64, (64, 64), (30, 50))
    probabilities = F.interpolate(torch.sigmoid(torch.from_numpy(low_res)), (30, 50), mode="bilinear",
                                  align_corners=False)
    np.testing.assert_array_equal(masks, (probabilities > 0.5).numpy())
    np.testing.assert_allclose(logits, torch.logit(probabilities, eps=1e-6).numpy(), atol=1e-4)


def test_padded_layout_crops_the_padding_before_resizing():
    low_res = np.zeros((1, 1, 16, 16), np.float32)
    low_res[..., :8, :] = 5.0  # the image fills the top half of the padded input
    logits, masks = whole_image_masks(low_res, "padded", 64, (32, 64), (20, 80))
    assert masks.shape == (1, 1, 20, 80) and masks.all() and np.all(logits > 0)


def test_input_coordinates_follow_the_layout():
    boxes = np.array([[10.0, 20.0, 30.0, 40.0]])
    np.testing.assert_allclose(to_input_coords(boxes, (100, 200), (32, 64), 64, "padded"), [[3.2, 6.4, 9.6, 12.8]])
    np.testing.assert_allclose(to_input_coords(boxes, (100, 200), (64, 64), 64, "square"), [[3.2, 12.8, 9.6, 25.6]])


def test_embedding_memo_keeps_the_most_recent_and_keys_by_content():
    memo = EmbeddingMemo(2)
    images = [np.full((4, 4, 3), value, np.uint8) for value in range(3)]
    for value, image in enumerate(images):
        memo.put(memo.key(image), value)
    assert memo.get(memo.key(images[0])) is None
    assert memo.get(memo.key(images[2].copy())) == 2
    assert memo.key(np.zeros((4, 4, 3), np.uint8)) != memo.key(np.zeros((2, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="cache_size"):
        EmbeddingMemo(-1)
