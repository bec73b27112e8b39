"""One dispatch from a path to its reader or writer: NIfTI (nibabel), MetaImage and NRRD (SimpleITK) and 2D images
by suffix, a folder as a DICOM series.

Every command that takes "an image" goes through :func:`read_any` (and writes through :func:`write_any`), so the
formats gnnseg reads are listed once, in :data:`READABLE_SUFFIXES`.
"""

from __future__ import annotations

import os
from pathlib import Path

from gnnseg.seg.io.image import ImageFormatError, MedicalImage
from gnnseg.seg.io.image2d import SUFFIXES_2D, read_image_2d, write_image_2d
from gnnseg.seg.io.simpleitk_io import SIMPLEITK_SUFFIXES, read_simpleitk, write_simpleitk  # SimpleITK: lazily

NIFTI_SUFFIXES = (".nii", ".nii.gz")
READABLE_SUFFIXES = NIFTI_SUFFIXES + SIMPLEITK_SUFFIXES + SUFFIXES_2D


def is_nifti(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def read_any(path: str | os.PathLike, *, grayscale: bool = False) -> MedicalImage:
    """A NIfTI file or a 2D image by its suffix (colour 2D images keep their channel axis unless ``grayscale``), or
    a folder as a DICOM series."""
    path = Path(path)
    if path.is_dir():
        from gnnseg.seg.io.dicom import read_dicom_series  # pydicom only when a series is read

        return read_dicom_series(path)
    if is_nifti(path):
        from gnnseg.seg.io.nifti import read_nifti  # nibabel only when a volume is read

        return read_nifti(path)
    if path.name.lower().endswith(SIMPLEITK_SUFFIXES):
        return read_simpleitk(path)
    if path.name.lower().endswith(SUFFIXES_2D):
        return read_image_2d(path, grayscale=grayscale)
    raise ImageFormatError(f"unsupported file type {path} (use .nii.gz, .mha, .nrrd, a DICOM folder or one of "
                           f"{', '.join(SUFFIXES_2D)})")


def write_any(image: MedicalImage, path: str | os.PathLike) -> Path:
    """Write ``image`` as NIfTI, MetaImage / NRRD or a lossless 2D image, by ``path``'s suffix (never over an existing
    file)."""
    path = Path(path)
    if is_nifti(path):
        from gnnseg.seg.io.nifti import write_nifti

        return write_nifti(image, path)
    if path.name.lower().endswith(SIMPLEITK_SUFFIXES):
        return write_simpleitk(image, path)
    return write_image_2d(image.array, path)
