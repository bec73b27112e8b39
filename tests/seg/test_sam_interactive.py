"""Correction clicks: points and previous logits through every predictor and wrapper, the session loop, and the
challenge's simulated user."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gnnseg.seg.sam.inference.augmented_predictor import AugmentedPredictor
from gnnseg.seg.sam.inference.crop import BACKGROUND_LOGIT
from gnnseg.seg.sam.inference.prediction import whole_image_mask_input, whole_image_masks
from gnnseg.seg.sam.inference.predictor import SamPredictor
from gnnseg.seg.sam.inference.session import InteractiveSession
from gnnseg.seg.sam.inference.simulated_user import area_under_steps, click_scores, next_click
from gnnseg.seg.sam.inference.zoom import ZoomedPredictor
from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS, build_sam
from tests.seg.stand_in_predictors import BoxAndClicks, PaintsClicks


@pytest.mark.parametrize("augmentation", ["flip", "d4"])
def test_a_point_marks_the_same_pixel_through_test_time_augmentation(augmentation):
    predictor = AugmentedPredictor(PaintsClicks(), augmentation)
    predictor.set_image(np.zeros((9, 14), dtype=np.uint8))
    prediction = predictor.predict(boxes=np.array([1, 1, 12, 7]), points=np.array([[10, 2], [3, 6]]),
                                   point_labels=np.array([1, 0]))
    assert np.argwhere(prediction.masks[0, 0]).tolist() == [[2, 10]]   # (y, x): every copy agreed on the pixel


def test_a_point_and_previous_logits_reach_the_zoom_window_at_the_same_pixel():
    inner = PaintsClicks()
    predictor = ZoomedPredictor(inner, context=0.25, min_side=4)
    predictor.set_image(np.zeros((40, 50), dtype=np.uint8))
    previous = np.zeros((40, 50), dtype=np.float32)
    previous[20, 30] = 7.0
    prediction = predictor.predict(boxes=np.array([25, 15, 32, 24]), points=np.array([[35, 22]]),
                                   point_labels=np.array([1]), mask_logits=previous)
    assert np.argwhere(prediction.masks[0, 0]).tolist() == [[22, 35]]
    window = inner.received[-1]
    assert window.points[0, 0, 0] < 35 and window.mask_logits[0].max() == 7.0    # moved into the window, cut to it
    (y, x), = np.argwhere(window.mask_logits[0] == 7.0)
    assert (x - window.points[0, 0, 0], y - window.points[0, 0, 1]) == (30 - 35, 20 - 22)


def test_previous_logits_become_the_dense_prompt_where_the_image_sits_in_the_input():
    low = np.full((1, 1, 16, 16), -3.0, dtype=np.float32)
    low[..., :8, :12] = 4.0                                    # the image fills 8 x 12 of the 16 x 16 low-res grid
    logits, _ = whole_image_masks(low, "padded", 64, (32, 48), (30, 45))
    dense = whole_image_mask_input(logits[:, 0], "padded", 64, (32, 48), 16)
    assert dense.shape == (1, 1, 16, 16)
    np.testing.assert_allclose(dense[0, 0, :7, :11], 4.0, atol=1e-4)     # the edge row and column mix with
    assert (dense[0, 0, :8, :12] > 3.0).all()                              # the model's own padding logits
    assert (dense[0, 0, 8:] == BACKGROUND_LOGIT).all() and (dense[0, 0, :, 12:] == BACKGROUND_LOGIT).all()
    square = whole_image_mask_input(np.full((1, 30, 45), 2.0, dtype=np.float32), "square", 64, (64, 64), 16)
    np.testing.assert_allclose(square, 2.0)


@pytest.mark.parametrize("crop_margin", [None, 0.25])
def test_mask_logits_change_the_answer_and_bad_ones_are_refused(crop_margin):
    model = build_sam(replace(SAM_CONFIGS["vit_mini"], crop_margin=crop_margin))
    predictor = SamPredictor(model)
    predictor.set_image(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    box = np.array([8, 6, 30, 28])
    plain = predictor.predict(boxes=box)
    fed_back = predictor.predict(boxes=box, mask_logits=np.where(plain.logits[0, 0] > 0, -8.0, 8.0))
    assert fed_back.logits.shape == plain.logits.shape and not np.allclose(fed_back.logits, plain.logits)
    with pytest.raises(ValueError, match=r"mask logits must have shape \(1, 40, 48\)"):
        predictor.predict(boxes=box, mask_logits=np.zeros((40, 40)))
    with pytest.raises(ValueError, match="NaN"):
        predictor.predict(boxes=box, mask_logits=np.full((40, 48), np.nan))
    with pytest.raises(ValueError, match="exceed the limit"):
        predictor.predict(boxes=box, points=np.zeros((65, 2)), point_labels=np.ones(65))


def test_a_session_click_is_one_decoder_pass_and_undo_restores_the_state():
    predictor = SamPredictor(build_sam("tiny_vit_mini"))
    image = np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    session = InteractiveSession(predictor, image)
    first = session.add(box=np.array([8, 6, 30, 28]))
    started = session.state(first)
    after = session.click(first, 12, 10, positive=True)
    session.click(first, 28, 26, positive=False)
    assert predictor.encoder_calls == 1                          # the embedding was kept for every click
    assert after.points.tolist() == [[12.0, 10.0]] and after.labels.tolist() == [1]
    assert session.state(first).labels.tolist() == [1, 0]
    assert np.array_equal(session.undo(first).logits, after.logits)
    assert np.array_equal(session.undo(first).logits, started.logits)
    with pytest.raises(ValueError, match="no click to undo"):
        session.undo(first)


def test_a_refused_click_changes_nothing_and_unknown_objects_are_named():
    session = InteractiveSession(SamPredictor(build_sam("vit_mini")), np.zeros((20, 24), dtype=np.uint8))
    first = session.add(points=np.array([[5, 5]]), labels=np.array([1]))
    before = session.state(first)
    with pytest.raises(ValueError, match="outside the image"):
        session.click(first, 30, 5, positive=True)
    assert session.state(first) is before
    with pytest.raises(KeyError, match="no object 7 in this session"):
        session.click(7, 1, 1, positive=True)
    session.remove(first)
    assert session.object_ids == []


def test_the_simulated_user_clicks_deepest_in_the_largest_error_with_its_label():
    truth = np.zeros((20, 20), dtype=bool)
    truth[4:13, 4:13] = True                                       # a 9 x 9 object centred at (8, 8)
    assert next_click(np.zeros_like(truth), truth) == ((8, 8), 1)   # all missed: click its centre, positive
    spilled = truth.copy()
    spilled[14:19, 2:19] = True                                     # a false 5 x 17 strip, larger than any miss
    spilled[4:6, 4:13] = False                                      # a missed 2 x 9 band
    (y, x), label = next_click(spilled, truth)
    assert label == 0 and y == 16 and 4 <= x <= 16                  # in the strip's middle row, negative
    assert next_click(truth, truth) is None
    diagonal = np.zeros((6, 6), dtype=bool)
    diagonal[[1, 2, 3], [1, 2, 3]] = True                           # touching at corners: one component
    assert next_click(np.zeros_like(diagonal), diagonal)[0] in [(1, 1), (2, 2), (3, 3)]
    volume = np.zeros((7, 9, 9), dtype=bool)
    volume[1:6, 2:7, 2:7] = True
    assert next_click(np.zeros_like(volume), volume) == ((3, 4, 4), 1)


def test_the_auc_is_the_trapezoid_over_the_click_steps_only():
    assert area_under_steps([0.1, 0.6, 0.7, 0.8, 0.9, 1.0]) == pytest.approx(0.3 + 0.7 + 0.8 + 0.9 + 0.5)
    with pytest.raises(ValueError, match="at least two click steps"):
        area_under_steps([0.5, 0.6])


def test_the_loop_scores_the_box_and_every_click():
    image = np.random.default_rng(2).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    truth = np.zeros((32, 32), dtype=bool)
    truth[8:20, 10:24] = True
    scores = click_scores(SamPredictor(build_sam("vit_mini")), image, truth, np.array([10, 8, 23, 19]), clicks=3)
    assert len(scores.dsc) == len(scores.nsd) == len(scores.seconds) == 4 and len(scores.clicks) <= 3
    assert all(0.0 <= value <= 1.0 for value in scores.dsc + scores.nsd)
    assert scores.dsc_auc == pytest.approx(area_under_steps(scores.dsc))


def test_a_box_centred_model_keeps_the_window_of_a_click_inside_the_box():
    model = build_sam(replace(SAM_CONFIGS["vit_mini"], crop_margin=0.25))
    encoded = []
    model.image_encoder.register_forward_hook(lambda module, inputs, output: encoded.append(len(output)))
    image = np.random.default_rng(5).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    session = InteractiveSession(SamPredictor(model), image)
    first = session.add(box=np.array([8, 6, 30, 28]))
    clicked = session.click(first, 20, 15, positive=True)
    session.click(first, 12, 20, positive=False)
    assert encoded == [1]                                   # one window, encoded once for the box and both clicks
    fresh = SamPredictor(model)                             # the kept embedding gives the same answer
    fresh.set_image(image)
    again = fresh.predict(boxes=np.array([8, 6, 30, 28]), points=np.array([[20, 15]]), point_labels=np.array([1]),
                          mask_logits=session.history(first)[0].logits)
    assert np.array_equal(again.logits[0, 0], clicked.logits)
    session.click(first, 45, 35, positive=True)             # outside the box's window: a wider window is encoded
    assert encoded == [1, 1, 1]


def test_clicks_on_one_slice_correct_it_and_propagate_again_from_it():
    from gnnseg.seg.sam.inference.volume import correct_slice_3d, segment_box_3d

    volume = np.repeat(np.arange(7, dtype=np.uint8)[:, None, None], 24, axis=1)[:, :, None].repeat(24, axis=2)
    volume = volume * 30                                     # slice k has the value 30 k: the stand-in reads it
    box = np.array([4, 5, 1, 18, 16, 5])
    predictor = BoxAndClicks()
    mask, _ = segment_box_3d(predictor, volume, box)
    assert mask[1:6, 5:17, 4:19].all() and not mask[0].any() and not mask[6].any()
    predictor.images.clear()
    predictor.received.clear()
    corrected, iou = correct_slice_3d(predictor, volume, box, mask, 4, np.array([[10, 10]]), np.array([0]))
    assert [int(i[0, 0, 0]) // 30 for i in predictor.images] == [4, 5, 3, 2, 1]   # the slice, then outwards
    first = predictor.received[0]
    assert first.points.tolist() == [[[10.0, 10.0]]] and first.mask_logits is not None
    assert all(p.points is None and p.mask_logits is None for p in predictor.received[1:])
    assert not corrected[4, 10, 10] and corrected[4, 11, 10] and mask[4, 10, 10]   # the input mask is untouched
    assert not corrected[0].any() and not corrected[6].any() and 0.0 <= iou <= 1.0
    with pytest.raises(ValueError, match="outside the 3D box"):
        correct_slice_3d(predictor, volume, box, mask, 6, np.array([[10, 10]]), np.array([1]))
