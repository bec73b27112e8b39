"""nnU-Net v2's default resampling (``resample_data_or_seg_to_shape``) for images and logits, reproduced exactly.

It differs from gnnseg's own resampling (:mod:`gnnseg.seg.unet.resampling`) in details that move predictions by more
than rounding, so models trained by nnU-Net get nnU-Net's rule:

- The arithmetic is float64 (the result is stored in the input's dtype).
- Separate-z: with ``force_separate_z`` unset, the axis is chosen from the *current* spacing when it is anisotropic
  (largest / smallest > 3), else from the *new* spacing; the coarse axis is the one whose spacing equals the largest,
  and when two or three axes tie for it (e.g. ``(0.24, 1.25, 1.25)``) nothing is resampled separately.
- The coarse axis is interpolated with ``scipy.ndimage.map_coordinates`` (``order_z``, ``mode="nearest"``) on the
  half-pixel-centred grid, after each slice was resized in-plane with ``skimage.transform.resize`` (``order``,
  ``mode="edge"``, no anti-aliasing).
- New shapes are ``round(old_spacing / new_spacing * old_shape)`` per axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import map_coordinates
from skimage.transform import resize

ANISOTROPY_THRESHOLD = 3.0


def new_shape_for(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, ...]:
    """nnU-Net's ``compute_new_shape``: the shape ``shape`` takes at ``new_spacing``."""
    return tuple(int(round(old / new * size)) for old, new, size in zip(spacing, new_spacing, shape))


def _coarse_axes(spacing: Sequence[float]) -> np.ndarray:
    spacing = np.asarray(spacing, dtype=float)
    return np.where(max(spacing) / spacing == 1)[0]


def _is_anisotropic(spacing: Sequence[float]) -> bool:
    return bool(np.max(spacing) / np.min(spacing) > ANISOTROPY_THRESHOLD)


def separate_axis(spacing: Sequence[float], new_spacing: Sequence[float],
                  force_separate_z: bool | None) -> int | None:
    """The axis resampled separately (nearest-neighbour or ``order_z``), or None."""
    if force_separate_z is not None:
        axes = _coarse_axes(spacing) if force_separate_z else None
    elif _is_anisotropic(spacing):
        axes = _coarse_axes(spacing)
    elif _is_anisotropic(new_spacing):
        axes = _coarse_axes(new_spacing)
    else:
        axes = None
    return int(axes[0]) if axes is not None and len(axes) == 1 else None


def _along_axis(volume: np.ndarray, new_size: int, axis: int, order: int) -> np.ndarray:
    """Interpolate ``volume`` (3D, float64) along ``axis`` to ``new_size`` on the half-pixel-centred grid."""
    target = list(volume.shape)
    target[axis] = new_size
    grids = np.mgrid[tuple(slice(0, n) for n in target)].astype(float)
    scale = volume.shape[axis] / new_size
    grids[axis] = scale * (grids[axis] + 0.5) - 0.5
    return map_coordinates(volume, grids, order=order, mode="nearest")


def resample_to_shape(data: np.ndarray, new_shape: Sequence[int], spacing: Sequence[float],
                      new_spacing: Sequence[float], order: int = 3, order_z: int = 0,
                      force_separate_z: bool | None = False) -> np.ndarray:
    """``data (C, z, y, x)`` resampled to ``new_shape`` as nnU-Net resamples images and logits; the input itself is
    returned when the shape does not change, otherwise an array of the input's dtype."""
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data
    axis = separate_axis(spacing, new_spacing, force_separate_z)
    out = np.zeros((data.shape[0], *new_shape), dtype=data.dtype)
    for channel in range(data.shape[0]):
        volume = data[channel].astype(float, copy=False)
        if axis is None:
            out[channel] = resize(volume, new_shape, order, mode="edge", anti_aliasing=False)
            continue
        in_plane = tuple(s for a, s in enumerate(new_shape) if a != axis)
        moved = np.moveaxis(volume, axis, 0)
        slices = np.stack([resize(moved[k], in_plane, order, mode="edge", anti_aliasing=False)
                           for k in range(moved.shape[0])])
        slices = np.moveaxis(slices, 0, axis)
        if slices.shape[axis] != new_shape[axis]:
            slices = _along_axis(slices, new_shape[axis], axis, order_z)
        out[channel] = slices
    return out
