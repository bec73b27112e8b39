"""The generated cells used by the demo: reproducible, and the mask marks the bright objects."""

from __future__ import annotations

import numpy as np

from gnnseg.seg.synthetic_cells import synthetic_cells


def test_synthetic_cells_are_reproducible_and_consistent():
    image, mask = synthetic_cells(48, seed=3)
    again, same_mask = synthetic_cells(48, seed=3)
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(mask, same_mask)
    assert image.dtype == np.uint8 and mask.dtype == np.uint8 and image.shape == (48, 48)
    assert 0.02 < mask.mean() < 0.6
    assert image[mask == 1].mean() > image[mask == 0].mean() + 40
    other, other_mask = synthetic_cells(48, seed=4)
    assert not np.array_equal(other_mask, mask)
