"""U-Net on ISBI 2012 EM membranes: 5-fold cross-validation over the 30 labelled sections.

The challenge's test labels are not public, so every section is predicted by the fold that did not train
on it. Reported over all 30 sections, pooled as one stack (the challenge scored its 30 test sections as
one stack):

* ``pixel_error``: the challenge's pixel error, the figure of the U-Net paper's Table 1: 1 - the best
  F-score of the cell class over the thresholds 0.0, 0.1, ..., 1.0 of the cell probability
  (:mod:`gnnseg.seg.pixel_error`, after Fiji's ``PixelError``);
* ``misclassified_fraction``: the share of pixels whose membrane / cell label (argmax) is wrong;
* ``dice``: foreground (membrane) Dice, and ``rand_error``: the adapted Rand error of the cell regions
  (connected components of non-membrane pixels, ``skimage.metrics``) at the argmax, a section mean.

Writes benchmarks/results/unet_isbi2012.json (``--name`` changes it).

U-Mamba against the U-Net at the same budget: the same command with ``--network umamba_bot --name
umamba_isbi2012``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage.metrics import adapted_rand_error

from gnnseg.core import machine_info, write_json
from gnnseg.seg.io import RawDataset, convert_isbi2012
from gnnseg.seg.metrics import dice
from gnnseg.seg.pixel_error import (
    CHALLENGE_THRESHOLDS,
    challenge_pixel_error,
    misclassified_fraction,
)
from gnnseg.seg.unet.augment import AugmentationConfig
from gnnseg.seg.unet.case_preprocessing import preprocess_dataset
from gnnseg.seg.unet.fingerprint import extract_fingerprint
from gnnseg.seg.unet.planner import plan_experiment
from gnnseg.seg.unet.predict import predict_case
from gnnseg.seg.unet.splits import fold_cases, load_or_create_splits
from gnnseg.seg.unet.train import (
    PRECISIONS,
    TrainConfig,
    load_trained_network,
    train_fold,
)

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/datasets/isbi2012_em")
    parser.add_argument("--work", default=None)
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--memory-gb", type=float, default=0.5)
    parser.add_argument("--base-features", type=int, default=16)
    parser.add_argument("--elastic", type=float, default=0.2, help="probability of U-Net-style elastic deformation")
    parser.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    parser.add_argument("--network", default="unet", help="unet, umamba_bot or umamba_enc")
    parser.add_argument("--name", default="unet_isbi2012", help="results file name (benchmarks/results/NAME.json)")
    parser.add_argument("--mirror", action="store_true",
                        help="test-time mirroring along both axes (nnU-Net predicts with it by default)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the folds trained in --work (finished folds: evaluate them; folds not "
                             "begun yet start)")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="float32",
                        help="training precision (bfloat16: autocast, about 2x faster on CPUs with AVX512-BF16)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="isbi_"))
    started = time.perf_counter()
    dataset = RawDataset.open(work / "raw") if args.resume else convert_isbi2012(args.source, work / "raw")
    plans = plan_experiment(extract_fingerprint(dataset), memory_gb=args.memory_gb, device="cpu",
                            base_features=args.base_features)
    preprocess_dataset(dataset, plans, "2d", work / "preprocessed")
    splits = load_or_create_splits(work / "preprocessed" / "splits_final.json", dataset.case_ids())
    config = TrainConfig(epochs=args.epochs, iterations_per_epoch=args.iterations, validation_iterations=5,
                         augmentation=AugmentationConfig(elastic_p=args.elastic), network=args.network,
                         optimizer=args.optimizer, precision=args.precision)
    cell_probabilities, cell_truths, membrane_predictions = [], [], []
    per_case, fold_seconds = {}, {}
    for fold in args.folds:
        run = work / f"fold_{fold}"
        has_checkpoint = (run / "checkpoint_latest.pth").is_file()
        summary = train_fold(work / "preprocessed", plans, "2d", fold, run, config,
                             resume=args.resume and has_checkpoint, show_progress=True)
        fold_seconds[fold] = summary["train_seconds"]      # all epochs, also those of a resumed run
        network, fold_plans, configuration = load_trained_network(run / "checkpoint_latest.pth")
        for case_id in fold_cases(splits, fold)[1]:
            case = dataset.load_case(case_id)
            predicted, probabilities = predict_case(network, case.stacked(), case.spacing, fold_plans,
                                                    configuration, mirror_axes=(0, 1) if args.mirror else ())
            membrane_pred, membrane_true = predicted == 1, case.label.array == 1
            cell_true = ~membrane_true
            cell_probabilities.append(probabilities[0])
            cell_truths.append(cell_true)
            membrane_predictions.append(membrane_pred)
            rand_error = adapted_rand_error(ndimage.label(cell_true)[0], ndimage.label(~membrane_pred)[0])[0]
            per_case[case_id] = {"pixel_error": challenge_pixel_error(probabilities[0], cell_true),
                                 "misclassified_fraction": misclassified_fraction(membrane_pred, membrane_true),
                                 "dice": dice(membrane_pred, membrane_true), "rand_error": float(rand_error)}
    result = {
        "benchmark": "unet_isbi2012", "network": args.network, "machine": machine_info(),
        "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
        "folds": args.folds, "cases": len(per_case),
        "pixel_error": challenge_pixel_error(np.stack(cell_probabilities), np.stack(cell_truths)),
        "pixel_error_definition": "ISBI 2012 challenge: 1 - max F-score of the cell class over the thresholds "
                                  f"{list(CHALLENGE_THRESHOLDS)}, counts pooled over the stack",
        "misclassified_fraction": misclassified_fraction(np.stack(membrane_predictions), ~np.stack(cell_truths)),
        "dice": float(np.mean([c["dice"] for c in per_case.values()])),
        "rand_error": float(np.mean([c["rand_error"] for c in per_case.values()])),
        "target": {"pixel_error": 0.075},
        "reference": "U-Net paper (Ronneberger et al. 2015, Table 1): pixel error 0.0611, Rand error 0.0382 on "
                     "the hidden test set",
        "per_case": per_case,
        "training": {"epochs": args.epochs, "iterations_per_epoch": args.iterations, "fold_seconds": fold_seconds,
                     "optimizer": config.optimizer, "lr": config.lr, "precision": config.precision,
                     "patch_size": plans.configuration("2d").patch_size,
                     "batch_size": plans.configuration("2d").batch_size,
                     "features_per_stage": plans.configuration("2d").network.features_per_stage,
                     "elastic_p": args.elastic},
        "test_time_mirroring": args.mirror,
        "total_seconds": time.perf_counter() - started,
    }
    write_json(RESULTS / f"{args.name}.json", result)
    print({k: result[k] for k in ("pixel_error", "misclassified_fraction", "dice", "rand_error", "cases")},
          result["training"])


if __name__ == "__main__":
    main()
