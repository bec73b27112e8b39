"""Who should keep a voxel that two 3D boxes' objects both claim? The rule chosen on validation volumes, then measured.

Every organ of at least 100 voxels gets its tight 3D box; the boxes are propagated together
(:func:`gnnseg.seg.sam.inference.volume.propagate_boxes_3d`) and the masks painted into one label map under each
candidate rule; mean DSC over the organs.

- **validation** (the rule is chosen here, on the mean over both): the 20-slice DICOM CT series
  (``example_ct_dicom``, soft-tissue window) and the MR volume (``example_mr_sm``) of the TotalSegmentator examples;
- **test** (reported, never used to choose): the challenge-format CT case (``example_ct_sm``, as
  ``benchmarks/lite_challenge.py`` writes it).

Candidate rules: box order (the challenge baseline: the later box wins), the smaller object wins, the object with the
higher predicted IoU (of its volume, or of that slice) wins; "alone" is each object's DSC before painting, the
ceiling of any rule. Writes benchmarks/results/sam_overlap_rules.{json,md}.

    python benchmarks/sam_overlap_rules.py                       # the default model and the released LiteMedSAM
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from gnnseg.core import machine_info, write_json
from gnnseg.seg.io import read_dicom_series, read_nifti, reorient_like
from gnnseg.seg.io.intensity import scale_volume
from gnnseg.seg.io.label_painter import paint_labels
from gnnseg.seg.metrics import dice
from gnnseg.seg.sam.challenge import organ_boxes, write_cases
from gnnseg.seg.sam.inference.volume import propagate_boxes_3d, validate_boxes_3d, volume_iou
from gnnseg.seg.sam.shipped import ModelChoice

RESULTS = Path(__file__).resolve().parent / "results"
VALIDATION = ("ct_dicom", "mr")
RULES = ("box order", "smaller object wins", "higher volume IoU wins", "higher slice IoU wins")


def organ_case(volume: np.ndarray, organs: np.ndarray, modality: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scaled volume, labels 1..N and one tight 3D box per organ of at least 100 voxels."""
    return scale_volume(volume, modality), *organ_boxes(organs)


def cases(data: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    folder = data / "totalsegmentator_examples"
    dicom_labels = read_nifti(folder / "example_seg_dicom.nii.gz")
    series = reorient_like(read_dicom_series(folder / "example_ct_dicom"), dicom_labels)
    found = {"ct_dicom": organ_case(series.array, dicom_labels.array, "ct"),
             "mr": organ_case(read_nifti(folder / "example_mr_sm.nii.gz").array,
                              read_nifti(folder / "example_seg_mr.nii.gz").array, "mr")}
    with tempfile.TemporaryDirectory() as temporary:
        write_cases(data, Path(temporary))
        with np.load(Path(temporary) / "imgs" / "3DBox_CT_example.npz") as case, \
                np.load(Path(temporary) / "gts" / "3DBox_CT_example.npz") as truth:
            found["challenge_ct"] = (case["imgs"], truth["gts"], case["boxes"])
    return found


def propagated_cases(models: Sequence[str], volumes: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                     margin: int = 3) -> Iterator[tuple]:
    """For each model and each volume: ``(model, predictor, case, (volume, truth, boxes), (masks, slice_iou),
    seconds)``, the boxes validated and propagated together (with ``margin``), timed."""
    for name in models:
        predictor = ModelChoice(checkpoint=name).predictor(cache_size=64)
        for case, (volume, truth, boxes) in volumes.items():
            boxes = validate_boxes_3d(boxes, volume.shape)
            began = time.perf_counter()
            result = propagate_boxes_3d(predictor, volume, boxes, margin)
            yield name, predictor, case, (volume, truth, boxes), result, time.perf_counter() - began


def object_dsc(masks: np.ndarray, truth: np.ndarray) -> list[float]:
    """DSC of each object's mask alone against label ``k + 1`` of ``truth``."""
    return [dice(mask, truth == k) for k, mask in enumerate(masks, start=1)]


def mean_dsc(labels: np.ndarray, truth: np.ndarray, count: int) -> float:
    """Mean DSC of labels ``1..count`` of a label map against ``truth``."""
    return float(np.mean([dice(labels == k, truth == k) for k in range(1, count + 1)]))


def rule_labels(masks: np.ndarray, slice_iou: np.ndarray, boxes: np.ndarray) -> dict[str, np.ndarray]:
    volume_ious = np.array([volume_iou(mask, ious, int(box[2]), int(box[5]))
                            for mask, ious, box in zip(masks, slice_iou, boxes)])
    by_volume_iou = np.argsort(volume_ious, kind="stable")            # painted last: the highest
    per_slice = np.where(masks, slice_iou[:, :, None, None], -1.0).argmax(axis=0)
    return {"box order": paint_labels(list(masks), "box-order"),
            "smaller object wins": paint_labels(list(masks), "smaller"),
            "higher volume IoU wins": _relabelled(paint_labels([masks[k] for k in by_volume_iou], "box-order",
                                                               np.uint16), by_volume_iou),
            "higher slice IoU wins": np.where(masks.any(axis=0), per_slice + 1, 0).astype(np.uint16)}


def _relabelled(labels: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Labels painted in ``order`` back to box numbers: painted label ``j + 1`` is box ``order[j] + 1``."""
    return np.concatenate([[0], order + 1]).astype(np.uint16)[labels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--models", default="vit_cpu_clicks,litemedsam", help="models by name, comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for name, _, case, (_, truth, boxes), (masks, slice_iou), seconds in propagated_cases(args.models.split(","),
                                                                                       cases(Path(args.data))):
        scores = {rule: mean_dsc(labels, truth, len(boxes))
                  for rule, labels in rule_labels(masks, slice_iou, boxes).items()}
        scores["alone"] = float(np.mean(object_dsc(masks, truth)))
        rows.append({"model": name, "case": case, "objects": len(boxes), "seconds": seconds, "dsc": scores})
        print(name, case, {k: round(v, 4) for k, v in scores.items()}, flush=True)
    validation = {rule: float(np.mean([r["dsc"][rule] for r in rows if r["case"] in VALIDATION])) for rule in RULES}
    chosen = max(RULES, key=validation.get)
    payload = {"command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])), "machine": machine_info(),
               "rows": rows, "validation_mean": validation, "chosen": chosen}
    write_json(RESULTS / "sam_overlap_rules.json", payload)
    lines = ["# Overlapping 3D boxes: who keeps a voxel two objects claim", "",
             "Mean DSC over the organs (one tight 3D box each, propagated from the middle slice). The rule is chosen "
             "on the validation volumes (mean over both models and both volumes); the challenge CT case is the test.",
             "", "| model | volume | organs | " + " | ".join(RULES) + " | alone |", "|---" * (len(RULES) + 4) + "|"]
    for row in rows:
        role = "test" if row["case"] not in VALIDATION else "validation"
        lines.append(f"| {row['model']} | {row['case']} ({role}) | {row['objects']} | "
                     + " | ".join(f"{row['dsc'][rule]:.3f}" for rule in (*RULES, "alone")) + " |")
    lines += ["", "Validation mean: " + ", ".join(f"{rule} {value:.3f}" for rule, value in validation.items())
              + f". Chosen: **{chosen}**."]
    (RESULTS / "sam_overlap_rules.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
