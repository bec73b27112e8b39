"""Sliding-window inference time: gnnseg against MONAI's ``sliding_window_inference``, same run.

Both use the same U-Net (random weights, eval mode), the same patch size, 50% overlap, Gaussian
weighting (sigma = patch / 8) and the same number of windows per network call. Reports the median of
``--repeats`` timings of each and the ratio ours / MONAI.

The two place their windows differently (MONAI steps by a fixed interval and pulls the last window back
inside; gnnseg spreads them evenly, nnU-Net's rule), with the same number of windows per axis. A U-Net
with instance norm gives different logits for different window contents, so its outputs differ; with a
pointwise network (1x1 convolution) both must agree everywhere, which ``pointwise_max_abs_difference``
checks. Writes benchmarks/results/unet_sliding_window_speed.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from gnnseg.core import machine_info, write_json
from gnnseg.seg.unet import UNet, features_per_stage
from gnnseg.seg.unet.predict import sliding_window_logits

RESULTS = Path(__file__).resolve().parent / "results"

CASES = {
    # name: (image shape (C, *spatial), patch, strides)
    "2d_drive_like": ((3, 584, 565), (256, 256), [[1, 1]] + [[2, 2]] * 5),
    "3d_ct_like": ((1, 60, 200, 240), (32, 96, 112), [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]),
}


def main() -> None:
    from monai.inferers import sliding_window_inference

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2, help="windows per network call")
    args = parser.parse_args()
    rows = []
    for name, (shape, patch, strides) in CASES.items():
        torch.manual_seed(0)
        dims = len(patch)
        network = UNet(shape[0], 3, dims=dims, features_per_stage=features_per_stage(len(strides), dims=dims, base=16),
                       kernel_sizes=[[3] * dims] * len(strides), strides=strides).eval()
        image = torch.randn(*shape)
        timings = {"ours": [], "monai": []}
        with torch.no_grad():
            for _ in range(args.repeats):
                began = time.perf_counter()
                ours = sliding_window_logits(network, image, patch, 3, step=0.5, gaussian=True, batch_size=args.batch)
                timings["ours"].append(time.perf_counter() - began)
                began = time.perf_counter()
                theirs = sliding_window_inference(image[None], patch, args.batch, network, overlap=0.5,
                                                  mode="gaussian", sigma_scale=0.125)[0]
                timings["monai"].append(time.perf_counter() - began)
        pointwise = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(shape[0], 3, 1).eval()
        with torch.no_grad():
            agreement = float((sliding_window_logits(pointwise, image, patch, 3, step=0.5, batch_size=args.batch)
                               - sliding_window_inference(image[None], patch, args.batch, pointwise, overlap=0.5,
                                                          mode="gaussian", sigma_scale=0.125)[0]).abs().max())
        medians = {side: statistics.median(values) for side, values in timings.items()}
        rows.append({"case": name, "image_shape": list(shape), "patch": list(patch),
                     "ours_seconds": medians["ours"], "monai_seconds": medians["monai"],
                     "ratio": medians["ours"] / medians["monai"],
                     "unet_max_abs_difference": float((ours - theirs).abs().max()),
                     "pointwise_max_abs_difference": agreement,
                     "mean_abs_logit": float(theirs.abs().mean())})
        print(f"{name:14s} ours {medians['ours']:.2f} s  MONAI {medians['monai']:.2f} s  "
              f"ratio {rows[-1]['ratio']:.2f}  pointwise max |diff| {agreement:.1e}", flush=True)
    import monai

    write_json(RESULTS / "unet_sliding_window_speed.json",
               {"benchmark": "unet_sliding_window_speed", "machine": machine_info(), "monai": monai.__version__,
                "overlap": 0.5, "mode": "gaussian, sigma = patch / 8", "windows_per_call": args.batch, "rows": rows})


if __name__ == "__main__":
    main()
