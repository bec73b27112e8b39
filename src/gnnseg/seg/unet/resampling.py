"""Resampling images (cubic) and label maps (linear per label) to a new voxel grid, nnU-Net style.

For strongly anisotropic volumes (largest / smallest spacing > 3) the coarse axis is handled separately:
each slice is resampled in-plane with the requested order, then the coarse axis with nearest-neighbour
interpolation, so that thick slices are not smeared into each other (nnU-Net's "separate z").
"""

from __future__ import annotations

import numpy as np
from skimage.transform import resize

ANISOTROPY_THRESHOLD = 3.0


def separate_axis(spacing, new_spacing) -> int | None:
    """The coarse axis to resample separately, or None when the data is not anisotropic."""
    for candidate in (spacing, new_spacing):
        candidate = np.asarray(candidate, float)
        if len(candidate) == 3 and candidate.max() / candidate.min() > ANISOTROPY_THRESHOLD:
            return int(np.argmax(candidate))
    return None


def _resize(array: np.ndarray, shape, order: int) -> np.ndarray:
    return resize(array.astype(np.float32, copy=False), shape, order=order, mode="edge", anti_aliasing=False,
                  preserve_range=True)


def _resample_spatial(array: np.ndarray, shape, order: int, axis: int | None) -> np.ndarray:
    if tuple(array.shape) == tuple(shape):
        return array.astype(np.float32, copy=False)
    if axis is None:
        return _resize(array, shape, order)
    moved = np.moveaxis(array, axis, 0)
    in_plane = tuple(s for a, s in enumerate(shape) if a != axis)
    slices = np.stack([_resize(moved[k], in_plane, order) for k in range(moved.shape[0])])
    if slices.shape[0] != shape[axis]:
        slices = _resize(slices, (shape[axis], *in_plane), 0)
    return np.moveaxis(slices, 0, axis)


def resample_image(data: np.ndarray, spacing, new_spacing, new_shape=None, order: int = 3) -> np.ndarray:
    """``data (C, *spatial)`` to ``new_shape`` (default: the shape ``new_spacing`` implies), float32."""
    shape = _target_shape(data.shape[1:], spacing, new_spacing, new_shape)
    axis = separate_axis(spacing, new_spacing)
    return np.stack([_resample_spatial(channel, shape, order, axis) for channel in data]).astype(np.float32)


def resample_labels(seg: np.ndarray, spacing, new_spacing, new_shape=None, order: int = 1) -> np.ndarray:
    """``seg (1, *spatial)`` integer labels; each label is resampled as a mask and kept where >= 0.5."""
    shape = _target_shape(seg.shape[1:], spacing, new_spacing, new_shape)
    if tuple(seg.shape[1:]) == tuple(shape):
        return seg.copy()
    axis = separate_axis(spacing, new_spacing)
    out = np.zeros((1, *shape), dtype=seg.dtype)
    for label in np.unique(seg):
        if label == 0:
            continue
        mask = _resample_spatial((seg[0] == label).astype(np.float32), shape, order, axis)
        out[0][mask >= 0.5] = label
    return out


def _target_shape(shape, spacing, new_spacing, new_shape):
    if new_shape is not None:
        return tuple(int(s) for s in new_shape)
    ratio = np.asarray(spacing, float) / np.asarray(new_spacing, float)
    return tuple(int(v) for v in np.round(ratio * np.asarray(shape, float)))
