"""Box-centred crops: how a small model keeps its resolution on small objects.

SAM and MedSAM resize the whole image to 1024 and let the box select the object. A model that runs on a CPU sees
128-256 pixels, where a polyp or a cell would shrink to a few dozen. A model whose config sets ``crop_margin``
instead sees a square window centred on the box, ``(1 + 2 * margin)`` times its longer side (at least
``MIN_SIDE`` pixels), resized to the model's input; the predicted logits are resized back into the window and
everything outside it is background. The window may extend past the image: that part is zero-padded.

All coordinates are pixel coordinates ``x`` (column) and ``y`` (row) of the original image; a box is
``(x0, y0, x1, y1)`` with inclusive pixel indices, as boxes derived from masks are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SIDE = 16
"""Smallest window side in original pixels (a 3-pixel box still gets some context)."""

BACKGROUND_LOGIT = -20.0
"""Logit given to pixels outside the window (sigmoid ~ 2e-9)."""


@dataclass(frozen=True)
class CropWindow:
    """A square window ``[left, left + side) x [top, top + side)`` in original pixel coordinates (integers)."""

    left: int
    top: int
    side: int

    @classmethod
    def around(cls, box: np.ndarray, margin: float) -> CropWindow:
        x0, y0, x1, y1 = (float(v) for v in box)
        side = max((1 + 2 * margin) * max(x1 - x0 + 1, y1 - y0 + 1), MIN_SIDE)
        side = int(np.ceil(side))
        left = int(np.floor((x0 + x1 + 1) / 2 - side / 2))
        top = int(np.floor((y0 + y1 + 1) / 2 - side / 2))
        return cls(left, top, side)

    def to_input(self, coords: np.ndarray, size: int) -> np.ndarray:
        """Map ``(..., 2k)`` x, y pairs (boxes, points) from the image into the ``size x size`` model input."""
        coords = np.asarray(coords, dtype=np.float64)
        origin = np.tile([self.left, self.top], coords.shape[-1] // 2)
        return (coords - origin) * (size / self.side)

    def cut(self, image: np.ndarray) -> np.ndarray:
        """The window's pixels of an ``(H, W, ...)`` array, zero-padded where the window leaves the image."""
        height, width = image.shape[:2]
        out = np.zeros((self.side, self.side, *image.shape[2:]), dtype=image.dtype)
        src_y = slice(max(self.top, 0), min(self.top + self.side, height))
        src_x = slice(max(self.left, 0), min(self.left + self.side, width))
        if src_y.start < src_y.stop and src_x.start < src_x.stop:
            out[src_y.start - self.top : src_y.stop - self.top, src_x.start - self.left : src_x.stop - self.left] = \
                image[src_y, src_x]
        return out
