"""How much of a 3D box case is lost to propagation, and how much to the 2D model itself?

A 3D box gives a 2D model one rectangle on one slice; every other slice is prompted with the box of the mask next to
it (:func:`gnnseg.seg.sam.inference.volume.propagate_boxes_3d`). What such propagation tries to reconstruct is every
slice prompted with the object's own tight 2D box there: that is what this benchmark also runs, on the slices the
object occupies, with the same box margin propagation uses. The gap between the two is what propagation loses; the
second is what the 2D model gives with a tight box everywhere (not a strict bound: a model may answer a neighbour's
grown box better than the tight one).

Volumes: the challenge-format CT case (``example_ct_sm``, 3 mm voxels, as ``benchmarks/lite_challenge.py`` writes it)
and the two volumes the 3D settings were chosen on (the DICOM CT series and the MR volume of the TotalSegmentator
examples); one tight 3D box per organ of at least 100 voxels. DSC per organ, then the mean over organs, each object
alone and after painting all into one label map (the smaller object keeps a voxel, gnnseg's default). Writes
``benchmarks/results/lite_3d_ceiling.{json,md}``, keeping the earlier rows of models not measured now::

    python benchmarks/lite_3d_ceiling.py                 # the default, the distilled student and the released model
    python benchmarks/lite_3d_ceiling.py --models vit_cpu_clicks        # the default alone, after new weights
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from gnnseg.core import machine_info, write_json
from gnnseg.seg.io.label_painter import paint_labels
from gnnseg.seg.io.nifti import read_nifti
from gnnseg.seg.metrics import dice
from gnnseg.seg.sam.inference.prompts import boxes_from_mask
from gnnseg.seg.sam.inference.volume import inside_rectangle, middle_slices
from gnnseg.seg.sam.shipped import DEFAULT_MODEL
from gnnseg.seg.sam.training.samples import MIN_OBJECT_PIXELS
from sam_overlap_rules import cases, mean_dsc, object_dsc, propagated_cases

RESULTS = Path(__file__).resolve().parent / "results"
MARGIN = 3
"""Pixels around each slice's tight box: propagation's own margin."""
TEST_CASE = "challenge_ct"


def per_slice_box_masks(predictor, volume: np.ndarray, truth: np.ndarray, count: int) -> np.ndarray:
    """``(count, D, H, W)`` masks with every slice of object ``k`` prompted by its tight box there (+ ``MARGIN``);
    the objects on a slice are answered in one call."""
    masks = np.zeros((count, *truth.shape), dtype=bool)
    for z in range(len(volume)):
        present = [k for k in range(1, count + 1) if np.any(truth[z] == k)]
        if not present:
            continue
        predictor.set_image(volume[z])
        boxes = np.concatenate([boxes_from_mask(truth[z] == k, MARGIN) for k in present])
        prediction = predictor.predict(boxes=boxes)
        for row, k in enumerate(present):
            masks[k - 1, z] = prediction.masks[row, 0]
    return masks


def middle_slice_dsc(predictor, volume: np.ndarray, truth: np.ndarray, boxes: np.ndarray) -> tuple[list, list]:
    """Per object, DSC on the 3D box's middle slice (where propagation starts) prompted with the box's rectangle,
    as propagation prompts it (the mask kept inside the rectangle), and with the object's own tight box there
    (+ ``MARGIN``). An object absent from its middle slice has no own box there, so it is left out of both."""
    rectangle_dsc, own_box_dsc = [], []
    for k, (box, z) in enumerate(zip(boxes, middle_slices(boxes)), start=1):
        organ = truth[z] == k
        if not organ.any():
            continue
        rectangle = box[[0, 1, 3, 4]].astype(np.float64)
        predictor.set_image(volume[z])
        rectangle_dsc.append(dice(inside_rectangle(predictor.predict(boxes=rectangle[None]).masks[0, 0], rectangle),
                                  organ))
        own_box_dsc.append(dice(predictor.predict(boxes=boxes_from_mask(organ, MARGIN)).masks[0, 0], organ))
    return rectangle_dsc, own_box_dsc


def organ_names(data: Path) -> list[str]:
    """The challenge CT case's organs in label order (those of at least ``MIN_OBJECT_PIXELS`` voxels)."""
    folder = data / "totalsegmentator_examples"
    names = json.loads((folder / "label_names.json").read_text())["total"]
    ids, counts = np.unique(read_nifti(folder / "example_seg.nii.gz").array, return_counts=True)
    return [names.get(str(int(k)), str(int(k))) for k, n in zip(ids, counts) if k and n >= MIN_OBJECT_PIXELS]


