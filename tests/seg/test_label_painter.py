import numpy as np
import pytest

from gnnseg.seg.io.label_painter import LabelPainter, paint_labels


def _square(shape, top, left, side):
    mask = np.zeros(shape, bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_the_smaller_object_keeps_what_a_larger_one_also_claims_in_either_order():
    big, small = _square((20, 20), 0, 0, 12), _square((20, 20), 8, 8, 6)   # 144 and 36 pixels, 16 shared
    for masks, small_label in (([big, small], 2), ([small, big], 1)):
        labels = paint_labels(masks)
        assert labels[9, 9] == small_label and labels[2, 2] == 3 - small_label and labels[19, 19] == 0
        assert (labels == small_label).sum() == 36 and (labels == 3 - small_label).sum() == 144 - 16


def test_equal_sizes_and_box_order_give_the_pixel_to_the_later_box():
    first, second = _square((10, 10), 0, 0, 4), _square((10, 10), 2, 2, 4)
    assert paint_labels([first, second])[3, 3] == 2                       # a tie: the later box
    big, small = _square((20, 20), 0, 0, 12), _square((20, 20), 8, 8, 6)
    assert paint_labels([small, big], "box-order")[9, 9] == 2             # the baseline: the later box, even larger


def test_a_third_mask_is_compared_with_the_pixel_s_current_owner():
    large, middle, small = _square((30, 30), 0, 0, 20), _square((30, 30), 5, 5, 10), _square((30, 30), 8, 8, 3)
    labels = paint_labels([small, large, middle])
    assert labels[9, 9] == 1 and labels[6, 6] == 3 and labels[1, 1] == 2


def test_labels_fit_the_count_and_bad_masks_are_refused():
    assert paint_labels([np.ones((2, 2))]).dtype == np.uint8
    assert LabelPainter((2, 2), 300).labels.dtype == np.uint16
    assert paint_labels([np.ones((2, 2))], dtype=np.uint16).dtype == np.uint16
    with pytest.raises(ValueError, match="overlaps must be one of"):
        paint_labels([np.ones((2, 2))], "largest")
    with pytest.raises(ValueError, match="empty"):
        paint_labels([])
    with pytest.raises(ValueError, match="mask 1 has shape"):
        paint_labels([np.ones((2, 2)), np.ones((3, 3))])
    with pytest.raises(ValueError, match="NaN"):
        paint_labels([np.array([[np.nan, 1.0]])])
    with pytest.raises(ValueError, match="do not fit uint16"):
        LabelPainter((2, 2), 70000)


def test_random_3d_masks_match_a_pixel_by_pixel_reading_of_the_rule():
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(6):
        mask = np.zeros((5, 12, 14), bool)
        z, y, x = rng.integers(0, 4), rng.integers(0, 9), rng.integers(0, 10)
        mask[z:z + rng.integers(1, 3), y:y + rng.integers(1, 4), x:x + rng.integers(1, 5)] = True
        masks.append(mask)
    masks.append(masks[2].copy())                           # a tie in size and place: the later box
    sizes = [int(mask.sum()) for mask in masks]
    expected = np.zeros(masks[0].shape, np.uint16)
    for position in np.ndindex(expected.shape):
        claims = [k for k, mask in enumerate(masks) if mask[position]]
        if claims:
            expected[position] = min(claims, key=lambda k: (sizes[k], -k)) + 1
    assert np.array_equal(paint_labels(masks), expected)
    assert not (paint_labels(masks) == 3).any()              # mask 2 lost every pixel to its later twin


def test_painting_a_block_of_rows_at_a_time_gives_the_same_labels(monkeypatch):
    import gnnseg.seg.io.label_painter as painter

    rng = np.random.default_rng(1)
    masks = [rng.random((3, 17, 19)) < share for share in (0.6, 0.3, 0.1, 0.3)]
    whole = paint_labels(masks)
    monkeypatch.setattr(painter, "_BLOCK_PIXELS", 7)     # less than one row: one row per block
    assert np.array_equal(paint_labels(masks), whole)
    monkeypatch.setattr(painter, "_BLOCK_PIXELS", 40)    # two rows per block, the last block shorter
    assert np.array_equal(paint_labels(masks), whole)
    assert set(np.unique(whole)) == {0, 1, 2, 3, 4}
