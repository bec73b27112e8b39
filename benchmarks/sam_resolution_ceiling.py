"""How well could each model's mask grid draw the held-out objects at all? The resolution ceiling per modality.

A SAM-architecture model answers with low-resolution logits, four times its image embedding's side (64 x 64 for
the default's 128-pixel input, 256 x 256 for Lite MedSAM's 256), bilinearly enlarged to the image. What that grid
covers depends on the model: a box-centred model (``crop_margin``) lays it over the window around the box, one and a
half times the box's longer side for the default; a whole-image model over the image's longer side. A structure
thinner than a grid cell cannot be drawn however good the model is.

The ceiling of an object is the Dice of the best mask the grid can hold, estimated as its ground truth averaged over
each grid cell (area interpolation), enlarged back as the predictors enlarge logits (bilinear) and cut at one half.
Objects and prompts are those of the held-out corpus (:mod:`gnnseg.seg.sam.training.corpus`, tight box + 5 px).
Writes ``results/sam_resolution_ceiling.{json,md}``::

    python benchmarks/sam_resolution_ceiling.py
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from gnnseg.core import machine_info, write_json
from gnnseg.seg.metrics import dice
from gnnseg.seg.sam.inference.box_prompted import grown_box
from gnnseg.seg.sam.inference.crop import CropWindow
from gnnseg.seg.sam.shipped import DEFAULT_MODEL, load_model
from gnnseg.seg.sam.training.corpus import MODALITIES, load_corpus

RESULTS = Path(__file__).resolve().parent / "results"
MARGIN = 5


def grid_ceiling(region: np.ndarray, grid: int) -> float:
    """Dice of an object against the best ``grid x grid`` drawing of it; ``region``: the object's mask over the
    square the grid covers (``(side, side)`` float, zero outside the image)."""
    side = region.shape[0]
    cells = F.interpolate(torch.from_numpy(region)[None, None], size=(grid, grid), mode="area")
    drawn = F.interpolate(cells, size=(side, side), mode="bilinear", align_corners=False)[0, 0].numpy() > 0.5
    return dice(drawn, region > 0.5)


def object_ceiling(mask: np.ndarray, box: np.ndarray, crop_margin: float | None, grid: int) -> float:
    """The ceiling of one object prompted with ``box``: over its window (box-centred) or its whole image."""
    if crop_margin is not None:
        window = CropWindow.around(box, crop_margin)
    else:
        window = CropWindow(0, 0, max(mask.shape))        # the image's longer side, padded to a square
    return grid_ceiling(window.cut(mask.astype(np.float32)), grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--models", default=f"{DEFAULT_MODEL},lite_medsam_fast,litemedsam")
    args = parser.parse_args()
    held_out = load_corpus(args.data, "val")
    rows = []
    for name in args.models.split(","):
        model = load_model(name)
        grid = 4 * model.prompt_encoder.image_embedding_size[0]
        crop_margin = model.config.crop_margin
        row = {"model": name, "mask_grid": grid, "crop_margin": crop_margin}
        for modality in MODALITIES:
            row[modality] = float(np.mean([object_ceiling(s.mask, grown_box(s, MARGIN), crop_margin, grid)
                                           for s in held_out[modality]]))
        rows.append(row)
        print(row, flush=True)
    payload = {"benchmark": "sam_resolution_ceiling", "machine": machine_info(), "margin": MARGIN,
               "default_model": DEFAULT_MODEL,
               "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
               "objects": {m: len(held_out[m]) for m in MODALITIES}, "rows": rows}
    write_json(RESULTS / "sam_resolution_ceiling.json", payload)
    lines = ["# The resolution ceiling: the best DSC each model's mask grid can draw", "",
             f"Held-out objects, tight box + {MARGIN} px; mean over objects of the Dice of the ground truth averaged "
             "over the grid's cells, enlarged bilinearly and cut at 0.5.", "",
             "| model | mask grid | laid over | " + " | ".join(MODALITIES) + " |",
             "|---|---|---|" + "---|" * len(MODALITIES)]
    for row in rows:
        over = (f"window {1 + 2 * row['crop_margin']:g} x the box" if row["crop_margin"] is not None
                else "the image's longer side")
        lines.append(f"| {row['model']} | {row['mask_grid']} | {over} | "
                     + " | ".join(f"{row[m]:.3f}" for m in MODALITIES) + " |")
    (RESULTS / "sam_resolution_ceiling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
