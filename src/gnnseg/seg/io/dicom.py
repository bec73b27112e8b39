"""DICOM series: one slice per file, sorted by position along the slice normal, rescaled to real units."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pydicom

from gnnseg.seg.io.image import ImageFormatError, MedicalImage, check_declared_size

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


NOT_SLICES = (".txt", ".md", ".json", ".xml", ".html", ".pdf", ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".csv")
"""Files a series folder may hold beside its slices (notes, thumbnails) that are passed over unread; every other
file must be a readable DICOM file."""

SPACING_TOLERANCE = 0.01
"""Largest relative departure of a gap between slice positions from their median gap."""


def read_dicom_series(folder: str | os.PathLike, *, max_voxels: int | None = None) -> MedicalImage:
    """Read every DICOM file in ``folder`` as one volume ``(z, y, x)``.

    Slices are ordered by their ``ImagePositionPatient`` projected on the slice normal (the cross product
    of the two ``ImageOrientationPatient`` direction cosines), not by file name or ``InstanceNumber``.
    ``RescaleSlope`` and ``RescaleIntercept`` are applied (CT comes out in Hounsfield units). Spacing is
    ``(slice spacing from the positions, row spacing, column spacing)``; the affine maps ``(x, y, z)``
    indices to RAS millimetres like a NIfTI affine.

    A series that would be placed wrongly is refused, naming the files: one that is not DICOM (other than the
    notes and pictures of :data:`NOT_SLICES`, or a ``DICOMDIR``), a slice that cannot be decoded, or positions
    that are not evenly spaced (a missing slice would shift every slice after it). ``max_voxels`` refuses, from
    the headers and before any pixel is decoded, a series of more voxels (:class:`ImageTooLargeError`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM folder not found: {folder}")
    return read_dicom_files({path.name: path for path in sorted(folder.iterdir()) if path.is_file()}, str(folder),
                            max_voxels=max_voxels)


def read_dicom_files(files: Mapping[str, Path | bytes], source: str, *,
                     max_voxels: int | None = None) -> MedicalImage:
    """:func:`read_dicom_series` over files given by name, each a path or its bytes (a series unpacked into
    memory); ``source`` names the series in messages.

    ``metadata["headers"]`` keeps every slice's header (no pixel data) in volume order: what a DICOM-SEG of this
    volume must reference (:mod:`gnnseg.seg.io.dicom_seg`).
    """
    headers = ordered_slice_headers(_image_headers(files, source), source, max_voxels=max_voxels)
    slices = [(name, _full(name, files[name])) for name, _ in headers]
    volume = np.stack([_rescaled(name, ds) for name, ds in slices])
    spacing, affine = series_geometry([ds for _, ds in headers])
    first = headers[0][1]
    return MedicalImage(
        array=volume, spacing=spacing, affine=affine, source=str(source),
        metadata={"modality": str(getattr(first, "Modality", "")),
                  "series_uid": str(getattr(first, "SeriesInstanceUID", "")),
                  "files": [name for name, _ in headers], "headers": [ds for _, ds in headers]})


def read_dicom_headers(folder: str | os.PathLike) -> list[tuple[str, pydicom.Dataset]]:
    """The slice headers (no pixel data) of the series in ``folder`` by file name, in volume order, refused as
    :func:`read_dicom_series` refuses a series; nothing is decoded."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"DICOM folder not found: {folder}")
    files = {path.name: path for path in sorted(folder.iterdir()) if path.is_file()}
    return ordered_slice_headers(_image_headers(files, str(folder)), str(folder))


def _image_headers(files: Mapping[str, Path | bytes], source: str) -> list[tuple[str, pydicom.Dataset]]:
    """The header of every image file, by name; notes, pictures and image-less DICOM files passed over."""
    headers = []
    for name, content in sorted(files.items()):
        if PurePosixPath(name).name.startswith(".") or PurePosixPath(name).suffix.lower() in NOT_SLICES:
            continue
        try:
            dataset = pydicom.dcmread(_opened(content), stop_before_pixels=True)
        except Exception as exc:
            raise ImageFormatError(f"{source}: {name} is not a readable DICOM file ({exc or type(exc).__name__}); "
                                   "remove it, or repair the series") from None
        if "Rows" in dataset:  # an image; a DICOMDIR, report or presentation state has no size and is passed over
            headers.append((name, dataset))
    return headers


def ordered_slice_headers(headers: Sequence[tuple[str, pydicom.Dataset]], source: str, *,
                          max_voxels: int | None = None) -> list[tuple[str, pydicom.Dataset]]:
    """``(name, header)`` pairs of one series sorted along the slice normal, the order of the volume's ``z`` axis.

    Refused, by name: no images, several series, slices of different sizes, more than ``max_voxels`` voxels, a
    slice without position or orientation, and positions that are not evenly spaced.
    """
    if not headers:
        raise ImageFormatError(f"no DICOM image files in {source}")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in headers}
    if len(series) > 1:
        raise ImageFormatError(f"{source} mixes {len(series)} series ({sorted(series)}); give one series per folder")
    try:
        shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in headers}
        frames = sum(int(getattr(ds, "NumberOfFrames", 1) or 1) for _, ds in headers)
    except AttributeError as exc:
        raise ImageFormatError(f"{source}: a slice lacks its size ({exc})") from None
    if len(shapes) > 1:
        raise ImageFormatError(f"{source}: slices have different sizes {sorted(shapes)}")
    check_declared_size(str(source), (frames, *next(iter(shapes))), max_voxels, "voxels")

    try:
        normal = _slice_normal(headers[0][1])
        positions = np.array([np.array(ds.ImagePositionPatient, dtype=float) for _, ds in headers])
    except (AttributeError, ValueError) as exc:
        raise ImageFormatError(f"{source}: a slice lacks its position or orientation ({exc})") from None
    order = np.argsort(positions @ normal, kind="stable")
    ordered = [headers[k] for k in order]
    _check_even_positions(source, [name for name, _ in ordered], positions[order] @ normal)
    return ordered


def series_geometry(headers: Sequence[pydicom.Dataset]) -> tuple[tuple[float, float, float], np.ndarray]:
    """Spacing ``(slice, row, column)`` and the RAS affine of slices in volume order (:func:`ordered_slice_headers`).

    Spacing is ``(slice spacing from the positions, row spacing, column spacing)``; the affine maps ``(x, y, z)``
    indices to RAS millimetres like a NIfTI affine.
    """
    first = headers[0]
    orientation = np.array(first.ImageOrientationPatient, dtype=float)
    row_cosine, column_cosine = orientation[:3], orientation[3:]
    normal = _slice_normal(first)
    positions = np.array([np.array(ds.ImagePositionPatient, dtype=float) for ds in headers])
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    if len(headers) > 1:
        slice_spacing = float(np.median(np.diff(positions @ normal)))
    else:
        slice_spacing = float(getattr(first, "SliceThickness", 1.0) or 1.0)

    # index (x = column, y = row, z = slice) -> LPS millimetres, then to RAS as NIfTI uses
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_cosine * column_spacing
    affine_lps[:3, 1] = column_cosine * row_spacing
    affine_lps[:3, 2] = normal * slice_spacing
    affine_lps[:3, 3] = positions[0]
    return (slice_spacing, row_spacing, column_spacing), LPS_TO_RAS @ affine_lps


def _slice_normal(dataset: pydicom.Dataset) -> np.ndarray:
    """The cross product of the slice's two ``ImageOrientationPatient`` direction cosines."""
    orientation = np.array(dataset.ImageOrientationPatient, dtype=float)
    return np.cross(orientation[:3], orientation[3:])


def _opened(content: Path | bytes) -> str | io.BytesIO:
    return io.BytesIO(content) if isinstance(content, bytes) else str(content)


def _full(name: str, content: Path | bytes):
    """The whole file, pixels included, once its header has passed."""
    try:
        dataset = pydicom.dcmread(_opened(content))
    except Exception as exc:
        raise ImageFormatError(f"cannot read DICOM file {name}: {exc}") from None
    if "PixelData" not in dataset or "Rows" not in dataset:
        raise ImageFormatError(f"DICOM file {name} declares an image but holds no complete pixel data (truncated?)")
    return dataset


def _check_even_positions(source: str, files: list[str], offsets: np.ndarray) -> None:
    """Refuse slices that share a position, or gaps between positions that differ from the median gap."""
    if len(files) < 2:
        return
    gaps = np.diff(offsets)
    if np.any(gaps == 0):
        k = int(np.argmax(gaps == 0))
        raise ImageFormatError(f"{source}: {files[k]} and {files[k + 1]} share the position "
                               f"{offsets[k]:.3f} mm along the slice normal")
    median = float(np.median(gaps))
    uneven = np.flatnonzero(np.abs(gaps - median) > SPACING_TOLERANCE * median + 1e-3)
    if len(uneven):
        k = int(uneven[0])
        raise ImageFormatError(
            f"{source}: slice positions are not evenly spaced ({len(uneven)} uneven gap(s)): {files[k]} -> "
            f"{files[k + 1]} is {gaps[k]:.3f} mm where the series steps {median:.3f} mm (a missing or "
            "misplaced slice?); every slice after it would be placed wrongly")


def _rescaled(name: str, dataset) -> np.ndarray:
    try:
        pixels = dataset.pixel_array
    except Exception as exc:
        raise ImageFormatError(f"cannot decode the pixels of DICOM file {name}: {exc}") from None
    slope = float(getattr(dataset, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(dataset, "RescaleIntercept", 0.0) or 0.0)
    if slope == 1.0 and intercept == int(intercept):
        return pixels.astype(np.int32) + int(intercept)
    return pixels.astype(np.float32) * slope + intercept
