"""The correction loop in 3D: one volume, its objects, and the clicks on any slice that fix each object's mask.

A 3D box gives an object its first mask, propagated slice by slice from the box's middle slice
(:func:`~gnnseg.seg.sam.inference.volume.propagate_box_3d`). A click on slice ``z`` answers that slice again from
every click so far on it and its current mask, then propagates outwards from it
(:func:`~gnnseg.seg.sam.inference.volume.repropagate_from_slice`) with the other slices that have clicks as anchors:
on each side the propagation stops at the slice before the nearest one, so a click never overwrites what clicks on
another slice made. Each object keeps the states it went through, so a click can be undone.

Memory: a state keeps its ``(D, H, W)`` mask packed eight voxels to a byte (``np.packbits``) and unpacks it when
asked (``state.mask``, or one slice with ``state.mask_slice(z)``), so a state costs ``D * H * W / 8`` bytes plus
its clicks and one IoU per slice; ``undo_depth`` bounds how many states an object keeps.

The session is the entrance: the box and every click are checked here (a refused click changes nothing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gnnseg.seg.sam.inference.base import Predictor
from gnnseg.seg.sam.inference.object_history import ObjectHistories
from gnnseg.seg.sam.inference.prompts import checked_prompts
from gnnseg.seg.sam.inference.volume import (
    propagate_box_3d,
    repropagate_from_slice,
    validate_boxes_3d,
    volume_iou,
)

SliceClicks = tuple[np.ndarray, np.ndarray]
"""The clicks on one slice: ``(P, 2)`` float64 x, y and ``(P,)`` int64 labels (1 foreground, 0 background)."""


@dataclass(frozen=True)
class VolumeObjectState:
    """One 3D object after one step: its box, its clicks and the answer they gave (the mask packed)."""

    box: np.ndarray                        # (6,) int64 x_min, y_min, z_min, x_max, y_max, z_max
    clicks: Mapping[int, SliceClicks]      # slice z -> the clicks on it, in the order given
    packed_mask: np.ndarray                # np.packbits of the flattened (D, H, W) bool mask
    shape: tuple[int, int, int]            # (D, H, W)
    slice_iou: np.ndarray                  # (D,) each slice's predicted IoU (0 outside the box's slices)
    iou: float                             # the object's: slices' IoUs weighted by mask area (volume_iou)

    @classmethod
    def packing(cls, box: np.ndarray, clicks: Mapping[int, SliceClicks], mask: np.ndarray,
                slice_iou: np.ndarray) -> VolumeObjectState:
        """The state of a ``(D, H, W)`` bool mask, packed, with its object IoU over the box's slices."""
        return cls(box, clicks, np.packbits(mask, axis=None), mask.shape, slice_iou,
                   volume_iou(mask, slice_iou, int(box[2]), int(box[5])))

    @property
    def mask(self) -> np.ndarray:
        """The ``(D, H, W)`` bool mask, unpacked (a new array at each call)."""
        return np.unpackbits(self.packed_mask, count=math.prod(self.shape)).view(bool).reshape(self.shape)

    def mask_slice(self, z: int) -> np.ndarray:
        """The ``(H, W)`` bool mask of slice ``z``, unpacking only its bytes."""
        depth, height, width = self.shape
        if not 0 <= z < depth:
            raise ValueError(f"slice {z} is outside the volume's slices 0..{depth - 1}")
        start, size = z * height * width, height * width
        bits = np.unpackbits(self.packed_mask[start // 8:(start + size + 7) // 8])
        return bits[start % 8:start % 8 + size].view(bool).reshape(height, width)

    @property
    def nbytes(self) -> int:
        return (self.packed_mask.nbytes + self.slice_iou.nbytes
                + sum(points.nbytes + labels.nbytes for points, labels in self.clicks.values()))


class VolumeSession(ObjectHistories[VolumeObjectState]):
    """A volume being segmented object by object, each object a 3D box corrected click by click on any slice.

    ``volume`` is the ``(D, H, W)`` array scaled to 0..255 that
    :func:`~gnnseg.seg.sam.inference.volume.segment_box_3d` takes (held, not copied). ``add`` starts an object from
    a 3D box and returns its id; ``click`` adds one click on one slice; ``undo`` takes back the last click; ``state``
    tells where an object stands. ``predictor`` answers slice by slice and may be replaced between calls (the service
    gives each request its own). ``undo_depth`` bounds the states an object keeps (each a packed mask).
    """

    def __init__(self, predictor: Predictor, volume: np.ndarray, *, undo_depth: int | None = None,
                 margin: int = 3) -> None:
        super().__init__(undo_depth)
        volume = np.asarray(volume)
        if volume.ndim != 3 or min(volume.shape) == 0:
            raise ValueError(f"volume must be (D, H, W), got shape {volume.shape}")
        self.predictor, self.volume, self.margin = predictor, volume, margin

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.volume.shape

    @property
    def image_nbytes(self) -> int:
        """Bytes of the volume the session holds."""
        return self.volume.nbytes

    def add(self, box3d: np.ndarray) -> int:
        """A new object from one 3D box ``x_min, y_min, z_min, x_max, y_max, z_max`` (voxel indices), propagated
        from its middle slice; its id."""
        boxes = validate_boxes_3d(box3d, self.shape)
        if len(boxes) != 1:
            raise ValueError(f"an object has one 3D box, got {len(boxes)}")
        mask, slice_iou = propagate_box_3d(self.predictor, self.volume, boxes[0], self.margin)
        return self._new_object(VolumeObjectState.packing(boxes[0], {}, mask, slice_iou))

    def click(self, object_id: int, z: int, x: float, y: float, positive: bool) -> VolumeObjectState:
        """Add a click at ``(x, y)`` of slice ``z`` (voxel indices; ``positive``: inside the object), answer that
        slice again from all its clicks and its current mask, and propagate again from it up to the slices the
        other clicks anchor (or the box's ends)."""
        current = self.state(object_id)
        z = self._checked_slice(current.box, z)
        before = current.clicks.get(z, (np.zeros((0, 2)), np.zeros(0, dtype=np.int64)))
        points = np.concatenate([before[0], [[x, y]]]).astype(np.float64)
        labels = np.concatenate([before[1], [1 if positive else 0]]).astype(np.int64)
        checked_prompts(None, points[None], labels[None], self.shape[1:])   # refuses a bad click before any change
        anchors = [s for s in current.clicks if s != z]
        mask, slice_iou = repropagate_from_slice(self.predictor, self.volume, current.box, current.mask,
                                                 current.slice_iou, z, points, labels, self.margin, anchors=anchors)
        state = VolumeObjectState.packing(current.box, {**current.clicks, z: (points, labels)}, mask, slice_iou)
        self._push(object_id, state)
        return state

    @staticmethod
    def _checked_slice(box: np.ndarray, z: int) -> int:
        if isinstance(z, bool) or not isinstance(z, int | np.integer):
            raise ValueError(f"a slice is a whole number, got {z!r}")
        if not box[2] <= z <= box[5]:
            raise ValueError(f"slice {z} lies outside the 3D box's slices {box[2]}..{box[5]}")
        return int(z)
