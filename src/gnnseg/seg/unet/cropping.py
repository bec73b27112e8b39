"""Crop a case to the bounding box of its nonzero voxels (nnU-Net's first preprocessing step)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_fill_holes

from gnnseg.seg.bounding_box import bounding_box

OUTSIDE_NONZERO_LABEL = -1  # label given to cropped-box voxels that lie outside the nonzero region


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """Voxels where any channel is nonzero, holes filled. ``data (C, *spatial)`` -> ``bool (*spatial)``."""
    return binary_fill_holes(np.any(data != 0, axis=0))


def crop_to_nonzero(data: np.ndarray, seg: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None, list[tuple[int, int]]]:
    """Crop ``data (C, *spatial)`` and ``seg (1, *spatial)`` to the nonzero bounding box.

    Inside the box, label voxels outside the nonzero region become ``-1`` (they are never foreground
    candidates, and z-score normalisation with ``use_mask_for_norm`` leaves them at zero).
    """
    mask = nonzero_mask(data)
    box = bounding_box(mask)
    slices = tuple(slice(start, stop) for start, stop in box)
    cropped = data[(slice(None), *slices)]
    cropped_mask = mask[slices]
    if seg is not None:
        seg = seg[(slice(None), *slices)].copy()
        seg[(seg == 0) & ~cropped_mask[None]] = OUTSIDE_NONZERO_LABEL
    else:
        seg = np.where(cropped_mask, 0, OUTSIDE_NONZERO_LABEL).astype(np.int8)[None]
    return cropped, seg, box
