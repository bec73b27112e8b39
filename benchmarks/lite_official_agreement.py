"""Does gnnseg reproduce the released LiteMedSAM inference code? Per-box Dice between its masks and gnnseg's.

The released weights (``litemedsam``) answer every held-out Kvasir polyp and every held-out CT object of
:mod:`gnnseg.seg.sam.training.corpus` (tight box + 5 px) three ways:

- **official**: the released ``CVPR24_LiteMedSAM_infer.py`` itself, run unchanged as an oracle on one 2D challenge
  case per object (``--official`` is a checkout of the MedSAM repository's ``LiteMedSAM`` branch; nothing of it is
  copied into gnnseg);
- **gnnseg, preprocessing official**: ``load_model("litemedsam", preprocessing="official")``;
- **gnnseg, preprocessing gnnseg**: gnnseg's own chain (area averaging in floating point, fractional boxes).

Per box: Dice between each gnnseg mask and the official one, and each against the ground truth. Target: the official
mode agrees with the official code to Dice >= 0.999 on every object of >= 100 pixels.

The official script needs ``timm`` (with torchvision, whose compiled operators this CPU torch lacks: their two
schemas are declared before it imports, as in the TinyViT oracle test), OpenCV, pandas, matplotlib and tqdm::

    git -C MedSAM archive LiteMedSAM | tar -x -C /tmp/litemedsam_official
    python benchmarks/lite_official_agreement.py --official /tmp/litemedsam_official
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gnnseg.core import machine_info, write_json
from gnnseg.seg.metrics import dice
from gnnseg.seg.sam.inference.box_prompted import box_prompted_masks, grown_box
from gnnseg.seg.sam.shipped import load_model, released_weights_path
from gnnseg.seg.sam.training.corpus import load_corpus

RESULTS = Path(__file__).resolve().parent / "results"
BOX_MARGIN = 5
MIN_PIXELS = 100
TARGET = 0.999

# Runs the official script unchanged: declares torchvision's two operator schemas (so timm imports beside the CPU
# torch), puts the checkout first on the path and executes the script as __main__ with its own arguments.
RUNNER = """
import runpy, sys, torch
try:
    import torchvision
except RuntimeError:
    library = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        library.define(name + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    for module in [m for m in sys.modules if m.startswith("torchvision")]:
        del sys.modules[module]
checkout, *arguments = sys.argv[1:]
sys.path.insert(0, checkout)
sys.argv = [checkout + "/CVPR24_LiteMedSAM_infer.py", *arguments]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def official_masks(checkout: Path, samples, work: Path) -> tuple[list[np.ndarray], float]:
    """The official script's mask of each sample (one 2D case per object) and its seconds in all."""
    cases, segs = work / "imgs", work / "segs"
    cases.mkdir()
    for index, sample in enumerate(samples):
        box = grown_box(sample, BOX_MARGIN).astype(np.int64)
        np.savez_compressed(cases / f"2DBox_{index:05d}.npz", imgs=sample.image, boxes=box[None])
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", RUNNER, str(checkout), "-i", str(cases), "-o", str(segs),
                    "-lite_medsam_checkpoint_path", str(released_weights_path("litemedsam")), "-device", "cpu",
                    "-png_save_dir", str(work / "overlay")], check=True, cwd=work, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    return [np.load(segs / f"2DBox_{index:05d}.npz")["segs"] > 0 for index in range(len(samples))], seconds


def summary(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    return {"count": int(array.size), "mean": float(array.mean()), "min": float(array.min()),
            "below_target": int((array < TARGET).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="checkout of MedSAM's LiteMedSAM branch")
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--max-objects", type=int, default=None, help="per modality (smoke tests)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()

    held_out = load_corpus(args.data, "val", ("endoscopy", "CT"))
    chains = {"official": load_model("litemedsam", preprocessing="official"),
              "gnnseg": load_model("litemedsam", preprocessing="gnnseg")}
    results = {}
    for modality, samples in held_out.items():
        samples = samples[: args.max_objects]
        with tempfile.TemporaryDirectory() as work:
            reference, official_seconds = official_masks(args.official, samples, Path(work))
        large = [i for i, s in enumerate(samples) if s.mask.sum() >= MIN_PIXELS]
        row = {"objects": len(samples), "objects_of_100_px": len(large), "official_code_seconds": official_seconds,
               "official_code_dsc": float(np.mean([dice(reference[i], samples[i].mask) for i in large]))}
        for chain, model in chains.items():
            masks = box_prompted_masks(model, samples, BOX_MARGIN)
            agreement = [dice(masks[i], reference[i]) for i in large]
            row[chain] = {"agreement": summary(agreement),
                          "dsc": float(np.mean([dice(masks[i], samples[i].mask) for i in large]))}
        results[modality] = row
        print(modality, json.dumps(row), flush=True)

    result = {"benchmark": "lite_official_agreement", "machine": machine_info(), "box_margin": BOX_MARGIN,
              "min_object_pixels": MIN_PIXELS, "target_dice": TARGET, "results": results}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / "lite_official_agreement.json", result)
    lines = ["# gnnseg against the released LiteMedSAM inference code", "",
             f"Released weights, held-out objects of >= {MIN_PIXELS} px, tight box + {BOX_MARGIN} px. Agreement: "
             "Dice between gnnseg's mask and the official code's, per box.", "",
             "| modality | objects | preprocessing | mean agreement | min agreement | boxes < 0.999 | DSC vs truth |",
             "|---|---|---|---|---|---|---|"]
    for modality, row in results.items():
        lines.append(f"| {modality} | {row['objects_of_100_px']} | official code | 1 | 1 | 0 | "
                     f"{row['official_code_dsc']:.4f} |")
        for chain in chains:
            agreement = row[chain]["agreement"]
            lines.append(f"| {modality} | {row['objects_of_100_px']} | gnnseg `{chain}` | {agreement['mean']:.4f} | "
                         f"{agreement['min']:.4f} | {agreement['below_target']} | {row[chain]['dsc']:.4f} |")
    (args.out_dir / "lite_official_agreement.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
