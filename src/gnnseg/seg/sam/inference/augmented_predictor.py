"""Test-time augmentation: segment an image's flips and quarter turns and average the probabilities.

nnU-Net predicts every patch also mirrored and averages the softmax (Isensee et al., Nat Methods 18:203, 2021,
"test-time augmentation"); a box-prompted model gains in the same way, because its errors along the object's
boundary change with the orientation in which it sees the image. :class:`AugmentedPredictor` wraps any predictor
from :func:`~gnnseg.seg.sam.inference.chain.make_predictor` and keeps its interface (``set_image`` once, ``predict``
many times):

- ``set_image`` sets every transformed copy of the image once, so whole-image models encode each copy once and
  find it again in the predictor's embedding memo;
- ``predict`` moves the boxes, points and previous logits into each copy, predicts, turns each copy's answer back into
  the image's frame and averages the probabilities (:func:`~gnnseg.seg.sam.inference.prediction.averaged`). The mask is
  the mean probability above 0.5; ``logits`` hold the logit of that mean, so ``logits > 0`` is the mask as for every
  predictor; the predicted IoU is the mean over the copies.

Choices (:data:`AUGMENTATIONS`): ``"none"``, ``"flip"`` (the image and its left-right mirror: 2 passes) and ``"d4"``
(the eight symmetries of the square, :mod:`gnnseg.seg.sam.inference.symmetry`). The cost is one pass per copy.
"""

from __future__ import annotations

import numpy as np

from gnnseg.seg.sam.inference.base import Predictor, PredictorWrapper
from gnnseg.seg.sam.inference.prediction import Prediction, averaged
from gnnseg.seg.sam.inference.prompts import Prompts
from gnnseg.seg.sam.inference.symmetry import DIHEDRAL, Symmetry

AUGMENTATIONS: dict[str, tuple[Symmetry, ...]] = {  # each starts with the image as given
    "none": (Symmetry(0, False),),
    "flip": (Symmetry(0, False), Symmetry(0, True)),
    "d4": DIHEDRAL,
}


def symmetries(augmentation: str) -> tuple[Symmetry, ...]:
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown test-time augmentation {augmentation!r}; choose one of {sorted(AUGMENTATIONS)}")
    return AUGMENTATIONS[augmentation]


class AugmentedPredictor(PredictorWrapper):
    """A predictor that answers every prompt on several symmetric copies of the image and averages them.

    ``predictor`` must remember at least as many embeddings as there are copies (``cache_size``), or every
    ``predict`` encodes the image again; :func:`~gnnseg.seg.sam.inference.chain.make_predictor` gives it room for the
    copies of as many images as a plain predictor would keep.
    """

    def __init__(self, predictor: Predictor, augmentation: str = "d4") -> None:
        self.predictor = predictor
        self.augmentation = augmentation
        self.symmetries = symmetries(augmentation)
        self._copies: list[np.ndarray] = []  # the image as each symmetry shows it, the image as given first

    def set_rgb(self, rgb: np.ndarray) -> None:
        self._image = rgb
        self._copies = [symmetry.image(rgb) for symmetry in self.symmetries]
        for copy in self._copies:
            self.predictor.set_rgb(copy)

    def answer(self, prompts: Prompts, multimask: bool = False) -> Prediction:
        """The wrapped predictor's answer on each copy, turned back and averaged."""
        image_hw = self.image_shape
        logits, ious = [], []
        for symmetry, image in zip(self.symmetries, self._copies):
            self.predictor.set_rgb(image)
            moved = Prompts(None if prompts.boxes is None else symmetry.boxes(prompts.boxes, image_hw),
                            None if prompts.points is None else symmetry.points(prompts.points, image_hw),
                            prompts.labels,
                            None if prompts.mask_logits is None else np.stack([symmetry.image(logits)
                                                                               for logits in prompts.mask_logits]))
            prediction = self.predictor.answer(moved, multimask)
            logits.append(symmetry.restore(prediction.logits))
            ious.append(prediction.iou)
        return averaged(logits, ious)
