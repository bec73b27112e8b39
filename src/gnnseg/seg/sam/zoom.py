"""Zooming in on the box: a whole-image model segments a window around each box, as large as the image allows.

A whole-image model resizes the image's longer side to its input (256 pixels for Lite MedSAM), so a 40-pixel
kidney in a 512-pixel CT slice reaches the encoder 20 pixels wide. :class:`ZoomedPredictor` gives each box its own
window instead: a square ``(1 + 2 * context)`` times the box's longer side, centred on the box
(:meth:`~gnnseg.seg.sam.crop.CropWindow.around`) and then cut back to the image, so a large object keeps the whole
image and a small one is seen several times larger. The wrapped predictor segments the window as if it were the
whole image (same preprocessing, same post-processing); its logits go back into place and every pixel outside the
window is background.

This differs from box-centred models (``crop_margin``, :mod:`gnnseg.seg.sam.crop`), which were trained on such
windows and pad them past the border: a whole-image model has only seen images, so the window stays inside one.
The cost is one encoder pass per box instead of one per image. It composes with test-time augmentation
(:func:`~gnnseg.seg.sam.shipped.make_predictor` wraps the zoom in the augmentation).
"""

from __future__ import annotations

import math

import numpy as np

from gnnseg.seg.sam.augmented_predictor import Predictor
from gnnseg.seg.sam.crop import BACKGROUND_LOGIT, CropWindow
from gnnseg.seg.sam.prediction import Prediction
from gnnseg.seg.sam.preprocess import to_rgb_uint8, validate_boxes


def zoom_window(box: np.ndarray, context: float, image_hw: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the window around ``box`` (``x0, y0, x1, y1``), cut back to an image of ``image_hw``."""
    window = CropWindow.around(box, context)
    height, width = image_hw
    rows = slice(max(window.top, 0), min(window.top + window.side, height))
    columns = slice(max(window.left, 0), min(window.left + window.side, width))
    return rows, columns


def check_zoom(context: float) -> float:
    """``context`` as a float, or a ``ValueError`` that says what a zoom context is."""
    if isinstance(context, bool) or not isinstance(context, (int, float)) or not math.isfinite(context) \
            or context < 0:
        raise ValueError(f"zoom context must be a finite number >= 0 (box sizes of context on each side), "
                         f"got {context!r}")
    return float(context)


class ZoomedPredictor:
    """A predictor that answers each box on a window around it (``set_image`` once, ``predict`` many times)."""

    def __init__(self, predictor: Predictor, context: float = 0.5) -> None:
        self.context = check_zoom(context)
        if predictor.model.config.crop_margin is not None:
            raise ValueError("this model already sees a window around each box (crop_margin is set); zoom is for "
                             "whole-image models")
        self.predictor = predictor
        self._image: np.ndarray | None = None

    @property
    def model(self):
        return self.predictor.model

    @property
    def encoder_calls(self) -> int:
        return self.predictor.encoder_calls

    def set_image(self, image: np.ndarray) -> None:
        """Take an ``(H, W)`` or ``(H, W, 3)`` image; nothing is encoded until a box says where to look."""
        self._image = to_rgb_uint8(image)

    def predict(self, boxes: np.ndarray | None = None, points: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, *, multimask: bool = False) -> Prediction:
        """Segment the object in each ``(4,)`` or ``(N, 4)`` box ``x0, y0, x1, y1`` (pixel indices)."""
        if self._image is None:
            raise RuntimeError("no image set: call set_image(image) before predict()")
        if boxes is None or points is not None or point_labels is not None:
            raise ValueError("zoom answers box prompts only (the window is placed around the box); "
                             "prompt with points without zoom")
        image_hw = self._image.shape[:2]
        box_array = validate_boxes(boxes, image_hw)
        masks, ious, logits = [], [], []
        for box in box_array:
            rows, columns = zoom_window(box, self.context, image_hw)
            self.predictor.set_image(self._image[rows, columns])
            offset = np.array([columns.start, rows.start, columns.start, rows.start], dtype=np.float64)
            inside = self.predictor.predict(boxes=box - offset, multimask=multimask)
            placed = np.full((*inside.logits.shape[:2], *image_hw), BACKGROUND_LOGIT, dtype=np.float32)
            placed[..., rows, columns] = inside.logits
            mask = np.zeros(placed.shape, dtype=bool)
            mask[..., rows, columns] = inside.masks
            masks.append(mask)
            ious.append(inside.iou)
            logits.append(placed)
        return Prediction(np.concatenate(masks), np.concatenate(ious), np.concatenate(logits))
