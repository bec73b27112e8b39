"""How an image becomes a model's input for MedSAM, SAM and Lite MedSAM, re-derived from the published recipe.

MedSAM (Ma et al., Nat Commun 2024, Methods) was trained on images that went through one fixed chain, and a
checkpoint only gives its published accuracy on inputs prepared the same way. The chain, as in bowang-lab/MedSAM
``pre_CT_MR.py``, ``utils/pre_grey_rgb.py`` and ``MedSAM_Inference.py``:

1. **Intensities to [0, 255]** (:mod:`gnnseg.seg.io.intensity`). CT: clip Hounsfield units to a window and
   rescale. MR, X-ray, ultrasound: clip to the 0.5th and 99.5th percentiles and rescale. Stored as uint8; grey
   images become three identical channels.
2. **Resize to 1024 x 1024** with bicubic interpolation, ignoring the aspect ratio (:func:`resize_image`).
   Label masks use nearest neighbour (:func:`resize_mask`).
3. **Min-max to [0, 1]** over the whole resized image (:func:`normalize_for_model`). MedSAM feeds this straight
   to its image encoder; SAM's ImageNet ``pixel_mean`` / ``pixel_std`` are *not* applied (``mode="imagenet"``
   is there for the original SAM weights).
4. **Boxes** ``(x0, y0, x1, y1)`` in pixel index coordinates of the original image are checked, clipped and
   scaled with the image: ``box / [W, H, W, H] * 1024``, x and y independently because step 2 stretches the image
   (:mod:`gnnseg.seg.sam.inference.prompts`).

Lite MedSAM (bowang-lab/MedSAM, LiteMedSAM branch, ``CVPR24_LiteMedSAM_infer.py``) keeps the aspect ratio instead:
the longest side goes to 256 (:func:`resize_longest_side`), the image is min-max normalized, then zero-padded at
the bottom and right to 256 x 256 (:func:`pad_to_square`); boxes scale by the single factor ``256 / max(H, W)``.
:func:`lite_model_input` chains these in that order.

Where this differs from the reference scripts
---------------------------------------------
* Step 1's differences are listed in :mod:`gnnseg.seg.io.intensity`; step 3 re-stretches every image anyway.
* :func:`resize_longest_side` uses Pillow's area-weighted box filter when shrinking and bilinear interpolation
  when enlarging, standing in for OpenCV's ``INTER_AREA`` (OpenCV is not a dependency); it returns float32
  rather than rounding back to uint8. Boxes keep fractional coordinates where the reference truncates them with
  ``int`` (``--preprocessing official`` truncates as it does).
* ``MedSAM_Inference.py`` casts the resized image back to uint8 (truncating) before step 3; here it stays
  float32, a difference below one grey level.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from gnnseg.seg.io.intensity import (
    IMAGENET_PIXEL_MEAN,
    IMAGENET_PIXEL_STD,
    finite_real,
    to_rgb_uint8,
)

__all__ = [
    "lite_model_input",
    "medsam_model_input",
    "minmax_normalize",
    "normalize_for_model",
    "pad_to_square",
    "resize_image",
    "resize_longest_side",
    "resize_mask",
    "resize_window",
    "whole_image_input",
]

_NORMALIZE_MODES = ("minmax", "imagenet")


def check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    return int(size)


def _check_hwc(name: str, image: np.ndarray) -> np.ndarray:
    array = finite_real(name, image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3), got {array.shape}")
    return array


def resize_image(rgb_uint8: np.ndarray, size: int = 1024, *, anti_aliasing: bool = True) -> np.ndarray:
    """Resize an ``(H, W, 3)`` image to ``(size, size, 3)`` with bicubic interpolation, as MedSAM does.

    ``skimage.transform.resize(order=3, preserve_range=True)``; the aspect ratio is not kept. ``anti_aliasing``
    (a Gaussian blur before shrinking; it has no effect when enlarging) defaults to True as in
    ``MedSAM_Inference.py`` and ``pre_grey_rgb.py``.

    Returns:
        float32 ``(size, size, 3)`` within the input's value range.
    """
    from skimage.transform import resize  # imported here: a Lite model's runtime never needs it

    array = _check_hwc("rgb_uint8", rgb_uint8)
    size = check_size(size)
    resized = resize(array, (size, size), order=3, preserve_range=True, anti_aliasing=anti_aliasing)
    return resized.astype(np.float32)


def resize_mask(mask: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resize a label mask (2D or 3D) to ``shape`` by nearest neighbour, keeping its dtype and label values.

    ``skimage.transform.resize(order=0, anti_aliasing=False)``, as MedSAM resizes its ground truth.
    """
    array = np.asarray(mask)
    if array.dtype.kind not in "biu":
        raise ValueError(f"mask must hold integer or boolean labels, got dtype {array.dtype}")
    if array.ndim not in (2, 3) or array.size == 0:
        raise ValueError(f"mask must be a non-empty 2D or 3D array, got shape {array.shape}")
    target = tuple(int(s) for s in shape)
    if len(target) != array.ndim or any(s < 1 for s in target):
        raise ValueError(f"shape {tuple(shape)} must give {array.ndim} positive sizes for a mask of shape "
                         f"{array.shape}")
    from skimage.transform import resize

    resized = resize(array, target, order=0, preserve_range=True, anti_aliasing=False)
    return resized.astype(array.dtype)


