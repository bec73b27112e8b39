"""MetaImage (``.mha`` / ``.mhd``) and NRRD (``.nrrd`` / ``.nhdr``) files through SimpleITK, as nnU-Net's
``SimpleITKIO`` reads them: the array in SimpleITK's order (``(z, y, x)``, a trailing axis for vector pixels), spacing
in the same order.

SimpleITK's geometry is LPS (origin, direction cosines of the ``x, y, z`` index axes); :class:`MedicalImage` keeps an
RAS affine in NIfTI's ``(x, y, z)`` index order, so the reader converts one into the other (a flip of the first two
world axes) and also keeps SimpleITK's own origin and direction in ``metadata``: writing an image whose geometry has
not changed gives back the file's origin, spacing and direction bit for bit. SimpleITK is optional (the ``itk`` extra)
and imported only when such a file is read or written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gnnseg.core.atomic import atomic_path
from gnnseg.seg.io.image import ImageFormatError, ImageTooLargeError, MedicalImage, check_declared_size, check_is_file

SIMPLEITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
WRITABLE_SUFFIXES = (".mha", ".nrrd")
"""Single-file formats only: a detached header (``.mhd``, ``.nhdr``) names its data file, which a write through a
temporary name and a rename would leave pointing at the temporary name."""
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _simpleitk():
    try:
        import SimpleITK
    except ImportError:
        raise ImportError("reading .mha / .nrrd files needs SimpleITK: pip install 'gnnseg[itk]'") from None
    return SimpleITK


def ras_affine(spacing_zyx: tuple[float, ...], origin_lps: np.ndarray, direction_lps: np.ndarray) -> np.ndarray:
    """The RAS voxel-to-world affine (``(x, y, z)`` index order) of a 3D SimpleITK geometry."""
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction_lps @ np.diag(spacing_zyx[::-1])
    affine[:3, 3] = LPS_TO_RAS @ origin_lps
    return affine


def read_simpleitk(path: str | os.PathLike, *, max_voxels: int | None = None) -> MedicalImage:
    """A 2D or 3D MetaImage or NRRD file. ``metadata`` holds ``origin`` and ``direction`` as SimpleITK gives them
    (LPS, ``x, y, z`` order); 3D images also get the RAS ``affine``. ``max_voxels`` refuses, from the header, a file
    of more voxels before its pixels are read."""
    path = check_is_file(path, "image file")
    sitk = _simpleitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        size = reader.GetSize()
        check_declared_size(str(path), tuple(reversed(size)), max_voxels, "voxels")
        image = reader.Execute()
    except ImageTooLargeError:
        raise
    except RuntimeError as error:
        first_line = next((line for line in str(error).splitlines() if line.strip()), str(error))
        raise ImageFormatError(f"cannot read {path}: {first_line.strip()}") from None
    if image.GetDimension() not in (2, 3):
        raise ImageFormatError(f"{path}: expected a 2D or 3D image, got {image.GetDimension()} dimensions")
    array = sitk.GetArrayFromImage(image)
    spacing = tuple(float(s) for s in image.GetSpacing())[::-1]
    origin = np.array(image.GetOrigin(), dtype=np.float64)
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(image.GetDimension(), -1)
    affine = ras_affine(spacing, origin, direction) if image.GetDimension() == 3 else None
    return MedicalImage(array=np.ascontiguousarray(array), spacing=spacing, affine=affine, source=str(path),
                        metadata={"origin": origin.tolist(), "direction": direction.tolist()})


def _geometry(image: MedicalImage) -> tuple[list[float], list[float]]:
    """SimpleITK's origin and flat direction for ``image``: those it was read with while its affine still matches
    them, else derived from its affine (or the identity)."""
    dims = len(image.spacing)
    stored_origin, stored_direction = image.metadata.get("origin"), image.metadata.get("direction")
    if stored_origin is not None and stored_direction is not None and len(stored_origin) == dims:
        origin, direction = np.asarray(stored_origin, float), np.asarray(stored_direction, float)
        if image.affine is None or (dims == 3 and np.allclose(ras_affine(image.spacing, origin, direction),
                                                              image.affine, rtol=0, atol=1e-9)):
            return origin.tolist(), direction.ravel().tolist()
    if image.affine is not None and dims == 3:
        world = LPS_TO_RAS @ image.affine[:3, :3]
        direction = world / np.asarray(image.spacing[::-1])
        return (LPS_TO_RAS @ image.affine[:3, 3]).tolist(), direction.ravel().tolist()
    return [0.0] * dims, np.eye(dims).ravel().tolist()


def write_simpleitk(image: MedicalImage, path: str | os.PathLike, *, overwrite: bool = False,
                    compress: bool = True) -> Path:
    """Write ``image`` as MetaImage or NRRD by ``path``'s suffix, with its spacing, origin and direction; refuses to
    replace an existing file unless ``overwrite=True``."""
    path = Path(path)
    if not path.name.lower().endswith(WRITABLE_SUFFIXES):
        raise ImageFormatError(f"{path}: write MetaImage or NRRD as {' or '.join(WRITABLE_SUFFIXES)} (one file), "
                               f"not {path.suffix}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    sitk = _simpleitk()
    vector = image.num_channels > 1 or image.array.ndim == len(image.spacing) + 1
    written = sitk.GetImageFromArray(np.ascontiguousarray(image.array), isVector=vector)
    origin, direction = _geometry(image)
    written.SetSpacing([float(s) for s in image.spacing[::-1]])
    written.SetOrigin(origin)
    written.SetDirection(direction)
    with atomic_path(path) as temporary:
        sitk.WriteImage(written, str(temporary), compress)
    return path
