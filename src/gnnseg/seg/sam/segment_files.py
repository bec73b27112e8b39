"""File-level box-prompted segmentation behind ``gnnseg seg segment``: read an image, a volume or a challenge case,
segment the boxes, write the masks. Nothing overwrites an existing output.

torch-free at import: with an ONNX export (``--checkpoint FOLDER``) the whole command runs without torch; with a
PyTorch checkpoint :func:`~gnnseg.seg.sam.shipped.load_model` imports it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gnnseg.seg.io.any_format import is_nifti, read_any
from gnnseg.seg.io.challenge_npz import read_challenge_npz, write_challenge_segs
from gnnseg.seg.io.dicom_seg import is_dicom_seg_path, refuse_non_dicom_source
from gnnseg.seg.io.image import ImageFormatError, MedicalImage
from gnnseg.seg.io.image2d import read_image_2d, write_image_2d
from gnnseg.seg.io.intensity import scale_volume
from gnnseg.seg.io.label_painter import OVERLAP_RULES, check_overlap_rule, paint_labels
from gnnseg.seg.sam.inference.volume import segment_challenge_case, segment_volume
from gnnseg.seg.sam.shipped import ModelChoice


def refuse_existing(path: Path) -> None:
    if path.exists():
        raise FileExistsError(f"{path} exists; choose another output path")


@dataclass(frozen=True)
class ObjectPrompt:
    """One object's prompts: a box ``x0, y0, x1, y1`` and/or ``(P, 2)`` points with ``(P,)`` labels (1 inside the
    object, 0 outside), in pixel indices."""

    box: np.ndarray | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None


def read_prompts_file(path: str | os.PathLike) -> list[ObjectPrompt]:
    """The objects of a JSON prompts file: ``{"objects": [{"box": [x0, y0, x1, y1], "points": [[x, y], ...],
    "labels": [1, 0, ...]}, ...]}`` (each object a box, points, or both); a bad file is refused by object and key."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON prompts file ({error})") from None
    objects = document.get("objects") if isinstance(document, dict) else None
    if not isinstance(objects, list) or not objects:
        raise ValueError(f'{path}: expected {{"objects": [...]}} with at least one object')
    prompts = []
    for index, given in enumerate(objects):
        where = f"{path}: object {index}"
        if not isinstance(given, dict) or not given or set(given) - {"box", "points", "labels"}:
            raise ValueError(f"{where} must be an object with box and/or points and labels, got {given!r}")
        if ("points" in given) != ("labels" in given):
            raise ValueError(f"{where}: points and labels go together")
        try:
            prompts.append(ObjectPrompt(*(None if key not in given else np.asarray(given[key], dtype=np.float64)
                                          for key in ("box", "points", "labels"))))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: box, points and labels must hold numbers") from None
    return prompts


def segment_image(image_path: str | os.PathLike, objects: Sequence[ObjectPrompt], output: str | os.PathLike, *,
                  choice: ModelChoice | None = None, overlaps: str = OVERLAP_RULES[0]) -> dict[str, Any]:
    """Segment each object of a 2D image from its box and/or points; write a PNG with label ``k`` for object ``k``.

    With one object the PNG holds 0/255 so that it is visible in any viewer. Objects prompted by boxes alone are
    answered in one batch. ``choice``, here and below: the model and how it answers
    (:class:`~gnnseg.seg.sam.shipped.ModelChoice`; default: the default model as it is); ``overlaps``: who keeps a
    pixel two objects claim (:mod:`gnnseg.seg.io.label_painter`).
    """
    if not objects:
        raise ValueError("give at least one object: a box and/or points")
    check_overlap_rule(overlaps)
    output = Path(output)
    refuse_existing(output)
    if is_dicom_seg_path(output):
        refuse_non_dicom_source(image_path, output)
    image = read_image_2d(image_path).array
    predictor = (choice or ModelChoice()).predictor()
    started = time.perf_counter()
    predictor.set_image(image)
    if all(o.points is None for o in objects):
        prediction = predictor.predict(boxes=np.stack([o.box for o in objects]))
        masks, ious = prediction.masks[:, 0], prediction.iou[:, 0]
    else:
        answers = [predictor.predict(boxes=o.box, points=None if o.points is None else o.points[None],
                                     point_labels=None if o.labels is None else o.labels[None]) for o in objects]
        masks = np.concatenate([a.masks[:, 0] for a in answers])
        ious = np.concatenate([a.iou[:, 0] for a in answers])
    seconds = time.perf_counter() - started
    labels = (masks[0] * np.uint8(255)) if len(masks) == 1 else paint_labels(list(masks), overlaps)
    write_image_2d(labels, output)
    return {"output": str(output), "objects": len(masks), "predicted_iou": ious.tolist(),
            "foreground_pixels": [int(m.sum()) for m in masks], "seconds": seconds}