def markdown(payload: dict) -> str:
    rows = payload["rows"]
    lines = ["# 3D boxes: propagation against every slice's own box", "",
             f"Mean DSC over organs (one tight 3D box each). *Propagated*: the box's rectangle on its middle slice, "
             f"then each slice prompted by the box of the mask next to it (+{MARGIN} px). *Per-slice boxes*: every "
             f"slice the organ occupies prompted by its own tight box (+{MARGIN} px), what propagation tries to "
             "reconstruct (not a strict bound). *Alone*: each object scored by itself; *painted*: all in one label "
             "map, the smaller object keeping a voxel. *Middle slice*: where propagation starts, the box's "
             "rectangle against the organ's own box there (alone). The challenge CT case is the one the 3D target is "
             "set on; the other two volumes are where the 3D settings were chosen.", "",
             "| model | volume | organs | propagated, alone | per-slice boxes, alone | propagated, painted | "
             "per-slice boxes, painted | middle slice: rectangle / own box | s propagated |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['case']} | {row['objects']} | {row['propagated_alone']:.3f} | "
                     f"{row['per_slice_alone']:.3f} | {row['propagated_painted']:.3f} | "
                     f"{row['per_slice_painted']:.3f} | {row['middle_rectangle']:.3f} / {row['middle_own_box']:.3f} | "
                     f"{row['seconds_propagated']:.1f} |")
    test = [row for row in rows if row["case"] == TEST_CASE]
    lines += ["", "Challenge CT case, per organ (DSC alone: propagated / per-slice boxes):", "",
              "| organ | voxels | " + " | ".join(row["model"] for row in test) + " |",
              "|---|---|" + "---|" * len(test)]
    for index, (name, voxels) in enumerate(zip(payload["organs"], payload["organ_voxels"])):
        lines.append(f"| {name} | {voxels} | " + " | ".join(
            f"{row['propagated_per_object'][index]:.2f} / {row['per_slice_per_object'][index]:.2f}" for row in test)
            + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--models", default=f"{DEFAULT_MODEL},lite_medsam_fast,litemedsam",
                        help="models by name, comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(2)
    volumes = cases(args.data)
    rows = []
    for name, predictor, case, (volume, truth, boxes), (propagated, _), seconds in propagated_cases(
            args.models.split(","), volumes, MARGIN):
        per_slice = per_slice_box_masks(predictor, volume, truth, len(boxes))
        rectangle_dsc, own_box_dsc = middle_slice_dsc(predictor, volume, truth, boxes)
        row = {"model": name, "case": case, "objects": len(boxes), "seconds_propagated": seconds,
               "propagated_per_object": object_dsc(propagated, truth),
               "per_slice_per_object": object_dsc(per_slice, truth),
               "propagated_painted": mean_dsc(paint_labels(list(propagated)), truth, len(boxes)),
               "per_slice_painted": mean_dsc(paint_labels(list(per_slice)), truth, len(boxes)),
               "middle_rectangle": float(np.mean(rectangle_dsc)), "middle_own_box": float(np.mean(own_box_dsc))}
        row["propagated_alone"] = float(np.mean(row["propagated_per_object"]))
        row["per_slice_alone"] = float(np.mean(row["per_slice_per_object"]))
        rows.append(row)
        print(name, case, {k: round(v, 3) for k, v in row.items() if k.endswith(("alone", "painted"))}, flush=True)
    path = RESULTS / "lite_3d_ceiling.json"
    names = args.models.split(",")
    if path.is_file():  # rows of models not measured now are kept from the earlier run
        rows += [row for row in json.loads(path.read_text())["rows"] if row["model"] not in names]
    truth = volumes[TEST_CASE][1]
    payload = {"benchmark": "lite_3d_ceiling", "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
               "machine": machine_info(), "margin": MARGIN, "organs": organ_names(args.data),
               "organ_voxels": [int(np.sum(truth == k)) for k in range(1, int(truth.max()) + 1)], "rows": rows}
    write_json(path, payload)
    (RESULTS / "lite_3d_ceiling.md").write_text(markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
