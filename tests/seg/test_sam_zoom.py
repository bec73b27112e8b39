"""Zooming in on the box: the window's placement, the pasted answer, composition with augmentation, bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gnnseg.seg.sam.inference.chain import make_predictor
from gnnseg.seg.sam.inference.crop import BACKGROUND_LOGIT
from gnnseg.seg.sam.inference.volume import segment_box_3d
from gnnseg.seg.sam.inference.zoom import ZoomedPredictor, zoom_window
from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS, build_sam
from tests.seg.stand_in_predictors import BoxFill


def test_the_window_is_centred_on_the_box_moved_inside_the_image_and_never_below_min_side():
    def window(box, context, min_side):
        rows, columns = zoom_window(np.array(box, dtype=float), context, (100, 120), min_side)
        return rows.start, rows.stop, columns.start, columns.stop

    # a 10 x 6 box (x 40..49, y 30..35): with context 0.5 the square window is 20 wide, centred on (45, 33)
    assert window([40, 30, 49, 35], 0.5, 0) == (23, 43, 35, 55)
    assert window([40, 30, 49, 35], 0.5, 64) == (1, 65, 13, 77)           # at least 64 pixels, same centre
    assert window([0, 90, 9, 99], 0.5, 0) == (80, 100, 0, 20)             # a corner: moved inside, still 20 wide
    assert window([0, 0, 119, 99], 1.0, 0) == (0, 100, 0, 120)            # larger than the image: the image


def test_each_box_is_answered_on_its_own_window_and_pasted_back():
    inner = BoxFill()
    predictor = ZoomedPredictor(inner, context=0.5, min_side=0)
    image = (np.arange(100 * 120).reshape(100, 120) % 251).astype(np.uint8)
    predictor.set_image(image)
    assert inner.encoder_calls == 0                      # nothing is encoded before a box says where to look
    prediction = predictor.predict(boxes=np.array([[40, 30, 49, 35], [0, 90, 9, 99]]))
    assert inner.encoder_calls == 2
    assert np.array_equal(inner.images[0][..., 0], image[23:43, 35:55])       # the window's pixels, as RGB
    assert np.array_equal(inner.images[1][..., 0], image[80:100, 0:20])
    assert prediction.masks.shape == prediction.logits.shape == (2, 1, 100, 120)
    expected = np.zeros((100, 120), dtype=bool)
    expected[30:36, 40:50] = True
    assert np.array_equal(prediction.masks[0, 0], expected)                 # the box, back in the image's frame
    window = np.zeros((100, 120), dtype=bool)
    window[23:43, 35:55] = True
    assert np.all(prediction.logits[0, 0][~window] == BACKGROUND_LOGIT)     # outside the window: background
    assert np.all(prediction.logits[0, 0][window & ~expected] == -5.0)
    assert np.allclose(prediction.iou, 0.7)


def test_a_box_whose_window_covers_the_image_gets_the_plain_answer():
    model = build_sam(SAM_CONFIGS["tiny_vit_mini"])
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    box = np.array([[2.0, 3.0, 60.0, 44.0]])
    plain = make_predictor(model)
    plain.set_image(image)
    zoomed = make_predictor(model, zoom=0.25)
    zoomed.set_image(image)
    expected, answered = plain.predict(boxes=box), zoomed.predict(boxes=box)
    assert np.allclose(answered.logits, expected.logits, atol=1e-5)
    assert np.array_equal(answered.masks, expected.masks)


def test_a_small_box_in_a_large_image_is_seen_at_the_images_own_resolution():
    model = build_sam(SAM_CONFIGS["tiny_vit_mini"])             # 64-pixel input
    image = np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    box = np.array([[40.0, 20.0, 51.0, 29.0]])
    zoomed = make_predictor(model, zoom=0.5)
    zoomed.set_image(image)
    single = zoomed.predict(boxes=box)
    by_hand = make_predictor(model)
    by_hand.set_image(image[0:64, 14:78])   # 64 pixels (the input size) around the box's centre (46, 25), inside
    inside = by_hand.predict(boxes=box - [14, 0, 14, 0])
    assert np.allclose(single.logits[0, 0, :, 14:78], inside.logits[0, 0], atol=1e-5)
    assert np.all(single.logits[0, 0, :, :14] == BACKGROUND_LOGIT)

    augmented = make_predictor(model, zoom=0.5, augmentation="flip")
    augmented.set_image(image)
    twice = augmented.predict(boxes=box)
    assert augmented.encoder_calls == 2                               # one window per copy of the image
    assert twice.masks.shape == (1, 1, 64, 96) and not twice.masks[0, 0, :, :14].any()


def test_an_image_no_larger_than_the_input_is_never_enlarged():
    model = build_sam(SAM_CONFIGS["tiny_vit_mini"])
    image = np.random.default_rng(2).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    box = np.array([[30.0, 10.0, 41.0, 19.0]])                 # small, but the image is only 64 pixels wide
    plain, zoomed = make_predictor(model), make_predictor(model, zoom=0.5)
    plain.set_image(image)
    zoomed.set_image(image)
    assert np.allclose(zoomed.predict(boxes=box).logits, plain.predict(boxes=box).logits, atol=1e-5)


def test_two_scales_also_see_the_box_twice_as_close_and_average_the_probabilities():
    inner = BoxFill()
    predictor = ZoomedPredictor(inner, context=0.5, min_side=32, scales=2)
    image = (np.arange(100 * 120).reshape(100, 120) % 251).astype(np.uint8)
    predictor.set_image(image)
    box = np.array([40, 30, 49, 35])        # 10 x 6, centre (45, 33)
    # scale 0: context 0.5 -> 20 pixels, raised to the minimum 32; scale 1: context 0.25 -> 15 pixels, minimum 16
    assert predictor.windows(box, (100, 120)) == [(slice(17, 49), slice(29, 61)), (slice(25, 41), slice(37, 53))]
    prediction = predictor.predict(boxes=box)
    assert inner.encoder_calls == 2                                           # one pass per scale
    assert np.array_equal(inner.images[1][..., 0], image[25:41, 37:53])
    inside_box = np.zeros((100, 120), dtype=bool)
    inside_box[30:36, 40:50] = True
    assert np.array_equal(prediction.masks[0, 0], inside_box)
    logits = prediction.logits[0, 0]

    def sigmoid(x: float) -> float:
        return 1 / (1 + np.exp(-x))

    def logit(p: float) -> float:
        return np.log(p / (1 - p))

    assert np.allclose(logits[inside_box], 5.0, atol=1e-4)                   # both windows: +5
    # in the wide window only: the close-up counts as background there, so -5 and -20 are averaged as probabilities
    assert np.isclose(logits[20, 30], logit((sigmoid(-5.0) + sigmoid(BACKGROUND_LOGIT)) / 2), atol=1e-3)
    assert np.isclose(logits[26, 38], -5.0, atol=1e-4)                       # inside both, outside the box
    assert logits[0, 0] < -15                    # outside both windows: background (the mean is clipped at 1e-7)
    assert np.allclose(prediction.iou, 0.7)


def test_windows_that_all_cover_the_image_give_the_plain_answer():
    model = build_sam(SAM_CONFIGS["tiny_vit_mini"])
    image = np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    box = np.array([[2.0, 3.0, 60.0, 44.0]])                   # even the close-up (1.5 box sizes) is the image
    plain, zoomed = make_predictor(model), make_predictor(model, zoom=0.5, zoom_scales=2)
    plain.set_image(image)
    zoomed.set_image(image)
    expected, answered = plain.predict(boxes=box), zoomed.predict(boxes=box)
    assert np.allclose(answered.logits, expected.logits, atol=1e-4)
    assert np.array_equal(answered.masks, expected.masks)


def test_bad_use_is_refused_with_a_named_reason():
    for scales in (0, 1.5, True):
        with pytest.raises(ValueError, match="zoom scales must be a whole number >= 1"):
            ZoomedPredictor(BoxFill(), scales=scales)
    with pytest.raises(ValueError, match="need a zoom context"):
        make_predictor(build_sam(SAM_CONFIGS["tiny_vit_mini"]), zoom_scales=2)
    with pytest.raises(ValueError, match="zoom context must be a finite number >= 0"):
        ZoomedPredictor(BoxFill(), context=float("nan"))
    with pytest.raises(ValueError, match="zoom context must be a finite number >= 0"):
        ZoomedPredictor(BoxFill(), context=-0.5)
    with pytest.raises(ValueError, match="already sees a window around each box"):
        make_predictor(build_sam(replace(SAM_CONFIGS["vit_mini"], crop_margin=0.25)), zoom=0.5)
    predictor = ZoomedPredictor(BoxFill())
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(boxes=np.array([0, 0, 2, 2]))
    predictor.set_image(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match="zoom needs a box per prompt"):
        predictor.predict(points=np.array([[3, 3]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match=r"box 0 \[5.0, 1.0, 2.0, 4.0\] must have x1 > x0"):
        predictor.predict(boxes=np.array([5, 1, 2, 4]))


def test_3d_propagation_zooms_on_every_slice():
    volume = np.zeros((5, 80, 100), dtype=np.uint8)
    box = np.array([30, 20, 1, 45, 35, 3])                     # x_min, y_min, z_min, x_max, y_max, z_max
    inner = BoxFill()
    mask, _ = segment_box_3d(ZoomedPredictor(inner, 0.5, min_side=0), volume, box, margin=0)
    assert [image.shape[:2] for image in inner.images] == [(32, 32)] * 3   # one 32-pixel window per slice
    expected = np.zeros(volume.shape, dtype=bool)
    expected[1:4, 20:36, 30:46] = True                          # each slice answers its box, in place
    assert np.array_equal(mask, expected)
