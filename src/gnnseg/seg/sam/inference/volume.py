"""3D box prompts: segment a volume slice by slice, starting in the middle of the box and propagating outwards.

The CVPR 2024 "MedSAM on Laptop" baseline (``CVPR24_LiteMedSAM_infer.py``) turns one 3D box
``(x_min, y_min, z_min, x_max, y_max, z_max)`` into 2D prompts this way:

1. the middle slice ``z_min + (z_max - z_min) // 2`` is segmented with the box's in-plane rectangle;
2. each following slice up to ``z_max`` is prompted with the bounding box of the previous slice's mask (grown by
   ``margin`` pixels); if the previous mask came out empty, with the original rectangle;
3. the same downwards to ``z_min``.

One departure: the 3D box bounds its object in every axis, so here the propagated prompt and each slice's mask are
kept inside the box's rectangle. The baseline lets them grow, and a small organ's mask can then paint over its
neighbours (docs/benchmarks.md measures the difference).

Label ``k`` of the result is box ``k`` (1-based); where objects overlap, the smaller keeps the voxel, or with
``overlaps="box-order"`` the later box, as in the baseline (:mod:`gnnseg.seg.io.label_painter`).

Several boxes are propagated together, slice by slice: first every box upwards from its middle slice, in rising
``z``, then every box downwards, in falling ``z``; on each slice the boxes there are answered in one call. Each box
still sees its slices in its own order, so its mask is the one it would get alone, but a slice is encoded at most
twice (once per pass, and once in all with a memo that holds the volume) instead of once per box that crosses it.

Clicks on any slice correct a 3D object (:func:`correct_slice_3d`, :func:`repropagate_from_slice`): that slice is
answered again from its box, the clicks and its current mask, and the slices beyond it are propagated again from the
corrected one, to the 3D box's ends or, on each side, to the slice before the nearest *anchor*, a slice corrected
with clicks of its own, whose mask is kept (a click elsewhere must not undo what the user fixed there).
:class:`~gnnseg.seg.sam.inference.volume_session.VolumeSession` keeps 3D objects and their clicks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from gnnseg.seg.io.challenge_npz import ChallengeCase, segs_from_masks
from gnnseg.seg.io.label_painter import OVERLAP_RULES, check_overlap_rule
from gnnseg.seg.sam.inference.prompts import boxes_from_mask, validate_boxes

if TYPE_CHECKING:
    from gnnseg.seg.sam.inference.onnx_predictor import OnnxPredictor
    from gnnseg.seg.sam.inference.predictor import SamPredictor


def validate_boxes_3d(boxes: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Check ``(N, 6)`` boxes ``x_min, y_min, z_min, x_max, y_max, z_max`` against a ``(D, H, W)`` volume.

    In-plane coordinates are checked and clipped as 2D boxes are; ``z`` must satisfy ``z_min <= z_max`` and
    overlap ``0..D-1`` (it is then clipped). Returns int64 ``(N, 6)``.
    """
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 6 or len(array) == 0:
        raise ValueError(f"3D boxes must have shape (N, 6) as (x_min, y_min, z_min, x_max, y_max, z_max), "
                         f"got {np.shape(boxes)}")
    depth = shape[0]
    in_plane = validate_boxes(array[:, [0, 1, 3, 4]], shape[1:])
    for index, (z0, z1) in enumerate(array[:, [2, 5]]):
        if not (np.isfinite(z0) and np.isfinite(z1)) or z1 < z0 or z1 < 0 or z0 > depth - 1:
            raise ValueError(f"3D box {index} {array[index].tolist()}: need finite z_min <= z_max within the "
                             f"volume's {depth} slices (0..{depth - 1})")
    z = np.clip(array[:, [2, 5]], 0, depth - 1)
    return np.round(np.column_stack([in_plane[:, :2], z[:, 0], in_plane[:, 2:], z[:, 1]])).astype(np.int64)


