"""3D objects corrected with clicks: anchored re-propagation (a click stops short of slices corrected before) and the
volume session (a 3D box, clicks on any slice, undo, packed states, refusals that change nothing), on a stand-in
predictor whose negative clicks cut the mask so the propagation's reach can be read off the columns."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gnnseg.seg.sam.inference.volume import (
    correct_slice_3d,
    propagate_box_3d,
    repropagate_from_slice,
    repropagated_slices,
    volume_iou,
)
from gnnseg.seg.sam.inference.volume_session import VolumeSession
from tests.seg.stand_in_predictors import CutsAtNegativeClicks

DEPTH, HEIGHT, WIDTH = 9, 21, 23      # 483 voxels a slice: slices do not start on a byte of the packed mask
VOLUME = np.repeat(np.arange(DEPTH, dtype=np.uint8)[:, None, None] * 30, HEIGHT, axis=1).repeat(WIDTH, axis=2)
"""Slice ``k`` holds the value ``30 k``: the slices a predictor was set on can be read back from its images."""
BOX = np.array([4, 5, 0, 18, 16, 8])  # columns 4..18, rows 5..16, every slice


def answered(predictor: CutsAtNegativeClicks) -> list[int]:
    """The slices the predictor was set on, in order."""
    return [int(image[0, 0, 0]) // 30 for image in predictor.images]


def columns(plane: np.ndarray) -> tuple[int, int]:
    """The first and last column of a slice's mask."""
    found = np.flatnonzero(plane.any(axis=0))
    return int(found[0]), int(found[-1])


def test_anchors_stop_the_repropagation_before_the_slices_corrected_earlier():
    predictor = CutsAtNegativeClicks()
    mask, _ = propagate_box_3d(predictor, VOLUME, BOX)
    assert mask[:, 5:17, 4:19].all() and mask.sum() == DEPTH * 12 * 15
    mask[2, :, 10:] = False               # what clicks on slices 2 and 7 had made there
    mask[7, :, :8] = False
    given = mask.copy()
    predictor.images.clear()
    corrected, ious = repropagate_from_slice(predictor, VOLUME, BOX, mask, np.full(DEPTH, 0.1), 4, [[10, 10]], [0],
                                             anchors=[2, 7])
    assert answered(predictor) == [4, 5, 6, 3]                    # outwards from 4, up to the slices before 2 and 7
    assert [columns(corrected[z]) for z in (3, 4, 5, 6)] == [(4, 12), (4, 9), (4, 12), (4, 15)]   # grown by 3 a slice
    assert all(np.array_equal(corrected[z], given[z]) for z in (0, 1, 2, 7, 8))
    assert ious.tolist() == pytest.approx([0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 0.7, 0.1, 0.1])
    areas = corrected.sum(axis=(1, 2))
    assert volume_iou(corrected, ious, 0, 8) == pytest.approx((areas * ious).sum() / areas.sum())
    assert np.array_equal(mask, given)                              # the input is left as it was

    predictor.images.clear()
    anchored, iou = correct_slice_3d(predictor, VOLUME, BOX, mask, 4, np.array([[10, 10]]), np.array([0]),
                                     anchors=[2, 7])
    assert np.array_equal(anchored, corrected) and iou == pytest.approx(0.7)   # the IoU of the slices answered
    predictor.images.clear()
    everywhere, iou = correct_slice_3d(predictor, VOLUME, BOX, mask, 4, np.array([[10, 10]]), np.array([0]))
    assert answered(predictor) == [4, 5, 6, 7, 8, 3, 2, 1, 0]      # no anchors: to the box's ends, as before
    assert [columns(everywhere[z]) for z in range(DEPTH)] == [(4, 18), (4, 18), (4, 15), (4, 12), (4, 9), (4, 12),
                                                              (4, 15), (4, 18), (4, 18)]
    assert iou == pytest.approx(0.7)


def test_the_slices_answered_again_lie_between_the_nearest_anchors():
    assert repropagated_slices(BOX, 4) == (0, 8)
    assert repropagated_slices(BOX, 4, [4]) == (0, 8)               # the clicked slice is no stop
    assert repropagated_slices(BOX, 4, [1, 2, 3, 7]) == (4, 6)      # an anchor next door: nothing below
    with pytest.raises(ValueError, match=r"anchor slices \[9\] lie outside the 3D box's slices 0..8"):
        repropagated_slices(BOX, 4, [9])
    with pytest.raises(ValueError, match="slice 9 lies outside the 3D box's slices 0..8"):
        repropagated_slices(BOX, 9)


