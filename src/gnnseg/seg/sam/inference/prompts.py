"""Box prompts: checked once where they enter, made from masks, and scaled to a model's input.

Coordinates are pixel indices, x the column in ``[0, W - 1]`` and y the row in ``[0, H - 1]``; a box is
``(x0, y0, x1, y1)`` with inclusive indices, as boxes made from masks are. MedSAM stretches the image to a square,
so its boxes scale per axis (:func:`scale_boxes`); Lite MedSAM keeps the aspect ratio, so one factor serves both
axes (:func:`scale_boxes_longest_side`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gnnseg.seg.sam.inference.model_input import check_size


def _image_hw(image_shape: Sequence[int], name: str = "image_shape") -> tuple[int, int]:
    dims = tuple(int(s) for s in image_shape)
    if len(dims) < 2 or dims[0] < 1 or dims[1] < 1:
        raise ValueError(f"{name} must start with a positive (H, W), got {tuple(image_shape)}")
    return dims[0], dims[1]


def _as_box_array(boxes: np.ndarray) -> np.ndarray:
    """``boxes`` as float64 ``(N, 4)``; a single ``(4,)`` box becomes ``(1, 4)``."""
    array = np.asarray(boxes)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"boxes must hold numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if array.ndim == 1 and array.shape == (4,):
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must have shape (4,) or (N, 4) as (x0, y0, x1, y1), got {array.shape}")
    if array.shape[0] == 0:
        raise ValueError("boxes is empty: give at least one (x0, y0, x1, y1) box")
    return array


def validate_boxes(boxes: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """Check ``(x0, y0, x1, y1)`` boxes against an image and clip them to it.

    Coordinates are pixel indices: x is the column in ``[0, W - 1]``, y the row in ``[0, H - 1]``. A box that
    sticks out of the image is clipped to those ranges (a box drawn slightly past the border still means the
    object at the border). Refused, with the box index and values: NaN or infinite coordinates, ``x1 <= x0``
    or ``y1 <= y0``, and a box with no area left inside the image after clipping.

    Args:
        boxes: ``(4,)`` or ``(N, 4)``.
        image_shape: ``(H, W)`` or ``(H, W, C)``.

    Returns:
        float64 ``(N, 4)`` clipped boxes.
    """
    height, width = _image_hw(image_shape)
    array = _as_box_array(boxes)
    for index, box in enumerate(array):
        values = [float(v) for v in box]
        if not np.all(np.isfinite(box)):
            raise ValueError(f"box {index} {values} has a NaN or infinite coordinate")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"box {index} {values} must have x1 > x0 and y1 > y0 (x0, y0, x1, y1)")
    clipped = array.copy()
    clipped[:, [0, 2]] = np.clip(array[:, [0, 2]], 0, width - 1)
    clipped[:, [1, 3]] = np.clip(array[:, [1, 3]], 0, height - 1)
    for index, box in enumerate(clipped):
        if box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"box {index} {[float(v) for v in array[index]]} lies outside the image of height "
                             f"{height} and width {width} (x in [0, {width - 1}], y in [0, {height - 1}])")
    return clipped


def scale_boxes(boxes: np.ndarray, original_hw: Sequence[int], size: int = 1024) -> np.ndarray:
    """Boxes in the original image -> boxes in the ``size x size`` resized image (MedSAM).

    ``boxes / [W, H, W, H] * size``: x and y scale separately because :func:`resize_image` stretches.

    Returns:
        float64 array of ``boxes``' shape (``(4,)`` or ``(N, 4)``).
    """
    height, width = _image_hw(original_hw, "original_hw")
    size = check_size(size)
    array = np.asarray(boxes, dtype=np.float64)
    if array.shape[-1:] != (4,) or array.ndim > 2:
        raise ValueError(f"boxes must have shape (4,) or (N, 4), got {array.shape}")
    return array / np.array([width, height, width, height], np.float64) * size


def scale_boxes_longest_side(boxes: np.ndarray, original_hw: Sequence[int], size: int = 256) -> np.ndarray:
    """Boxes in the original image -> boxes in the :func:`resize_longest_side` image (Lite MedSAM).

    One factor ``size / max(H, W)`` for both axes, since the aspect ratio is kept; :func:`pad_to_square` adds
    no offset. Returns float64 of ``boxes``' shape.
    """
    height, width = _image_hw(original_hw, "original_hw")
    size = check_size(size)
    array = np.asarray(boxes, dtype=np.float64)
    if array.shape[-1:] != (4,) or array.ndim > 2:
        raise ValueError(f"boxes must have shape (4,) or (N, 4), got {array.shape}")
    return array * (size / max(height, width))


def boxes_from_mask(mask: np.ndarray, margin: int = 0, labels: Sequence[int] | None = None) -> np.ndarray:
    """The tight bounding box of each label in a mask, grown by ``margin`` pixels and clipped to the image.

    Coordinates are pixel indices, inclusive: a label covering columns 3..7 has ``x0 = 3, x1 = 7``. MedSAM
    makes its training and evaluation prompts this way (its scripts add a margin, ``bbox_shift``, of a few
    pixels).

    Args:
        mask: ``(H, W)`` or ``(D, H, W)`` integer or boolean labels; 0 is background.
        margin: non-negative pixels added on every side (in-plane and along z).
        labels: which labels, in output order; default all nonzero labels in increasing order.

    Returns:
        int64 ``(N, 4)`` rows ``(x0, y0, x1, y1)`` for a 2D mask, or ``(N, 6)`` rows
        ``(x_min, y_min, z_min, x_max, y_max, z_max)`` for a 3D mask (the challenge npz order).
    """
    array = np.asarray(mask)
    if array.dtype.kind not in "biu":
        raise ValueError(f"mask must hold integer or boolean labels, got dtype {array.dtype}")
    if array.ndim not in (2, 3):
        raise ValueError(f"mask must be 2D (H, W) or 3D (D, H, W), got shape {array.shape}")
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or margin < 0:
        raise ValueError(f"margin must be a non-negative integer, got {margin!r}")
    if not array.any():
        raise ValueError(f"mask is empty: no nonzero label in a mask of shape {array.shape}")
    if labels is None:
        wanted = [int(v) for v in np.unique(array) if v != 0]
    else:
        wanted = [int(v) for v in labels]
        if not wanted:
            raise ValueError("labels is empty; pass None for all nonzero labels")
        if 0 in wanted:
            raise ValueError(f"labels {wanted} include 0, the background")
    # Axes in (x, y[, z]) order: columns, rows, slices.
    axes = (1, 0) if array.ndim == 2 else (2, 1, 0)
    limits = [array.shape[a] - 1 for a in axes]
    rows = []
    for label in wanted:
        where = np.nonzero(array == label)
        if where[0].size == 0:
            raise ValueError(f"label {label} does not occur in the mask")
        lows = [max(0, int(where[a].min()) - margin) for a in axes]
        highs = [min(limit, int(where[a].max()) + margin) for a, limit in zip(axes, limits, strict=True)]
        rows.append(lows + highs)
    return np.array(rows, dtype=np.int64)


@dataclass(frozen=True)
class Prompts:
    """The prompts of one ``predict`` call, checked against the image (:func:`checked_prompts`).

    ``boxes``: float64 ``(N, 4)`` clipped to the image, or None; ``points``: float64 ``(N, P, 2)`` x, y inside the
    image, or None; ``labels``: ``(N, P)`` of 0 (background) and 1 (foreground) where there are points;
    ``mask_logits``: float32 ``(N, H, W)``, each prompt's previous answer (its ``Prediction.logits``) at the image's
    size, which the model reads as a dense prompt, or None.
    """

    boxes: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    mask_logits: np.ndarray | None = None



def prompt_extents(prompts: Prompts) -> np.ndarray:
    """``(N, 4)`` ``x0, y0, x1, y1`` of each prompt: its box grown to hold its points (a box alone, or points
    alone, give their own extent)."""
    if prompts.points is None:
        return prompts.boxes
    extents = np.concatenate([prompts.points.min(axis=1), prompts.points.max(axis=1)], axis=1)
    if prompts.boxes is None:
        return extents
    return np.concatenate([np.minimum(prompts.boxes[:, :2], extents[:, :2]),
                           np.maximum(prompts.boxes[:, 2:], extents[:, 2:])], axis=1)


MAX_POINTS = 64
"""Most points per prompt (the challenge protocol uses at most 5 clicks; a web page may send a few dozen)."""


def checked_prompts(boxes: np.ndarray | None, points: np.ndarray | None, point_labels: np.ndarray | None,
                    image_hw: Sequence[int], mask_logits: np.ndarray | None = None) -> Prompts:
    """Boxes, points and previous logits as :class:`Prompts`, or a ``ValueError`` that names what is wrong."""
    box_array = validate_boxes(boxes, image_hw) if boxes is not None else None
    coords, labels = _checked_points(points, point_labels, image_hw)
    if box_array is None and coords is None:
        raise ValueError("give at least one prompt: boxes and/or points (mask logits only refine them)")
    if box_array is not None and coords is not None and len(box_array) != len(coords):
        raise ValueError(f"{len(box_array)} boxes but {len(coords)} point sets: give one point set per box")
    count = len(box_array) if box_array is not None else len(coords)
    return Prompts(box_array, coords, labels, _checked_mask_logits(mask_logits, count, image_hw))


def _checked_points(points, point_labels, image_hw: Sequence[int]) -> tuple[np.ndarray | None, np.ndarray | None]:
    if points is None:
        if point_labels is not None:
            raise ValueError("point_labels given without points")
        return None, None
    coords = np.asarray(points, dtype=np.float64)
    if coords.ndim == 2:
        coords = coords[None]
    if coords.ndim != 3 or coords.shape[-1] != 2 or coords.shape[1] == 0:
        raise ValueError(f"points must have shape (N, P, 2) or (P, 2), got {np.shape(points)}")
    if point_labels is None:
        raise ValueError("points need point_labels (1 foreground, 0 background)")
    if coords.shape[1] > MAX_POINTS:
        raise ValueError(f"{coords.shape[1]} points per prompt exceed the limit of {MAX_POINTS}")
    labels = np.asarray(point_labels)
    if labels.size != coords.shape[0] * coords.shape[1]:
        raise ValueError(f"point_labels has {labels.size} values for {coords.shape[0] * coords.shape[1]} points")
    labels = labels.reshape(coords.shape[:2])
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"point labels must be 0 (background) or 1 (foreground), got {np.unique(labels)}")
    if not np.isfinite(coords).all():
        raise ValueError("points contain NaN or infinite coordinates")
    height, width = _image_hw(image_hw)
    x, y = coords[..., 0], coords[..., 1]
    outside = (x < 0) | (x > width - 1) | (y < 0) | (y > height - 1)
    if outside.any():
        raise ValueError(f"points {coords[outside].tolist()} lie outside the image of height {height} "
                         f"and width {width}")
    return coords, labels.astype(np.int64)


def _checked_mask_logits(mask_logits, count: int, image_hw: Sequence[int]) -> np.ndarray | None:
    if mask_logits is None:
        return None
    height, width = _image_hw(image_hw)
    array = np.asarray(mask_logits)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"mask logits must hold numbers, got dtype {array.dtype}")
    array = array.astype(np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.shape != (count, height, width):
        raise ValueError(f"mask logits must have shape ({count}, {height}, {width}) (one per prompt, at the image's "
                         f"size), got {np.shape(mask_logits)}")
    if not np.isfinite(array).all():
        raise ValueError("mask logits contain NaN or infinite values")
    return array
