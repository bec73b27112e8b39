"""Cases of the CVPR 2024 "MedSAM on Laptop" challenge: one ``.npz`` file in, one ``.npz`` file of labels out.

The format is defined by the challenge's baseline (bowang-lab/MedSAM, LiteMedSAM branch,
``CVPR24_LiteMedSAM_infer.py``) and its evaluation script. An input file holds:

========  ==========================================  ==============================================
key       2D case (``2DBox_*.npz``)                   3D case (``3DBox_*.npz``)
========  ==========================================  ==============================================
imgs      ``(H, W, 3)`` uint8, values 0..255          ``(D, H, W)``, values 0..255
boxes     ``(N, 4)``: ``x0, y0, x1, y1``              ``(N, 6)``: ``x_min, y_min, z_min, x_max, y_max, z_max``
spacing   absent                                      voxel size, three numbers
========  ==========================================  ==============================================

Box coordinates are pixel (voxel) indices: x is the column, y the row, z the slice. The prediction file, with the
same name, holds one key ``segs``: labels of the image's spatial shape (``(H, W)`` or ``(D, H, W)``), where label
``k`` (1-based) is the object of box ``k`` and 0 is background. Where objects overlap, the smaller object keeps the
pixel; the baseline paints ``segs[mask > 0] = k`` box after box, so the later box wins, which ``overlaps="box-order"``
reproduces (:func:`segs_from_masks`, :mod:`gnnseg.seg.io.label_painter`). Labels are written as uint16 so that more
than 255 boxes stay distinct.

How the case kind is decided
----------------------------
A 2D image ``(H, W, 3)`` and a 3D volume ``(D, H, W)`` both have three axes, so the number of axes alone cannot
tell them apart. The box width does: 4 columns mean 2D, 6 mean 3D; the image's shape must then agree
(``(H, W, 3)`` for 2D). The reference scripts dispatch on the file name instead (``name.startswith('3D')``);
a file whose ``2D``/``3D`` prefix contradicts its contents is refused here rather than read one way and scored the
other.

Spacing order
-------------
``spacing`` is kept exactly as stored. MedSAM's ``pre_CT_MR.py`` writes SimpleITK's ``GetSpacing()``, which is in
``(x, y, z)`` order, while the challenge's evaluation passes ``spacing`` unchanged to its surface-distance code
together with ``(D, H, W)`` arrays, that is, as if it were in ``(z, y, x)`` order. Which one a given file holds
is not recorded in it, so no reordering is done.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gnnseg.core.atomic import atomic_path
from gnnseg.seg.io.image import ImageFormatError, ImageTooLargeError, check_is_file
from gnnseg.seg.io.label_painter import OVERLAP_RULES, paint_labels

__all__ = ["ChallengeCase", "read_challenge_npz", "segs_from_masks", "write_challenge_segs"]

#: Column pairs ``(low, high)`` of each axis in a box row.
_BOX_AXES = {4: ((0, 2), (1, 3)), 6: ((0, 3), (1, 4), (2, 5))}

_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}

#: What numpy raises for truncated, foreign or pickle-carrying files.
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError)


@dataclass
class ChallengeCase:
    """One challenge input file.

    Attributes:
        name: the file name without ``.npz`` (the prediction is written under the same name).
        image: ``(H, W, 3)`` for 2D, ``(D, H, W)`` for 3D, as stored (values 0..255).
        boxes: ``(N, 4)`` or ``(N, 6)`` as stored, in the column order of the module docstring.
        spacing: the stored ``spacing`` as floats (always present for 3D), or None.
        is_3d: True for a volume with 6-column boxes.
    """

    name: str
    image: np.ndarray
    boxes: np.ndarray
    spacing: tuple[float, ...] | None
    is_3d: bool

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape ``segs`` must have: ``(H, W)`` or ``(D, H, W)``."""
        return tuple(self.image.shape) if self.is_3d else tuple(self.image.shape[:2])

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])


