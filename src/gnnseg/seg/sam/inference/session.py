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

from dataclasses import dataclass, field

import numpy as np

from gnnseg.seg.io.intensity import to_rgb_uint8
from gnnseg.seg.sam.inference.base import Predictor
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


@dataclass
class _Object:
    states: list[ObjectState] = field(default_factory=list)
    forgotten: int = 0   # states dropped beyond the undo depth


class InteractiveSession:
    """An image being segmented object by object, each object corrected click by click.

    ``add`` starts an object from a box and/or points and returns its id; ``click`` adds one point to it; ``undo``
    takes back the last click; ``state`` tells where an object stands. ``undo_depth`` bounds the states an object
    keeps (each holds logits the size of the image): at most that many clicks can be taken back.
    """

    def __init__(self, predictor: Predictor, image: np.ndarray, *, undo_depth: int | None = None) -> None:
        if undo_depth is not None and undo_depth < 0:
            raise ValueError(f"undo_depth must be >= 0 or None, got {undo_depth}")
        self.predictor = predictor
        self.undo_depth = undo_depth
        self.rgb = to_rgb_uint8(image)
        self._objects: dict[int, _Object] = {}
        self._next_id = 1

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.rgb.shape[:2]

    def add(self, box: np.ndarray | None = None, points: np.ndarray | None = None,
            labels: np.ndarray | None = None) -> int:
        """A new object from a box ``x0, y0, x1, y1`` and/or ``(P, 2)`` points with their labels; its id."""
        prompts = checked_prompts(None if box is None else np.asarray(box)[None], None if points is None else
                                  np.asarray(points, dtype=np.float64)[None], None if labels is None else
                                  np.asarray(labels)[None], self.image_shape)
        given_points = prompts.points[0] if prompts.points is not None else np.zeros((0, 2))
        given_labels = prompts.labels[0] if prompts.labels is not None else np.zeros(0, dtype=np.int64)
        state = self._answer(None if prompts.boxes is None else prompts.boxes[0], given_points, given_labels, None)
        object_id, self._next_id = self._next_id, self._next_id + 1
        self._objects[object_id] = _Object([state])
        return object_id

    def click(self, object_id: int, x: float, y: float, positive: bool) -> ObjectState:
        """Add a point at ``(x, y)`` (pixel indices; ``positive``: inside the object) and answer the object again
        from its box, all its points and its previous logits."""
        current = self.state(object_id)
        points = np.concatenate([current.points, [[x, y]]]).astype(np.float64)
        labels = np.concatenate([current.labels, [1 if positive else 0]]).astype(np.int64)
        checked_prompts(None if current.box is None else current.box[None], points[None], labels[None],
                        self.image_shape)   # refuses a bad click before anything changes
        state = self._answer(current.box, points, labels, current.logits)
        states = self._objects[object_id].states
        states.append(state)
        if self.undo_depth is not None and len(states) > self.undo_depth + 1:
            del states[0]
            self._objects[object_id].forgotten += 1
        return state

    def undo(self, object_id: int) -> ObjectState:
        """Take back the object's last click; the state it returns to."""
        tracked = self._object(object_id)
        states = tracked.states
        if len(states) == 1:
            raise ValueError(f"object {object_id} has no click to undo" if not tracked.forgotten else
                             f"object {object_id} keeps no earlier state (the last {self.undo_depth} clicks can be "
                             "undone)")
        states.pop()
        return states[-1]

    def state(self, object_id: int) -> ObjectState:
        return self._object(object_id).states[-1]

    def history(self, object_id: int) -> list[ObjectState]:
        """The states the object keeps, oldest first (the last is its current state)."""
        return list(self._object(object_id).states)

    def remove(self, object_id: int) -> None:
        self._object(object_id)
        del self._objects[object_id]

    @property
    def object_ids(self) -> list[int]:
        return list(self._objects)

    def _object(self, object_id: int) -> _Object:
        if object_id not in self._objects:
            known = ", ".join(map(str, self._objects)) or "none"
            raise KeyError(f"no object {object_id} in this session (objects: {known})")
        return self._objects[object_id]

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