def read_volume(path: str | os.PathLike) -> MedicalImage:
    """A NIfTI file or a DICOM series folder as ``(Z, Y, X)``."""
    if not (Path(path).is_dir() or is_nifti(path)):
        raise ImageFormatError(f"{path}: give a NIfTI file (.nii, .nii.gz) or a folder holding a DICOM series")
    return read_any(path)


def segment_volume_file(volume_path: str | os.PathLike, boxes: np.ndarray, output: str | os.PathLike, *,
                        modality: str = "ct", window: str = "soft_tissue",
                        choice: ModelChoice | None = None, overlaps: str = OVERLAP_RULES[0]) -> dict[str, Any]:
    """Segment ``(N, 6)`` 3D boxes ``x_min, y_min, z_min, x_max, y_max, z_max`` (voxel indices of the ``(Z, Y, X)``
    array) in a volume; write the labels (label ``k`` for box ``k``) as NIfTI on the volume's grid, or, for an
    ``output`` ending in ``.dcm``, as a DICOM-SEG referencing the DICOM series ``volume_path`` (checked before the
    model runs)."""
    check_overlap_rule(overlaps)
    output = Path(output)
    refuse_existing(output)
    dicom_source = None
    if is_dicom_seg_path(output):
        from gnnseg.seg.io.dicom_seg import dicom_seg_source, require_highdicom

        refuse_non_dicom_source(volume_path, output)
        require_highdicom()
        dicom_source = dicom_seg_source(volume_path)
    volume = read_volume(volume_path)
    predictor = (choice or ModelChoice()).predictor()
    started = time.perf_counter()
    labels = segment_volume(predictor, scale_volume(volume.array, modality, window), boxes, overlaps=overlaps)
    seconds = time.perf_counter() - started
    if dicom_source is not None:
        from gnnseg.seg.io.dicom_seg import write_dicom_seg

        write_dicom_seg(labels, dicom_source, output, model=(choice or ModelChoice()).name,
                        algorithm_type="SEMIAUTOMATIC")
    else:
        from gnnseg.seg.io.nifti import write_nifti

        write_nifti(MedicalImage(labels.astype(np.uint16), volume.spacing, volume.affine), output)
    return {"output": str(output), "boxes": len(np.atleast_2d(boxes)), "seconds": seconds,
            "voxels_per_label": {int(k): int((labels == k).sum()) for k in np.unique(labels) if k}}


def segment_challenge_file(case_path: str | os.PathLike, output: str | os.PathLike, *,
                           choice: ModelChoice | None = None, overlaps: str = OVERLAP_RULES[0]) -> dict[str, Any]:
    """Answer one CVPR 2024 "MedSAM on Laptop" case: ``imgs`` + ``boxes`` in, ``segs`` out (labels in box order)."""
    check_overlap_rule(overlaps)
    output = Path(output)
    refuse_existing(output)
    if is_dicom_seg_path(output):
        refuse_non_dicom_source(case_path, output)
    case = read_challenge_npz(case_path)
    predictor = (choice or ModelChoice()).predictor()
    started = time.perf_counter()
    segs = segment_challenge_case(predictor, case, overlaps=overlaps)
    seconds = time.perf_counter() - started
    write_challenge_segs(output, segs, case=case)
    return {"output": str(output), "case": case.name, "is_3d": case.is_3d, "boxes": case.num_boxes,
            "seconds": seconds}
