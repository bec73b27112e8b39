"""Five folds, model selection and the 5-fold ensemble on ISBI 2012, run as an nnU-Net user runs them.

The 30 labelled ISBI 2012 sections are split once: every fifth (``isbi_004``, ``isbi_009``, ..., ``isbi_029``, spread
over the serial-section stack) is held out as ``imagesTs`` / ``labelsTs`` and never used to train or to choose
anything; the other 24 are ``Dataset120_ISBIHoldout`` in a fresh ``nnUNet_raw``. Then, through the command line with
the dataset ID and nnU-Net's environment variables, as the docs show:

1. ``gnnseg seg plan -d 120``, ``seg preprocess -d 120 -c 2d``;
2. ``gnnseg seg train -d 120 -c 2d -f K`` for K = 0..4 (nnU-Net's results layout, validation predictions kept);
3. ``gnnseg seg find-best-configuration -d 120 -c 2d``: the cross-validation Dice pooled over the five folds and the
   keep-the-largest-component post-processing, decided on the folds' validation predictions;
4. ``gnnseg seg predict -d 120 -c 2d`` on the held-out sections: fold 0 alone, the five folds ensembled, and the
   ensemble with the selected post-processing (``--postprocessing``); mirroring on, nnU-Net's default.

Reported: the cross-validation Dice before and after the post-processing, and on the held-out sections per variant the
membrane Dice (section mean), the challenge's pixel error and the misclassified fraction
(:mod:`gnnseg.seg.pixel_error`), and the training time per fold. Writes
``benchmarks/results/unet_cv_ensemble_<epochs>_epochs.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gnnseg.core import machine_info, write_json
from gnnseg.seg.io import RawDataset, convert_isbi2012, read_any, write_raw_dataset
from gnnseg.seg.metrics import dice
from gnnseg.seg.pixel_error import challenge_pixel_error, misclassified_fraction

RESULTS = Path(__file__).resolve().parent / "results"
DATASET = "Dataset120_ISBIHoldout"
FOLDS = (0, 1, 2, 3, 4)


def gnnseg(environment: dict[str, str], *arguments: str) -> dict[str, Any]:
    """``gnnseg ARGUMENTS --json`` in a fresh process; its last-line JSON (its stderr shown on failure)."""
    process = subprocess.run([sys.executable, "-m", "gnnseg.cli", *arguments, "--json"], capture_output=True,
                             text=True, env=environment, check=False)
    if process.returncode != 0:
        raise RuntimeError(f"gnnseg {' '.join(arguments)} failed:\n{process.stderr[-3000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def holdout_dataset(source: Path, raw_root: Path, every: int) -> RawDataset:
    """The labelled sections but every ``every``-th as training cases, those as labelled test cases."""
    with tempfile.TemporaryDirectory() as scratch:
        full = convert_isbi2012(source, Path(scratch) / "isbi")
        cases = [full.load_case(case_id) for case_id in full.case_ids()]
        held = {case.case_id for index, case in enumerate(cases) if index % every == every - 1}
        return write_raw_dataset(raw_root / DATASET, channel_names=["EM"], labels={"background": 0, "membrane": 1},
                                 file_ending=".png", name=DATASET,
                                 training=[(c.case_id, c.channels, c.label) for c in cases if c.case_id not in held],
                                 test=[(c.case_id, c.channels, c.label) for c in cases if c.case_id in held])


def held_out_scores(prediction: dict[str, Any], dataset: RawDataset) -> dict[str, Any]:
    """Membrane Dice per section (and its mean), pixel error and misclassified fraction pooled over the sections."""
    per_case, cell_probabilities, cell_truths, predicted = {}, [], [], []
    for path in map(Path, prediction["predictions"]):
        truth = read_any(dataset.root / "labelsTs" / path.name).array == 1
        labels = read_any(path).array == 1
        with np.load(path.with_suffix(".npz")) as stored:
            cell_probabilities.append(stored["probabilities"][0])
        cell_truths.append(~truth)
        predicted.append(labels)
        per_case[path.stem] = dice(labels, truth)
    return {"dice": float(np.mean(list(per_case.values()))), "dice_per_case": per_case,
            "pixel_error": challenge_pixel_error(np.stack(cell_probabilities), np.stack(cell_truths)),
            "misclassified_fraction": misclassified_fraction(np.stack(predicted), ~np.stack(cell_truths))}


def markdown(report: dict[str, Any]) -> str:
    cv, held = report["cross_validation"], report["held_out"]
    rule = cv["postprocessing_steps"] or "none"
    training = report["training"]
    lines = [f"# U-Net on ISBI 2012: 5-fold cross-validation, selection and the ensemble ({training['epochs']} "
             f"epochs x {training['iterations']} iterations per fold)", "",
             f"24 sections trained in 5 folds; 6 held out (every fifth), never used to train or choose. Training "
             f"{training['minutes_per_fold']:.1f} min per fold on {report['machine']['cpu_count']} cores.",
             "", f"Cross-validation Dice (pooled over the folds): {cv['dice_before_postprocessing']:.4f}; "
             f"post-processing selected: {rule}; after it: {cv['dice_after_postprocessing']:.4f}.", "",
             "| held-out sections | membrane Dice | pixel error | misclassified |", "|---|---|---|---|"]
    for name, scores in held.items():
        lines.append(f"| {name.replace('_', ' ')} | {scores['dice']:.4f} | {scores['pixel_error']:.4f} | "
                     f"{scores['misclassified_fraction']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/datasets/isbi2012_em")
    parser.add_argument("--work", help="the nnUNet_raw / _preprocessed / _results root (default: a new temporary one)")
    parser.add_argument("--every", type=int, default=5, help="hold out every N-th labelled section (default 5)")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", help="the results files' name (default: unet_cv_ensemble_<epochs>_epochs)")
    args = parser.parse_args()
    source = Path(args.source)
    if not (source / "train").is_dir():
        sys.exit(f"ISBI 2012 not found at {source} (../shared/datasets/isbi2012_em): nothing to measure")
    root = Path(args.work or tempfile.mkdtemp(prefix="cv_ensemble_"))
    folders = {variable: root / variable for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, **{k: str(v) for k, v in folders.items()}, "OMP_NUM_THREADS": str(args.threads)}
    began = time.perf_counter()
    dataset = (RawDataset.open(folders["nnUNet_raw"] / DATASET) if (folders["nnUNet_raw"] / DATASET).is_dir()
               else holdout_dataset(source, folders["nnUNet_raw"], args.every))
    ident = DATASET.split("_")[0][len("Dataset"):]
    if not (folders["nnUNet_preprocessed"] / DATASET / "plans.json").is_file():
        gnnseg(environment, "seg", "plan", "-d", ident, "--device", "cpu", "--memory-gb", "0.5", "--base-features",
               "16")
        gnnseg(environment, "seg", "preprocess", "-d", ident, "-c", "2d")
    minutes = {}
    model = folders["nnUNet_results"] / DATASET / "gnnsegTrainer__gnnsegPlans__2d"
    for fold in FOLDS:
        if (model / f"fold_{fold}" / "checkpoint_final.pth").is_file():
            continue                                                 # trained by an earlier call with --work
        started = time.perf_counter()
        gnnseg(environment, "seg", "train", "-d", ident, "-c", "2d", "-f", str(fold), "--epochs", str(args.epochs),
               "--iterations", str(args.iterations), "--optimizer", "adamw", "--elastic", "0.2")
        minutes[fold] = (time.perf_counter() - started) / 60
    selection = gnnseg(environment, "seg", "find-best-configuration", "-d", ident, "-c", "2d")
    best = selection["best_model_or_ensemble"]
    images = dataset.root / "imagesTs"
    predictions = root / "predictions"
    variants = {"fold_0_alone": ["-f", "0"], "five_fold_ensemble": [],
                "five_fold_ensemble_with_postprocessing": ["--postprocessing", best["postprocessing_file"]]}
    held_out = {}
    for name, options in variants.items():
        answer = gnnseg(environment, "seg", "predict", "-d", ident, "-c", "2d", "-i", str(images), "-o",
                        str(predictions / name), "--save-probabilities", *options)
        held_out[name] = held_out_scores(answer, dataset)
    report = {
        "benchmark": "unet_cv_ensemble", "machine": machine_info(),
        "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
        "training": {"epochs": args.epochs, "iterations": args.iterations, "optimizer": "adamw", "elastic_p": 0.2,
                     "minutes_per_fold": float(np.mean(list(minutes.values()))) if minutes else float("nan"),
                     "minutes": minutes},
        "held_out_cases": sorted(dataset.case_ids("Ts")), "training_cases": len(dataset.case_ids()),
        "cross_validation": {"dice_before_postprocessing": best["result_on_crossval_pre_pp"],
                             "dice_after_postprocessing": best["result_on_crossval_post_pp"],
                             "postprocessing_steps": best["postprocessing_steps"]},
        "held_out": held_out,
        "ensemble_minus_single_fold_dice": held_out["five_fold_ensemble"]["dice"] - held_out["fold_0_alone"]["dice"],
        "seconds": time.perf_counter() - began,
    }
    name = args.name or f"unet_cv_ensemble_{args.epochs}_epochs"
    write_json(RESULTS / f"{name}.json", report)
    text = markdown(report)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