def propagated_box(previous: np.ndarray | None, rectangle: np.ndarray, margin: int) -> np.ndarray:
    """The prompt for the next slice: the box of the ``previous`` slice's mask grown by ``margin`` (0 or more) and cut
    to the 3D box's in-plane ``rectangle``; the rectangle itself on the first slice and after an empty mask. A mask
    one pixel wide grown by 0 would give a box without width: it is widened by a pixel, within the rectangle."""
    if margin < 0:
        raise ValueError(f"margin must be 0 or more pixels, got {margin}")
    if previous is None or not previous.any():
        return rectangle
    grown = boxes_from_mask(previous, margin)[0].astype(np.float64)
    box = np.concatenate([np.maximum(grown[:2], rectangle[:2]), np.minimum(grown[2:], rectangle[2:])])
    for low, high in ((0, 2), (1, 3)):
        if box[high] <= box[low]:
            box[high] = min(box[low] + 1, rectangle[high])
            box[low] = box[high] - 1
    return box


def inside_rectangle(mask: np.ndarray, rectangle: np.ndarray) -> np.ndarray:
    """``mask`` with everything outside the 3D box's in-plane ``rectangle`` (``x0, y0, x1, y1``, inclusive) cleared:
    where a slice's answer is kept."""
    x0, y0, x1, y1 = (int(v) for v in rectangle)
    kept = np.zeros_like(mask)
    kept[y0:y1 + 1, x0:x1 + 1] = mask[y0:y1 + 1, x0:x1 + 1]
    return kept


def middle_slices(boxes: np.ndarray) -> np.ndarray:
    """The slice each ``(N, 6)`` 3D box's propagation starts on: ``z_min + (z_max - z_min) // 2``."""
    boxes = np.asarray(boxes).reshape(-1, 6)
    return boxes[:, 2].astype(int) + (boxes[:, 5].astype(int) - boxes[:, 2].astype(int)) // 2


def _propagate(predictor: SamPredictor | OnnxPredictor, volume: np.ndarray, rectangles: np.ndarray,
               masks: np.ndarray, slice_iou: np.ndarray, orders: Sequence[range],
               previous: Sequence[np.ndarray | None], margin: int) -> None:
    """Segment the slices of each box's ``orders[k]`` in turn into ``masks[k]`` (their predicted IoU into
    ``slice_iou[k]``), each prompted by the box of the slice before it, ``previous[k]`` for the first; masks stay
    inside ``rectangles[k]``. The orders all run the same way (rising or falling ``z``); slices are visited once,
    in that direction, with every box there answered in one call."""
    last = list(previous)
    slices = sorted({z for order in orders for z in order}, reverse=any(order.step < 0 for order in orders))
    for z in slices:
        here = [k for k, order in enumerate(orders) if z in order]
        predictor.set_image(volume[z])
        prediction = predictor.predict(boxes=np.stack([propagated_box(last[k], rectangles[k], margin)
                                                       for k in here]))
        for row, k in enumerate(here):
            masks[k, z] = inside_rectangle(prediction.masks[row, 0], rectangles[k])
            slice_iou[k, z] = prediction.iou[row, 0]
            last[k] = masks[k, z]


def volume_iou(mask: np.ndarray, slice_iou: np.ndarray, z0: int, z1: int) -> float:
    """A 3D object's predicted IoU over slices ``z0..z1``: the slices' predicted IoUs weighted by their mask areas
    (their plain mean when every slice came out empty)."""
    areas = mask[z0:z1 + 1].sum(axis=(1, 2))
    ious = slice_iou[z0:z1 + 1]
    return float(np.average(ious, weights=areas) if areas.sum() else ious.mean())


