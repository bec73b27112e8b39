"""Gaussian-weighted sliding windows in numpy, for any network given as a function of a batch of patches.

The same windows, weights and mirroring as :mod:`gnnseg.seg.unet.predict` (nnU-Net's scheme): windows overlap by
``1 - step`` of the patch, evenly spread with the first at 0 and the last flush with the end; each window's logits
are weighted by a Gaussian centred on the patch (sigma = patch / 8), so that patch borders, where the network sees
less context, count less; a mirrored view along every non-empty combination of the allowed axes is predicted,
mirrored back and averaged with the plain one. The ONNX predictor runs it; nothing here imports torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

A = TypeVar("A")

BatchLogits = Callable[[np.ndarray], np.ndarray]
"""A network as a function: patches ``(B, C, *patch)`` float32 -> logits ``(B, K, *patch)`` float32."""


def window_starts(size: int, patch: int, step: float) -> list[int]:
    """Start offsets along one axis: evenly spread, first at 0, last flush with the end."""
    if size <= patch:
        return [0]
    count = math.ceil((size - patch) / (patch * step)) + 1
    spacing = (size - patch) / (count - 1)
    return [int(round(spacing * k)) for k in range(count)]


def gaussian_importance(patch_size: Sequence[int], sigma_scale: float = 1 / 8) -> np.ndarray:
    """A Gaussian bump over the patch, float32, maximum 1, no zeros (zeros would leave voxels unweighted)."""
    axes = [np.arange(p, dtype=np.float32) - np.float32((p - 1) / 2) for p in patch_size]
    grids = np.meshgrid(*axes, indexing="ij")
    exponent = sum(g ** 2 / np.float32(2 * (p * sigma_scale) ** 2) for g, p in zip(grids, patch_size))
    weights = np.exp(-exponent).astype(np.float32)
    weights /= weights.max()
    return np.maximum(weights, weights[weights > 0].min())


def mirrorings(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every non-empty combination of the spatial ``mirror_axes``, as axes of a ``(B, C, *spatial)`` batch (3
    mirrored views in 2D, 7 in 3D when every axis is allowed, as nnU-Net v2 does)."""
    return [tuple(axis + 2 for axis in combination) for count in range(1, len(mirror_axes) + 1)
            for combination in itertools.combinations(mirror_axes, count)]


STACKED_VOXELS = {"torch": 2 ** 18, "onnxruntime": 2 ** 16}
"""The most voxels (windows x views x patch voxels) a forward holds when :func:`windows_per_forward` and
:func:`views_mean` stack them, per runtime, measured on a CPU (``benchmarks/results/unet_mirrored_views.md``). A
small patch leaves the cores idle between layers, so stacking pays: in PyTorch every stack of up to 2^18 voxels took
0.65-0.96 of the time of one forward per view, larger ones 0.87-1.27, gaining less and less reliably as they grow.
onnxruntime gains less: stacks of up to 2^16 voxels took 0.89-0.98 in the run that set its budget
(``unet_mirrored_views_groupnorm_copy.md``) and 0.80-1.09 in the current file, larger ones 0.87-1.21 and 0.92-1.10.
Whole predictions agree: stacking all four 512 x 512 views of the ISBI patch took 1.18 of nnunetv2's time against
0.80 one view at a time, on an earlier state of the predictor (``nnunet_dropin_batched_views.md``). The budget also
bounds the windows per forward, so a forward holds no more than the former four windows of a 2^16-voxel patch did;
on a GPU, where larger batches pay, pass ``batch_size``."""


