"""How sure are the default's adoption decisions? Paired bootstrap intervals of two models' five-modality mean.

The default is replaced when a candidate's mean held-out DSC over the five modalities is higher than the default's
(``sam_more_polyps.py``). That mean comes from one training run, scored on 1,160 objects, six of them fundus.
This benchmark asks how much of a difference the objects' sampling alone could make: both models answer every
held-out object (tight box + 5 px, box alone), and :func:`~gnnseg.core.paired_bootstrap.paired_bootstrap` resamples
each modality's objects with replacement, the same draw for both models, 2,000 times. An interval that holds zero
means the objects cannot tell the two apart. Two runs of one recipe with other seeds (``sam_more_polyps.py --seed``)
show the other source of variation, the training run itself.

Each ``--pair BASE CANDIDATE LABEL`` names two models (packaged names or checkpoint paths). Writes
``results/sam_paired_bootstrap.{json,md}``::

    python benchmarks/sam_paired_bootstrap.py \\
        --pair vit_cpu vit_cpu_clicks "the default against vit_cpu, the default before it" \\
        --pair vit_cpu_clicks runs/box_3d/model_half.pt "3D-box prompts, seed 0, against the default" \\
        --pair vit_cpu_clicks runs/box_3d_seed1/model_half.pt "3D-box prompts, seed 1, against the default" \\
        --pair runs/box_3d/model_half.pt runs/box_3d_seed1/model_half.pt "seed 1 against seed 0 of the same recipe"

The labels are the ones docs/benchmarks.md looks the comparisons up by.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from gnnseg.core import machine_info, write_json
from gnnseg.core.paired_bootstrap import paired_bootstrap
from gnnseg.seg.sam.inference.box_prompted import box_dice_scores
from gnnseg.seg.sam.shipped import load_model
from gnnseg.seg.sam.training.corpus import MODALITIES, load_corpus

RESULTS = Path(__file__).resolve().parent / "results"
MARGIN = 5
RESAMPLES = 2000
CONFIDENCE = 0.95


def markdown(result: dict) -> str:
    lines = ["# How sure a difference between two models is", "",
             f"Held-out objects, tight box + {result['box_margin']} px, box alone. *Difference*: the candidate's mean "
             "DSC over the five modalities minus the base's, in points; the interval resamples each modality's "
             f"objects ({result['resamples']:,} paired resamples, {result['confidence']:.0%}). Per modality: the "
             "candidate's mean minus the base's.", "",
             "| comparison | base | candidate | difference | interval | " + " | ".join(MODALITIES) + " |",
             "|---|---|---|---|---|" + "---|" * len(MODALITIES)]
    for row in result["comparisons"]:
        lines.append(f"| {row['label']} | `{row['base']}` | `{row['candidate']}` | {100 * row['difference']:+.2f} | "
                     f"{100 * row['low']:+.2f} to {100 * row['high']:+.2f} | "
                     + " | ".join(f"{100 * row['per_modality'][m]:+.2f}" for m in MODALITIES) + " |")
    objects = ", ".join(f"{m} {n}" for m, n in result["objects"].items())
    return "\n".join([*lines, "", f"Objects: {objects}."]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--pair", nargs=3, action="append", required=True, metavar=("BASE", "CANDIDATE", "LABEL"),
                        help="two models (names or checkpoint paths) and what the comparison is")
    parser.add_argument("--name", default="sam_paired_bootstrap", help="results file name (without extension)")
    args = parser.parse_args()
    torch.set_num_threads(2)

    held_out = load_corpus(args.data, "val")
    scores: dict[str, dict[str, np.ndarray]] = {}
    for model in dict.fromkeys(name for base, candidate, _ in args.pair for name in (base, candidate)):
        loaded = load_model(model)
        scores[model] = {m: box_dice_scores(loaded, held_out[m], MARGIN) for m in MODALITIES}
        print(model, {m: round(float(s.mean()), 3) for m, s in scores[model].items()}, flush=True)
    comparisons = []
    for base, candidate, label in args.pair:
        found = paired_bootstrap(scores[base], scores[candidate], resamples=RESAMPLES,
                                 confidence=CONFIDENCE)
        comparisons.append({"label": label, "base": base, "candidate": candidate,
                            "base_mean": float(np.mean([scores[base][m].mean() for m in MODALITIES])),
                            "candidate_mean": float(np.mean([scores[candidate][m].mean() for m in MODALITIES])),
                            "difference": found.difference, "low": found.low, "high": found.high,
                            "per_modality": found.per_stratum})
    result = {"benchmark": args.name, "machine": machine_info(),
              "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])), "box_margin": MARGIN,
              "resamples": RESAMPLES, "confidence": CONFIDENCE,
              "objects": {m: len(held_out[m]) for m in MODALITIES},
              "mean_dsc": {model: {m: float(s.mean()) for m, s in per.items()} for model, per in scores.items()},
              "comparisons": comparisons}
    write_json(RESULTS / f"{args.name}.json", result)
    (RESULTS / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
