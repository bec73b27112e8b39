"""Test-time augmentation for the box-prompted models: Dice, NSD and time per object, with and without.

Every held-out object of :mod:`gnnseg.seg.sam.training.corpus` (endoscopy, EM, fundus, CT, MR) is prompted with its
tight box grown by 5 pixels (the protocol of ``sam_box_prompt.py``) and segmented by each model three ways
(:mod:`gnnseg.seg.sam.inference.augmented_predictor`): as given (``none``), averaged with its left-right mirror
(``flip``), and averaged over the eight symmetries of the square (``d4``). With ``--zoom C`` each box is answered on a
window ``C`` box sizes wider on each side, at least the model's input size and inside the image
(:mod:`gnnseg.seg.sam.inference.zoom`; whole-image models only); ``--zoom-scales 2`` adds a window half as wide,
enlarged up to twice, and averages. Scores: mean DSC and NSD (2-pixel tolerance) per modality, seconds per object
(encoder included), and the Kvasir figure beside the specialist U-Net measured by ``sam_box_prompt.py`` (read from its
results file).

``--models`` takes model names and checkpoint paths (a fine-tuned ``model.pt``), comma-separated. Writes
``sam_test_time_augmentation.json`` and ``.md`` to ``--out-dir``; rows (model and setting) not measured
now keep what an earlier full run wrote there (each run's command, machine and rows are listed under ``runs``)::

    python benchmarks/sam_test_time_augmentation.py
    python benchmarks/sam_test_time_augmentation.py --models lite_medsam_fast --augmentations none,d4 --zoom 0.5
    python benchmarks/sam_test_time_augmentation.py --models lite_medsam_fast --augmentations d4 --zoom 0.5 \
        --zoom-scales 2
    python benchmarks/sam_test_time_augmentation.py --models vit_cpu --max-objects 3 --out-dir /tmp/tta  # smoke
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gnnseg.core import machine_info, write_json
from gnnseg.seg.metrics import dice, normalized_surface_dice
from gnnseg.seg.sam.inference.augmented_predictor import AUGMENTATIONS
from gnnseg.seg.sam.inference.box_prompted import box_prompted_masks
from gnnseg.seg.sam.modeling.config import PREPROCESSINGS
from gnnseg.seg.sam.shipped import MODEL_NAMES, PACKAGED_MODELS, load_model
from gnnseg.seg.sam.training.corpus import MODALITIES, load_corpus

RESULTS = Path(__file__).resolve().parent / "results"
BOX_MARGIN = 5
NSD_TOLERANCE_PIXELS = 2.0


def score(model, samples, augmentation: str, zoom: float | None, zoom_scales: int) -> dict[str, float]:
    began = time.perf_counter()
    masks = box_prompted_masks(model, samples, BOX_MARGIN, augmentation=augmentation, zoom=zoom,
                               zoom_scales=zoom_scales)
    seconds = time.perf_counter() - began
    return {"dsc": float(np.mean([dice(m, s.mask) for m, s in zip(masks, samples)])),
            "nsd": float(np.mean([normalized_surface_dice(m, s.mask, NSD_TOLERANCE_PIXELS)
                                  for m, s in zip(masks, samples)])),
            "seconds_per_object": seconds / len(samples)}


def specialist_reference(results: Path) -> float | None:
    """The specialist U-Net's Kvasir DSC from ``sam_box_prompt.json``, if that benchmark has been run."""
    path = results / "sam_box_prompt.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())["results"]["endoscopy"]["specialist_unet"]["dsc"]


def setting(augmentation: str, zoom: float | None, zoom_scales: int, preprocessing: str | None = None) -> str:
    """A row's label: the augmentation, the zoom context and scales if any, and the preprocessing if not the model's
    own (``"d4 + zoom 0.5 x 2"``, ``"none, official preprocessing"``)."""
    label = augmentation
    if zoom is not None:
        label += f" + zoom {zoom:g}" + (f" x {zoom_scales}" if zoom_scales > 1 else "")
    return label + (f", {preprocessing} preprocessing" if preprocessing else "")


def setting_order(label: str) -> tuple[bool, str, str, int]:
    """Plain settings first, then by zoom (one scale before more), each group in the order of
    :data:`AUGMENTATIONS`, the model's own preprocessing first."""
    label, _, preprocessing = label.partition(", ")
    augmentation, _, zoom = label.partition(" + zoom ")
    return bool(zoom), zoom, preprocessing, list(AUGMENTATIONS).index(augmentation)


