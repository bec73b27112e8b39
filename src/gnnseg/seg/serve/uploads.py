"""Uploaded images for the HTTP service: decoding any supported file, and a store bounded in memory.

An upload is recognised by its content, not its name: PNG, JPEG, TIFF and GIF by their magic bytes, NIfTI by its
header (plain or gzipped), a zip holding a DICOM series, and a CVPR 2024 challenge ``.npz``. Volumes are scaled to
0..255 as the command line does (CT through a window, MR and the rest clipped to percentiles); the original
geometry (spacing, affine) is kept so that masks can be returned as NIfTI on the same grid, and a DICOM series
keeps its slices' headers (without pixel data) so that masks can be returned as a DICOM-SEG referencing it.

Every failure is an :class:`UploadError` whose message names the problem; nothing is kept of a failed upload.
"""

from __future__ import annotations

import gzip
import io
import re
import secrets
import tempfile
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from gnnseg.core.archives import ArchiveLimits, UnsafeArchiveError, read_entries
from gnnseg.seg.io import MedicalImage, read_dicom_files, read_image_2d, read_nifti
from gnnseg.seg.io.challenge_npz import read_challenge_npz
from gnnseg.seg.io.image import ImageTooLargeError
from gnnseg.seg.io.intensity import scale_volume, to_rgb_uint8


class UploadError(ValueError):
    """A file that cannot be served: unsupported, corrupt, or over a limit (``status`` is the HTTP code)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class UploadedImage:
    """``pixels``: ``(H, W, 3)`` uint8 for 2D, ``(D, H, W)`` uint8 for volumes; geometry of the original file."""

    id: str
    name: str
    kind: str
    """``2d`` or ``3d``."""
    pixels: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray | None = None
    boxes: np.ndarray | None = None
    """Boxes that came with the file (challenge npz), else ``None``."""
    dicom_headers: tuple = ()
    """A DICOM series' slice headers (pydicom datasets without pixel data) in volume order, else empty."""

    @property
    def is_volume(self) -> bool:
        return self.kind == "3d"

    @property
    def shape(self) -> tuple[int, ...]:
        """``(H, W)`` or ``(D, H, W)``."""
        return tuple(self.pixels.shape[:3] if self.is_volume else self.pixels.shape[:2])

    @property
    def nbytes(self) -> int:
        return self.pixels.nbytes

    def slice_rgb(self, index: int) -> np.ndarray:
        """The 2D image (``index`` 0) or slice ``index`` of a volume as ``(H, W, 3)`` uint8."""
        depth = self.shape[0] if self.is_volume else 1
        if not 0 <= index < depth:
            raise UploadError(f"slice {index} is outside 0..{depth - 1}", status=404)
        return to_rgb_uint8(self.pixels[index]) if self.is_volume else self.pixels

    def describe(self) -> dict:
        described = {"id": self.id, "name": self.name, "kind": self.kind,
                     "shape": list(self.shape), "spacing": list(self.spacing),
                     "slices": self.shape[0] if self.is_volume else 1}
        if self.boxes is not None:
            described["boxes"] = self.boxes.tolist()
        return described


_SUFFIX_2D = {b"\x89PNG": ".png", b"\xff\xd8\xff": ".jpg", b"II*\x00": ".tif", b"MM\x00*": ".tif", b"GIF8": ".gif"}
"""The suffix the 2D reader needs, by the file's leading (magic) bytes."""


def _nifti_header(data: bytes) -> bytes | None:
    """The first 348 bytes of a NIfTI file (gunzipped if needed) when ``data`` is one, else ``None``."""
    head = data[:348]
    if data[:2] == b"\x1f\x8b":
        try:
            head = gzip.GzipFile(fileobj=io.BytesIO(data)).read(348)
        except (OSError, EOFError):
            return None
    magic = head[344:348]
    return head if len(head) == 348 and magic in (b"n+1\x00", b"ni1\x00") else None


def decode_upload(name: str, data: bytes, *, modality: str = "auto", window: str = "soft_tissue",
                  max_pixels: int, max_voxels: int, max_boxes: int) -> UploadedImage:
    """Read an uploaded file into an :class:`UploadedImage` with a new random id.

    Sizes are checked from each format's header before anything is decoded (:class:`ImageTooLargeError`, a 413):
    ``max_pixels`` pixels of a 2D image, ``max_voxels`` voxels of a volume, ``max_boxes`` boxes of a challenge case;
    a zip is checked entry by entry before it is read into memory (never onto disk). Messages name the user's file,
    never the server's temporary paths.
    """
    if not data:
        raise UploadError("the uploaded file is empty")
    label = name or "the upload"
    with tempfile.TemporaryDirectory(prefix="gnnseg-upload-") as folder:
        try:
            image = _decode(Path(folder), label, data, modality, window, max_pixels, max_voxels, max_boxes)
        except UploadError:
            raise
        except (ImageTooLargeError, UnsafeArchiveError) as exc:
            raise UploadError(_scrubbed(str(exc), folder, label), status=413) from None
        except MemoryError:
            raise UploadError(f"{label} needs more memory than the server has to decode", status=413) from None
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise UploadError(_scrubbed(f"{label} could not be read: {exc or type(exc).__name__}", folder, label)) \
                from None
    if min(image.pixels.shape) == 0:
        raise UploadError(f"{label}: the image is empty (shape {image.pixels.shape})")
    image.id = secrets.token_urlsafe(18)
    return image


