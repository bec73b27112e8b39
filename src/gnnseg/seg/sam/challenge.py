"""The CVPR 2024 "MedSAM on Laptop" challenge, end to end: a folder of cases in, a folder of ``segs`` out, scored
as the challenge scored them; and our real datasets written as cases.

- :func:`predict_cases` answers every ``*.npz`` case of a folder (:mod:`gnnseg.seg.io.challenge_npz` gives the
  format) with one model and one predictor, so that the embedding memo serves slices shared between 3D boxes.
- :func:`evaluate_cases` scores predictions against ground-truth files (``gts``, and ``spacing`` for 3D) the way the
  challenge's evaluation does: per case, DSC and NSD (tolerance 2: pixels in 2D, spacing-aware in 3D) of every
  label of the ground truth, averaged over the labels; then the mean over cases. A missing prediction scores 0.
  :mod:`gnnseg.seg.folder_scoring` pairs the files and scores the labels.
- :func:`write_cases` writes the held-out Kvasir-SEG polyps (2D) and the TotalSegmentator CT organs (3D) of
  ``../shared/datasets`` as ``imgs/`` and ``gts/`` folders in that format.

torch-free at import, like ``gnnseg seg segment``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from gnnseg.core.progress import progress
from gnnseg.seg.folder_scoring import LabelMap, mean_over_labels, score_folders, score_labels
from gnnseg.seg.io.challenge_npz import (
    read_challenge_npz,
    read_npz_arrays,
    segs_from_masks,
    write_challenge_segs,
)
from gnnseg.seg.io.label_painter import OVERLAP_RULES, check_overlap_rule
from gnnseg.seg.sam.inference.prompts import boxes_from_mask
from gnnseg.seg.sam.inference.volume import segment_challenge_case
from gnnseg.seg.sam.shipped import ModelChoice
from gnnseg.seg.sam.training.samples import MIN_OBJECT_PIXELS

NSD_TOLERANCE = 2.0
"""The challenge's NSD tolerance: 2 pixels in 2D, 2 mm (in the file's spacing units) in 3D."""
MEMO_SLICES = 64
"""Embeddings kept by content while answering cases: the slices of a 3D case are shared by all its boxes (a 64 x 64
embedding of 256 channels is 4 MiB)."""


def _cases(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of challenge .npz cases")
    cases = sorted(folder.glob("*.npz"))
    if not cases:
        raise FileNotFoundError(f"{folder} holds no .npz cases")
    return cases


def predict_cases(input_folder: str | os.PathLike, output_folder: str | os.PathLike, *,
                  choice: ModelChoice | None = None, show_progress: bool | None = None,
                  resume: bool = False, overlaps: str = OVERLAP_RULES[0]) -> dict[str, Any]:
    """Write ``output_folder/<case>.npz`` (``segs``) for every case of ``input_folder``; existing outputs are refused
    before any work is done, or with ``resume`` kept and their cases skipped (each output is written whole, by a
    rename, so one that exists is complete: an interrupted run continues where it stopped). ``choice``: the model
    and how it answers (:class:`~gnnseg.seg.sam.shipped.ModelChoice`, checked when it was made; default: the
    default model); ``overlaps``: who keeps a pixel two objects claim (:mod:`gnnseg.seg.io.label_painter`)."""
    check_overlap_rule(overlaps)
    cases = _cases(input_folder)
    output = Path(output_folder)
    clashes = [case for case in cases if (output / case.name).exists()]
    if clashes and not resume:
        raise FileExistsError(f"{len(clashes)} outputs exist already (first: {output / clashes[0].name}); choose "
                              "another folder, or pass --resume to keep them and predict the rest")
    cases = [case for case in cases if case not in clashes]
    output.mkdir(parents=True, exist_ok=True)
    predictor = (choice or ModelChoice()).predictor(cache_size=MEMO_SLICES)
    seconds = {}
    for path in progress(cases, desc="cases", enabled=show_progress):
        started = time.perf_counter()
        case = read_challenge_npz(path)
        write_challenge_segs(output / path.name, segment_challenge_case(predictor, case, overlaps=overlaps),
                             case=case)
        seconds[case.name] = time.perf_counter() - started
    return {"cases": len(cases), "kept": len(clashes), "output": str(output),
            "seconds_mean": float(np.mean(list(seconds.values()))) if seconds else 0.0, "seconds": seconds}


def score_case(segs: np.ndarray, gts: np.ndarray, spacing: tuple[float, ...] | None = None) -> dict[str, float]:
    """DSC and NSD of one case: every label of ``gts`` against the same label of ``segs``, averaged over labels."""
    scores = score_labels(segs, gts, "truth", spacing=_measured_spacing(gts, spacing), tolerance_mm=NSD_TOLERANCE)
    return _case_summary(mean_over_labels(scores), len(scores))


def evaluate_cases(prediction_folder: str | os.PathLike, truth_folder: str | os.PathLike) -> dict[str, Any]:
    """Score every ground-truth case of ``truth_folder`` against the same file name in ``prediction_folder``."""
    scores = score_folders(prediction_folder, truth_folder, suffixes=(".npz",), read_prediction=_read_segs,
                           read_truth=_read_gts, labels="truth", missing="empty", tolerance_mm=NSD_TOLERANCE)
    means = scores.mean_per_case()
    per_case = {name[: -len(".npz")]: _case_summary(means[name], len(case)) for name, case in scores.per_case.items()}
    return {"cases": len(per_case), "missing": scores.missing,
            "dsc_mean": float(np.mean([c["dsc"] for c in per_case.values()])),
            "nsd_mean": float(np.mean([c["nsd"] for c in per_case.values()])), "per_case": per_case}


def _case_summary(means: dict[str, float], labels: int) -> dict[str, float]:
    """The challenge's figures of one case from its means over its ``labels`` labels: DSC and NSD."""
    return {"dsc": means["dice"], "nsd": means["nsd"], "labels": labels}


