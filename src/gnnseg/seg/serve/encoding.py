"""Masks as the service returns them: PNG, compressed npz, NIfTI on the original grid, a DICOM-SEG referencing the
uploaded DICOM series, or run-length JSON.

Run-length encoding (``rle``): the label map flattened in row-major (C) order, as alternating run lengths that
start with a background run (possibly 0): ``[background, object, background, ...]``, with the map's ``size``.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from gnnseg.seg.io import MedicalImage, write_nifti


def png_bytes(labels: np.ndarray) -> bytes:
    """A 2D label map as PNG: one object as 0/255 (visible in any viewer), more as their labels (8 or 16 bit)."""
    if labels.ndim != 2:
        raise ValueError(f"a PNG holds one 2D label map, got shape {labels.shape}")
    if labels.max(initial=0) <= 1:
        array = (labels > 0).astype(np.uint8) * 255
    else:
        array = labels.astype(np.uint8 if labels.max() <= 255 else np.uint16, copy=False)
    return image_png_bytes(array)


def image_png_bytes(array: np.ndarray) -> bytes:
    """An ``(H, W, 3)`` uint8 image (a slice for the viewer) or an ``(H, W)`` map as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def npz_bytes(labels: np.ndarray, iou: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, segs=labels.astype(np.uint16), iou=iou.astype(np.float32))
    return buffer.getvalue()


def nifti_bytes(labels: np.ndarray, spacing: tuple[float, ...], affine: np.ndarray | None) -> bytes:
    """A ``(D, H, W)`` label volume as gzipped NIfTI with the original spacing and affine."""
    with tempfile.TemporaryDirectory(prefix="gnnseg-mask-") as folder:
        path = Path(folder) / "mask.nii.gz"
        write_nifti(MedicalImage(labels.astype(np.uint16), tuple(spacing), affine), path)
        return path.read_bytes()


def dicom_seg_bytes(labels: np.ndarray, headers: Sequence, *, model: str) -> bytes:
    """A ``(D, H, W)`` label volume as a DICOM-SEG file referencing the series whose slice ``headers`` are given
    (label ``k`` as segment "label k"; :mod:`gnnseg.seg.io.dicom_seg`)."""
    from gnnseg.seg.io.dicom_seg import build_dicom_seg

    buffer = io.BytesIO()
    build_dicom_seg(labels, headers, model=model, algorithm_type="SEMIAUTOMATIC").save_as(buffer)
    return buffer.getvalue()


def rle_encode(mask: np.ndarray) -> dict:
    """Row-major run lengths of a boolean mask, starting with a background run."""
    flat = np.asarray(mask, dtype=bool).ravel()
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def rle_decode(rle: dict) -> np.ndarray:
    """Inverse of :func:`rle_encode`."""
    values = np.zeros(len(rle["counts"]), dtype=bool)
    values[1::2] = True
    return np.repeat(values, rle["counts"]).reshape(rle["size"])
