"""Bring two images of the same anatomy onto one axis convention using their affines."""

from __future__ import annotations

import numpy as np
from nibabel import orientations

from gnnseg.seg.io.image import ImageFormatError, MedicalImage


def reorient_like(image: MedicalImage, reference: MedicalImage, atol_mm: float = 1e-2) -> MedicalImage:
    """Flip and permute ``image``'s axes so that they run like ``reference``'s (no resampling).

    Works when both affines are axis-aligned up to flips and permutations (e.g. a DICOM series and the
    NIfTI that dcm2niix made of it, whose row axis is flipped). Raises when the result does not land on
    the reference grid (different shape, or origins further apart than ``atol_mm``).
    """
    if image.affine is None or reference.affine is None:
        raise ImageFormatError("reorient_like needs affines on both images")
    if len(image.spacing) != 3 or len(reference.spacing) != 3:
        raise ImageFormatError("reorient_like works on 3D volumes")
    source = orientations.io_orientation(image.affine)
    target = orientations.io_orientation(reference.affine)
    transform = orientations.ornt_transform(source, target)
    xyz = orientations.apply_orientation(image.array.T, transform)
    affine = image.affine @ orientations.inv_ornt_aff(transform, image.array.T.shape)
    spacing = tuple(np.linalg.norm(affine[:3, :3], axis=0))[::-1]  # column norms are the voxel sizes
    result = MedicalImage(array=np.ascontiguousarray(xyz.T), spacing=spacing, affine=affine, source=image.source,
                          metadata=image.metadata)
    if result.array.shape != reference.array.shape[: result.array.ndim]:
        raise ImageFormatError(f"{image.source}: after reorientation the shape is {result.array.shape}, "
                               f"the reference's is {reference.array.shape}")
    if not np.allclose(affine, reference.affine, atol=atol_mm):
        raise ImageFormatError(f"{image.source}: grids differ after reorientation "
                               f"(affine {np.round(affine, 3).tolist()} vs {np.round(reference.affine, 3).tolist()})")
    return result
