"""The box path in float32 and in bfloat16: what a bfloat16 mask decoder costs in accuracy and saves in time.

The packaged Lite MedSAM segments the 40 held-out Kvasir-SEG images (boxes from the masks + 5 px, as in
``sam_box_prompt.py``) twice in one run: with its mask decoder in float32 and in bfloat16 (image encoder float32
both times). Recorded: Dice of each, the share of pixels on which the two masks agree, and the prompt encoder +
mask decoder time for one box on a cached embedding (median of ``--repeats``, the two dtypes interleaved so that
drifts in machine load hit both). Writes benchmarks/results/sam_decoder_precision.json.

    python benchmarks/sam_decoder_precision.py
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gnnseg.core import machine_info, write_json
from gnnseg.seg.metrics import dice
from gnnseg.seg.sam.inference.box_prompted import box_prompted_masks
from gnnseg.seg.sam.shipped import load_shipped_model
from gnnseg.seg.sam.training.corpus import kvasir

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--model", default="lite_medsam")
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    samples = kvasir(Path(args.data), "val")
    models = {"float32": load_shipped_model(args.model)}
    models["bfloat16"] = copy.deepcopy(models["float32"])
    models["bfloat16"].mask_decoder.to(torch.bfloat16)
    masks = {name: box_prompted_masks(model, samples, margin=5) for name, model in models.items()}
    scores = {name: [dice(mask, sample.mask) for mask, sample in zip(predicted, samples, strict=True)]
              for name, predicted in masks.items()}
    agreement = np.mean([(a == b).mean() for a, b in zip(masks["float32"], masks["bfloat16"], strict=True)])

    config = models["float32"].config
    embedding = torch.randn(1, config.prompt_dim, config.embedding_size, config.embedding_size)
    box = torch.tensor([[30.0, 40.0, 150.0, 170.0]])
    seconds: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for name, model in models.items():
                cached = embedding.to(model.decoder_dtype)
                began = time.perf_counter()
                model.decode(cached, boxes=box)
                seconds[name].append(time.perf_counter() - began)
    decode_ms = {name: float(np.median(values[5:]) * 1000) for name, values in seconds.items()}
    result = {
        "benchmark": "sam_decoder_precision", "machine": machine_info(),
        "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])), "model": args.model,
        "objects": len(samples), "dice_mean": {name: float(np.mean(s)) for name, s in scores.items()},
        "dice_min": {name: float(np.min(s)) for name, s in scores.items()},
        "pixel_agreement": float(agreement),
        "decode_ms_per_box": decode_ms, "bfloat16_speedup": decode_ms["float32"] / decode_ms["bfloat16"],
    }
    write_json(RESULTS / "sam_decoder_precision.json", result)
    print(f"Dice float32 {result['dice_mean']['float32']:.4f}, bfloat16 {result['dice_mean']['bfloat16']:.4f}; "
          f"pixels agree {agreement:.5f}; decoder {decode_ms['float32']:.1f} vs {decode_ms['bfloat16']:.1f} ms "
          f"per box ({result['bfloat16_speedup']:.2f}x)")


if __name__ == "__main__":
    main()