def npz_declared_shapes(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array of an npz archive, read from the ``.npy`` headers alone (nothing decoded)."""
    path = Path(path)
    declared = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for entry in archive.infolist():
                if not entry.filename.endswith(".npy"):
                    continue
                with archive.open(entry) as stream:
                    version = np.lib.format.read_magic(stream)
                    read_header = _NPY_HEADER_READERS.get(version)
                    if read_header is None:
                        raise ValueError(f"{entry.filename} has .npy format version {version}, not 1.0 or 2.0")
                    shape, _, dtype = read_header(stream)
                declared[entry.filename[: -len(".npy")]] = (tuple(shape), dtype)
    except _READ_ERRORS as exc:
        raise ImageFormatError(f"cannot read npz file {path}: {exc}") from None
    return declared


def check_declared_npz(path: Path, *, max_values: int | None, max_boxes: int | None) -> None:
    """Refuse, from the arrays' headers alone, an npz whose arrays together hold more than ``max_values`` values or
    whose ``boxes`` hold more than ``max_boxes`` rows (``None``: no limit)."""
    shapes = npz_declared_shapes(path)
    boxes = shapes.get("boxes", ((0,), None))[0]
    if max_boxes is not None and boxes and boxes[0] > max_boxes:
        raise ImageTooLargeError(f"{path}: holds {boxes[0]:,} boxes, over the limit of {max_boxes:,}")
    total = sum(int(np.prod(shape, dtype=np.float64)) for shape, _ in shapes.values())
    if max_values is not None and total > max_values:
        listed = ", ".join(f"{key} {shape}" for key, (shape, _) in shapes.items())
        raise ImageTooLargeError(f"{path}: its arrays declare {total:,} values ({listed}), over the limit of "
                                 f"{max_values:,}")


def read_npz_arrays(path: str | os.PathLike, required: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Every array of an npz archive (an input case, a ``segs`` prediction, a ``gts`` ground truth), read into
    memory; pickled objects are refused, and each key of ``required`` must be there."""
    path = check_is_file(path, "npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise ImageFormatError(f"cannot read challenge npz file {path}: {exc}") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ImageFormatError(f"{path}: not an npz archive but a single array (.npy format)")
    try:
        with loaded as archive:
            arrays = {key: np.asarray(archive[key]) for key in archive.files}
    except _READ_ERRORS as exc:
        raise ImageFormatError(f"cannot read challenge npz file {path}: {exc}") from exc
    for key in required:
        if key not in arrays:
            raise ImageFormatError(f"{path}: missing key {key!r} (found {sorted(arrays)})")
    return arrays


def _check_boxes(path: Path, boxes: np.ndarray) -> None:
    if boxes.dtype.kind not in "iuf":
        raise ImageFormatError(f"{path}: 'boxes' must hold numbers, got dtype {boxes.dtype}")
    if boxes.ndim != 2 or boxes.shape[1] not in _BOX_AXES:
        raise ImageFormatError(f"{path}: 'boxes' must have shape (N, 4) for 2D or (N, 6) for 3D, "
                               f"got {boxes.shape}")
    if boxes.shape[0] == 0:
        raise ImageFormatError(f"{path}: 'boxes' holds no boxes")
    for index, box in enumerate(boxes):
        values = box.tolist()
        if not np.all(np.isfinite(box)):
            raise ImageFormatError(f"{path}: box {index} {values} has a NaN or infinite coordinate")
        for low, high in _BOX_AXES[boxes.shape[1]]:
            if box[high] < box[low]:
                raise ImageFormatError(f"{path}: box {index} {values} is inverted (column {high} < column {low})")


def read_challenge_npz(path: str | os.PathLike, *, max_values: int | None = None,
                       max_boxes: int | None = None) -> ChallengeCase:
    """Read and check one challenge input file (see the module docstring for the format). ``max_values`` and
    ``max_boxes`` refuse, from the arrays' headers and before decoding, a case too large to serve
    (:class:`ImageTooLargeError`).

    Raises:
        FileNotFoundError: no such file.
        ImageFormatError: (a ``ValueError``) naming the file, for a corrupt or non-npz file, a missing key, an
            image or box array of the wrong shape, boxes that do not fit the image kind, intensities outside
            0..255, bad spacing, or a ``2D``/``3D`` name prefix that contradicts the contents.
    """
    path = check_is_file(path, "challenge npz file")
    if max_values is not None or max_boxes is not None:
        check_declared_npz(path, max_values=max_values, max_boxes=max_boxes)
    arrays = read_npz_arrays(path, required=("imgs", "boxes"))
    image, boxes = arrays["imgs"], arrays["boxes"]
    _check_boxes(path, boxes)
    is_3d = boxes.shape[1] == 6

    if is_3d and image.ndim != 3:
        raise ImageFormatError(f"{path}: 3D boxes (N, 6) need imgs of shape (D, H, W), got {image.shape}")
    if not is_3d and (image.ndim != 3 or image.shape[2] != 3):
        raise ImageFormatError(f"{path}: 2D boxes (N, 4) need imgs of shape (H, W, 3), got {image.shape}")
    if image.size == 0 or image.dtype.kind not in "iuf":
        raise ImageFormatError(f"{path}: 'imgs' must be a non-empty numeric array, got {image.dtype} {image.shape}")
    if image.dtype != np.uint8:
        if not np.all(np.isfinite(image)):
            raise ImageFormatError(f"{path}: 'imgs' contains NaN or infinity")
        if image.min() < 0 or image.max() > 255:
            raise ImageFormatError(f"{path}: 'imgs' values must lie in [0, 255] (preprocessed intensities), "
                                   f"got [{image.min()}, {image.max()}]")

    prefix = path.name[:2].upper()
    if (prefix == "3D" and not is_3d) or (prefix == "2D" and is_3d):
        kind = "3D" if is_3d else "2D"
        raise ImageFormatError(f"{path}: the name says {prefix} but the contents are {kind} "
                               f"(imgs {image.shape}, boxes {boxes.shape}); the reference dispatches on the name")

    spacing = None
    if "spacing" in arrays:
        values = arrays["spacing"]
        if values.dtype.kind not in "iuf" or values.ndim != 1 or not np.all(np.isfinite(values)) \
                or np.any(values <= 0):
            raise ImageFormatError(f"{path}: 'spacing' must be positive finite numbers, got {values!r}")
        spacing = tuple(float(s) for s in values)
    if is_3d:
        if spacing is None:
            raise ImageFormatError(f"{path}: missing key 'spacing' (required for 3D cases; found {sorted(arrays)})")
        if len(spacing) != 3:
            raise ImageFormatError(f"{path}: 'spacing' must have 3 entries for a 3D case, got {spacing}")

    name = path.name[: -len(".npz")] if path.name.lower().endswith(".npz") else path.name
    return ChallengeCase(name=name, image=image, boxes=boxes, spacing=spacing, is_3d=is_3d)


def segs_from_masks(masks: Sequence[np.ndarray], overlaps: str = OVERLAP_RULES[0]) -> np.ndarray:
    """Combine one binary mask per box into challenge labels: mask ``k`` (0-based) becomes label ``k + 1``; a pixel
    two masks claim goes to the smaller (``overlaps="box-order"``: to the later box, as in the baseline;
    :mod:`gnnseg.seg.io.label_painter`). Any nonzero value is foreground; NaN is refused.

    Returns:
        uint16 labels of the masks' shape.
    """
    return paint_labels(masks, overlaps, np.uint16)


def write_challenge_segs(path: str | os.PathLike, segs: np.ndarray, *, case: ChallengeCase | None = None,
                         overwrite: bool = False) -> Path:
    """Write a prediction file: ``segs`` as uint16 under the key ``segs``, compressed, atomically.

    Args:
        path: the ``.npz`` file to write (the challenge expects the input's file name).
        segs: ``(H, W)`` or ``(D, H, W)`` integer or boolean labels in ``0..65535``.
        case: when given, ``segs`` must have its spatial shape and no label above its number of boxes.
        overwrite: replace an existing file; without it an existing file is refused.
    """
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ImageFormatError(f"{path}: challenge predictions are .npz files")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    labels = np.asarray(segs)
    if labels.dtype.kind not in "biu":
        raise ImageFormatError(f"{path}: segs must hold integer labels, got dtype {labels.dtype}")
    if labels.ndim not in (2, 3) or labels.size == 0:
        raise ImageFormatError(f"{path}: segs must be a non-empty (H, W) or (D, H, W) array, got {labels.shape}")
    if labels.dtype.kind != "b" and (labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
        raise ImageFormatError(f"{path}: segs labels must lie in [0, 65535], got [{labels.min()}, {labels.max()}]")
    if case is not None:
        if labels.shape != case.spatial_shape:
            raise ImageFormatError(f"{path}: segs has shape {labels.shape} but case {case.name!r} has spatial "
                                   f"shape {case.spatial_shape}")
        if labels.max() > case.num_boxes:
            raise ImageFormatError(f"{path}: segs has label {labels.max()} but case {case.name!r} has only "
                                   f"{case.num_boxes} boxes")
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, segs=labels.astype(np.uint16))
    return path
