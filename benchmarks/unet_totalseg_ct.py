"""3D U-Net on CT: train on one TotalSegmentator example volume, segment an independent DICOM series.

Training data: ``example_ct_sm.nii.gz`` (3 mm, 122 x 101 x 30, RAS) with five large organs from its label map
(liver, spleen, right and left kidney, stomach). Test: the 20-slice CT DICOM series (LAS), read with gnnseg's
DICOM reader, predicted in the training volume's axis order, brought onto the grid of its label map
(``example_seg_dicom.nii.gz``) and scored per organ.
The label maps are TotalSegmentator's outputs (silver standard). Writes
benchmarks/results/unet_totalseg_ct.json (``--name``).
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

from gnnseg.core import machine_info, write_json
from gnnseg.seg.io import (
    MedicalImage,
    RawDataset,
    read_dicom_series,
    read_nifti,
    reorient_like,
    write_raw_dataset,
)
from gnnseg.seg.metrics import dice
from gnnseg.seg.unet.augment import AugmentationConfig
from gnnseg.seg.unet.case_preprocessing import preprocess_dataset
from gnnseg.seg.unet.fingerprint import extract_fingerprint
from gnnseg.seg.unet.pipeline import predict_image
from gnnseg.seg.unet.planner import plan_experiment
from gnnseg.seg.unet.postprocess import keep_largest_component
from gnnseg.seg.unet.train import (
    PRECISIONS,
    TrainConfig,
    load_trained_network,
    train_fold,
)

RESULTS = Path(__file__).resolve().parent / "results"
ORGANS = {"liver": 5, "spleen": 1, "kidney_right": 2, "kidney_left": 3, "stomach": 6}  # TotalSegmentator ids


def remap(labels: np.ndarray) -> np.ndarray:
    out = np.zeros(labels.shape, np.uint8)
    for new, old in enumerate(ORGANS.values(), start=1):
        out[labels == old] = new
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/datasets/totalsegmentator_examples")
    parser.add_argument("--work", default=None)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--memory-gb", type=float, default=1.0)
    parser.add_argument("--base-features", type=int, default=16)
    parser.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    parser.add_argument("--lr", type=float, default=None, help="default: 0.01 for SGD, 1e-3 for AdamW")
    parser.add_argument("--intensity-shift", type=float, default=0.0, metavar="P",
                        help="probability of an additive intensity shift in [-1, 1] (normalised units) per patch")
    parser.add_argument("--label-shift", type=float, default=0.0, metavar="P",
                        help="probability of a shift in [-1, 1] drawn for each organ of a patch on its own")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --work (a finished run: evaluate it)")
    parser.add_argument("--precision", choices=list(PRECISIONS), default="float32",
                        help="training precision (bfloat16: autocast, about 2x faster on CPUs with AVX512-BF16)")
    parser.add_argument("--name", default="unet_totalseg_ct", help="results file name (benchmarks/results/NAME.json)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    source, work = Path(args.source), Path(args.work or tempfile.mkdtemp(prefix="totalseg_"))
    started = time.perf_counter()
    ct, labels = read_nifti(source / "example_ct_sm.nii.gz"), read_nifti(source / "example_seg.nii.gz")
    dataset = RawDataset.open(work / "raw") if args.resume else write_raw_dataset(
        work / "raw", channel_names=["CT"], labels={"background": 0, **{n: k for k, n in enumerate(ORGANS, 1)}},
        file_ending=".nii.gz",
        training=[("ct_sm", [ct], MedicalImage(remap(labels.array), labels.spacing, labels.affine))])
    plans = plan_experiment(extract_fingerprint(dataset), memory_gb=args.memory_gb, device="cpu",
                            base_features=args.base_features)
    preprocess_dataset(dataset, plans, "3d_fullres", work / "preprocessed")
    # No mirroring, as TotalSegmentator trains its nnU-Nets (trainer nnUNetTrainer_4000epochs_NoMirroring): the
    # spleen sits where the mirrored liver would, and a network trained on flipped volumes labels both liver.
    # The training volume is unenhanced (liver ~46 HU), the series contrast-enhanced (liver ~93 HU, spleen ~80):
    # --intensity-shift lets the one training volume show organs brighter and darker than they are.
    config = TrainConfig(epochs=args.epochs, iterations_per_epoch=args.iterations, validation_iterations=4,
                         optimizer=args.optimizer, lr=args.lr, precision=args.precision,
                         augmentation=AugmentationConfig(mirror_axes=(), shift_p=args.intensity_shift,
                                                         label_shift_p=args.label_shift))
    summary = train_fold(work / "preprocessed", plans, "3d_fullres", "all", work / "run", config,
                         resume=args.resume, show_progress=True)

    network, _, configuration = load_trained_network(work / "run" / "checkpoint_latest.pth")   # with this run's plans
    truth = read_nifti(source / "example_seg_dicom.nii.gz")
    # The series is stored LAS, the training volume RAS: predict_image hands the network the series in the
    # training axis order (plans.axis_codes) and returns the labels on the series' own grid.
    series = read_dicom_series(source / "example_ct_dicom")
    predict_started = time.perf_counter()
    predicted = predict_image(network, [series], plans, configuration)
    predict_seconds = time.perf_counter() - predict_started
    predicted = reorient_like(predicted, truth).array
    truth_remapped = remap(truth.array)
    # Every organ here is one connected structure: keeping each label's largest component (nnU-Net's
    # post-processing, decided by nnU-Net on cross-validation, which one training volume cannot give) drops the
    # islands a network puts elsewhere, such as a spleen called liver. Reported beside the raw network's labels.
    kept = keep_largest_component(predicted, range(1, len(ORGANS) + 1))
    present = [(k, name) for k, name in enumerate(ORGANS, start=1) if (truth_remapped == k).any()]
    scores = {name: dice(predicted == k, truth_remapped == k) for k, name in present}
    kept_scores = {name: dice(kept == k, truth_remapped == k) for k, name in present}
    result = {
        "benchmark": "unet_totalseg_ct", "machine": machine_info(),
        "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
        "dice": scores, "dice_keep_largest_component": kept_scores, "target": {"liver": 0.80},
        "organs_absent_from_the_series": [n for k, n in enumerate(ORGANS, 1) if not (truth_remapped == k).any()],
        "training": {"epochs": args.epochs, "iterations_per_epoch": args.iterations, "optimizer": config.optimizer,
                     "lr": config.lr, "precision": config.precision, "mirroring": False,
                     "intensity_shift_p": args.intensity_shift, "label_shift_p": args.label_shift,
                     "train_seconds": summary["train_seconds"],
                     "patch_size": plans.configuration(configuration).patch_size,
                     "spacing": plans.configuration(configuration).spacing,
                     "batch_size": plans.configuration(configuration).batch_size},
        "predict_seconds": predict_seconds, "total_seconds": time.perf_counter() - started,
    }
    write_json(RESULTS / f"{args.name}.json", result)
    print(scores, kept_scores, result["training"])


if __name__ == "__main__":
    main()
