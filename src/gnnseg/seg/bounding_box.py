"""The bounding box of a mask's True region, numpy only: the segmentation metrics, nnU-Net's crop to nonzero and the
label painter (on ``seg segment``'s start-up path, which must not load scipy) share it."""

from __future__ import annotations

import numpy as np


def bounding_box(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` per axis of the True region of ``mask``; the whole array when it is empty."""
    if not mask.any():
        return [(0, size) for size in mask.shape]
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append((int(present[0]), int(present[-1]) + 1))
    return box
