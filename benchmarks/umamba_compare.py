"""U-Mamba against the plain U-Net under the same training budget on this CPU (DRIVE retinal vessels).

Each network goes through the same pipeline as ``unet_drive.py`` (same plans, preprocessing, epochs, iterations,
seed, prediction and pixel metrics inside the field of view); only ``--network`` differs. Thin vessels are the
long-range structure the U-Mamba paper expects Mamba layers to help with. Writes
``benchmarks/results/umamba.json`` and ``umamba.md``.

    python benchmarks/umamba_compare.py --epochs 40 --networks unet,umamba_bot
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from unet_drive import run_drive

from gnnseg.core import machine_info, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        with tempfile.TemporaryDirectory(prefix=f"drive_{network}_") as work:
            rows[network], _ = run_drive(args.source, Path(work), epochs=args.epochs, iterations=args.iterations,
                                         memory_gb=args.memory_gb, base_features=args.base_features, network=network)
        print(network, {k: round(rows[network][k], 4) for k in ("f1", "auc", "accuracy")}, flush=True)
        write_json(RESULTS / f"{args.name}.json", {
            "benchmark": "umamba", "machine": machine_info(),
            "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])), "drive": rows})
    lines = ["| network (DRIVE, same budget) | F1 | AUC | accuracy | parameters | training (s) | prediction (s/image) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['f1']:.3f} | {r['auc']:.3f} | {r['accuracy']:.3f} | {r['training']['parameters']:,} | "
              f"{r['training']['train_seconds']:.0f} | {r['predict_seconds_per_image']:.2f} |" for name, r in rows.items()]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
