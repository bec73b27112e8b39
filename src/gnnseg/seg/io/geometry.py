"""Bring images of the same anatomy onto one axis convention using their affines (flips and permutations only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nibabel import orientations

from gnnseg.seg.io.image import ImageFormatError, MedicalImage


def axis_codes(image: MedicalImage) -> tuple[str, ...]:
    """Where the ``(x, y, z)`` voxel axes point, as nibabel's codes: ``("R", "A", "S")`` for RAS+, and so on."""
    _require_3d_affine(image, "axis_codes")
    return tuple(orientations.aff2axcodes(image.affine))


def reorient(image: MedicalImage, codes: Sequence[str]) -> MedicalImage:
    """Flip and permute ``image``'s axes so that its ``(x, y, z)`` voxel axes point along ``codes`` (e.g. the
    training images' :func:`axis_codes`), with the affine following: the same voxels in the same places, stored
    in another order. A network trained on RAS arrays sees a LAS array mirrored left to right; this undoes that."""
    _require_3d_affine(image, "reorient")
    transform = orientations.ornt_transform(orientations.io_orientation(image.affine),
                                            orientations.axcodes2ornt(tuple(codes)))
    xyz = orientations.apply_orientation(image.array.T, transform)
    affine = image.affine @ orientations.inv_ornt_aff(transform, image.array.T.shape)
    spacing = tuple(np.linalg.norm(affine[:3, :3], axis=0))[::-1]  # column norms are the voxel sizes
    return MedicalImage(array=np.ascontiguousarray(xyz.T), spacing=spacing, affine=affine, source=image.source,
                        metadata=image.metadata)


def reorient_like(image: MedicalImage, reference: MedicalImage, atol_mm: float = 1e-2) -> MedicalImage:
    """Flip and permute ``image``'s axes so that they run like ``reference``'s (no resampling).

    Works when both affines are axis-aligned up to flips and permutations (e.g. a DICOM series and the
    NIfTI that dcm2niix made of it, whose row axis is flipped). Raises when the result does not land on
    the reference grid (different shape, or origins further apart than ``atol_mm``).
    """
    if image.affine is None or reference.affine is None:
        raise ImageFormatError("reorient_like needs affines on both images")
    result = reorient(image, axis_codes(reference))
    if result.array.shape != reference.array.shape[: result.array.ndim]:
        raise ImageFormatError(f"{image.source}: after reorientation the shape is {result.array.shape}, "
                               f"the reference's is {reference.array.shape}")
    if not np.allclose(result.affine, reference.affine, atol=atol_mm):
        raise ImageFormatError(f"{image.source}: grids differ after reorientation (affine "
                               f"{np.round(result.affine, 3).tolist()} vs {np.round(reference.affine, 3).tolist()})")
    return result


def _require_3d_affine(image: MedicalImage, operation: str) -> None:
    if image.affine is None:
        raise ImageFormatError(f"{operation} needs an affine; {image.source} has none")
    if len(image.spacing) != 3:
        raise ImageFormatError(f"{operation} works on 3D volumes; {image.source} has {len(image.spacing)} axes")
