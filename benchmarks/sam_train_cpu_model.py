"""Train the box-prompted model that ships with gnnseg (``vit_cpu``) from scratch on five modalities.

No pretrained SAM or MedSAM weights can be downloaded here, so the model is trained from random weights on the
public data in ``../shared/datasets`` (splits in :mod:`gnnseg.seg.sam.training.corpus`), with MedSAM's recipe adapted to
a small model (:mod:`gnnseg.seg.sam.training.finetune`). Modalities are drawn with fixed shares rather than in
proportion to their object counts (EM has 2,465 cells, DRIVE 26 vessel trees). The result is written in half precision
to ``src/gnnseg/seg/sam/weights/medsam_cpu.pt`` with ``--install``.

    python benchmarks/sam_train_cpu_model.py --out runs/sam_cpu --install

``--init NAME`` continues from a model's weights instead of random ones (a longer schedule without starting over);
``--name`` names the results file, so such a run keeps the from-scratch record.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gnnseg.core import machine_info, write_json
from gnnseg.seg.sam.checkpoint import load_sam, save_sam
from gnnseg.seg.sam.inference.box_prompted import box_dice_scores
from gnnseg.seg.sam.modeling.sam import build_sam
from gnnseg.seg.sam.shipped import load_model
from gnnseg.seg.sam.training.corpus import MODALITIES, SHARES, load_corpus, pooled
from gnnseg.seg.sam.training.finetune import FinetuneConfig, finetune

RESULTS = Path(__file__).resolve().parent / "results"
SHIPPED = Path(__file__).resolve().parents[1] / "src" / "gnnseg" / "seg" / "sam" / "weights" / "medsam_cpu.pt"
VALIDATION_PER_MODALITY = 80
"""Held-out objects per modality scored after every round (all of them at the end)."""


def validation_subset(val_sets: dict[str, list]) -> list:
    """Up to ``VALIDATION_PER_MODALITY`` held-out objects of each modality (a fixed draw), scored after every round."""
    rng = np.random.default_rng(0)
    val = []
    for modality in MODALITIES:
        samples = val_sets[modality]
        chosen = rng.permutation(len(samples))[:VALIDATION_PER_MODALITY]
        val += [samples[i] for i in sorted(chosen)]
    return val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--out", default="runs/sam_cpu")
    parser.add_argument("--model", default="vit_cpu")
    parser.add_argument("--rounds", type=int, default=36)
    parser.add_argument("--iterations", type=int, default=150, help="iterations per round")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--warmup", type=int, default=300, help="warm-up iterations")
    parser.add_argument("--init", default=None,
                        help="start from this model's weights (a name such as vit_cpu, or a checkpoint)")
    parser.add_argument("--name", default="sam_train_cpu_model", help="results file name (without extension)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--install", action="store_true", help=f"copy the trained model to {SHIPPED}")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    train_sets = load_corpus(args.data, "train")
    val_sets = load_corpus(args.data, "val")
    train, _, weights = pooled(train_sets)
    val = validation_subset(val_sets)

    config = FinetuneConfig(rounds=args.rounds, iterations_per_round=args.iterations, batch_size=args.batch_size,
                            lr=args.lr, warmup_iterations=args.warmup)
    model = build_sam(args.model) if args.init is None else load_model(args.init)
    torch.manual_seed(config.seed)
    meta = {"trained_on": {m: len(train_sets[m]) for m in MODALITIES}, "shares": SHARES,
            "data": "gnnseg.seg.sam.training.corpus splits of ../shared/datasets",
            "from_scratch": args.init is None, **({"initialised_from": args.init} if args.init else {})}
    before = None if args.init is None else float(box_dice_scores(model, val, config.val_box_margin).mean())
    started = time.perf_counter()
    finetune(model, train, val, config, args.out, weights=weights, resume=args.resume, meta=meta, show_progress=True)
    train_seconds = time.perf_counter() - started
    log = json.loads((Path(args.out) / "log.json").read_text())

    model, _ = load_sam(Path(args.out) / "model.pt")
    per_modality = {m: float(box_dice_scores(model, val_sets[m], margin=5).mean()) for m in MODALITIES}
    result = {"benchmark": args.name, "machine": machine_info(),
              "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
              "model": model.config.to_dict(), "parameters": sum(p.numel() for p in model.parameters()),
              "finetune": config.__dict__, "initialised_from": args.init, "train_objects": meta["trained_on"],
              "val_objects": {m: len(val_sets[m]) for m in MODALITIES}, "train_seconds": train_seconds,
              "val_dice_margin5": per_modality,
              "val_subset": {"objects_per_modality": VALIDATION_PER_MODALITY, "dice_before": before,
                             "dice_per_round": log["val_dice"], "train_loss_per_round": log["train_loss"]}}
    write_json(RESULTS / f"{args.name}.json", result)
    print(result["val_dice_margin5"])
    if args.install:
        SHIPPED.parent.mkdir(parents=True, exist_ok=True)
        half = Path(args.out) / "model_half.pt"
        save_sam(model, half, meta={**meta, "val_dice_margin5": per_modality,
                                    "train_seconds": round(train_seconds)}, half_precision=True)
        shutil.copyfile(half, SHIPPED)
        print(f"installed {SHIPPED} ({SHIPPED.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