def model_order(model: str) -> tuple[int, str]:
    """Models by name first, in the order of :data:`MODEL_NAMES`, then checkpoints by path."""
    return (list(MODEL_NAMES).index(model), "") if model in MODEL_NAMES else (len(MODEL_NAMES), model)


def markdown(table: dict, counts: dict[str, int], specialist: float | None, runs: list[dict]) -> str:
    lines = ["# Test-time augmentation of the box-prompted models", "",
             (f"Mean DSC / NSD ({NSD_TOLERANCE_PIXELS:g}-pixel tolerance) per held-out object, box = tight box + "
              f"{BOX_MARGIN} px; ms per object"), "",
             "| model | setting | " + " | ".join(f"{m} ({counts[m]})" for m in MODALITIES) + " | ms / object |",
             "|---|---|" + "---|" * (len(MODALITIES) + 1)]
    for model in sorted(table, key=model_order):
        rows = table[model]
        for label in sorted(rows, key=setting_order):
            row = rows[label]
            cells = [f"{row[m]['dsc']:.3f} / {row[m]['nsd']:.3f}" for m in MODALITIES]
            milliseconds = 1000 * np.mean([row[m]["seconds_per_object"] for m in MODALITIES])
            lines.append(f"| {model} | {label} | " + " | ".join(cells) + f" | {milliseconds:.0f} |")
    if len(runs) > 1:
        lines += ["", "Measured in separate runs, on the same machine type:"]
        lines += [f"- {'; '.join(f'{model} {label}' for model, label in run['rows'])}: `{run['command']}`"
                  for run in runs]
    if specialist is not None:
        lines += ["", (f"Kvasir target: DSC >= 0.92 and within 1 point of the specialist U-Net "
                       f"({specialist:.3f}, sam_box_prompt.json).")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--models", default=",".join(PACKAGED_MODELS),
                        help=f"model names ({', '.join(MODEL_NAMES)}) or checkpoint paths, comma-separated")
    parser.add_argument("--preprocessing", choices=PREPROCESSINGS, default=None,
                        help="override the models' own preprocessing (Lite MedSAM-style models)")
    parser.add_argument("--augmentations", default=",".join(AUGMENTATIONS))
    parser.add_argument("--zoom", type=float, default=None,
                        help="answer each box on a window this many box sizes wider on each side")
    parser.add_argument("--zoom-scales", type=int, default=1,
                        help="windows per box, each half as wide as the one before, averaged")
    parser.add_argument("--max-objects", type=int, default=None, help="per modality (smoke tests)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()

    held_out = load_corpus(args.data, "val")
    if args.max_objects:
        held_out = {m: samples[: args.max_objects] for m, samples in held_out.items()}
    table: dict = {}
    for name in args.models.split(","):
        model = load_model(name, preprocessing=args.preprocessing)
        table[name] = {}
        for augmentation in args.augmentations.split(","):
            label = setting(augmentation, args.zoom, args.zoom_scales, args.preprocessing)
            table[name][label] = {m: score(model, held_out[m], augmentation, args.zoom, args.zoom_scales)
                                  for m in MODALITIES}
            print(name, label, {m: round(v["dsc"], 4) for m, v in table[name][label].items()}, flush=True)
    counts = {m: len(held_out[m]) for m in MODALITIES}
    specialist = specialist_reference(RESULTS)
    run = {"command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])), "machine": machine_info(),
           "torch_threads": torch.get_num_threads(),
           "rows": [[name, label] for name, rows in table.items() for label in rows]}
    path = args.out_dir / "sam_test_time_augmentation.json"
    runs = [run]
    if path.is_file() and not args.max_objects:  # rows not measured now are kept from earlier runs
        earlier = json.loads(path.read_text())
        if earlier["objects"] == counts:
            for name, rows in earlier["scores"].items():
                for label, row in rows.items():
                    table.setdefault(name, {}).setdefault(label, row)
            measured = {tuple(row) for row in run["rows"]}
            runs = [{**r, "rows": [row for row in r["rows"] if tuple(row) not in measured]} for r in earlier["runs"]]
            runs = [r for r in runs if r["rows"]] + [run]
    result = {"benchmark": "sam_test_time_augmentation", "runs": runs, "box_margin": BOX_MARGIN,
              "nsd_tolerance_pixels": NSD_TOLERANCE_PIXELS, "objects": counts,
              "specialist_unet_kvasir_dsc": specialist, "scores": table}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    report = markdown(table, counts, specialist, runs)
    (args.out_dir / "sam_test_time_augmentation.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