def minmax_normalize(image: np.ndarray) -> np.ndarray:
    """``(x - min) / max(max - min, 1e-8)`` over the whole array (all channels together), as float32.

    MedSAM's only intensity normalization before the image encoder; a constant image becomes zeros.
    """
    values = finite_real("image", image).astype(np.float64)
    low = values.min()
    return ((values - low) / max(float(values.max() - low), 1e-8)).astype(np.float32)


def normalize_for_model(resized_float_hwc: np.ndarray, mode: str = "minmax") -> np.ndarray:
    """Normalize a resized ``(S, S, 3)`` image and lay it out as the encoder's ``(1, 3, S, S)`` float32 input.

    Args:
        resized_float_hwc: output of :func:`resize_image` (values on the 0..255 scale).
        mode: ``"minmax"`` (MedSAM, Lite MedSAM: :func:`minmax_normalize`) or ``"imagenet"`` (original SAM:
            ``(x - IMAGENET_PIXEL_MEAN) / IMAGENET_PIXEL_STD`` per channel).
    """
    if mode not in _NORMALIZE_MODES:
        raise ValueError(f"unknown normalization mode {mode!r}; choose one of {list(_NORMALIZE_MODES)}")
    array = _check_hwc("resized_float_hwc", resized_float_hwc)
    if mode == "minmax":
        normalized = minmax_normalize(array)
    else:
        mean, std = np.asarray(IMAGENET_PIXEL_MEAN), np.asarray(IMAGENET_PIXEL_STD)
        normalized = ((array.astype(np.float64) - mean) / std).astype(np.float32)
    return np.ascontiguousarray(normalized.transpose(2, 0, 1), dtype=np.float32)[None]


def medsam_model_input(image: np.ndarray, size: int = 1024) -> np.ndarray:
    """Steps 1 (layout) to 3 for an already windowed image: :func:`~gnnseg.seg.io.intensity.to_rgb_uint8`,
    :func:`resize_image`,
    :func:`normalize_for_model` (min-max). Returns ``(1, 3, size, size)`` float32."""
    return normalize_for_model(resize_image(to_rgb_uint8(image), size), "minmax")


def resize_longest_side(image: np.ndarray, size: int = 256) -> np.ndarray:
    """Scale a 2D image so its longest side is ``size``, keeping the aspect ratio (Lite MedSAM).

    The new sides are ``int(side * size / max(H, W) + 0.5)`` (at least 1), as in the reference. Shrinking
    averages the covered pixels by area (Pillow's box filter); enlarging interpolates bilinearly.

    Args:
        image: ``(H, W)`` or ``(H, W, C)``.

    Returns:
        float32 ``(H', W')`` or ``(H', W', C)``.
    """
    array = finite_real("image", image)
    if array.ndim not in (2, 3):
        raise ValueError(f"expected an image of shape (H, W) or (H, W, C), got shape {array.shape}")
    size = check_size(size)
    height, width = array.shape[:2]
    scale = size / max(height, width)
    new_height, new_width = max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))
    method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    channels = array[:, :, None] if array.ndim == 2 else array
    resized = _resize_channels(channels, (new_height, new_width), method)
    return resized[:, :, 0] if array.ndim == 2 else resized


def _resize_channels(array: np.ndarray, hw: Sequence[int], method: Image.Resampling) -> np.ndarray:
    """Resize each channel of an ``(H, W, C)`` array to ``hw`` with Pillow's ``method`` on float32 ('F') images, one
    channel at a time (a large image then costs one float channel at a time rather than all of them).

    Returns:
        float32 ``(h, w, C)``.
    """
    height, width = (int(v) for v in hw)
    return np.stack([
        np.asarray(Image.fromarray(np.ascontiguousarray(array[:, :, c], np.float32)).resize((width, height), method))
        for c in range(array.shape[2])
    ], axis=2)


