"""Inference: Gaussian-weighted sliding windows over a preprocessed case, then back to the original grid.

Windows overlap by ``1 - step`` of the patch (50% by default) and each window's logits are weighted by a
Gaussian centred on the patch (sigma = patch / 8) before averaging, as nnU-Net does, so that patch
borders, where the network sees less context, count less. Probabilities (softmax; sigmoid per region for
region-based datasets) are resampled back to the cropped shape (linear), put back into the uncropped box and
transposed to the input axis order, then argmaxed (regions: each above 0.5 painted in ``regions_class_order``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gnnseg.seg.unet.case_preprocessing import preprocess_case
from gnnseg.seg.unet.plans import Configuration, Plans
from gnnseg.seg.unet.resampling import resample_image
from gnnseg.seg.unet.sliding_window import (
    STACKED_VOXELS,
    gaussian_importance,
    mirrorings,
    views_mean,
    window_slices,
    windows_per_forward,
)


@torch.no_grad()
def sliding_window_logits(network: nn.Module, image: Tensor, patch_size: Sequence[int], num_classes: int, *,
                          step: float = 0.5, gaussian: bool = True, mirror_axes: Sequence[int] = (),
                          batch_size: int | None = None, importance: Tensor | None = None,
                          centered_padding: bool = False, accumulation_dtype: torch.dtype = torch.float32,
                          stacked_voxels: int | None = None) -> Tensor:
    """``image (C, *spatial)`` -> averaged logits ``(num_classes, *spatial)``.

    Images smaller than the patch are zero-padded (and the padding cut off again): after the image, or split before
    and after it with ``centered_padding`` (nnU-Net's ``pad_nd_image``: the odd voxel after). ``importance`` (the
    patch's shape) replaces the Gaussian weights, e.g. with nnU-Net's own map. ``accumulation_dtype`` holds the weighted
    sums (and the result); ``torch.float16`` reproduces nnU-Net v2's predictor, which sums in half precision.
    ``mirror_axes`` adds test-time augmentation: predictions on inputs mirrored along every non-empty combination of
    those axes (3 mirrored views in 2D, 7 in 3D, as nnU-Net v2 does), mirrored back and averaged with the plain
    prediction. ``batch_size`` windows (by default as many as fit ``stacked_voxels`` with their views:
    :func:`~gnnseg.seg.unet.sliding_window.windows_per_forward`) go into a forward, their mirrored views stacked within
    the same budget (:func:`~gnnseg.seg.unet.sliding_window.views_mean`; by default PyTorch's
    :data:`~gnnseg.seg.unet.sliding_window.STACKED_VOXELS`).
    Windows run on the network's device; the logits are summed on the CPU.
    """
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    patch = [int(p) for p in patch_size]
    spatial = list(image.shape[1:])
    padded_shape = [max(s, p) for s, p in zip(spatial, patch)]
    padding = [((p - s) // 2 if centered_padding else 0, 0) for s, p in zip(spatial, padded_shape)]
    padding = [(before, p - s - before) for (before, _), s, p in zip(padding, spatial, padded_shape)]
    if any(before or after for before, after in padding):
        flat = [v for before_after in reversed(padding) for v in before_after]
        image = torch.nn.functional.pad(image, flat)
    if importance is not None:
        weights = importance.to(torch.float32)
    else:
        weights = torch.from_numpy(gaussian_importance(patch)) if gaussian else torch.ones(patch)
    logits = torch.zeros((num_classes, *padded_shape), dtype=accumulation_dtype)
    counts = torch.zeros(padded_shape, dtype=accumulation_dtype)
    count_weights = weights.to(accumulation_dtype)
    windows = window_slices(padded_shape, patch, step)
    views = mirrorings(mirror_axes)
    network.eval()
    device = next((parameter.device for parameter in network.parameters()), torch.device("cpu"))
    stacked_voxels = STACKED_VOXELS["torch"] if stacked_voxels is None else stacked_voxels
    batch_size = windows_per_forward(batch_size, patch, 1 + len(views), stacked_voxels)
    for first in range(0, len(windows), batch_size):
        chunk = windows[first:first + batch_size]
        batch = torch.stack([image[(slice(None), *w)] for w in chunk]).to(device)
        prediction = views_mean(network, batch, views, Tensor.flip, torch.cat, stacked_voxels).float().cpu()
        for window, out in zip(chunk, prediction):
            logits[(slice(None), *window)] += out * weights
            counts[window] += count_weights
    logits = logits / counts
    return logits[(slice(None), *[slice(before, before + s) for (before, _), s in zip(padding, spatial)])]


def network_logits(network: nn.Module, data: np.ndarray, configuration: Configuration, num_classes: int,
                   **options: Any) -> Tensor:
    """Logits for a preprocessed case ``data (C, z, y, x)``: 3D windows, or 2D windows slice by slice."""
    image = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    if len(configuration.patch_size) == 3:
        return sliding_window_logits(network, image, configuration.patch_size, num_classes, **options)
    slices = [sliding_window_logits(network, image[:, z], configuration.patch_size, num_classes, **options)
              for z in range(image.shape[1])]
    return torch.stack(slices, dim=1)


def predict_case(network: nn.Module, data: np.ndarray, spacing, plans: Plans, configuration: str,
                 **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """Segment one raw case ``data (C, *spatial)`` with spacing in its own axis order.

    Returns ``(labels (*spatial) int16, probabilities (K, *spatial) float32)`` on the input grid (``K``: the
    network's outputs, one per label or per region).
    """
    labels = plans.label_model
    num_classes = labels.num_outputs
    preprocessed, _, properties = preprocess_case(data, None, spacing, plans, configuration)
    logits = network_logits(network, preprocessed, plans.configuration(configuration), num_classes, **options)
    probabilities = (logits.sigmoid() if labels.has_regions else logits.softmax(0)).numpy()
    probabilities = resample_image(probabilities, properties["spacing"], properties["transposed_spacing"],
                                   new_shape=properties["shape_after_crop"], order=1)
    transposed_shape = [properties["original_shape"][a] for a in plans.transpose_forward]
    full = np.zeros((num_classes, *transposed_shape), np.float32)
    if not labels.has_regions:
        full[0] = 1.0                               # outside the nonzero box: background (no region there)
    box = tuple(slice(a, b) for a, b in properties["bbox"])
    full[(slice(None), *box)] = probabilities
    backward = plans.transpose_backward
    full = full.transpose(0, *[a + 1 for a in backward])
    squeeze = len(spacing) == 2                     # 2D inputs were stored as single-slice volumes
    if squeeze:
        full = full[:, 0]
    if labels.has_regions:
        return labels.paint_regions(full, np.zeros(full.shape[1:], np.int16)), full
    return full.argmax(0).astype(np.int16), full
