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
