"""Intensities to 0..255, in one place: CT windows, percentile clipping, uint8 and RGB conversion, volume scaling.

MedSAM's recipe (bowang-lab/MedSAM ``pre_CT_MR.py``, ``utils/pre_grey_rgb.py``): CT Hounsfield units are clipped to a
display window and rescaled (:func:`window_ct`); MR, X-ray and ultrasound are clipped to their 0.5th and 99.5th
percentiles (of the voxels above zero) and rescaled (:func:`clip_percentiles`); the result is stored as uint8
(:func:`to_uint8`) and grey images become three identical channels (:func:`to_rgb_uint8`). Every command, the
training samples and the service scale a volume through :func:`scale_volume`, a few slices at a time, so they all
see the same pixels. Also here: SAM's ImageNet statistics. Numpy only: the torch-free ONNX path uses this module.

Where :func:`window_ct` differs from ``pre_CT_MR.py``: it maps the window's bounds to 0 and 255, where the reference
min-maxes the clipped volume; the two agree whenever the volume reaches both bounds (CT nearly always holds air
below and bone above a soft-tissue window). :func:`to_rgb_uint8` min-maxes every non-uint8 image;
``pre_grey_rgb.py`` does so only when its maximum exceeds 255.
"""

from __future__ import annotations

from functools import partial

import numpy as np

#: CT display windows as ``(width, level)`` in Hounsfield units; a window keeps ``level +- width / 2``.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    # Abdominal organs, muscle, fat: [-160, 240] HU. MedSAM's default (pre_CT_MR.py) and the usual soft-tissue window.
    "soft_tissue": (400.0, 40.0),
    # Lung parenchyma and airways: [-910, 590] HU. The level follows the MedSAM paper (W:1500, L:-160);
    # radiology references often centre the lung window lower, at about -600 HU.
    "lung": (1500.0, -160.0),
    # Brain parenchyma, grey against white matter: [0, 80] HU. A narrow window for small density differences.
    "brain": (80.0, 40.0),
    # Cortical and trabecular bone: [-500, 1300] HU.
    "bone": (1800.0, 400.0),
}

#: SAM's ``pixel_mean`` / ``pixel_std`` (ImageNet statistics on the 0..255 scale), for ImageNet normalization.
IMAGENET_PIXEL_MEAN = (123.675, 116.28, 103.53)
IMAGENET_PIXEL_STD = (58.395, 57.12, 57.375)


def finite_real(name: str, value: object) -> np.ndarray:
    """``value`` as a non-empty real array with no NaN or infinity."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            kind = "NaN" if np.isnan(array[first]) else "infinity"
            raise ValueError(f"{name} contains {kind} (first at index {first})")
    return array


def rescale_to_255(clipped: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` linearly onto ``[0, 255]`` as float32; all zeros when ``high == low``."""
    if high <= low:
        return np.zeros(clipped.shape, np.float32)
    return ((clipped - low) / (high - low) * 255.0).astype(np.float32)


def window_ct(hu: np.ndarray, window: str | tuple[float, float] = "soft_tissue") -> np.ndarray:
    """Clip a CT image to a display window and map it linearly onto ``[0, 255]``.

    Args:
        hu: any-shaped array of Hounsfield units.
        window: a name from :data:`CT_WINDOWS` or a ``(width, level)`` pair; values in
            ``[level - width / 2, level + width / 2]`` map to ``[0, 255]``, values outside saturate.

    Returns:
        float32 array of ``hu``'s shape in ``[0, 255]`` (:func:`to_uint8` stores it as uint8).
    """
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            raise ValueError(f"unknown CT window {window!r}; presets are {sorted(CT_WINDOWS)} "
                             "or pass (width, level)")
        width, level = CT_WINDOWS[window]
    else:
        pair = np.asarray(window, dtype=float)
        if pair.shape != (2,) or not np.all(np.isfinite(pair)):
            raise ValueError(f"window must be a preset name or a finite (width, level) pair, got {window!r}")
        width, level = float(pair[0]), float(pair[1])
        if width <= 0:
            raise ValueError(f"window width must be positive, got {width}")
    return map_to_255(finite_real("hu", hu), level - width / 2, level + width / 2)


