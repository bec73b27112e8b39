"""NIfTI volumes (``.nii`` / ``.nii.gz``) through nibabel, in (z, y, x) order with spacing and affine."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from gnnseg.core.atomic import atomic_path
from gnnseg.seg.io.image import ImageFormatError, MedicalImage


def read_nifti(path: str | os.PathLike) -> MedicalImage:
    """Read a 2D or 3D NIfTI file. The array comes back as ``(z, y, x)`` (``(y, x)`` for 2D) in the file's
    own data type after scaling (``get_fdata`` is avoided so integer label maps stay integers)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NIfTI file not found: {path}")
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types for truncated or foreign files
        raise ImageFormatError(f"cannot read NIfTI file {path}: {exc}") from exc
    data = np.squeeze(data, axis=tuple(range(3, data.ndim))) if data.ndim > 3 else data
    if data.ndim not in (2, 3):
        raise ImageFormatError(f"{path}: expected a 2D or 3D image, got shape {data.shape}")
    zooms = tuple(float(z) for z in image.header.get_zooms()[: data.ndim])
    return MedicalImage(array=np.ascontiguousarray(data.T), spacing=zooms[::-1], affine=image.affine.copy(),
                        source=str(path))


def write_nifti(image: MedicalImage, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``image`` (``(z, y, x)``) as NIfTI, keeping its affine (or building one from its spacing).

    Refuses to replace an existing file unless ``overwrite=True``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if image.num_channels != 1 or image.array.ndim != len(image.spacing):
        raise ImageFormatError(f"write_nifti takes single-channel images, got shape {image.array.shape}")
    data = image.array.T
    affine = image.affine
    if affine is None:
        affine = np.diag([*image.spacing[::-1], *([1.0] * (4 - len(image.spacing)))])
    nifti = nib.Nifti1Image(data, affine)
    nifti.header.set_zooms(image.spacing[::-1])
    with atomic_path(path) as temporary:
        nib.save(nifti, str(temporary))
    return path
