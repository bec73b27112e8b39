"""Synthetic microscopy-like images with exact masks, for the offline demo and quick experiments.

Each image holds a few bright ellipses ("cells") of random size and orientation on an uneven
background, blurred and with noise; the mask is the union of the ellipses.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def synthetic_cells(size: int = 64, cells: tuple[int, int] = (2, 5), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(image uint8 (size, size), mask uint8 (size, size))``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    mask = np.zeros((size, size), bool)
    for _ in range(rng.integers(cells[0], cells[1] + 1)):
        cy, cx = rng.uniform(0.15, 0.85, 2) * size
        a, b = rng.uniform(0.06, 0.16, 2) * size
        angle = rng.uniform(0, np.pi)
        u = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
        v = -(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)
        mask |= (u / a) ** 2 + (v / b) ** 2 <= 1
    background = 60 + 30 * np.sin(x / size * rng.uniform(2, 5)) * np.cos(y / size * rng.uniform(2, 5))
    image = background + 70 * mask
    image = gaussian_filter(image, 1.0) + rng.normal(0, 12, image.shape)
    return np.clip(image, 1, 255).astype(np.uint8), mask.astype(np.uint8)
