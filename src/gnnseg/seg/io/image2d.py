"""2D images (PNG, JPEG, TIFF, GIF, BMP) through Pillow, as ``(y, x)`` or ``(y, x, channels)`` arrays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from gnnseg.core.atomic import atomic_path
from gnnseg.seg.io.image import (
    ImageFormatError,
    ImageTooLargeError,
    MedicalImage,
    check_declared_size,
    check_is_file,
)

SUFFIXES_2D = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")


def read_image_2d(path: str | os.PathLike, *, grayscale: bool = False, max_pixels: int | None = None) -> MedicalImage:
    """Read a 2D image; palette and grey-alpha images become grey, RGBA drops alpha, spacing is 1 x 1.

    ``grayscale=True`` converts colour to one luminance channel (for masks stored as RGB, e.g. Kvasir).
    ``max_pixels`` refuses, from the header and before decoding, an image of more pixels
    (:class:`ImageTooLargeError`); so does Pillow's own guard against decompression bombs, whatever the limit.
    """
    path = check_is_file(path, "image file")
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            check_declared_size(str(path), (height, width), max_pixels)
            opened.load()
            mode = opened.mode
            if grayscale or mode in ("P", "LA", "1"):
                converted = opened.convert("L")
            elif mode in ("RGBA", "CMYK", "YCbCr"):
                converted = opened.convert("RGB")
            else:
                converted = opened
            array = np.array(converted)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{path}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageFormatError(f"cannot read image {path}: {exc}") from exc
    if array.ndim not in (2, 3):
        raise ImageFormatError(f"{path}: unexpected image array of shape {array.shape}")
    return MedicalImage(array=array, spacing=(1.0, 1.0), source=str(path), metadata={"mode": mode})


def write_image_2d(array: np.ndarray, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a ``(y, x)`` or ``(y, x, 3)`` uint8/uint16 array losslessly (PNG or TIFF by suffix)."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".tif", ".tiff"):
        raise ImageFormatError(f"{path}: write 2D images as .png or .tif (lossless), not {path.suffix}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageFormatError(f"{path}: expected uint8 or uint16 pixels, got {array.dtype}")
    with atomic_path(path) as temporary:
        Image.fromarray(array).save(temporary)
    return path
