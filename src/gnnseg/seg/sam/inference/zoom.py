"""Zooming in on the box: a whole-image model segments a window around each box instead of the whole image.

A whole-image model resizes the image's longer side to its input (256 pixels for Lite MedSAM), so a 25-pixel
organ in a 512-pixel CT slice reaches the encoder 12 pixels wide. :class:`ZoomedPredictor` gives each box its own
window instead: a square ``(1 + 2 * context)`` times the box's longer side
(:meth:`~gnnseg.seg.sam.inference.crop.CropWindow.around`) but at least ``min_side`` pixels, centred on the box, moved
inside the image at its borders. ``min_side`` defaults to the model's input size, so the encoder sees a small object at
the image's own resolution, never enlarged (a design without the minimum enlarged small windows and lost accuracy on
images already smaller than the input, docs/sam.md).
The wrapped predictor segments the window as if it were the whole image (same preprocessing and post-processing);
its logits go back into place and every pixel outside the window is background.

With ``scales`` above 1 the box is also seen closer: window ``k`` has ``context / 2**k`` box sizes of context and a
minimum side of ``min_side / 2**k``, so the second one is enlarged up to twice; the probabilities of all windows
are averaged (:func:`~gnnseg.seg.sam.inference.prediction.averaged`), each window counting as background outside itself.
Each scale costs one more encoder pass per box; docs/benchmarks.md measures what two scales gain.

This differs from box-centred models (``crop_margin``, :mod:`gnnseg.seg.sam.inference.crop`), which were trained on
windows and pad them past the border: a whole-image model has only seen images, so its window stays inside one. The cost
is one encoder pass per box instead of one per image. It composes with test-time augmentation
(:func:`~gnnseg.seg.sam.inference.chain.make_predictor` wraps the zoom in the augmentation).
"""

from __future__ import annotations

import math

import numpy as np

from gnnseg.seg.sam.inference.base import Predictor, PredictorWrapper
from gnnseg.seg.sam.inference.crop import BACKGROUND_LOGIT, CropWindow
from gnnseg.seg.sam.inference.prediction import Prediction, averaged
from gnnseg.seg.sam.inference.prompts import Prompts, prompt_extents


def zoom_window(box: np.ndarray, context: float, image_hw: tuple[int, int], min_side: int) -> tuple[slice, slice]:
    """Rows and columns of the window around ``box`` (``x0, y0, x1, y1``) in an image of ``image_hw``.

    A square ``(1 + 2 * context)`` times the box's longer side and at least ``min_side`` pixels, centred on the box,
    moved inside the image where it crosses a border (it still holds the box) and cut to the image only where the
    image is smaller than the window.
    """
    window = CropWindow.around(box, context)
    side = max(window.side, min_side)
    centre_x, centre_y = window.left + window.side / 2, window.top + window.side / 2
    height, width = image_hw

    def span(centre: float, extent: int) -> slice:
        start = int(np.floor(centre - side / 2))
        start = max(0, min(start, extent - side))
        return slice(start, min(start + side, extent))

    return span(centre_y, height), span(centre_x, width)


def check_zoom(context: float) -> float:
    """``context`` as a float, or a ``ValueError`` that says what a zoom context is."""
    if isinstance(context, bool) or not isinstance(context, (int, float)) or not math.isfinite(context) \
            or context < 0:
        raise ValueError(f"zoom context must be a finite number >= 0 (box sizes of context on each side), "
                         f"got {context!r}")
    return float(context)


def check_scales(scales: int) -> int:
    """``scales`` as an int, or a ``ValueError`` that says what it counts."""
    if isinstance(scales, bool) or not isinstance(scales, (int, np.integer)) or scales < 1:
        raise ValueError(f"zoom scales must be a whole number >= 1 (windows per box, each half as wide as the one "
                         f"before), got {scales!r}")
    return int(scales)


class ZoomedPredictor(PredictorWrapper):
    """A predictor that answers each box on a window around it (``set_image`` once, ``predict`` many times), or
    on ``scales`` windows of halving size, averaged."""

    def __init__(self, predictor: Predictor, context: float = 0.5, min_side: int | None = None,
                 scales: int = 1) -> None:
        self.context = check_zoom(context)
        self.scales = check_scales(scales)
        if predictor.model.config.crop_margin is not None:
            raise ValueError("this model already sees a window around each box (crop_margin is set); zoom is for "
                             "whole-image models")
        self.predictor = predictor
        self.min_side = predictor.model.config.image_size if min_side is None else int(min_side)

    def set_rgb(self, rgb: np.ndarray) -> None:
        self._image = rgb  # nothing is encoded until a box says where to look

    def answer(self, prompts: Prompts, multimask: bool = False) -> Prediction:
        """Segment each prompt's object on the windows around its box and points."""
        if prompts.boxes is None:
            raise ValueError("zoom needs a box per prompt (the window is placed around it); prompt with points "
                             "alone without zoom")
        image_hw = self.image_shape
        answers = [self._answer(prompts, index, extent, image_hw, multimask)
                   for index, extent in enumerate(prompt_extents(prompts))]
        return Prediction(*(np.concatenate([getattr(answer, field) for answer in answers])
                            for field in ("masks", "iou", "logits")))

    def windows(self, box: np.ndarray, image_hw: tuple[int, int]) -> list[tuple[slice, slice]]:
        """Rows and columns of each scale's window around ``box`` (a prompt's extent), the widest first."""
        return [zoom_window(box, self.context / 2**k, image_hw, round(self.min_side / 2**k))
                for k in range(self.scales)]

    def _answer(self, prompts: Prompts, index: int, extent: np.ndarray, image_hw: tuple[int, int],
                multimask: bool) -> Prediction:
        """Prompt ``index``'s answer: each window around its ``extent`` segmented as a whole image, pasted back, the
        windows averaged. The window holds the box and the points; the previous logits are cut to it."""
        logits, ious = [], []
        for rows, columns in self.windows(extent, image_hw):
            self.predictor.set_rgb(np.ascontiguousarray(self._image[rows, columns]))
            corner = np.array([columns.start, rows.start], dtype=np.float64)
            inside = self.predictor.answer(Prompts(
                (prompts.boxes[index] - np.tile(corner, 2))[None],
                None if prompts.points is None else (prompts.points[index] - corner)[None],
                None if prompts.labels is None else prompts.labels[index][None],
                None if prompts.mask_logits is None else np.ascontiguousarray(
                    prompts.mask_logits[index][rows, columns])[None]), multimask)
            placed = np.full((*inside.logits.shape[:2], *image_hw), BACKGROUND_LOGIT, dtype=np.float32)
            placed[..., rows, columns] = inside.logits
            logits.append(placed)
            ious.append(inside.iou)
        return averaged(logits, ious)
