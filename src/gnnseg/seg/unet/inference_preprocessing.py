"""A case prepared for prediction, in numpy alone: transpose, crop to nonzero, normalise, resample, as the plans say.

This is :func:`gnnseg.seg.unet.case_preprocessing.preprocess_case` without labels, with the same arithmetic in the
same order, so that the arrays are identical (tests/seg/test_unet_onnx.py holds them to it). It lives apart because
that module imports the run-directory code, and with it torch; the ONNX predictor
(:mod:`gnnseg.seg.unet.onnx_predictor`) must never import torch. Resampling and cropping are shared as they are
(:mod:`~gnnseg.seg.unet.resampling`, :mod:`~gnnseg.seg.unet.cropping` import no torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gnnseg.seg.unet.cropping import crop_to_nonzero
from gnnseg.seg.unet.plans import Configuration, Plans
from gnnseg.seg.unet.resampling import resample_image

DUMMY_SLICE_SPACING = 999.0
"""The spacing given to the added axis of a 2D image stored as a one-slice volume (as the fingerprint does)."""


def as_volume(array: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, tuple[float, ...]]:
    """2D ``(C, y, x)`` becomes ``(C, 1, y, x)`` with a dummy spacing on the new axis; 3D is returned as it is."""
    if len(spacing) == 2:
        return array[:, None], (DUMMY_SLICE_SPACING, *spacing)
    return array, tuple(spacing)


def normalize(data: np.ndarray, inside: np.ndarray, plans: Plans) -> np.ndarray:
    """``data (C, *spatial)`` normalised per channel as the plans say, float32: CT (clip to the training foreground's
    0.5 / 99.5 percentiles, then its mean and std) or z-score over the case (only over ``inside``, the nonzero
    region, where the plans use the mask for the channel; zero outside it)."""
    out = np.empty_like(data, dtype=np.float32)
    for channel, scheme in enumerate(plans.normalization_schemes):
        image = data[channel].astype(np.float32)
        if scheme == "ct":
            stats = plans.foreground_intensity_properties_per_channel[str(channel)]
            image = np.clip(image, stats.percentile_00_5, stats.percentile_99_5)
            out[channel] = (image - stats.mean) / max(stats.std, 1e-8)
        elif plans.use_mask_for_norm[channel]:
            values = image[inside]
            out[channel] = 0.0
            out[channel][inside] = (values - values.mean()) / max(values.std(), 1e-8)
        else:
            out[channel] = (image - image.mean()) / max(image.std(), 1e-8)
    return out


def target_spacing_for(configuration: Configuration, spacing_transposed: Sequence[float]) -> list[float]:
    """3D configurations resample every axis; the 2D configuration keeps the slicing axis as it is."""
    planned = configuration.spacing
    if len(planned) == 2:
        return [float(spacing_transposed[0]), *planned]
    return list(planned)


@dataclass(frozen=True)
class CaseGeometry:
    """What maps a prediction on the preprocessed grid back onto the case's own (axes after the plans' transpose,
    except ``original_shape``)."""

    original_shape: tuple[int, ...]        # the volume's shape as given (a 2D image with its added slice axis)
    transposed_spacing: tuple[float, ...]
    box: tuple[tuple[int, int], ...]       # the nonzero bounding box, per transposed axis
    shape_after_crop: tuple[int, ...]
    spacing: tuple[float, ...]             # the grid the network sees
    was_2d: bool


def preprocess_for_prediction(data: np.ndarray, spacing: Sequence[float], plans: Plans,
                              configuration: str) -> tuple[np.ndarray, CaseGeometry]:
    """``data (C, *spatial)`` with ``spacing`` in its own axis order -> the network's input ``(C, z, y, x)`` float32
    and the geometry to undo it. Wrong channel counts and non-finite values are refused by name."""
    planned = plans.configuration(configuration)
    if data.ndim != len(spacing) + 1:
        raise ValueError(f"data of shape {data.shape} does not match a spacing of {len(spacing)} axes: expected "
                         f"(channels, {len(spacing)} spatial axes)")
    if data.shape[0] != len(plans.channel_names):
        raise ValueError(f"data has {data.shape[0]} channels, the plans expect {len(plans.channel_names)} "
                         f"({', '.join(plans.channel_names.values())})")
    if not np.all(np.isfinite(data)):
        raise ValueError("image contains NaN or infinite values")
    was_2d = len(spacing) == 2
    data, spacing = as_volume(data, spacing)
    original_shape = tuple(data.shape[1:])
    order = plans.transpose_forward
    data = data.transpose(0, *[a + 1 for a in order])
    spacing_t = [float(spacing[a]) for a in order]
    data, outside_marked, box = crop_to_nonzero(data)
    shape_after_crop = tuple(data.shape[1:])
    data = normalize(data, outside_marked[0] >= 0, plans)
    new_spacing = target_spacing_for(planned, spacing_t)
    data = resample_image(data, spacing_t, new_spacing, order=plans.resampling.image_order)
    geometry = CaseGeometry(original_shape=original_shape, transposed_spacing=tuple(spacing_t),
                            box=tuple((int(a), int(b)) for a, b in box), shape_after_crop=shape_after_crop,
                            spacing=tuple(float(s) for s in new_spacing), was_2d=was_2d)
    return data, geometry
