"""Tune the default box-centred model to take correction clicks (CPU), and save it for ``sam_interactive.py``.

The packaged ``vit_cpu`` was trained with boxes alone and answers worse with every click. This script caches its frozen
image encoder's windows of the five-modality corpus's *training* objects
(:func:`~gnnseg.seg.sam.training.click_tuning.cache_windows`) and tunes its prompt encoder and mask decoder on the
simulated user's loop (:func:`~gnnseg.seg.sam.training.click_tuning.click_tune`, settings fixed in advance, no held-out
object used to choose them). It writes the tuned checkpoint (``--out``, never overwritten) and the training log to
``click_tuning.json`` (``click_tuning_every_round.json`` with ``--score-every-round``, or ``--name``);
``sam_interactive.py --models vit_cpu,<checkpoint>`` then scores both on the held-out objects::

    python benchmarks/sam_click_tuning.py --out runs/click_tuning/vit_cpu_clicks.pt
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gnnseg.core import machine_info, write_json
from gnnseg.seg.sam.checkpoint import save_sam
from gnnseg.seg.sam.shipped import load_model
from gnnseg.seg.sam.training.click_tuning import ClickTuningConfig, cache_windows, click_tune
from gnnseg.seg.sam.training.corpus import load_corpus

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--model", default="vit_cpu", help="a model name or a box-centred checkpoint")
    parser.add_argument("--steps", type=int, default=ClickTuningConfig.steps)
    parser.add_argument("--batch-size", type=int, default=ClickTuningConfig.batch_size)
    parser.add_argument("--lr", type=float, default=ClickTuningConfig.lr)
    parser.add_argument("--score-every-round", action="store_true",
                        help="score every round of the loop (SAM's recipe), not one drawn round per step")
    parser.add_argument("--out", type=Path, required=True, help="the tuned checkpoint (never overwritten)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--name", default=None, help="results file name (without extension); default "
                        "click_tuning, or click_tuning_every_round with --score-every-round")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose another path")
    config = ClickTuningConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              score_every_round=args.score_every_round)
    model = load_model(args.model)
    train = load_corpus(args.data, "train")
    began = time.perf_counter()
    cache = cache_windows(model, train, config)
    cache_seconds = time.perf_counter() - began
    log = click_tune(model, cache, config)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_sam(model, args.out, meta={"click_tuning": log["config"], "base_model": args.model},
             half_precision=True)     # as the packaged models are stored
    losses = np.array(log["loss"])
    tenth = max(1, len(losses) // 10)

    def mean_by_round(steps: list[dict[int, float]]) -> dict[int, float]:
        rounds = sorted({k for step in steps for k in step})
        return {k: float(np.mean([step[k] for step in steps if k in step])) for k in rounds}

    first, last = mean_by_round(log["round_losses"][:tenth]), mean_by_round(log["round_losses"][-tenth:])
    by_depth = {k: {"first_tenth": first[k], "last_tenth": last.get(k)} for k in first}
    result = {"benchmark": "click_tuning", "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
              "machine": machine_info(), "torch_threads": torch.get_num_threads(), "model": args.model,
              "config": log["config"], "windows": len(cache.boxes),
              "objects": {name: min(len(s), config.max_objects_per_group) for name, s in train.items()},
              "cache_seconds": cache_seconds, "train_seconds": log["seconds"],
              "loss_first_tenth": float(losses[:tenth].mean()), "loss_last_tenth": float(losses[-tenth:].mean()),
              "loss_by_clicks": by_depth,
              "checkpoint": str(args.out)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    name = args.name or ("click_tuning_every_round" if args.score_every_round else "click_tuning")
    write_json(args.out_dir / f"{name}.json", result)
    print({k: v for k, v in result.items() if k not in ("machine", "command")})


if __name__ == "__main__":
    main()