def propagate_boxes_3d(predictor: SamPredictor | OnnxPredictor, volume: np.ndarray, boxes: np.ndarray,
                       margin: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``(N, D, H, W)`` masks of the objects in ``(N, 6)`` validated 3D boxes, each by propagation from its
    middle slice, and the ``(N, D)`` predicted IoU of each slice (0 outside a box's slices)."""
    boxes = np.asarray(boxes).reshape(-1, 6)
    rectangles = boxes[:, [0, 1, 3, 4]].astype(np.float64)
    masks = np.zeros((len(boxes), *volume.shape[:3]), dtype=bool)
    slice_iou = np.zeros((len(boxes), volume.shape[0]))
    z0, z1 = boxes[:, 2].astype(int), boxes[:, 5].astype(int)
    middles = middle_slices(boxes)
    _propagate(predictor, volume, rectangles, masks, slice_iou, [range(m, top + 1) for m, top in zip(middles, z1)],
               [None] * len(boxes), margin)
    _propagate(predictor, volume, rectangles, masks, slice_iou,
               [range(m - 1, bottom - 1, -1) for m, bottom in zip(middles, z0)],
               [mask[m] for mask, m in zip(masks, middles)], margin)
    return masks, slice_iou


def propagate_box_3d(predictor: SamPredictor | OnnxPredictor, volume: np.ndarray, box: np.ndarray,
                     margin: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``(D, H, W)`` mask of the object in one validated 3D box, by propagation from the middle slice, and
    the ``(D,)`` predicted IoU of each slice (0 outside the box's slices)."""
    masks, slice_iou = propagate_boxes_3d(predictor, volume, np.asarray(box)[None], margin)
    return masks[0], slice_iou[0]


def segment_box_3d(predictor: SamPredictor | OnnxPredictor, volume: np.ndarray, box: np.ndarray,
                   margin: int = 3) -> tuple[np.ndarray, float]:
    """Boolean ``(D, H, W)`` mask of the object in one validated 3D box, by propagation from the middle slice,
    and its predicted IoU (:func:`volume_iou` over the box's slices)."""
    mask, slice_iou = propagate_box_3d(predictor, volume, box, margin)
    return mask, volume_iou(mask, slice_iou, int(box[2]), int(box[5]))


def repropagated_slices(box: np.ndarray, z: int, anchors: Iterable[int] = ()) -> tuple[int, int]:
    """The first and last slice answered after clicks on slice ``z`` of a 3D ``box``: the box's ends, or on each
    side the slice before the nearest anchor (a slice whose mask its own clicks made, which is kept)."""
    z0, z1 = int(box[2]), int(box[5])
    if not z0 <= z <= z1:
        raise ValueError(f"slice {z} lies outside the 3D box's slices {z0}..{z1}")
    anchors = sorted({int(a) for a in anchors} - {z})
    outside = [a for a in anchors if not z0 <= a <= z1]
    if outside:
        raise ValueError(f"anchor slices {outside} lie outside the 3D box's slices {z0}..{z1}")
    below, above = [a for a in anchors if a < z], [a for a in anchors if a > z]
    return (below[-1] + 1 if below else z0), (above[0] - 1 if above else z1)


def repropagate_from_slice(predictor: SamPredictor | OnnxPredictor, volume: np.ndarray, box: np.ndarray,
                           mask: np.ndarray, slice_iou: np.ndarray, z: int, points: np.ndarray, labels: np.ndarray,
                           margin: int = 3, *, anchors: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """A 3D object's mask and per-slice predicted IoUs after clicks on slice ``z``: that slice answered from its box
    (the box of its current mask grown by ``margin``, within the 3D box), the ``(P, 2)`` clicks with their labels
    and its current mask as the previous answer; then the slices beyond it, on both sides, propagated again from
    the corrected one up to the 3D box's ends or, where ``anchors`` name slices corrected with clicks of their
    own, up to the slice before the nearest anchor (:func:`repropagated_slices`). Slices not answered keep their
    mask and IoU. ``mask`` (``(D, H, W)`` bool) and ``slice_iou`` (``(D,)``), as :func:`propagate_box_3d` gives
    them, are left as they were."""
    first, last = repropagated_slices(box, z, anchors)
    if mask.shape != volume.shape[:3]:
        raise ValueError(f"mask shape {mask.shape} != volume shape {volume.shape[:3]}")
    if np.shape(slice_iou) != volume.shape[:1]:
        raise ValueError(f"slice_iou shape {np.shape(slice_iou)} != ({volume.shape[0]},), one per slice")
    x0, y0, _, x1, y1, _ = (int(v) for v in box)
    rectangle = np.array([x0, y0, x1, y1], dtype=np.float64)
    corrected, corrected_iou = mask.copy(), np.array(slice_iou, dtype=np.float64)
    predictor.set_image(volume[z])
    previous_logits = np.where(mask[z], 8.0, -8.0).astype(np.float32)    # the hard mask as confident logits
    prediction = predictor.predict(boxes=propagated_box(mask[z], rectangle, margin), points=np.asarray(points)[None],
                                   point_labels=np.asarray(labels)[None], mask_logits=previous_logits)
    corrected[z] = inside_rectangle(prediction.masks[0, 0], rectangle)
    corrected_iou[z] = prediction.iou[0, 0]
    for order in (range(z + 1, last + 1), range(z - 1, first - 1, -1)):
        _propagate(predictor, volume, rectangle[None], corrected[None], corrected_iou[None], [order], [corrected[z]],
                   margin)
    return corrected, corrected_iou


def correct_slice_3d(predictor: SamPredictor | OnnxPredictor, volume: np.ndarray, box: np.ndarray, mask: np.ndarray,
                     z: int, points: np.ndarray, labels: np.ndarray, margin: int = 3, *,
                     anchors: Iterable[int] = ()) -> tuple[np.ndarray, float]:
    """A 3D object's mask after clicks on slice ``z`` (:func:`repropagate_from_slice`: without ``anchors`` every
    slice of the 3D box beyond ``z`` is propagated again; with them, only up to the slice before the nearest anchor
    on each side, and the anchored slices keep their mask). ``mask`` is left as it was; returns the new mask and
    the predicted IoU of the slices answered (:func:`volume_iou`; all the box's slices without anchors)."""
    corrected, slice_iou = repropagate_from_slice(predictor, volume, box, mask, np.zeros(volume.shape[0]), z, points,
                                                  labels, margin, anchors=anchors)
    return corrected, volume_iou(corrected, slice_iou, *repropagated_slices(box, z, anchors))


def segment_boxes_3d(predictor: SamPredictor | OnnxPredictor, volume: np.ndarray,
                     boxes: np.ndarray, margin: int = 3) -> tuple[list[np.ndarray], np.ndarray]:
    """One boolean mask and one predicted IoU per ``(N, 6)`` 3D box over a ``(D, H, W)`` volume scaled to 0..255."""
    volume = np.asarray(volume)
    if volume.ndim != 3 or min(volume.shape) == 0:
        raise ValueError(f"volume must be (D, H, W), got shape {volume.shape}")
    boxes = validate_boxes_3d(boxes, volume.shape)
    masks, slice_iou = propagate_boxes_3d(predictor, volume, boxes, margin)
    return list(masks), np.array([volume_iou(mask, ious, int(box[2]), int(box[5]))
                                  for mask, ious, box in zip(masks, slice_iou, boxes)])


def segment_volume(predictor: SamPredictor | OnnxPredictor, volume: np.ndarray, boxes: np.ndarray,
                   margin: int = 3, *, overlaps: str = OVERLAP_RULES[0]) -> np.ndarray:
    """``(D, H, W)`` uint16 labels for ``(N, 6)`` 3D boxes over a ``(D, H, W)`` volume already scaled to 0..255
    (``overlaps``: who keeps a voxel two objects claim, :mod:`gnnseg.seg.io.label_painter`)."""
    check_overlap_rule(overlaps)
    return segs_from_masks(segment_boxes_3d(predictor, volume, boxes, margin)[0], overlaps)


def segment_challenge_case(predictor: SamPredictor | OnnxPredictor, case: ChallengeCase, *,
                           overlaps: str = OVERLAP_RULES[0]) -> np.ndarray:
    """The ``segs`` array for one challenge case (2D: one batched call for all boxes; 3D: propagation)."""
    if case.is_3d:
        return segment_volume(predictor, case.image, case.boxes, overlaps=overlaps)
    check_overlap_rule(overlaps)
    predictor.set_image(case.image)
    return segs_from_masks(list(predictor.predict(boxes=case.boxes).masks[:, 0]), overlaps)