def resize_window(window: np.ndarray, size: int) -> np.ndarray:
    """A box-centred model's ``(s, s, 3)`` window (:meth:`~gnnseg.seg.sam.inference.crop.CropWindow.cut`) -> its
    ``(size, size, 3)`` float32 pixels in 0..255, before normalisation.

    Pillow's bilinear filter: when shrinking it widens with the scale (antialiasing), which is what torch's
    ``interpolate(mode="bilinear", antialias=True)`` was written to reproduce; when enlarging it is ordinary
    half-pixel bilinear interpolation (``align_corners=False``). The two agree to float rounding
    (tests/seg/test_sam_export_box_centred.py measures it), so the PyTorch and ONNX predictors and training share this.
    """
    return np.clip(_resize_channels(window, (size, size), Image.Resampling.BILINEAR), 0, 255)


def pad_to_square(image: np.ndarray, size: int = 256) -> np.ndarray:
    """Zero-pad an ``(H, W)`` or ``(H, W, C)`` array at the bottom and right to ``size x size`` (Lite MedSAM).

    Padding only at the far sides keeps pixel ``(y, x)`` at ``(y, x)``, so boxes need no offset.
    """
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise ValueError(f"expected an image of shape (H, W) or (H, W, C), got shape {array.shape}")
    size = check_size(size)
    height, width = array.shape[:2]
    if height > size or width > size:
        raise ValueError(f"image of shape {array.shape} is larger than the {size} x {size} target; "
                         "resize it first (resize_longest_side)")
    padding = [(0, size - height), (0, size - width)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, padding)


def lite_model_input(image: np.ndarray, size: int = 256) -> tuple[np.ndarray, tuple[int, int]]:
    """Lite MedSAM's image chain: :func:`~gnnseg.seg.io.intensity.to_rgb_uint8`, :func:`resize_longest_side`,
    :func:`minmax_normalize`
    (before padding, so the padding does not change the minimum), :func:`pad_to_square`.

    Returns:
        ``(1, 3, size, size)`` float32 array and the ``(H', W')`` of the image inside the padding, which
        post-processing crops back to before resizing masks to the original size.
    """
    resized = minmax_normalize(resize_longest_side(to_rgb_uint8(image), size))
    padded = pad_to_square(resized, size)
    pixels = np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32)[None]
    return pixels, (int(resized.shape[0]), int(resized.shape[1]))


def official_lite_model_input(image: np.ndarray, size: int = 256) -> tuple[np.ndarray, tuple[int, int]]:
    """Lite MedSAM's image chain as the released inference code (``CVPR24_LiteMedSAM_infer.py``) runs it: the uint8
    RGB image resized by OpenCV's area interpolation to the rounded longest-side size (so the result is rounded to
    uint8 again), min-max normalised, zero-padded. Same outputs as :func:`lite_model_input`.

    Needs OpenCV (``pip install opencv-python-headless``): its area interpolation is what the reference runs.
    """
    try:
        import cv2
    except ImportError as exc:
        raise ImportError("preprocessing 'official' resizes with OpenCV, as the released LiteMedSAM code does: "
                          "pip install opencv-python-headless (or gnnseg[litemedsam])") from exc
    rgb = to_rgb_uint8(image)
    size = check_size(size)
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    new_width, new_height = max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5))
    resized = cv2.resize(rgb, (new_width, new_height), interpolation=cv2.INTER_AREA)
    padded = pad_to_square(minmax_normalize(resized), size)
    pixels = np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32)[None]
    return pixels, (new_height, new_width)


def whole_image_input(rgb: np.ndarray, size: int, *, layout: str, normalization: str, preprocessing: str = "gnnseg"
                      ) -> tuple[np.ndarray, tuple[int, int]]:
    """A whole RGB image as a ``(1, 3, size, size)`` model input, and the ``(H', W')`` of the image inside it.

    ``layout="square"``: MedSAM's chain (:func:`medsam_model_input`), ``H' = W' = size``. ``layout="padded"``:
    longest side to ``size`` and zero padding at the bottom and right; with min-max normalisation that is Lite
    MedSAM's chain (:func:`lite_model_input`, or with ``preprocessing="official"`` the released code's,
    :func:`official_lite_model_input`), with ImageNet statistics SAM's (normalised first, so the padding is zero in
    the input).
    """
    if preprocessing == "official":
        if layout != "padded" or normalization != "minmax":
            raise ValueError(f"preprocessing 'official' is Lite MedSAM's chain (padded, min-max); got layout "
                             f"{layout!r} with normalization {normalization!r}")
        return official_lite_model_input(rgb, size)
    if layout == "square":
        return normalize_for_model(resize_image(rgb, size), normalization), (size, size)
    if layout != "padded":
        raise ValueError(f"layout must be 'square' or 'padded', got {layout!r}")
    if normalization == "minmax":
        return lite_model_input(rgb, size)
    resized = resize_longest_side(rgb, size)
    normalized = normalize_for_model(pad_to_square(resized, size), normalization)
    height, width = resized.shape[:2]
    normalized[..., height:, :] = 0
    normalized[..., :, width:] = 0
    return normalized, (height, width)
