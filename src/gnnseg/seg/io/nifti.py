"""NIfTI volumes (``.nii`` / ``.nii.gz``) through nibabel, in (z, y, x) order with spacing and affine."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from gnnseg.core.atomic import atomic_path
from gnnseg.seg.io.image import (
    ImageFormatError,
    ImageTooLargeError,
    MedicalImage,
    check_declared_size,
    check_is_file,
)


def read_nifti(path: str | os.PathLike, *, max_voxels: int | None = None) -> MedicalImage:
    """Read a 2D or 3D NIfTI file. The array comes back as ``(z, y, x)`` (``(y, x)`` for 2D) in the file's
    own data type after scaling (``get_fdata`` is avoided so integer label maps stay integers).

    ``max_voxels`` refuses a file whose header declares more voxels (:class:`ImageTooLargeError`) before any is
    decompressed; a file that cannot hold what it declares is refused by name whatever the limit.
    """
    path = check_is_file(path, "NIfTI file")
    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for truncated or foreign files
        raise ImageFormatError(f"cannot read NIfTI file {path}: {exc}") from exc
    shape = image.header.get_data_shape()
    check_declared_size(str(path), shape, max_voxels, "voxels")
    if not path.name.endswith(".gz"):
        itemsize = image.header.get_data_dtype().itemsize
        needed = int(image.header["vox_offset"]) + int(np.prod(shape, dtype=np.int64)) * itemsize
        if path.stat().st_size < needed:
            raise ImageFormatError(f"{path} is truncated: its header declares {' x '.join(map(str, shape))} voxels "
                                   f"({needed:,} bytes), the file holds {path.stat().st_size:,}")
    try:
        data = np.asanyarray(image.dataobj)
    except MemoryError:
        raise ImageTooLargeError(f"{path}: its header declares {' x '.join(map(str, shape))} voxels, more than "
                                 "this machine's memory holds") from None
    except Exception as exc:
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
