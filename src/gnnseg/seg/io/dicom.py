"""DICOM series: one slice per file, sorted by position along the slice normal, rescaled to real units."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from gnnseg.seg.io.image import ImageFormatError, MedicalImage

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_dicom_series(folder: str | os.PathLike) -> MedicalImage:
    """Read every DICOM file in ``folder`` as one volume ``(z, y, x)``.

    Slices are ordered by their ``ImagePositionPatient`` projected on the slice normal (the cross product
    of the two ``ImageOrientationPatient`` direction cosines), not by file name or ``InstanceNumber``.
    ``RescaleSlope`` and ``RescaleIntercept`` are applied (CT comes out in Hounsfield units). Spacing is
    ``(slice spacing from the positions, row spacing, column spacing)``; the affine maps ``(x, y, z)``
    indices to RAS millimetres like a NIfTI affine.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM folder not found: {folder}")
    slices = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            dataset = pydicom.dcmread(str(path))
        except InvalidDicomError:
            continue  # not a DICOM file (a README, a thumbnail): ignore it
        except Exception as exc:
            raise ImageFormatError(f"cannot read DICOM file {path}: {exc}") from exc
        if "PixelData" in dataset:
            slices.append((path, dataset))
    if not slices:
        raise ImageFormatError(f"no DICOM image files in {folder}")

    series = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise ImageFormatError(f"{folder} mixes {len(series)} series ({sorted(series)}); give one series per folder")
    shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in slices}
    if len(shapes) > 1:
        raise ImageFormatError(f"{folder}: slices have different sizes {sorted(shapes)}")

    orientation = np.array(slices[0][1].ImageOrientationPatient, dtype=float)
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    normal = np.cross(row_cosine, column_cosine)
    positions = np.array([np.array(ds.ImagePositionPatient, dtype=float) for _, ds in slices])
    order = np.argsort(positions @ normal, kind="stable")
    slices = [slices[k] for k in order]
    positions = positions[order]
    offsets = positions @ normal
    if len(slices) > 1 and np.any(np.diff(offsets) == 0):
        duplicate = int(np.argmax(np.diff(offsets) == 0))
        raise ImageFormatError(f"{folder}: {slices[duplicate][0].name} and {slices[duplicate + 1][0].name} "
                               f"share the position {positions[duplicate].tolist()}")

    volume = np.stack([_rescaled(path, ds) for path, ds in slices])
    row_spacing, column_spacing = (float(v) for v in slices[0][1].PixelSpacing)
    if len(slices) > 1:
        slice_spacing = float(np.median(np.diff(offsets)))
    else:
        slice_spacing = float(getattr(slices[0][1], "SliceThickness", 1.0) or 1.0)

    # index (x = column, y = row, z = slice) -> LPS millimetres, then to RAS as NIfTI uses
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_cosine * column_spacing
    affine_lps[:3, 1] = column_cosine * row_spacing
    affine_lps[:3, 2] = normal * slice_spacing
    affine_lps[:3, 3] = positions[0]
    first = slices[0][1]
    return MedicalImage(
        array=volume, spacing=(slice_spacing, row_spacing, column_spacing), affine=LPS_TO_RAS @ affine_lps,
        source=str(folder),
        metadata={"modality": str(getattr(first, "Modality", "")), "series_uid": next(iter(series)),
                  "files": [p.name for p, _ in slices]})


def _rescaled(path: Path, dataset) -> np.ndarray:
    try:
        pixels = dataset.pixel_array
    except Exception as exc:
        raise ImageFormatError(f"cannot decode the pixels of DICOM file {path}: {exc}") from exc
    slope = float(getattr(dataset, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(dataset, "RescaleIntercept", 0.0) or 0.0)
    if slope == 1.0 and intercept == int(intercept):
        return pixels.astype(np.int32) + int(intercept)
    return pixels.astype(np.float32) * slope + intercept
