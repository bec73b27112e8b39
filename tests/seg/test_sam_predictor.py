"""Box-centred crops, the numpy predictor's checks and shapes, samples, and 3D propagation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from gnnseg.seg.sam.inference.crop import BACKGROUND_LOGIT, CropWindow
from gnnseg.seg.sam.inference.predictor import SamPredictor, paste_window, resize_crop
from gnnseg.seg.sam.inference.volume import (
    propagated_box,
    segment_boxes_3d,
    segment_volume,
    validate_boxes_3d,
)
from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS, build_sam
from gnnseg.seg.sam.training.prepared import PreparedSet
from gnnseg.seg.sam.training.samples import (
    PromptSample,
    box_3d_samples,
    jittered_box,
    object_masks,
    samples_from_volume,
    zoomed_samples,
)


def test_crop_window_is_square_centred_and_maps_boxes_into_the_input():
    window = CropWindow.around(np.array([10, 20, 29, 29]), margin=0.25)  # 20 x 10 box
    assert window.side == 30  # 1.5 x the longer side
    assert (window.left + window.side / 2, window.top + window.side / 2) == pytest.approx((20.0, 25.0), abs=0.5)
    box = window.to_input(np.array([10, 20, 29, 29]), 100)
    scale = 100 / 30
    assert box == pytest.approx([(10 - window.left) * scale, (20 - window.top) * scale,
                                 (29 - window.left) * scale, (29 - window.top) * scale])


def test_crop_cut_pads_outside_the_image_and_paste_inverts_it():
    image = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    window = CropWindow(left=-5, top=12, side=10)
    cut = window.cut(image)
    assert cut.shape == (10, 10)
    assert (cut[:, :5] == 0).all() and (cut[8:] == 0).all()        # left of column 0, below row 19
    assert np.array_equal(cut[:8, 5:], image[12:20, 0:5])
    logits = torch.full((1, 1, 40, 40), 5.0)
    pasted = paste_window(window, logits, (20, 30))[0, 0]
    assert (pasted[12:20, 0:5] == 5).all()
    assert (pasted[:12] == BACKGROUND_LOGIT).all() and (pasted[:, 5:] == BACKGROUND_LOGIT).all()


def test_resize_crop_keeps_the_pixel_range():
    crop = np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    pixels = resize_crop(crop, 32)
    assert pixels.shape == (3, 32, 32) and 0 <= pixels.min() and pixels.max() <= 255


@pytest.mark.parametrize("mode", ["medsam", "sam", "box-centred"])
def test_predictor_shapes_for_every_input_mode(mode):
    config = SAM_CONFIGS["vit_mini"]
    config = {"medsam": config, "sam": replace(config, normalization="imagenet"),
              "box-centred": replace(config, crop_margin=0.25)}[mode]
    predictor = SamPredictor(build_sam(config))
    predictor.set_image(np.random.default_rng(0).integers(0, 256, (90, 120), dtype=np.uint8))
    result = predictor.predict(boxes=np.array([[10, 10, 50, 60], [0, 0, 119, 89]]), multimask=True)
    assert result.masks.shape == (2, 3, 90, 120) and result.masks.dtype == bool
    assert result.iou.shape == (2, 3) and result.logits.shape == (2, 3, 90, 120)
    both = predictor.predict(boxes=np.array([10, 10, 50, 60]), points=np.array([[20, 30]]), point_labels=[1])
    assert both.masks.shape == (1, 1, 90, 120)


def test_box_centred_predictions_are_background_outside_the_window():
    predictor = SamPredictor(build_sam(replace(SAM_CONFIGS["vit_mini"], crop_margin=0.25)))
    predictor.set_image(np.full((200, 200, 3), 128, dtype=np.uint8))
    logits = predictor.predict(boxes=np.array([10, 10, 30, 30])).logits[0, 0]
    assert (logits[60:, :] == BACKGROUND_LOGIT).all() and (logits[:, 60:] == BACKGROUND_LOGIT).all()


@pytest.mark.parametrize("boxes, message", [
    (np.array([50, 10, 40, 60]), "x1 > x0"),
    (np.array([np.nan, 10, 40, 60]), "NaN"),
    (np.array([300, 300, 400, 400]), "outside the image"),
    (np.zeros((0, 4)), "empty"),
    (np.array([1, 2, 3]), "shape"),
])
def test_bad_boxes_are_refused_with_the_reason(boxes, message):
    predictor = SamPredictor(build_sam("vit_mini"))
    predictor.set_image(np.zeros((90, 120), dtype=np.uint8))
    with pytest.raises(ValueError, match=message):
        predictor.predict(boxes=boxes)


def test_bad_points_and_missing_image_are_refused():
    predictor = SamPredictor(build_sam("vit_mini"))
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(boxes=np.array([1, 1, 5, 5]))
    predictor.set_image(np.zeros((90, 120), dtype=np.uint8))
    with pytest.raises(ValueError, match="outside the image"):
        predictor.predict(points=np.array([[500, 10]]), point_labels=[1])
    with pytest.raises(ValueError, match="point_labels"):
        predictor.predict(points=np.array([[5, 10]]))
    with pytest.raises(ValueError, match="0 \\(background\\) or 1"):
        predictor.predict(points=np.array([[5, 10]]), point_labels=[2])
    with pytest.raises(ValueError, match="at least one prompt"):
        predictor.predict()
    with pytest.raises(ValueError, match="NaN"):
        predictor.set_image(np.full((10, 10), np.nan))


def test_objects_are_split_into_components_and_tiny_ones_dropped():
    labels = np.zeros((40, 40), dtype=np.uint8)
    labels[2:14, 2:14] = 1      # 144 px
    labels[20:35, 20:35] = 1    # 225 px, same label, separate component
    labels[2:6, 30:34] = 2      # 16 px: dropped
    objects = object_masks(labels)
    assert [int(o.sum()) for o in objects] == [225, 144]


def test_jittered_boxes_grow_within_limits():
    mask = np.zeros((100, 100), dtype=bool)
    mask[40:60, 30:70] = True
    sample = PromptSample(np.zeros((100, 100, 3), np.uint8), mask, "test")
    rng = np.random.default_rng(0)
    boxes = np.array([jittered_box(sample, rng, max_shift=20) for _ in range(200)])
    tight = sample.tight_box()
    assert (boxes[:, :2] <= tight[:2]).all() and (boxes[:, 2:] >= tight[2:]).all()
    assert (tight[0] - boxes[:, 0]).max() == 10   # x grows by at most 20, capped at 40 / 4
    assert (tight[1] - boxes[:, 1]).max() == 5    # y capped at 20 / 4
    assert len(np.unique(boxes, axis=0)) > 20


def test_a_prompt_box_is_grown_instead_of_the_tight_box():
    mask = np.zeros((100, 100), dtype=bool)
    mask[40:50, 40:50] = True
    prompt = np.array([20.0, 30.0, 79.0, 69.0])                      # 60 x 40, around the 10 x 10 object
    sample = PromptSample(np.zeros((100, 100, 3), np.uint8), mask, "test", prompt)
    rng = np.random.default_rng(0)
    assert np.array_equal(jittered_box(sample, rng, max_shift=0), prompt)
    boxes = np.array([jittered_box(sample, rng, max_shift=20) for _ in range(200)])
    assert (boxes[:, :2] <= prompt[:2]).all() and (boxes[:, 2:] >= prompt[2:]).all()
    assert (prompt[0] - boxes[:, 0]).max() == 15 and (prompt[1] - boxes[:, 1]).max() == 10   # a quarter of 60, 40


def test_a_3d_box_prompts_each_slice_of_its_organ_with_the_boxs_rectangle():
    volume = np.random.default_rng(0).integers(-200, 200, (5, 40, 40)).astype(np.int16)
    labels = np.zeros(volume.shape, np.uint8)
    for z in range(4):                                                # an organ moving right, slice by slice
        labels[z, 10:22, 2 + 5 * z : 14 + 5 * z] = 3
    labels[4, 10:22, 30:34] = 3                                       # 48 pixels: left out on this slice
    labels[1:3, 30:40, 0:12] = 7                                      # another organ on two slices
    samples = box_3d_samples(volume, labels, "ct", modality="ct", slices=range(5))
    moving = [s for s in samples if "label3" in s.source]
    assert [s.source for s in moving] == [f"ct/z{z}/label3/box3d" for z in range(4)]
    for z, sample in enumerate(moving):
        assert np.array_equal(sample.mask, labels[z] == 3)
        assert np.array_equal(sample.prompt_box, [2, 10, 33, 21])    # the 3D box's rectangle, all five slices
    other = [s for s in samples if "label7" in s.source]
    assert len(other) == 2 and np.array_equal(other[0].prompt_box, [0, 30, 11, 39])
    assert other[0].image is moving[1].image                          # one image per slice, shared
    only_first = box_3d_samples(volume, labels, "ct", modality="ct", slices=range(1))
    assert len(only_first) == 1 and np.array_equal(only_first[0].prompt_box, [2, 10, 13, 21])
    with pytest.raises(ValueError, match="differ in shape"):
        box_3d_samples(volume, labels[:4], "ct", modality="ct", slices=range(4))


def test_paths_that_draw_boxes_from_masks_refuse_samples_with_their_own_prompt_box():
    mask = np.zeros((40, 40), dtype=bool)
    mask[10:20, 10:20] = True
    loose = PromptSample(np.zeros((40, 40, 3), np.uint8), mask, "slice/z3/box3d", np.array([2.0, 2.0, 37.0, 37.0]))
    with pytest.raises(ValueError, match="prompt boxes of 1 samples .first: slice/z3/box3d"):
        PreparedSet.from_samples([loose], SAM_CONFIGS["lite_medsam"])
    with pytest.raises(ValueError, match="zoom draws each box"):
        zoomed_samples([loose], 0.5, 16)


def test_ct_slices_are_windowed_to_soft_tissue():
    volume = np.full((2, 20, 20), -1000, dtype=np.int16)
    volume[:, 5:15, 5:15] = 40        # the window's level maps to 127.5
    labels = np.zeros_like(volume, dtype=np.uint8)
    labels[1, 5:15, 5:15] = 3
    samples = samples_from_volume(volume, labels, "ct", modality="ct")
    assert len(samples) == 1 and samples[0].source == "ct/z1"
    assert samples[0].image[10, 10, 0] in (127, 128) and samples[0].image[0, 0, 0] == 0


class _OraclePredictor:
    """Stands in for a model: the true mask of the current slice inside the prompt box, with predicted IoU
    ``slice / 100``; records the prompts."""

    def __init__(self, truth: np.ndarray) -> None:
        self.truth, self.prompts, self._slice = truth, [], None

    def set_image(self, image: np.ndarray) -> None:
        self._slice = next(z for z in range(len(self.truth)) if np.shares_memory(image, self.volume[z]))

    def predict(self, boxes):
        masks = []
        for x0, y0, x1, y1 in np.asarray(boxes, dtype=int).reshape(-1, 4):
            self.prompts.append((self._slice, (x0, y0, x1, y1)))
            mask = np.zeros_like(self.truth[self._slice])
            mask[y0 : y1 + 1, x0 : x1 + 1] = self.truth[self._slice, y0 : y1 + 1, x0 : x1 + 1]
            masks.append(mask[None])
        return type("Prediction", (), {"masks": np.stack(masks), "iou": np.full((len(masks), 1), self._slice / 100)})


def test_propagation_through_a_sphere_follows_the_object_from_the_middle_slice():
    z, y, x = np.mgrid[:21, :40, :40]
    sphere = (z - 10) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 8 ** 2
    volume = np.zeros(sphere.shape, dtype=np.uint8)
    oracle = _OraclePredictor(sphere)
    oracle.volume = volume
    segs = segment_volume(oracle, volume, np.array([[8, 8, 2, 32, 32, 18]]), margin=2)
    assert np.array_equal(segs == 1, sphere)
    slices = [z for z, _ in oracle.prompts]
    assert slices[0] == 10 and slices[:9] == list(range(10, 19)) and slices[9:] == list(range(9, 1, -1))
    first_up, next_up = oracle.prompts[0][1], oracle.prompts[1][1]
    assert first_up == (8, 8, 32, 32) and next_up == (10, 10, 30, 30)  # middle slice's mask box (12..28), grown by 2
    masks, iou = segment_boxes_3d(oracle, volume, np.array([[8, 8, 2, 32, 32, 18]]), margin=2)
    areas = sphere.sum(axis=(1, 2))                      # the volume's IoU weighs each slice's by its area
    assert np.array_equal(masks[0], sphere) and iou.shape == (1,)
    assert iou[0] == pytest.approx((areas * np.arange(21) / 100).sum() / areas.sum())


class _EverythingPredictor:
    """A runaway model: the whole slice, whatever the box."""

    def __init__(self) -> None:
        self.prompts = []

    def set_image(self, image):
        self.shape = image.shape[:2]

    def predict(self, boxes):
        boxes = np.asarray(boxes).reshape(-1, 4)
        self.prompts += [tuple(int(v) for v in box) for box in boxes]
        return type("Prediction", (), {"masks": np.ones((len(boxes), 1, *self.shape), dtype=bool),
                                       "iou": np.ones((len(boxes), 1))})


def test_propagation_keeps_the_prompts_and_the_mask_inside_the_3d_box():
    volume = np.zeros((5, 30, 40), dtype=np.uint8)
    runaway = _EverythingPredictor()
    segs = segment_volume(runaway, volume, np.array([[10, 5, 1, 20, 15, 3]]), margin=4)
    expected = np.zeros(volume.shape, dtype=bool)
    expected[1:4, 5:16, 10:21] = True
    assert np.array_equal(segs == 1, expected)
    assert set(runaway.prompts) == {(10, 5, 20, 15)}      # the whole-slice mask's box, cut back to the rectangle


def test_a_one_pixel_wide_mask_grown_by_nothing_still_prompts_a_box_with_width():
    rectangle = np.array([2.0, 2.0, 12.0, 12.0])
    line = np.zeros((20, 20), dtype=bool)
    line[5, 4:9] = True                                           # one row
    assert propagated_box(line, rectangle, 0).tolist() == [4.0, 5.0, 8.0, 6.0]
    corner = np.zeros((20, 20), dtype=bool)
    corner[12, 12] = True                                         # one pixel, on the rectangle's far corner
    assert propagated_box(corner, rectangle, 0).tolist() == [11.0, 11.0, 12.0, 12.0]
    with pytest.raises(ValueError, match="margin must be 0 or more"):
        segment_volume(_EverythingPredictor(), np.zeros((3, 20, 20), np.uint8), np.array([[2, 2, 0, 12, 12, 2]]),
                       margin=-1)


def test_3d_boxes_are_checked():
    with pytest.raises(ValueError, match="z_min <= z_max"):
        validate_boxes_3d(np.array([1, 1, 5, 10, 10, 3]), (8, 20, 20))
    with pytest.raises(ValueError, match="\\(N, 6\\)"):
        validate_boxes_3d(np.array([1, 1, 10, 10]), (8, 20, 20))
    assert validate_boxes_3d(np.array([1, 1, -2, 10, 30, 12]), (8, 20, 20)).tolist() == [[1, 1, 0, 10, 19, 7]]


def test_embeddings_are_reused_for_an_image_seen_before():
    predictor = SamPredictor(build_sam("tiny_vit_mini"), cache_size=2)
    rng = np.random.default_rng(0)
    first, second, third = ((rng.random((20, 30)) * 255).astype(np.uint8) for _ in range(3))
    predictor.set_image(first)
    embedding = predictor._embedding
    predictor.set_image(first.copy())  # same pixels, another array
    assert predictor.encoder_calls == 1 and predictor._embedding is embedding
    predictor.set_image(second)
    predictor.set_image(third)  # evicts the least recently used: first
    predictor.set_image(first)
    assert predictor.encoder_calls == 4
    predictor.set_image(first.T.copy())  # same bytes in another shape is another image
    assert predictor.encoder_calls == 5


def test_overlapping_3d_boxes_encode_each_slice_once():
    volume = (np.random.default_rng(1).random((6, 24, 24)) * 255).astype(np.uint8)
    predictor = SamPredictor(build_sam("tiny_vit_mini"))
    segment_volume(predictor, volume, np.array([[2, 2, 0, 12, 12, 4], [8, 8, 1, 20, 20, 5]]))
    assert predictor.encoder_calls == 6
    # without a memo: slices 2..5 upwards from the middles (2 and 3), then 2..0 downwards; box by box it took 10
    uncached = SamPredictor(build_sam("tiny_vit_mini"), cache_size=0)
    segment_volume(uncached, volume, np.array([[2, 2, 0, 12, 12, 4], [8, 8, 1, 20, 20, 5]]))
    assert uncached.encoder_calls == 7


def test_many_boxes_through_a_deep_volume_encode_each_slice_at_most_twice_with_a_small_memo():
    volume = (np.random.default_rng(2).random((40, 24, 24)) * 255).astype(np.uint8)
    boxes = np.array([[1, 1, 0, 10, 10, 39], [5, 5, 3, 20, 20, 36], [10, 2, 10, 22, 14, 30], [0, 0, 0, 23, 23, 39]])
    predictor = SamPredictor(build_sam("tiny_vit_mini"), cache_size=16)
    segment_volume(predictor, volume, boxes)
    assert predictor.encoder_calls <= 2 * len(volume)  # box by box, with the memo of 16 slices: 134


def test_boxes_propagated_together_get_the_masks_each_gets_alone():
    torch.manual_seed(0)
    model = build_sam("tiny_vit_mini").eval()
    z, y, x = np.mgrid[:9, :32, :32]
    volume = np.where((z - 4) ** 2 + (y - 12) ** 2 + (x - 12) ** 2 <= 36, 200, 30).astype(np.uint8)
    volume[:, 20:30, 18:30] = 120
    boxes = np.array([[5, 5, 1, 19, 19, 7], [17, 19, 0, 30, 30, 8], [2, 2, 3, 30, 30, 5]])
    together, together_iou = segment_boxes_3d(SamPredictor(model), volume, boxes)
    for index, box in enumerate(boxes):
        alone, alone_iou = segment_boxes_3d(SamPredictor(model), volume, box[None])
        assert (alone[0] != together[index]).mean() < 1e-3      # batched decoder sums may flip a tied pixel
        assert alone_iou[0] == pytest.approx(together_iou[index], abs=1e-4)
    assert any(mask.any() for mask in together)
