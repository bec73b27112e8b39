"""Predictors without a model for the wrappers' and the loops' tests: each remembers the images it was set on (as
encoder calls) and the prompts it answered, and paints its logits by a rule the test can reason about."""

from __future__ import annotations

import numpy as np

from gnnseg.seg.sam.inference.base import PredictorEntrance
from gnnseg.seg.sam.inference.prediction import Prediction
from gnnseg.seg.sam.inference.prompts import Prompts


class StandInPredictor(PredictorEntrance):
    """A whole-image predictor whose logits are ``-magnitude`` everywhere except where :meth:`paint` puts
    ``+magnitude``; its predicted IoU is :meth:`iou`."""

    magnitude = 5.0

    class model:
        class config:
            crop_margin = None
            image_size = 16

    def __init__(self) -> None:
        self.encoder_calls = 0
        self.images: list[np.ndarray] = []
        self.received: list[Prompts] = []

    def set_rgb(self, rgb: np.ndarray) -> None:
        self._image = rgb
        self.images.append(rgb)
        self.encoder_calls += 1

    def answer(self, prompts: Prompts, multimask: bool = False) -> Prediction:
        self.received.append(prompts)
        count = len(prompts.boxes) if prompts.boxes is not None else len(prompts.points)
        logits = np.full((count, 1, *self.image_shape), -self.magnitude, dtype=np.float32)
        for index in range(count):
            self.paint(logits[index, 0], prompts, index)
        return Prediction(logits > 0, np.full((count, 1), self.iou()), logits)

    def paint(self, plane: np.ndarray, prompts: Prompts, index: int) -> None:
        raise NotImplementedError

    def iou(self) -> float:
        return 0.7

    def paint_clicks(self, plane: np.ndarray, prompts: Prompts, index: int, *, negative: bool) -> None:
        """+magnitude at the prompt's positive clicks (and, with ``negative``, -magnitude at its negative ones)."""
        if prompts.points is None:
            return
        for (x, y), label in zip(prompts.points[index], prompts.labels[index]):
            if label == 1 or negative:
                plane[int(round(y)), int(round(x))] = self.magnitude if label == 1 else -self.magnitude


class BoxFill(StandInPredictor):
    """+5 inside each box."""

    def paint(self, plane: np.ndarray, prompts: Prompts, index: int) -> None:
        x0, y0, x1, y1 = prompts.boxes[index].astype(int)
        plane[y0 : y1 + 1, x0 : x1 + 1] = self.magnitude


class LeftHalfOfTheBox(StandInPredictor):
    """Not mirror-symmetric: +10 on the left half of each box; the predicted IoU alternates 0.2 / 0.3 by image."""

    magnitude = 10.0

    def paint(self, plane: np.ndarray, prompts: Prompts, index: int) -> None:
        x0, y0, x1, y1 = prompts.boxes[index].astype(int)
        plane[y0 : y1 + 1, x0 : (x0 + x1 + 1) // 2] = self.magnitude

    def iou(self) -> float:
        return 0.2 + 0.1 * (len(self.images) % 2)


class PaintsClicks(StandInPredictor):
    """+10 at every positive click only (a box paints nothing)."""

    magnitude = 10.0

    def paint(self, plane: np.ndarray, prompts: Prompts, index: int) -> None:
        self.paint_clicks(plane, prompts, index, negative=False)


class BoxAndClicks(BoxFill):
    """+5 inside the box, then +5 / -5 at its positive / negative clicks."""

    def paint(self, plane: np.ndarray, prompts: Prompts, index: int) -> None:
        super().paint(plane, prompts, index)
        self.paint_clicks(plane, prompts, index, negative=True)


class CutsAtNegativeClicks(BoxFill):
    """+5 inside the box, -5 in every column from a negative click's x rightwards, then +5 at its positive clicks: a
    negative click narrows the mask, so a 3D propagation from the clicked slice shows where it went."""

    def paint(self, plane: np.ndarray, prompts: Prompts, index: int) -> None:
        super().paint(plane, prompts, index)
        if prompts.points is None:
            return
        for (x, _), label in zip(prompts.points[index], prompts.labels[index]):
            if label == 0:
                plane[:, int(round(x)):] = -self.magnitude
        self.paint_clicks(plane, prompts, index, negative=False)
