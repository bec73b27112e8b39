"""The in-memory image every reader returns: a numpy array plus its voxel geometry.

Axis order follows nnU-Net (and SimpleITK): the slowest axis first, so a volume is ``(z, y, x)`` and a
2D image ``(y, x)`` (rows, columns). ``spacing`` lists millimetres per axis in the same order. Colour 2D
images keep a trailing channel axis: ``(y, x, 3)``. ``affine`` is the 4x4 voxel-to-world (RAS) matrix
in NIfTI's ``(x, y, z)`` index order, kept so that writing back preserves the geometry exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class ImageFormatError(ValueError):
    """A file is corrupt, unsupported, or inconsistent with its partner (image vs label)."""


class ImageTooLargeError(ImageFormatError):
    """A file whose header declares more pixels (or voxels, or values) than the caller allows, refused before any
    of them is decoded."""


def check_is_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a :class:`Path` when it is a file; else an error that says whether it is missing or a folder."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def check_declared_size(source: str, shape: tuple[int, ...], limit: int | None, what: str = "pixels") -> None:
    """Refuse ``source`` when its header's ``shape`` holds more than ``limit`` ``what`` (``None``: no limit)."""
    count = 1
    for extent in shape:
        count *= max(int(extent), 0)
    if limit is not None and count > limit:
        declared = " x ".join(str(int(extent)) for extent in shape)
        raise ImageTooLargeError(f"{source}: its header declares {declared} = {count:,} {what}, over the limit "
                                 f"of {limit:,}")


@dataclass
class MedicalImage:
    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray | None = None
    source: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) not in (2, 3):
            raise ImageFormatError(f"{self.source or 'image'}: spacing must have 2 or 3 entries, got {self.spacing}")
        if self.array.ndim not in (len(self.spacing), len(self.spacing) + 1):
            raise ImageFormatError(f"{self.source or 'image'}: array of shape {self.array.shape} does not match "
                                   f"{len(self.spacing)} spatial axes")
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ImageFormatError(f"{self.source or 'image'}: spacing must be positive, got {self.spacing}")

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[: len(self.spacing)])

    @property
    def num_channels(self) -> int:
        return 1 if self.array.ndim == len(self.spacing) else int(self.array.shape[-1])

    def channels(self) -> list[np.ndarray]:
        """One spatial array per channel."""
        if self.num_channels == 1 and self.array.ndim == len(self.spacing):
            return [self.array]
        return [self.array[..., c] for c in range(self.num_channels)]