def _measured_spacing(gts: np.ndarray, spacing: tuple[float, ...] | None) -> tuple[float, ...] | None:
    """The spacing the challenge measures a case in: the file's for 3D, pixels (``None``) for 2D."""
    return spacing if gts.ndim == 3 else None


def _read_segs(path: Path) -> LabelMap:
    """A prediction file's ``segs`` (its spacing is the truth's)."""
    return LabelMap(read_npz_arrays(path, required=("segs",))["segs"], None)


def _read_gts(path: Path) -> LabelMap:
    """A ground-truth file's ``gts`` with the spacing the challenge measures it in."""
    truth = read_npz_arrays(path, required=("gts",))
    spacing = tuple(float(s) for s in truth["spacing"]) if "spacing" in truth else None
    return LabelMap(truth["gts"], _measured_spacing(truth["gts"], spacing))


def _write_case(folder: Path, name: str, image: np.ndarray, labels: np.ndarray, boxes: np.ndarray,
                spacing: tuple[float, ...] | None) -> None:
    extra = {} if spacing is None else {"spacing": np.asarray(spacing, np.float64)}
    np.savez_compressed(folder / "imgs" / f"{name}.npz", imgs=image, boxes=boxes, **extra)
    np.savez_compressed(folder / "gts" / f"{name}.npz", gts=labels.astype(np.uint16), **extra)


def write_cases(data: str | os.PathLike, output_folder: str | os.PathLike, *, margin: int = 5) -> dict[str, Any]:
    """Write challenge cases from ``data`` (``../shared/datasets``): ``2DBox_kvasir_<id>.npz`` for each held-out
    Kvasir-SEG image (every polyp's box grown by ``margin`` pixels) and ``3DBox_CT_example.npz`` for the
    TotalSegmentator CT (soft-tissue window, one tight 3D box per organ of at least 100 voxels, spacing in the
    array's ``(z, y, x)`` order)."""
    from gnnseg.seg.io.intensity import scale_volume
    from gnnseg.seg.io.nifti import read_nifti
    from gnnseg.seg.sam.training.corpus import kvasir

    output = Path(output_folder)
    if (output / "imgs").exists() or (output / "gts").exists():
        raise FileExistsError(f"{output} already holds imgs/ or gts/; choose another folder")
    for part in ("imgs", "gts"):
        (output / part).mkdir(parents=True)
    by_image: dict[str, list] = {}
    for sample in kvasir(Path(data), "val"):
        by_image.setdefault(sample.source, []).append(sample)
    for source, samples in by_image.items():
        labels = segs_from_masks([sample.mask for sample in samples])
        boxes = np.stack([boxes_from_mask(sample.mask, margin)[0] for sample in samples])
        _write_case(output, f"2DBox_kvasir_{source.split('/')[-1]}", samples[0].image, labels, boxes, None)
    folder = Path(data) / "totalsegmentator_examples"
    volume, organs = read_nifti(folder / "example_ct_sm.nii.gz"), read_nifti(folder / "example_seg.nii.gz")
    labels, boxes = organ_boxes(organs.array)
    _write_case(output, "3DBox_CT_example", scale_volume(volume.array, "ct"), labels, boxes, tuple(volume.spacing))
    return {"cases_2d": len(by_image), "cases_3d": 1, "objects_3d": len(boxes), "output": str(output)}


def organ_boxes(organs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 3D label map's organs of at least ``MIN_OBJECT_PIXELS`` voxels (as the 2D corpus keeps objects) renumbered
    1..N in label order (uint16), and the tight 3D box of each, ``(N, 6)`` as ``x_min, y_min, z_min, x_max, y_max,
    z_max``."""
    ids, counts = np.unique(organs[organs != 0], return_counts=True)
    labels = np.zeros(organs.shape, np.uint16)
    for index, organ in enumerate((int(k) for k, count in zip(ids, counts) if count >= MIN_OBJECT_PIXELS), start=1):
        labels[organs == organ] = index
    return labels, boxes_from_mask(labels) if labels.any() else np.zeros((0, 6), np.int64)