def clip_percentiles(image: np.ndarray, low: float = 0.5, high: float = 99.5, *,
                     nonzero_only: bool = True) -> np.ndarray:
    """Clip an MR, X-ray or ultrasound image to two intensity percentiles and map them onto ``[0, 255]``.

    With ``nonzero_only=True`` (the default, as MedSAM's ``pre_CT_MR.py`` for MR and ``pre_grey_rgb.py`` for grey
    2D images do) the percentiles come from the voxels ``> 0`` only, so a large empty background does not pull the
    lower percentile to zero. MR intensities are not negative, so these are the nonzero voxels. The background
    lies below the lower percentile and still maps to 0 (the reference's extra ``image_data_pre[image_data == 0]
    = 0`` changes nothing). ``nonzero_only=False`` takes the percentiles over every voxel.

    Args:
        image: any-shaped real array.
        low, high: percentiles in ``[0, 100]`` with ``low < high`` (numpy's default linear interpolation).

    Returns:
        float32 array of ``image``'s shape in ``[0, 255]``; all zeros when the percentiles coincide (a constant
        image) or no voxel is positive.
    """
    bounds = percentile_bounds(image, low, high, nonzero_only=nonzero_only)
    if bounds is None:
        return np.zeros(np.shape(image), np.float32)
    return map_to_255(image, *bounds)


def percentile_bounds(image: np.ndarray, low: float = 0.5, high: float = 99.5, *,
                      nonzero_only: bool = True) -> tuple[float, float] | None:
    """The ``low`` and ``high`` percentiles :func:`clip_percentiles` clips to (``None`` when no voxel counts),
    computed in the image's own dtype: no float copy of the whole image."""
    if not (0.0 <= low < high <= 100.0):
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got low={low}, high={high}")
    values = finite_real("image", image)
    sample = values[values > 0] if nonzero_only else values.ravel()
    if sample.size == 0:
        return None
    if sample.dtype.kind == "f":  # interpolate in float64, as for integers; a copy of the sample only
        sample = sample.astype(np.float64)
    lower, upper = (float(p) for p in np.percentile(sample, [low, high]))
    return lower, upper


def map_to_255(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip ``values`` to ``[low, high]`` and map that range linearly onto ``[0, 255]`` (float32)."""
    return rescale_to_255(np.clip(np.asarray(values, dtype=np.float64), low, high), low, high)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Store a ``[0, 255]`` float image as uint8, truncating like the reference's ``np.uint8(...)`` cast.

    Values within 1e-3 outside the range (rounding error) are clipped; anything further out is refused.
    """
    values = finite_real("image", image)
    if values.dtype == np.uint8:
        return values.copy()
    if values.min() < -1e-3 or values.max() > 255.0 + 1e-3:
        raise ValueError(f"to_uint8 expects values in [0, 255], got range [{values.min()}, {values.max()}]")
    return np.clip(values, 0, 255).astype(np.uint8)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Bring a 2D image to the ``(H, W, 3)`` uint8 layout MedSAM expects.

    Accepts ``(H, W)``, ``(H, W, 1)`` (repeated to three channels), ``(H, W, 3)`` and ``(H, W, 4)`` (alpha
    dropped). uint8 input keeps its values; any other dtype is min-maxed over all channels onto ``0..255``
    (a constant image becomes zeros).
    """
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise ValueError(f"expected an image of shape (H, W) or (H, W, C), got shape {array.shape}")
    array = finite_real("image", array)
    if array.ndim == 3 and array.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected 1, 3 or 4 channels, got shape {array.shape}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 4:
        array = array[:, :, :3]
    if array.dtype != np.uint8:
        values = array.astype(np.float64)
        array = to_uint8(rescale_to_255(values, float(values.min()), float(values.max())))
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.array(array, dtype=np.uint8, order="C")          # always a copy: the caller's array is never shared


SLAB = 8
"""Slices :func:`scale_volume` scales at a time: the float copies the scaling needs stay a few slices large."""

VOLUME_MODALITIES = ("ct", "mr", "auto")


def scale_volume(array: np.ndarray, modality: str, window: str = "soft_tissue") -> np.ndarray:
    """A ``(Z, Y, X)`` volume as uint8: ``ct`` through a window, ``mr`` (and anything else) clipped to its 0.5-99.5
    percentiles over the whole volume, ``auto`` CT when the values reach below -200 (Hounsfield units of air and
    fat), else MR; scaled :data:`SLAB` slices at a time and rounded."""
    if modality == "auto":
        modality = "ct" if float(np.min(array)) < -200 else "mr"
    if modality == "ct":
        if window not in CT_WINDOWS:
            raise ValueError(f"unknown CT window {window!r}; choose one of {sorted(CT_WINDOWS)}")
        scale = partial(window_ct, window=window)
    elif modality == "mr":
        bounds = percentile_bounds(array)
        if bounds is None:
            return np.zeros(array.shape, np.uint8)
        scale = partial(map_to_255, low=bounds[0], high=bounds[1])
    else:
        raise ValueError(f"modality must be one of {VOLUME_MODALITIES}, got {modality!r}")
    scaled = np.empty(array.shape, np.uint8)
    for start in range(0, len(array), SLAB):
        scaled[start : start + SLAB] = np.round(scale(array[start : start + SLAB]))
    return scaled