def test_a_click_is_answered_with_its_slices_clicks_and_stops_at_slices_clicked_before():
    predictor = CutsAtNegativeClicks()
    session = VolumeSession(predictor, VOLUME)
    first = session.add(np.array([4.2, 5, 0, 18, 16, 8]))
    started = session.state(first)
    assert started.box.tolist() == BOX.tolist() and started.clicks == {} and started.iou == pytest.approx(0.7)
    assert started.mask.sum() == DEPTH * 12 * 15 and started.mask[:, 5:17, 4:19].all()

    predictor.images.clear()
    cut = session.click(first, 4, 10, 10, positive=False)
    assert answered(predictor) == [4, 5, 6, 7, 8, 3, 2, 1, 0]       # the first click: to the box's ends
    assert list(cut.clicks) == [4] and cut.clicks[4][0].tolist() == [[10.0, 10.0]] and cut.clicks[4][1].tolist() == [0]

    predictor.images.clear()
    widened = session.click(first, 6, 17, 8, positive=True)
    assert answered(predictor) == [6, 7, 8, 5]                       # slice 4 has clicks: it is kept
    assert [columns(widened.mask[z]) for z in range(DEPTH)] == [(4, 18), (4, 18), (4, 15), (4, 12), (4, 9), (4, 18),
                                                                (4, 18), (4, 18), (4, 18)]
    assert np.array_equal(widened.mask[:5], cut.mask[:5])

    predictor.images.clear()
    predictor.received.clear()
    both = session.click(first, 4, 15, 10, positive=True)
    prompt = predictor.received[0]
    assert prompt.points.tolist() == [[[10.0, 10.0], [15.0, 10.0]]] and prompt.labels.tolist() == [[0, 1]]
    assert prompt.mask_logits is not None and prompt.boxes.tolist() == [[4.0, 5.0, 12.0, 16.0]]  # its mask's box + 3
    assert answered(predictor) == [4, 5, 3, 2, 1, 0]                 # slice 6 has clicks: up to 5 only
    assert both.mask[4, 10, 15] and both.mask[4].sum() == 12 * 6 + 1 and columns(both.mask[5]) == (4, 18)
    assert np.array_equal(both.mask[6:], widened.mask[6:])
    assert sorted(both.clicks) == [4, 6] and both.clicks[6] == widened.clicks[6]

    assert np.array_equal(session.undo(first).mask, widened.mask)
    assert np.array_equal(session.undo(first).mask, cut.mask)
    assert len(session.history(first)) == 2 and session.state(first) is cut
    session.remove(first)
    assert session.object_ids == []


def test_refused_boxes_and_clicks_change_nothing_and_name_the_problem():
    predictor = CutsAtNegativeClicks()
    session = VolumeSession(predictor, VOLUME)
    first = session.add(np.array([4, 5, 2, 18, 16, 6]))
    before, calls = session.state(first), len(predictor.images)
    for z, x, y, message in [(1, 10, 10, "slice 1 lies outside the 3D box's slices 2..6"),
                             (7, 10, 10, "slice 7 lies outside the 3D box's slices 2..6"),
                             (3, 23, 10, "outside the image of height 21 and width 23"),
                             (3, 10, -1, "outside the image"),
                             (3, float("nan"), 10, "NaN"),
                             (2.5, 10, 10, "a slice is a whole number, got 2.5")]:
        with pytest.raises(ValueError, match=message):
            session.click(first, z, x, y, positive=True)
    with pytest.raises(KeyError, match=r"no object 7 in this session \(objects: 1\)"):
        session.click(7, 3, 10, 10, positive=True)
    with pytest.raises(ValueError, match="no click to undo"):
        session.undo(first)
    assert session.state(first) is before and len(session.history(first)) == 1 and len(predictor.images) == calls
    for box, message in [([4, 5, 6, 18, 16, 2], "need finite z_min <= z_max"),
                         ([4, 5, 0, 18, 16], r"must have shape \(N, 6\)"),
                         ([[4, 5, 0, 18, 16, 8]] * 2, "an object has one 3D box, got 2"),
                         ([40, 5, 0, 50, 16, 8], "lies outside the image")]:
        with pytest.raises(ValueError, match=message):
            session.add(np.array(box))
    assert session.object_ids == [first] and len(predictor.images) == calls
    with pytest.raises(ValueError, match=r"volume must be \(D, H, W\), got shape \(21, 23\)"):
        VolumeSession(predictor, VOLUME[0])


def test_states_keep_their_masks_packed_and_unpack_one_slice_alone():
    session = VolumeSession(CutsAtNegativeClicks(), VOLUME, undo_depth=1)
    first = session.add(BOX)
    session.click(first, 4, 10, 10, positive=False)
    state = session.click(first, 2, 9, 9, positive=False)
    packed = math.ceil(DEPTH * HEIGHT * WIDTH / 8)
    assert state.packed_mask.nbytes == packed == 544
    assert state.nbytes == packed + DEPTH * 8 + 2 * (16 + 8)         # + one IoU a slice + two slices' one click
    assert all(np.array_equal(state.mask_slice(z), state.mask[z]) for z in range(DEPTH))
    with pytest.raises(ValueError, match="slice 9 is outside the volume's slices 0..8"):
        state.mask_slice(9)
    assert len(session.history(first)) == 2                          # undo_depth 1: one click can be taken back
    session.undo(first)
    with pytest.raises(ValueError, match="keeps no earlier state"):
        session.undo(first)
