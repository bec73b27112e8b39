"""The correction loop: one image, its objects, and the clicks that fix each object's mask.

A box (or a first click) gives an object its first mask; every later click adds a point, positive where the mask
missed the object and negative where it spilled over, and the object is answered again from its box, all its points
and its previous logits as a dense prompt (SAM's interactive loop, Kirillov et al. 2023, Appendix A). The image is
set on the predictor once; a whole-image model keeps its embedding in the predictor's memo, so a click costs one
decoder pass. Each object keeps the states it went through, so a click can be undone.

The session is the entrance: prompts are checked here (a refused click changes nothing) and the predictor answers
them as given (:mod:`gnnseg.seg.sam.inference.base`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gnnseg.seg.io.intensity import to_rgb_uint8
from gnnseg.seg.sam.inference.base import Predictor
from gnnseg.seg.sam.inference.object_history import ObjectHistories
from gnnseg.seg.sam.inference.prediction import Prediction
from gnnseg.seg.sam.inference.prompts import Prompts, checked_prompts


@dataclass(frozen=True)
class ObjectState:
    """One object after one step: its prompts and the answer they gave."""

    box: np.ndarray | None           # (4,) x0, y0, x1, y1, or None for an object started from a click
    points: np.ndarray               # (P, 2) x, y of every click so far
    labels: np.ndarray               # (P,) 1 foreground, 0 background
    logits: np.ndarray               # (H, W) float32 at the image's size; the mask is logits > 0
    iou: float                       # the model's own estimate of the mask's IoU

    @property
    def mask(self) -> np.ndarray:
        return self.logits > 0

    @property
    def nbytes(self) -> int:
        return self.logits.nbytes + self.points.nbytes + self.labels.nbytes


class InteractiveSession(ObjectHistories[ObjectState]):
    """An image being segmented object by object, each object corrected click by click.

    ``add`` starts an object from a box and/or points and returns its id; ``click`` adds one point to it; ``undo``
    takes back the last click; ``state`` tells where an object stands. ``undo_depth`` bounds the states an object
    keeps (each holds logits the size of the image): at most that many clicks can be taken back.
    """

    def __init__(self, predictor: Predictor, image: np.ndarray, *, undo_depth: int | None = None) -> None:
        super().__init__(undo_depth)
        self.predictor = predictor
        self.rgb = to_rgb_uint8(image)

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.rgb.shape[:2]

    @property
    def image_nbytes(self) -> int:
        """Bytes of the image the session holds."""
        return self.rgb.nbytes

    def add(self, box: np.ndarray | None = None, points: np.ndarray | None = None,
            labels: np.ndarray | None = None) -> int:
        """A new object from a box ``x0, y0, x1, y1`` and/or ``(P, 2)`` points with their labels; its id."""
        prompts = checked_prompts(None if box is None else np.asarray(box)[None], None if points is None else
                                  np.asarray(points, dtype=np.float64)[None], None if labels is None else
                                  np.asarray(labels)[None], self.image_shape)
        given_points = prompts.points[0] if prompts.points is not None else np.zeros((0, 2))
        given_labels = prompts.labels[0] if prompts.labels is not None else np.zeros(0, dtype=np.int64)
        state = self._answer(None if prompts.boxes is None else prompts.boxes[0], given_points, given_labels, None)
        return self._new_object(state)

    def click(self, object_id: int, x: float, y: float, positive: bool) -> ObjectState:
        """Add a point at ``(x, y)`` (pixel indices; ``positive``: inside the object) and answer the object again
        from its box, all its points and its previous logits."""
        current = self.state(object_id)
        points = np.concatenate([current.points, [[x, y]]]).astype(np.float64)
        labels = np.concatenate([current.labels, [1 if positive else 0]]).astype(np.int64)
        checked_prompts(None if current.box is None else current.box[None], points[None], labels[None],
                        self.image_shape)   # refuses a bad click before anything changes
        state = self._answer(current.box, points, labels, current.logits)
        self._push(object_id, state)
        return state

    def _answer(self, box: np.ndarray | None, points: np.ndarray, labels: np.ndarray,
                previous: np.ndarray | None) -> ObjectState:
        """One decoder pass: the image set (a memo hit after the first), the prompts as checked."""
        self.predictor.set_rgb(self.rgb)
        single_click = box is None and len(points) == 1 and previous is None
        prompts = Prompts(None if box is None else box[None], points[None] if len(points) else None,
                          labels[None] if len(points) else None, None if previous is None else previous[None])
        prediction: Prediction = self.predictor.answer(prompts, multimask=single_click)
        best = int(np.argmax(prediction.iou[0])) if single_click else 0   # one click is ambiguous: SAM's rule
        return ObjectState(box, points, labels, prediction.logits[0, best].astype(np.float32),
                           float(prediction.iou[0, best]))
