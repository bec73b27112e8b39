"""SAM ViT-B speed on this CPU: our image encoder beside the official ``segment-anything`` one, same weights.

Both encoders get identical random weights and the same 1024 x 1024 input; we check that their embeddings agree,
then time ``--repeats`` forward passes of each, interleaved (ours, theirs, ours, ...) so that drifts in machine
load hit both. Also timed: prompt encoder + mask decoder for one box and for a batch of boxes (the cost that
is paid per prompt once the embedding is cached), and the packaged ``vit_cpu`` model per box.
Writes benchmarks/results/sam_speed.json.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/seg/official_sam.py builds the oracle

from gnnseg.core import machine_info, write_json
from gnnseg.core.checkpoint import CheckpointError
from gnnseg.seg.sam.inference.predictor import SamPredictor
from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS, build_sam
from gnnseg.seg.sam.shipped import load_shipped_model
from tests.seg.official_sam import build_official

RESULTS = Path(__file__).resolve().parent / "results"


def timed(function, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - began)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--boxes", type=int, default=16, help="boxes in the batched decoder timing")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = SAM_CONFIGS["vit_b"]
    ours = build_sam(config)
    with torch.no_grad():
        for tensor in ours.state_dict().values():
            tensor.add_(torch.randn_like(tensor) * 0.02)
    official = build_official(config)
    official.load_state_dict(ours.state_dict())
    image = torch.randn(1, 3, 1024, 1024)

    with torch.inference_mode():
        embedding = ours.encode(image)
        difference = (embedding - official.image_encoder(image)).abs().max().item()
        ours_times, official_times = [], []
        for _ in range(args.repeats):
            ours_times += timed(lambda: ours.encode(image), 1)
            official_times += timed(lambda: official.image_encoder(image), 1)
        box = torch.tensor([[200.0, 300.0, 600.0, 700.0]])
        boxes = box.repeat(args.boxes, 1) + torch.arange(args.boxes)[:, None]
        decode_one = timed(lambda: ours.decode(embedding, boxes=box), 10)
        decode_batch = timed(lambda: ours.decode(embedding, boxes=boxes), 5)

        def official_decode(prompt):
            sparse, dense = official.prompt_encoder(points=None, boxes=prompt, masks=None)
            official.mask_decoder(image_embeddings=embedding, image_pe=official.prompt_encoder.get_dense_pe(),
                                  sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                  multimask_output=False)

        official_decode_one = timed(lambda: official_decode(box), 10)

    shipped = {}
    try:
        predictor = SamPredictor(load_shipped_model())
        picture = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
        predictor.set_image(picture)
        many = np.array([[100 + 10 * i, 100, 200 + 10 * i, 220] for i in range(args.boxes)], dtype=float)
        one = timed(lambda: predictor.predict(boxes=many[:1]), 10)
        batch = timed(lambda: predictor.predict(boxes=many), 5)
        shipped = {"seconds_per_box_single": statistics.median(one),
                   "seconds_per_box_batched": statistics.median(batch) / args.boxes}
    except CheckpointError as error:
        print(f"packaged model not timed: {error}")

    result = {
        "benchmark": "sam_speed", "machine": machine_info(), "torch_threads": torch.get_num_threads(),
        "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
        "vit_b_encoder_1024": {"ours_seconds": ours_times, "official_seconds": official_times,
                               "ours_median": statistics.median(ours_times),
                               "official_median": statistics.median(official_times),
                               "ratio_ours_over_official": statistics.median(ours_times)
                               / statistics.median(official_times),
                               "max_abs_embedding_difference": difference},
        "prompt_and_decoder": {"ours_seconds_one_box": statistics.median(decode_one),
                               "official_seconds_one_box": statistics.median(official_decode_one),
                               "ours_seconds_per_box_batched": statistics.median(decode_batch) / args.boxes,
                               "boxes_in_batch": args.boxes},
        "packaged_vit_cpu": shipped,
    }
    write_json(RESULTS / "sam_speed.json", result)
    encoder = result["vit_b_encoder_1024"]
    print(f"ViT-B encoder at 1024: ours {encoder['ours_median']:.2f} s, official {encoder['official_median']:.2f} s, "
          f"ratio {encoder['ratio_ours_over_official']:.2f} (max |diff| {difference:.1e})")
    decoder = result["prompt_and_decoder"]
    print(f"prompt + decoder, one box: ours {decoder['ours_seconds_one_box'] * 1e3:.1f} ms, official "
          f"{decoder['official_seconds_one_box'] * 1e3:.1f} ms; "
          f"batched {decoder['ours_seconds_per_box_batched'] * 1e3:.1f}"
          f" ms per box")
    if shipped:
        print(f"packaged vit_cpu: {shipped['seconds_per_box_single'] * 1e3:.1f} ms for one box, "
              f"{shipped['seconds_per_box_batched'] * 1e3:.1f} ms per box in a batch of {args.boxes}")


if __name__ == "__main__":
    main()
