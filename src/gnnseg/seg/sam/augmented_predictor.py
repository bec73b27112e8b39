"""Test-time augmentation: segment an image's flips and quarter turns and average the probabilities.

nnU-Net predicts every patch also mirrored and averages the softmax (Isensee et al., Nat Methods 18:203, 2021,
"test-time augmentation"); a box-prompted model gains in the same way, because its errors along the object's
boundary change with the orientation in which it sees the image. :class:`AugmentedPredictor` wraps any predictor
from :func:`~gnnseg.seg.sam.shipped.make_predictor` and keeps its interface (``set_image`` once, ``predict`` many
times):

- ``set_image`` sets every transformed copy of the image once, so whole-image models encode each copy once and
  find it again in the predictor's embedding memo;
- ``predict`` moves the boxes and points into each copy, predicts, turns each copy's answer back into the image's
  frame and averages the probabilities (:func:`~gnnseg.seg.sam.prediction.averaged`). The mask is the mean
  probability above 0.5; ``logits`` hold the logit of that mean, so ``logits > 0`` is the mask as for every
  predictor; the predicted IoU is the mean over the copies.

Choices (:data:`AUGMENTATIONS`): ``"none"``, ``"flip"`` (the image and its left-right mirror: 2 passes) and ``"d4"``
(the eight symmetries of the square, :mod:`gnnseg.seg.sam.symmetry`). The cost is one pass per copy.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from gnnseg.seg.io.intensity import to_rgb_uint8
from gnnseg.seg.sam.prediction import Prediction, averaged
from gnnseg.seg.sam.preprocess import validate_boxes
from gnnseg.seg.sam.symmetry import DIHEDRAL, Symmetry

AUGMENTATIONS: dict[str, tuple[Symmetry, ...]] = {  # each starts with the image as given, where prompts are checked
    "none": (Symmetry(0, False),),
    "flip": (Symmetry(0, False), Symmetry(0, True)),
    "d4": DIHEDRAL,
}


class Predictor(Protocol):
    model: Any
    encoder_calls: int

    def set_image(self, image: np.ndarray) -> None: ...

    def predict(self, boxes: np.ndarray | None = None, points: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, *, multimask: bool = False) -> Prediction: ...


def symmetries(augmentation: str) -> tuple[Symmetry, ...]:
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown test-time augmentation {augmentation!r}; choose one of {sorted(AUGMENTATIONS)}")
    return AUGMENTATIONS[augmentation]


class PredictorWrapper:
    """A predictor that answers through another one, ``self.predictor``, and reports that one's model and encoder
    calls (:class:`AugmentedPredictor`, :class:`~gnnseg.seg.sam.zoom.ZoomedPredictor`)."""

    predictor: Predictor

    @property
    def model(self):
        return self.predictor.model

    @property
    def encoder_calls(self) -> int:
        return self.predictor.encoder_calls


class AugmentedPredictor(PredictorWrapper):
    """A predictor that answers every prompt on several symmetric copies of the image and averages them.

    ``predictor`` must remember at least as many embeddings as there are copies (``cache_size``), or every
    ``predict`` encodes the image again; :func:`~gnnseg.seg.sam.shipped.make_predictor` gives it room for the copies
    of as many images as a plain predictor would keep.
    """

    def __init__(self, predictor: Predictor, augmentation: str = "d4") -> None:
        self.predictor = predictor
        self.augmentation = augmentation
        self.symmetries = symmetries(augmentation)
        self._copies: list[np.ndarray] = []  # the image as each symmetry shows it, the image as given first

    def set_image(self, image: np.ndarray) -> None:
        """Take an ``(H, W)`` or ``(H, W, 3)`` image and set each of its copies once."""
        rgb = to_rgb_uint8(image)
        self._copies = [symmetry.image(rgb) for symmetry in self.symmetries]
        for copy in self._copies:
            self.predictor.set_image(copy)

    def predict(self, boxes: np.ndarray | None = None, points: np.ndarray | None = None,
                point_labels: np.ndarray | None = None, *, multimask: bool = False) -> Prediction:
        """As the wrapped predictor's ``predict``, averaged over the copies."""
        if not self._copies:
            raise RuntimeError("no image set: call set_image(image) before predict()")
        image_hw = self._copies[0].shape[:2]
        box_array = validate_boxes(boxes, image_hw) if boxes is not None else None
        logits, ious = [], []
        for symmetry, image in zip(self.symmetries, self._copies):
            self.predictor.set_image(image)
            prediction = self.predictor.predict(
                boxes=None if box_array is None else symmetry.boxes(box_array, image_hw),
                points=None if points is None else symmetry.points(points, image_hw),
                point_labels=point_labels, multimask=multimask)
            logits.append(symmetry.restore(prediction.logits))
            ious.append(prediction.iou)
        return averaged(logits, ious)
