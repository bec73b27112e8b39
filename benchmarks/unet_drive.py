"""U-Net on DRIVE retinal vessels: train on the 20 training images, score the 20 test images in the FOV.

Pipeline: convert -> fingerprint -> plans (CPU memory budget) -> preprocess -> train (fold "all", a fixed
budget of epochs x iterations) -> sliding-window prediction -> F1 (= Dice), AUC and accuracy over the
pixels inside each image's field-of-view mask, pooled over the test set (as Alom et al. 2018 report).
Writes benchmarks/results/unet_drive.json.
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
from gnnseg.core.ranking import roc_auc
from gnnseg.seg.io import RawDataset, convert_drive, read_image_2d
from gnnseg.seg.unet.case_preprocessing import preprocess_dataset
from gnnseg.seg.unet.fingerprint import extract_fingerprint
from gnnseg.seg.unet.planner import plan_experiment
from gnnseg.seg.unet.predict import predict_case
from gnnseg.seg.unet.train import TrainConfig, load_trained_network, train_fold

RESULTS = Path(__file__).resolve().parent / "results"


def save_figure(dataset, network, plans, configuration, path: Path, mirror: bool) -> Path:
    """Image, manual vessels and our prediction for the first test image, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    case_id = dataset.case_ids("Ts")[0]
    case = dataset.load_case(case_id, "Ts")
    _, probabilities = predict_case(network, case.stacked(), case.spacing, plans, configuration,
                                    mirror_axes=(0, 1) if mirror else ())
    rgb = np.stack([c.array for c in case.channels], axis=-1)
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    for axis, (title, picture) in zip(axes, [(f"{case_id}", rgb), ("manual vessels", case.label.array),
                                             ("U-Net vessel probability", probabilities[1])]):
        axis.imshow(picture, cmap=None if picture.ndim == 3 else "gray")
        axis.set_title(title)
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def run_drive(source: str, work: Path, *, epochs: int, iterations: int, memory_gb: float, base_features: int,
              network: str = "unet", mirror: bool = False, resume: bool = False) -> tuple[dict, tuple]:
    """Convert, plan, preprocess, train and score DRIVE; returns the figures and what the picture needs.

    ``mirror``: predict with test-time mirroring (nnU-Net's default). ``resume``: continue (or, when finished, only
    score) the run already in ``work``."""
    started = time.perf_counter()
    dataset = RawDataset.open(work / "raw") if resume else convert_drive(source, work / "raw")
    plans = plan_experiment(extract_fingerprint(dataset), memory_gb=memory_gb, device="cpu",
                            base_features=base_features)
    preprocess_dataset(dataset, plans, "2d", work / "preprocessed")
    config = TrainConfig(epochs=epochs, iterations_per_epoch=iterations, validation_iterations=5, network=network)
    summary = train_fold(work / "preprocessed", plans, "2d", "all", work / "run", config, resume=resume,
                         show_progress=True)

    trained, plans, configuration = load_trained_network(work / "run" / "checkpoint_latest.pth")
    probabilities, truths, per_image = [], [], {}
    predict_started = time.perf_counter()
    for case_id in dataset.case_ids("Ts"):
        case = dataset.load_case(case_id, "Ts")
        labels, probs = predict_case(trained, case.stacked(), case.spacing, plans, configuration,
                                     mirror_axes=(0, 1) if mirror else ())
        fov = read_image_2d(dataset.root / "fovTs" / f"{case_id}.png").array > 0
        truth = case.label.array.astype(bool)
        probabilities.append(probs[1][fov])
        truths.append(truth[fov])
        tp = (labels.astype(bool) & truth)[fov].sum()
        per_image[case_id] = float(2 * tp / (labels.astype(bool)[fov].sum() + truth[fov].sum()))
    predict_seconds = (time.perf_counter() - predict_started) / len(per_image)
    scores, truth = np.concatenate(probabilities), np.concatenate(truths)
    predicted = scores >= 0.5
    tp = float((predicted & truth).sum())
    result = {
        "network": network,
        "f1": 2 * tp / (predicted.sum() + truth.sum()), "auc": roc_auc(scores, truth),
        "accuracy": float((predicted == truth).mean()),
        "sensitivity": tp / truth.sum(), "specificity": float((~predicted & ~truth).sum() / (~truth).sum()),
        "f1_per_image": per_image,
        "training": {"epochs": epochs, "iterations_per_epoch": iterations, "train_seconds": summary["train_seconds"],
                     "patch_size": plans.configuration("2d").patch_size,
                     "batch_size": plans.configuration("2d").batch_size,
                     "features_per_stage": plans.configuration("2d").network.features_per_stage,
                     "parameters": sum(p.numel() for p in trained.parameters()),
                     "final_pseudo_dice": summary["final_pseudo_dice"]},
        "test_time_mirroring": mirror, "predict_seconds_per_image": predict_seconds,
        "total_seconds": time.perf_counter() - started,
    }
    return result, (dataset, trained, plans, configuration)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="../shared/datasets/drive")
    parser.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--memory-gb", type=float, default=0.5)
    parser.add_argument("--base-features", type=int, default=16)
    parser.add_argument("--mirror", action="store_true",
                        help="test-time mirroring along both axes (nnU-Net predicts with it by default)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run trained in --work (finished: only score it)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="drive_"))
    figures, (dataset, network, plans, configuration) = run_drive(
        args.source, work, epochs=args.epochs, iterations=args.iterations, memory_gb=args.memory_gb,
        base_features=args.base_features, mirror=args.mirror, resume=args.resume)
    result = {"benchmark": "unet_drive", "machine": machine_info(),
              "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])), **figures,
              "targets": {"f1": 0.80, "auc": 0.97},
              "reference": "U-Net as reported by Alom et al. 2018 (R2U-Net paper, Table 2): F1 0.8142, AUC 0.9755, "
                           "accuracy 0.9531"}
    write_json(RESULTS / "unet_drive.json", result)
    save_figure(dataset, network, plans, configuration, RESULTS / "unet_drive.png", args.mirror)
    print({k: result[k] for k in ("f1", "auc", "accuracy", "sensitivity", "specificity")}, result["training"])


if __name__ == "__main__":
    main()