def _fitting(budget: int, voxels: int) -> int:
    """How many items of ``voxels`` voxels a forward of ``budget`` voxels holds (at least one)."""
    return max(1, budget // voxels)


def windows_per_forward(batch_size: int | None, patch: Sequence[int], views: int, stacked_voxels: int) -> int:
    """``batch_size`` when given; otherwise as many windows as fit ``stacked_voxels`` with all their ``views`` (at
    least one)."""
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return batch_size
    return _fitting(stacked_voxels, math.prod(patch) * views)


def views_mean(network: Callable[[A], A], batch: A, views: Sequence[tuple[int, ...]],
               flip: Callable[[A, tuple[int, ...]], A], concatenate: Callable[[list[A]], A],
               stacked_voxels: int) -> A:
    """The network's outputs for ``batch (B, C, *patch)`` averaged over the plain view and the mirrored ``views``
    (each mirrored back), summed in view order. Views share a forward (stacked along the batch axis by
    ``concatenate``) while it holds at most ``stacked_voxels``; a larger batch runs one forward per view, as nnU-Net
    does. Works on numpy arrays and torch tensors alike (``flip`` and ``concatenate`` of that kind).
    """
    every = [(), *views]
    size = batch.shape[0]
    per_forward = _fitting(stacked_voxels, size * math.prod(batch.shape[2:]))
    total = None
    for first in range(0, len(every), per_forward):
        group = every[first:first + per_forward]
        inputs = [flip(batch, axes) if axes else batch for axes in group]
        outputs = network(inputs[0] if len(inputs) == 1 else concatenate(inputs))
        for k, axes in enumerate(group):
            out = outputs[k * size:(k + 1) * size]
            out = flip(out, axes) if axes else out
            total = out if total is None else total + out
    return total / len(every) if views else total


def window_slices(shape: Sequence[int], patch: Sequence[int], step: float) -> list[tuple[slice, ...]]:
    """Every window over ``shape`` (each axis at least the patch), in C order of their corners."""
    starts = [window_starts(s, p, step) for s, p in zip(shape, patch)]
    return [tuple(slice(starts[d][i], starts[d][i] + patch[d]) for d, i in enumerate(corner))
            for corner in np.ndindex(*map(len, starts))]


def sliding_window_logits(network: BatchLogits, image: np.ndarray, patch_size: Sequence[int], num_classes: int, *,
                          step: float = 0.5, gaussian: bool = True, mirror_axes: Sequence[int] = (),
                          batch_size: int | None = None, importance: np.ndarray | None = None,
                          centered_padding: bool = False, accumulation_dtype: type = np.float32,
                          stacked_voxels: int | None = None) -> np.ndarray:
    """``image (C, *spatial)`` -> averaged logits ``(num_classes, *spatial)`` of ``accumulation_dtype``.

    ``batch_size`` windows (by default as many as fit ``stacked_voxels`` with their views: :func:`windows_per_forward`)
    go into a forward, their mirrored views stacked within the same budget (:func:`views_mean`; by default
    :data:`STACKED_VOXELS` of onnxruntime, the runtime this twin serves).
    Images smaller than the patch are zero-padded (and the padding cut off again): after the image, or split before
    and after it with ``centered_padding`` (nnU-Net's rule: the odd voxel after). ``importance`` (the patch's shape)
    replaces the Gaussian weights (an nnU-Net model's own map). The sums are kept in one logits array and one weight
    array the size of the (padded) image, added to in place, in ``accumulation_dtype``: float32, or float16 as
    nnU-Net v2's predictor keeps them (each window's weighted logits rounded into the half-precision sums).
    """
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    patch = [int(p) for p in patch_size]
    spatial = list(image.shape[1:])
    padded_shape = [max(s, p) for s, p in zip(spatial, patch)]
    before = [(p - s) // 2 if centered_padding else 0 for s, p in zip(spatial, padded_shape)]
    if padded_shape != spatial:
        image = np.pad(image, [(0, 0)] + [(b, p - s - b) for b, s, p in zip(before, spatial, padded_shape)])
    image = np.ascontiguousarray(image, dtype=np.float32)
    if importance is not None:
        weights = np.asarray(importance, np.float32)
    else:
        weights = gaussian_importance(patch) if gaussian else np.ones(patch, np.float32)
    logits = np.zeros((num_classes, *padded_shape), accumulation_dtype)
    counts = np.zeros(padded_shape, accumulation_dtype)
    count_weights = weights.astype(accumulation_dtype)
    windows = window_slices(padded_shape, patch, step)
    views = mirrorings(mirror_axes)
    stacked_voxels = STACKED_VOXELS["onnxruntime"] if stacked_voxels is None else stacked_voxels
    batch_size = windows_per_forward(batch_size, patch, 1 + len(views), stacked_voxels)
    for first in range(0, len(windows), batch_size):
        chunk = windows[first:first + batch_size]
        batch = np.stack([image[(slice(None), *window)] for window in chunk])
        prediction = views_mean(network, batch, views, lambda array, axes: np.ascontiguousarray(np.flip(array, axes)),
                                np.concatenate, stacked_voxels)
        for window, out in zip(chunk, prediction):
            logits[(slice(None), *window)] += out * weights
            counts[window] += count_weights
    logits /= counts
    return logits[(slice(None), *[slice(b, b + s) for b, s in zip(before, spatial)])]
