"""napari readers for the medical formats gnnseg reads, through the same :mod:`gnnseg.seg.io` code as every command:
NIfTI files and DICOM series folders (:func:`~gnnseg.seg.io.any_format.read_any`) and CVPR 2024 challenge ``.npz``
cases (:func:`~gnnseg.seg.io.challenge_npz.read_challenge_npz`).

Arrays keep gnnseg's axis order, slowest first (``(z, y, x)``), which is napari's; the voxel spacing in the same order
becomes the layer's ``scale``, so distances and 3D views are in millimetres. A challenge case's spacing is used as
stored (its order is not recorded in the file: :mod:`gnnseg.seg.io.challenge_npz`). A CT volume (values below
-200 HU) opens with the soft-tissue window as its contrast limits.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gnnseg.seg.io.any_format import NIFTI_SUFFIXES, read_any
from gnnseg.seg.io.challenge_npz import read_challenge_npz
from gnnseg.seg.io.intensity import CT_WINDOWS

LayerData = tuple[np.ndarray, dict, str]
CT_BELOW = -200.0
"""Values below this (air and fat in Hounsfield units) mark a CT volume, as :func:`scale_volume`'s ``auto`` does."""


def nifti_or_npz_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """The reader of a ``.nii`` / ``.nii.gz`` file or a challenge ``.npz`` (``None`` for anything else)."""
    if not isinstance(path, str | os.PathLike):
        return None
    name = Path(path).name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return read_medical_image
    if name.endswith(".npz"):
        return read_challenge_case
    return None


def dicom_folder_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """The reader of a folder holding one DICOM series (``None`` for anything else)."""
    if isinstance(path, str | os.PathLike) and Path(path).is_dir():
        return read_medical_image
    return None


def read_medical_image(path: str) -> list[LayerData]:
    """A NIfTI file or a DICOM series folder as one image layer, its spacing as the scale (several channels: one
    layer each)."""
    image = read_any(path)
    spatial = len(image.spacing)
    attributes: dict = {"name": _stem(path), "scale": image.spacing,
                        "metadata": {"source": str(path), "spacing": image.spacing, "affine": image.affine}}
    if image.array.ndim == spatial + 1:
        attributes["channel_axis"] = spatial
    elif float(np.min(image.array)) < CT_BELOW:
        width, level = CT_WINDOWS["soft_tissue"]
        attributes["contrast_limits"] = (level - width / 2, level + width / 2)
    return [(image.array, attributes, "image")]


def read_challenge_case(path: str) -> list[LayerData]:
    """A challenge case as one image layer: a 2D case as RGB, a 3D case with its stored spacing as the scale."""
    case = read_challenge_npz(path)
    attributes: dict = {"name": case.name, "metadata": {"source": str(path), "boxes": case.boxes}}
    if case.is_3d:
        attributes["scale"] = case.spacing
    else:
        attributes["rgb"] = True
    return [(case.image, attributes, "image")]


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