def _scrubbed(message: str, folder: str, label: str) -> str:
    """``message`` with the temporary file (or folder) it names replaced by the user's file name."""
    return re.sub(re.escape(folder) + r"[^\s:,;'\"]*", label, message)


def _decode(folder: Path, name: str, data: bytes, modality: str, window: str, max_pixels: int, max_voxels: int,
            max_boxes: int) -> UploadedImage:
    for magic, suffix in _SUFFIX_2D.items():
        if data.startswith(magic):
            path = folder / f"upload{suffix}"
            path.write_bytes(data)
            loaded = read_image_2d(path, max_pixels=max_pixels)
            return UploadedImage("", name, "2d", to_rgb_uint8(loaded.array), tuple(loaded.spacing))
    if _nifti_header(data) is not None:
        path = folder / ("upload.nii.gz" if data[:2] == b"\x1f\x8b" else "upload.nii")
        path.write_bytes(data)
        return _volume(name, read_nifti(path, max_voxels=max_voxels), modality, window)
    if data.startswith(b"PK"):
        archive = zipfile.ZipFile(io.BytesIO(data))
        if any(entry.endswith(".npy") for entry in archive.namelist()):
            return _challenge_case(folder, name, data, max_pixels, max_voxels, max_boxes)
        # a DICOM series: about two bytes a voxel, plus headers
        limits = ArchiveLimits(max_bytes=2 * max_voxels + (64 << 20), max_entries=4096)
        files = read_entries(archive, limits, name)
        if not files:
            raise UploadError(f"{name}: the zip is empty")
        folders = [PurePosixPath(entry).parent for entry in files]
        fullest = max(set(folders), key=folders.count)  # the series, not a DICOMDIR or README beside it
        series = {entry: content for entry, content in files.items() if PurePosixPath(entry).parent == fullest}
        return _volume(name, read_dicom_files(series, name, max_voxels=max_voxels), modality, window)
    raise UploadError(f"{name}: unsupported file; send a PNG, JPEG, TIFF or GIF image, a NIfTI volume, a zip of a "
                      "DICOM series, or a challenge .npz", status=415)


def _volume(name: str, volume: MedicalImage, modality: str, window: str) -> UploadedImage:
    array = volume.array
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise UploadError(f"{name}: expected a 3D volume, got shape {array.shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise UploadError(f"{name}: the volume contains NaN or infinite values")
    pixels = scale_volume(array, modality, window)
    return UploadedImage("", name, "3d", pixels, tuple(volume.spacing), volume.affine,
                         dicom_headers=tuple(volume.metadata.get("headers", ())))


def _challenge_case(folder: Path, name: str, data: bytes, max_pixels: int, max_voxels: int,
                    max_boxes: int) -> UploadedImage:
    path = folder / ("3D_upload.npz" if name.upper().startswith("3D") else "upload.npz")
    path.write_bytes(data)
    # the arrays' headers bound the values (an RGB image has three a pixel); a volume is then held to its voxels
    case = read_challenge_npz(path, max_values=max(3 * max_pixels, max_voxels) + 6 * max_boxes + 3,
                              max_boxes=max_boxes)
    if case.is_3d and case.image.size > max_voxels:
        raise UploadError(f"{name}: {case.image.size:,} voxels exceed the limit of {max_voxels:,}", status=413)
    if not case.is_3d and case.image.size > 3 * max_pixels:
        raise UploadError(f"{name}: {case.image.size // 3:,} pixels exceed the limit of {max_pixels:,}", status=413)
    pixels = np.round(case.image).astype(np.uint8) if case.image.dtype != np.uint8 else case.image
    spacing = case.spacing or (1.0,) * (3 if case.is_3d else 2)
    return UploadedImage("", name, "3d" if case.is_3d else "2d", pixels, spacing, boxes=case.boxes)


class ImageStore:
    """Uploaded images by id, least recently used dropped first once ``max_bytes`` would be exceeded."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._images: OrderedDict[str, UploadedImage] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, image: UploadedImage) -> UploadedImage:
        if image.nbytes > self.max_bytes:
            raise UploadError(f"{image.name}: {image.nbytes:,} bytes of pixels exceed the store's "
                              f"{self.max_bytes:,}", status=413)
        with self._lock:
            self._images.pop(image.id, None)
            self._images[image.id] = image
            while sum(item.nbytes for item in self._images.values()) > self.max_bytes:
                self._images.popitem(last=False)
        return image

    def get(self, image_id: str) -> UploadedImage:
        with self._lock:
            if image_id not in self._images:
                raise UploadError(f"no image with id {image_id!r} (never uploaded, deleted, or evicted)", status=404)
            self._images.move_to_end(image_id)
            return self._images[image_id]

    def delete(self, image_id: str) -> None:
        with self._lock:
            if self._images.pop(image_id, None) is None:
                raise UploadError(f"no image with id {image_id!r}", status=404)

    def __len__(self) -> int:
        return len(self._images)
