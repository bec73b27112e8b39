"""U-Mamba against the plain U-Net under the same training budget on this CPU.

- ``--dataset drive``: retinal vessels through the pipeline of ``unet_drive.py`` (same plans, preprocessing, epochs,
  iterations, seed, prediction, pixel metrics inside the field of view). Thin vessels are the long-range structure the
  U-Mamba paper expects Mamba layers to help with.
- ``--dataset kvasir``: polyps without prompts, trained on the first 160 images of the Kvasir-SEG subset in sorted
  order and scored (Dice per image, original geometry) on the other 40.

Only ``--network`` differs between the runs. Writes ``benchmarks/results/NAME.json`` and ``NAME.md``.

    python benchmarks/umamba_compare.py --epochs 40 --networks unet,umamba_bot
    python benchmarks/umamba_compare.py --dataset kvasir --source ../shared/datasets/kvasir_seg_subset \\
        --epochs 20 --name umamba_kvasir
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from gnnseg.core import machine_info, write_json
from gnnseg.seg.io import convert_kvasir
from gnnseg.seg.unet.case_preprocessing import preprocess_dataset
from gnnseg.seg.unet.fingerprint import extract_fingerprint
from gnnseg.seg.unet.planner import plan_experiment
from gnnseg.seg.unet.train import TrainConfig, train_fold
from unet_drive import run_drive

RESULTS = Path(__file__).resolve().parent / "results"


def run_kvasir(source: str, work: Path, *, epochs: int, iterations: int, memory_gb: float, base_features: int,
               network: str) -> dict:
    """Train on the first 160 polyps (sorted), Dice on the other 40 in their original geometry."""
    dataset = convert_kvasir(source, work / "raw")
    plans = plan_experiment(extract_fingerprint(dataset), memory_gb=memory_gb, device="cpu",
                            base_features=base_features)
    preprocess_dataset(dataset, plans, "2d", work / "preprocessed")
    cases = sorted(dataset.case_ids())
    # five folds of 40 in sorted order; fold 0 (the one trained) holds out the last 40, the protocol's split
    blocks = [cases[160:], *(cases[start:start + 40] for start in range(0, 160, 40))]
    splits = [{"train": [c for c in cases if c not in held], "val": held} for held in blocks]
    write_json(work / "preprocessed" / "splits_final.json", splits)
    config = TrainConfig(epochs=epochs, iterations_per_epoch=iterations, validation_iterations=5, network=network)
    summary = train_fold(work / "preprocessed", plans, "2d", 0, work / "run", config, raw_dataset=dataset,
                         show_progress=True)
    per_case = summary["validation"]["per_case"]
    return {"network": network, "dice": summary["validation"]["mean_dice"]["polyp"], "val_cases": len(per_case),
            "training": {"epochs": epochs, "iterations_per_epoch": iterations,
                         "train_seconds": summary["train_seconds"],
                         "patch_size": plans.configuration("2d").patch_size}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("drive", "kvasir"), default="drive")
    parser.add_argument("--source", default="../shared/datasets/drive")
    parser.add_argument("--networks", default="unet,umamba_bot")
    parser.add_argument("--epochs", type=int, default=40, help="40 x 50 iterations: unet_drive.py's budget")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--memory-gb", type=float, default=0.5)
    parser.add_argument("--base-features", type=int, default=16)
    parser.add_argument("--name", default="umamba", help="results file name (benchmarks/results/NAME.json)")
    args = parser.parse_args()
    rows = {}
    for network in args.networks.split(","):
        options = {"epochs": args.epochs, "iterations": args.iterations, "memory_gb": args.memory_gb,
                   "base_features": args.base_features, "network": network}
        with tempfile.TemporaryDirectory(prefix=f"{args.dataset}_{network}_") as work:
            if args.dataset == "drive":
                rows[network], _ = run_drive(args.source, Path(work), **options)
            else:
                rows[network] = run_kvasir(args.source, Path(work), **options)
        print(network, {k: v for k, v in rows[network].items() if k in ("f1", "auc", "dice")}, flush=True)
        write_json(RESULTS / f"{args.name}.json", {
            "benchmark": "umamba", "machine": machine_info(),
            "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])), args.dataset: rows})
    if args.dataset == "drive":
        header = ("| network (DRIVE, same budget) | F1 | AUC | accuracy | parameters | training (s) | "
                  "prediction (s/image) |")
        lines = [header, "|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {r['f1']:.3f} | {r['auc']:.3f} | {r['accuracy']:.3f} | "
                  f"{r['training']['parameters']:,} | {r['training']['train_seconds']:.0f} | "
                  f"{r['predict_seconds_per_image']:.2f} |" for name, r in rows.items()]
    else:
        lines = ["| network (Kvasir 160 / 40, same budget) | Dice | training (s) |", "|---|---|---|"]
        lines += [f"| {name} | {r['dice']:.3f} | {r['training']['train_seconds']:.0f} |" for name, r in rows.items()]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
