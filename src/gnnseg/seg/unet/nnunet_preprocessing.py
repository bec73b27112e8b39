"""A case preprocessed as nnU-Net v2's ``DefaultPreprocessor`` does at inference: transpose, crop, normalise, resample.

Order and arithmetic follow ``DefaultPreprocessor.run_case_npy``: the image becomes float32; axes are transposed by
the plans' ``transpose_forward``; it is cropped to the nonzero region (gnnseg's
:func:`~gnnseg.seg.unet.cropping.crop_to_nonzero`, which is nnU-Net's rule: any channel nonzero, holes filled,
``-1`` outside); each channel is normalised by its scheme *before* resampling (:func:`normalize_channel`); then it is
resampled to the configuration's spacing (a 2D configuration keeps the slicing axis) with nnU-Net's resampling
(:mod:`gnnseg.seg.unet.nnunet_resampling`). The properties returned are what export needs to undo it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gnnseg.seg.unet.cropping import crop_to_nonzero
from gnnseg.seg.unet.nnunet_plans import NnUNetConfiguration, NnUNetPlans
from gnnseg.seg.unet.nnunet_resampling import new_shape_for, resample_to_shape


def normalize_channel(image: np.ndarray, scheme: str, use_mask: bool, inside: np.ndarray,
                      intensities: Mapping[str, float] | None) -> np.ndarray:
    """One channel (float32, changed in place and returned) normalised by nnU-Net's ``scheme``.

    ``ZScoreNormalization``: minus the case's mean, over its std (inside the nonzero region ``inside`` only when
    ``use_mask``; outside stays as it is, which is zero). ``CTNormalization``: clipped to the training set's foreground
    0.5 / 99.5 percentiles, minus their mean, over their std. ``RescaleTo01Normalization``: min-max to [0, 1].
    ``RGBTo01Normalization``: divided by 255. ``NoNormalization``: unchanged.
    """
    eps = 1e-8
    if scheme == "ZScoreNormalization":
        if use_mask:
            values = image[inside]
            mean, std = values.mean(), values.std()
            image[inside] = (values - mean) / max(std, eps)
        else:
            mean, std = image.mean(), image.std()
            image -= mean
            image /= max(std, eps)
    elif scheme == "CTNormalization":
        if intensities is None:
            raise ValueError("CTNormalization needs the plans' foreground intensity properties for this channel")
        np.clip(image, intensities["percentile_00_5"], intensities["percentile_99_5"], out=image)
        image -= intensities["mean"]
        image /= max(intensities["std"], eps)
    elif scheme == "RescaleTo01Normalization":
        image -= image.min()
        image /= np.clip(image.max(), a_min=eps, a_max=None)
    elif scheme == "RGBTo01Normalization":
        if image.min() < 0 or image.max() > 255:
            raise ValueError(f"RGBTo01Normalization expects 0..255 values, got {image.min()}..{image.max()}")
        image /= 255.0
    elif scheme != "NoNormalization":
        raise ValueError(f"unknown normalization scheme {scheme!r}")
    return image


def target_spacing(configuration: NnUNetConfiguration, spacing_transposed: Sequence[float]) -> list[float]:
    """The spacing a case is resampled to: the configuration's, with the slicing axis kept for a 2D one."""
    if len(configuration.spacing) < len(spacing_transposed):
        return [float(spacing_transposed[0]), *configuration.spacing]
    return list(configuration.spacing)


def preprocess_nnunet_case(data: np.ndarray, spacing: Sequence[float], plans: NnUNetPlans,
                           configuration: NnUNetConfiguration) -> tuple[np.ndarray, dict[str, Any]]:
    """``data (C, z, y, x)`` with ``spacing`` ``(sz, sy, sx)`` (nnU-Net's reader order; 2D images as one slice) ->
    the network's input ``(C, *resampled)`` float32 and the properties to map predictions back:
    ``spacing``, ``shape_before_cropping``, ``bbox_used_for_cropping``, ``shape_after_cropping_and_before_resampling``
    (nnU-Net's names; shapes and box in the transposed axis order)."""
    if len(configuration.normalization_schemes) != data.shape[0]:
        raise ValueError(f"the case has {data.shape[0]} channels, the plans normalise "
                         f"{len(configuration.normalization_schemes)}")
    data = data.astype(np.float32)
    forward = plans.transpose_forward
    data = data.transpose(0, *[a + 1 for a in forward])
    spacing_transposed = [float(spacing[a]) for a in forward]
    shape_before_cropping = list(data.shape[1:])
    data, seg, box = crop_to_nonzero(data)
    shape_after_cropping = list(data.shape[1:])
    new_spacing = target_spacing(configuration, spacing_transposed)
    new_shape = new_shape_for(data.shape[1:], spacing_transposed, new_spacing)
    data = np.ascontiguousarray(data)
    inside = seg[0] >= 0
    for channel in range(data.shape[0]):
        data[channel] = normalize_channel(data[channel], configuration.normalization_schemes[channel],
                                          configuration.use_mask_for_norm[channel], inside,
                                          plans.intensity_properties.get(str(channel)))
    resampling = configuration.resampling_data
    data = resample_to_shape(data, new_shape, spacing_transposed, new_spacing, resampling.order, resampling.order_z,
                             resampling.force_separate_z)
    properties = {"spacing": [float(s) for s in spacing], "shape_before_cropping": shape_before_cropping,
                  "bbox_used_for_cropping": [list(b) for b in box],
                  "shape_after_cropping_and_before_resampling": shape_after_cropping}
    return data, properties
