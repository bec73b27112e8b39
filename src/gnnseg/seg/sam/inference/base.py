"""What every predictor answers to, and where its input is checked.

A predictor takes an image once (``set_image``) and prompts many times (``predict``). Predictors wrap one another
(test-time augmentation around zoom around the PyTorch or ONNX predictor, :func:`~gnnseg.seg.sam.shipped.
make_predictor`), so the image and the prompts are checked once, by the outermost one: :class:`PredictorEntrance`
turns the image into ``(H, W, 3)`` uint8 and the prompts into :class:`~gnnseg.seg.sam.inference.prompts.Prompts`,
then calls ``set_rgb`` / ``answer``, which take input already checked. A wrapper calls those of the predictor it
wraps, never its ``set_image`` / ``predict``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from gnnseg.seg.io.intensity import to_rgb_uint8
from gnnseg.seg.sam.inference.prediction import Prediction
from gnnseg.seg.sam.inference.prompts import Prompts, checked_prompts


class Predictor(Protocol):
    model: Any
    encoder_calls: int

    def set_image(self, image: np.ndarray) -> None: ...

    def predict(self, boxes: np.ndarray | None = None, points: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, *, mask_logits: np.ndarray | None = None,
                multimask: bool = False) -> Prediction: ...

    def set_rgb(self, rgb: np.ndarray) -> None: ...

    def answer(self, prompts: Prompts, multimask: bool = False) -> Prediction: ...


class PredictorEntrance:
    """``set_image`` and ``predict`` for any predictor that implements ``set_rgb`` (an ``(H, W, 3)`` uint8 image,
    kept as ``self._image``) and ``answer`` (checked prompts)."""

    _image: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int]:
        if self._image is None:
            raise RuntimeError("no image set: call set_image(image) before predict()")
        return self._image.shape[:2]

    def set_image(self, image: np.ndarray) -> None:
        """Take an ``(H, W)`` or ``(H, W, 3)`` image (already windowed / clipped to 0..255 for CT and MR)."""
        self.set_rgb(to_rgb_uint8(image))

    def predict(self, boxes: np.ndarray | None = None, points: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, *, mask_logits: np.ndarray | None = None,
                multimask: bool = False) -> Prediction:
        """Segment the object in each prompt.

        Args:
            boxes: ``(4,)`` or ``(N, 4)`` boxes ``x0, y0, x1, y1`` in pixel indices of the image.
            points: ``(N, P, 2)`` (or ``(P, 2)`` for one prompt) x, y clicks; with boxes, ``N`` must match.
            point_labels: ``(N, P)`` labels, 1 foreground and 0 background.
            mask_logits: ``(N, H, W)`` (or ``(H, W)``) logits of each prompt's previous answer at the image's size
                (``Prediction.logits[:, 0]``): the correction loop feeds them back with the next click.
            multimask: return SAM's three candidate masks per prompt instead of one.
        """
        return self.answer(checked_prompts(boxes, points, point_labels, self.image_shape, mask_logits), multimask)

    def set_rgb(self, rgb: np.ndarray) -> None:
        raise NotImplementedError

    def answer(self, prompts: Prompts, multimask: bool = False) -> Prediction:
        raise NotImplementedError


class PredictorWrapper(PredictorEntrance):
    """A predictor that answers through another one, ``self.predictor``, and reports that one's model and encoder
    calls (:class:`~gnnseg.seg.sam.inference.augmented_predictor.AugmentedPredictor`,
    :class:`~gnnseg.seg.sam.inference.zoom.ZoomedPredictor`)."""

    predictor: Predictor

    @property
    def model(self):
        return self.predictor.model

    @property
    def encoder_calls(self) -> int:
        return self.predictor.encoder_calls
