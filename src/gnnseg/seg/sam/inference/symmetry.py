"""The eight symmetries of the square (quarter turns, each also mirrored), for images, masks, points and boxes.

Training draws one per sample as augmentation (:mod:`gnnseg.seg.sam.training.finetune`,
:mod:`gnnseg.seg.sam.training.prepared`); test-time augmentation averages over several
(:mod:`gnnseg.seg.sam.inference.augmented_predictor`). Coordinates are pixel indices, x the column and y the row, so
mirroring an image of width ``W`` sends ``x`` to ``W - 1 - x``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch-free at import: the ONNX path predicts without it
    from torch import Tensor


@dataclass(frozen=True)
class Symmetry:
    """Mirror left-right (``mirror``), then turn by ``quarter_turns`` x 90 degrees counter-clockwise (``np.rot90``)."""

    quarter_turns: int
    mirror: bool

    def image(self, image: np.ndarray) -> np.ndarray:
        """The ``(H, W, ...)`` image as this symmetry shows it."""
        if self.mirror:
            image = image[:, ::-1]
        return np.ascontiguousarray(np.rot90(image, self.quarter_turns, axes=(0, 1)))

    def plane(self, x: Tensor) -> Tensor:
        """The same move on the last two axes of an ``(..., H, W)`` tensor (a ``(C, H, W)`` input, a mask)."""
        if self.mirror:
            x = x.flip(-1)
        return x.rot90(self.quarter_turns, dims=(-2, -1))

    def points(self, xy: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
        """``(..., 2)`` x, y pixel positions of an ``(H, W)`` image, moved to where :meth:`image` puts them."""
        x, y = np.moveaxis(np.asarray(xy, dtype=np.float64), -1, 0)
        height, width = image_hw
        if self.mirror:
            x = width - 1 - x
        for _ in range(self.quarter_turns):  # a counter-clockwise turn sends (x, y) to (y, W - 1 - x)
            x, y = y, width - 1 - x
            height, width = width, height
        return np.stack([x, y], axis=-1)

    def boxes(self, boxes: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
        """``(N, 4)`` boxes ``x0, y0, x1, y1``: both corners moved, then ordered again."""
        corners = self.points(boxes.reshape(-1, 2, 2), image_hw)
        return np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=-1)

    def restore(self, array: np.ndarray) -> np.ndarray:
        """Undo :meth:`image` on the last two axes of ``(..., H', W')`` (masks and probabilities)."""
        array = np.rot90(array, -self.quarter_turns, axes=(-2, -1))
        return array[..., ::-1] if self.mirror else array


DIHEDRAL = tuple(Symmetry(turns, mirror) for turns in range(4) for mirror in (False, True))
"""All eight, the identity first."""
