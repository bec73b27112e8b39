"""bfloat16 against float32 prediction on a trained model: time, agreement and accuracy on held-out sections.

Random-weight networks (``nnunet_dropin.py``) have logits that are nearly tied everywhere, the worst case for
rounding; a trained network is confident almost everywhere. This measures the opt-in ``--precision bfloat16`` of
``gnnseg seg predict`` where it matters: the ISBI 2012 model of ``unet_cv_ensemble.py`` (5 folds, trained through
``-d``; run that first with ``--work DIR`` and give the same ``--work`` here), predicting its 6 held-out sections
with all five folds and mirroring on, nnU-Net's default, once per precision, each in a fresh process, the fastest
of ``--repeats`` runs.

Reported per precision: wall time of the whole ``seg predict`` call (process start and model loading included),
membrane Dice against the truth (section mean), pixel error; and between the two, the fraction of pixels labelled
alike and the largest probability difference. Writes ``benchmarks/results/unet_precision.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from gnnseg.core import machine_info, write_json
from gnnseg.seg.io import RawDataset, read_any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_cv_ensemble import DATASET, gnnseg, held_out_scores  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PRECISIONS = ("float32", "bfloat16")


def agreement(first: dict, second: dict) -> dict:
    """Pixels labelled alike and the largest probability difference between two predictions of the same cases."""
    alike, total, largest = 0, 0, 0.0
    for a, b in zip(map(Path, first["predictions"]), map(Path, second["predictions"]), strict=True):
        labels_a, labels_b = read_any(a).array, read_any(b).array
        alike += int((labels_a == labels_b).sum())
        total += labels_a.size
        with np.load(a.with_suffix(".npz")) as pa, np.load(b.with_suffix(".npz")) as pb:
            largest = max(largest, float(np.abs(pa["probabilities"] - pb["probabilities"]).max()))
    return {"pixels_alike": alike / total, "probability_max_abs_diff": largest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="the --work folder of unet_cv_ensemble.py (trained folds)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    root = Path(args.work)
    folders = {variable: root / variable for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    model = folders["nnUNet_results"] / DATASET / "gnnsegTrainer__gnnsegPlans__2d"
    if not all((model / f"fold_{k}" / "checkpoint_final.pth").is_file() for k in range(5)):
        sys.exit(f"{model} lacks trained folds: run benchmarks/unet_cv_ensemble.py --work {root} first")
    environment = {**os.environ, **{k: str(v) for k, v in folders.items()}, "OMP_NUM_THREADS": str(args.threads)}
    dataset = RawDataset.open(folders["nnUNet_raw"] / DATASET)
    ident = DATASET.split("_")[0][len("Dataset"):]
    output = root / "precision"
    shutil.rmtree(output, ignore_errors=True)
    seconds = {precision: [] for precision in PRECISIONS}
    answers = {}
    for run in range(args.repeats):
        for precision in PRECISIONS:                     # taking turns: a busy spell does not fall on one only
            started = time.perf_counter()
            answers[precision] = gnnseg(environment, "seg", "predict", "-d", ident, "-c", "2d", "-i",
                                        str(dataset.root / "imagesTs"), "-o", str(output / f"{precision}_{run}"),
                                        "--save-probabilities", "--precision", precision)
            seconds[precision].append(time.perf_counter() - started)
    scores = {precision: {"seconds": min(seconds[precision]), "all_seconds": seconds[precision],
                          **held_out_scores(answers[precision], dataset)} for precision in PRECISIONS}
    report = {"benchmark": "unet_precision", "machine": machine_info(), "model": str(model), "folds": 5,
              "mirroring": True, "held_out_cases": sorted(dataset.case_ids("Ts")), "repeats": args.repeats,
              "precisions": scores, "agreement": agreement(answers["float32"], answers["bfloat16"]),
              "bf16_time_ratio": scores["bfloat16"]["seconds"] / scores["float32"]["seconds"],
              "bf16_minus_float32_dice": scores["bfloat16"]["dice"] - scores["float32"]["dice"]}
    write_json(RESULTS / "unet_precision.json", report)
    lines = ["# bfloat16 against float32 prediction: ISBI 2012 U-Net, 5 folds, mirroring on, 6 held-out sections", "",
             f"Fastest of {args.repeats} `seg predict` calls per precision on {report['machine']['cpu_count']} "
             "cores (process start and model loading included).", "",
             "| precision | seconds | membrane Dice | pixel error |", "|---|---|---|---|"]
    for precision, s in scores.items():
        lines.append(f"| {precision} | {s['seconds']:.2f} | {s['dice']:.4f} | {s['pixel_error']:.4f} |")
    lines += ["", f"bfloat16 / float32 time: {report['bf16_time_ratio']:.2f}; pixels labelled alike: "
              f"{report['agreement']['pixels_alike']:.5f}; largest probability difference: "
              f"{report['agreement']['probability_max_abs_diff']:.4f}."]
    (RESULTS / "unet_precision.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
