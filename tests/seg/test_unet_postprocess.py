"""Keeping the largest connected component of chosen labels (nnU-Net's post-processing step)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from gnnseg.seg.unet.postprocess import keep_largest_component


def test_only_the_largest_component_of_each_chosen_label_survives():
    labels = np.zeros((8, 12, 12), dtype=np.uint8)
    labels[1:4, 1:4, 1:4] = 1          # 27 voxels: the liver
    labels[5:7, 8:10, 8:10] = 1        # 8 voxels labelled liver elsewhere (the spleen, say)
    labels[6, 1, 10] = 1               # one stray voxel
    labels[1:3, 8:11, 1:3] = 2         # one component of label 2
    labels[6:8, 5:7, 5:6] = 2          # and a second one, not asked for
    kept = keep_largest_component(labels, [1, 3])
    assert (kept == 1).sum() == 27 and ndimage.label(kept == 1)[1] == 1
    assert np.array_equal(kept == 2, labels == 2)          # labels not chosen are untouched
    assert kept[5:7, 8:10, 8:10].max() == 0 and kept[6, 1, 10] == 0
    assert (labels == 1).sum() == 36                       # the input is not modified


def test_components_touching_only_at_a_corner_are_separate_in_2d():
    labels = np.zeros((6, 6), dtype=np.uint8)
    labels[0:2, 0:2] = 1
    labels[2:5, 2:5] = 1               # meets the first block at one corner: face connectivity keeps them apart
    kept = keep_largest_component(labels, [1])
    assert (kept == 1).sum() == 9 and kept[0:2, 0:2].max() == 0


def test_background_cannot_be_kept_largest():
    with pytest.raises(ValueError, match="foreground labels"):
        keep_largest_component(np.zeros((3, 3), dtype=np.uint8), [0])
