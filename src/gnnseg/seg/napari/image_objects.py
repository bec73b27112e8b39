"""The objects of one napari image: a session of the service's kind over its pixels, and the labels they paint.

A 2D image is an :class:`~gnnseg.seg.sam.inference.session.InteractiveSession` (one decoder pass a click), a volume a
:class:`~gnnseg.seg.sam.inference.volume_session.VolumeSession` (a 3D box propagated slice by slice, clicks on any
slice re-propagated), exactly as the HTTP service keeps them; this module only says which object a click is for and
what the Labels layer shows. Object ``k`` of the session is label ``k``; where objects overlap, the later one wins (as
the challenge's ``segs`` are painted).

Nothing here touches Qt or a layer: the widget runs these methods on a worker thread, one at a time, and pastes the
:class:`LabelPatch` they return into its Labels layer on the GUI thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gnnseg.seg.napari.layer_inputs import ImageTarget
from gnnseg.seg.sam.inference.base import Predictor
from gnnseg.seg.sam.inference.session import InteractiveSession
from gnnseg.seg.sam.inference.volume_session import VolumeSession

LABEL_DTYPE = np.uint16
"""Labels as the challenge writes them: more than 255 objects stay distinct."""


@dataclass(frozen=True)
class LabelPatch:
    """What changed in the labels: ``labels`` replaces ``region`` (a tuple of slices) of the label image."""

    object_id: int
    region: tuple[slice, ...]
    labels: np.ndarray
    iou: float
    """The object's predicted IoU (0 once it is removed)."""
    removed: bool = False


class ImageObjects:
    """The objects being segmented on one image, with the session that answers them (the service's session model).

    ``predictor`` may be replaced between calls (a new model picked); the objects already answered keep their masks.
    Every click can be undone (a state is a 2D object's logits or a 3D object's packed mask: a viewer's objects are
    few).
    """

    def __init__(self, target: ImageTarget, predictor: Predictor) -> None:
        self.target = target
        session_type = VolumeSession if target.is_volume else InteractiveSession
        self.session = session_type(predictor, target.pixels)
        self._touched: list[int] = []    # object ids, the one answered last at the end

    @property
    def predictor(self) -> Predictor:
        return self.session.predictor

    @predictor.setter
    def predictor(self, predictor: Predictor) -> None:
        self.session.predictor = predictor

    @property
    def object_ids(self) -> list[int]:
        return self.session.object_ids

    def add_box(self, box: np.ndarray) -> LabelPatch:
        """A new object from a box (``(4,)`` on a 2D image, ``(6,)`` on a volume)."""
        if self.target.is_volume:
            if len(box) != 6:
                raise ValueError(f"a volume takes a 3D box (x_min, y_min, z_min, x_max, y_max, z_max), got {box}")
            object_id = self.session.add(box)
        else:
            if len(box) != 4:
                raise ValueError(f"{self.target.name!r} is a 2D image: a box is (x0, y0, x1, y1), got {box}")
            object_id = self.session.add(box=box)
        self._touch(object_id)
        return self._patch(object_id)

    def click(self, x: float, y: float, z: int | None, positive: bool) -> LabelPatch:
        """A click at ``(x, y)`` (slice ``z`` of a volume) on the object it is for (:meth:`object_for`)."""
        object_id = self.object_for(x, y, z)
        if self.target.is_volume:
            self.session.click(object_id, z, x, y, positive)
        else:
            self.session.click(object_id, x, y, positive)
        self._touch(object_id)
        return self._patch(object_id)

    def undo(self) -> LabelPatch:
        """Take back the last click of the object answered last; an object without clicks is removed."""
        if not self._touched:
            raise ValueError("no object to undo: draw a box first")
        object_id = self._touched[-1]
        if len(self.session.history(object_id)) > 1:
            self.session.undo(object_id)
            return self._patch(object_id)
        region = self._extent(object_id)
        self.session.remove(object_id)
        self._touched.remove(object_id)
        return LabelPatch(object_id, region, self._painted(region), 0.0, removed=True)

    def labels(self) -> np.ndarray:
        """The whole label image of every object so far."""
        return self._painted(tuple(slice(0, extent) for extent in self.target.shape))

    def object_for(self, x: float, y: float, z: int | None) -> int:
        """The object a click is for: the one answered last whose box holds the click (and, on a volume, its slice),
        else the one answered last (a click may add what lies outside the box)."""
        if not self._touched:
            raise ValueError("a click corrects an object: draw its box first")
        for object_id in reversed(self._touched):
            box = self.session.state(object_id).box
            if box is None:
                continue
            if self.target.is_volume:
                inside = box[0] <= x <= box[3] and box[1] <= y <= box[4] and box[2] <= z <= box[5]
            else:
                inside = box[0] <= x <= box[2] and box[1] <= y <= box[3]
            if inside:
                return object_id
        return self._touched[-1]

    def _touch(self, object_id: int) -> None:
        if object_id in self._touched:
            self._touched.remove(object_id)
        self._touched.append(object_id)

    def _extent(self, object_id: int) -> tuple[slice, ...]:
        """Where the object's mask can lie: a 3D object's box (propagation keeps it there), a 2D object's image."""
        if not self.target.is_volume:
            return tuple(slice(0, extent) for extent in self.target.shape)
        x0, y0, z0, x1, y1, z1 = (int(v) for v in self.session.state(object_id).box)
        return slice(z0, z1 + 1), slice(y0, y1 + 1), slice(x0, x1 + 1)

    def _patch(self, object_id: int) -> LabelPatch:
        region = self._extent(object_id)
        return LabelPatch(object_id, region, self._painted(region), float(self.session.state(object_id).iou))

    def _painted(self, region: tuple[slice, ...]) -> np.ndarray:
        """The labels of ``region`` from every object, oldest first (so the later wins where they overlap)."""
        labels = np.zeros(tuple(s.stop - s.start for s in region), LABEL_DTYPE)
        for object_id in self.session.object_ids:
            state = self.session.state(object_id)
            if self.target.is_volume:
                z_range = range(max(region[0].start, int(state.box[2])), min(region[0].stop, int(state.box[5]) + 1))
                for z in z_range:
                    plane = state.mask_slice(z)[region[1], region[2]]
                    labels[z - region[0].start][plane] = object_id
            else:
                labels[state.mask[region]] = object_id
        return labels
