"""Correction clicks as the CVPR 2025 interactive challenge scores them: a box, then up to five clicks of its simulated
user, on every held-out object of the five-modality corpus.

Each object of :mod:`gnnseg.seg.sam.training.corpus` (endoscopy, EM, fundus, CT, MR; the objects of
``sam_box_prompt.py``) gets its tight box grown by 5 pixels, then up to ``--clicks`` clicks from
:func:`~gnnseg.seg.sam.inference.simulated_user.next_click` (deepest point of the largest error region, positive on
a miss and negative on a spill), each answered from the box, every click so far and the previous logits
(:class:`~gnnseg.seg.sam.inference.session.InteractiveSession`). Recorded per model and modality: DSC and NSD
(2-pixel tolerance, 0 below DSC 0.2 as the challenge scores) after each step, DSC_AUC and NSD_AUC (the challenge's
trapezoid over the click steps, 0..4 for five clicks), final DSC / NSD, and the median and 95th-percentile seconds of
a click (the image embedding kept, as a service keeps it; a box-centred model keeps its window's embedding
while the clicks stay inside the box).

Targets (for the default model): final DSC after 5 clicks at least 5 points above box-only on CT, EM and MR and
>= 0.95 on Kvasir; no modality worse after clicks than before; a click in <= 30 ms (p95) on the server.

Writes ``interactive.json`` and ``.md`` (or ``--name``) to ``--out-dir`` after each model (models not measured in a
run keep their earlier rows, and ``runs`` says which command measured which model); a model is named as given, a
checkpoint by its path. Run it alone: the click timings are wall clock::

    python benchmarks/sam_interactive.py                                  # the default model
    python benchmarks/sam_interactive.py --models vit_cpu,lite_medsam_fast,litemedsam
    python benchmarks/sam_interactive.py --models runs/click_tuning/vit_cpu_clicks.pt   # after sam_click_tuning.py
    python benchmarks/sam_interactive.py --max-objects 3 --out-dir /tmp/clicks   # smoke
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from gnnseg.core import machine_info, write_json
from gnnseg.seg.sam.inference.chain import make_predictor
from gnnseg.seg.sam.inference.simulated_user import CLICKS, objects_summary
from gnnseg.seg.sam.shipped import DEFAULT_MODEL, MODEL_NAMES, load_model
from gnnseg.seg.sam.training.corpus import MODALITIES, load_corpus

RESULTS = Path(__file__).resolve().parent / "results"
BOX_MARGIN = 5
NSD_TOLERANCE_PIXELS = 2.0


def markdown(table: dict, clicks: int) -> str:
    steps = " | ".join(f"{k} clicks" if k else "box" for k in range(clicks + 1))
    lines = ["# Correction clicks (CVPR 2025 simulated user)", "",
             f"| model | modality | {steps} | DSC_AUC | NSD_AUC | final NSD | click p50 / p95 (ms) |",
             "|---|---|" + "---|" * (clicks + 1) + "---|---|---|---|"]
    for model, rows in table.items():
        for modality, row in rows.items():
            dsc = " | ".join(f"{value:.3f}" for value in row["dsc_per_step"])
            lines.append(f"| {model} | {modality} | {dsc} | {row['dsc_auc']:.3f} | {row['nsd_auc']:.3f} | "
                         f"{row['nsd_final']:.3f} | {row['click_seconds_p50'] * 1000:.0f} / "
                         f"{row['click_seconds_p95'] * 1000:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--models", default=DEFAULT_MODEL,
                        help=f"models by name, comma-separated (of {', '.join(MODEL_NAMES)})")
    parser.add_argument("--clicks", type=int, default=CLICKS)
    parser.add_argument("--max-objects", type=int, default=None, help="per modality (smoke tests)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--name", default="interactive", help="results file name (a candidate kept apart)")
    args = parser.parse_args()

    held_out = load_corpus(args.data, "val")
    if args.max_objects:
        held_out = {m: samples[: args.max_objects] for m, samples in held_out.items()}
    counts = {m: len(held_out[m]) for m in MODALITIES}
    path = args.out_dir / f"{args.name}.json"
    table: dict = {}
    earlier_runs: list[dict] = []
    if path.is_file() and not args.max_objects:   # models not measured now keep what an earlier run wrote
        earlier = json.loads(path.read_text())
        if earlier["objects"] == counts and earlier["clicks"] == args.clicks:
            table, earlier_runs = earlier["scores"], earlier["runs"]
    run = {"command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])), "machine": machine_info(),
           "torch_threads": torch.get_num_threads(), "models": []}
    for name in args.models.split(","):
        predictor = make_predictor(load_model(name))
        table[name] = {}
        for modality in MODALITIES:
            table[name][modality] = row = objects_summary(predictor, held_out[modality], margin=BOX_MARGIN,
                                                          clicks=args.clicks, tolerance=NSD_TOLERANCE_PIXELS,
                                                          desc=f"{name} {modality}")
            print(name, modality, [round(v, 3) for v in row["dsc_per_step"]], f"auc {row['dsc_auc']:.3f}",
                  flush=True)
        run["models"].append(name)
        runs = [{**r, "models": [m for m in r["models"] if m not in run["models"]]} for r in earlier_runs]
        result = {"benchmark": "interactive", "runs": [r for r in runs if r["models"]] + [run],
                  "box_margin": BOX_MARGIN, "nsd_tolerance_pixels": NSD_TOLERANCE_PIXELS, "clicks": args.clicks,
                  "objects": counts, "scores": table}
        args.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, result)                  # after every model: a long run keeps what it measured
        (args.out_dir / f"{args.name}.md").write_text(markdown(table, args.clicks))
    print(markdown(table, args.clicks))


if __name__ == "__main__":
    main()
