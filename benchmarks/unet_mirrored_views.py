"""Mirrored views one by one or together: where a CPU gains from putting a window's views into one forward.

Test-time mirroring predicts every window 4 times in 2D and 8 times in 3D (the plain view and its mirrorings).
nnU-Net runs them one forward each. On a CPU a small patch leaves the cores idle between layers, so stacking views
into one batch saves time; the gain shrinks, and becomes unreliable, as the stack grows. This benchmark times
nnU-Net-shaped U-Nets (nnU-Net's widths, two 3 x 3 (x 3) convolutions per stage, instance norm, downsampling to a
4-8 voxel bottleneck; random weights) over a range of patch sizes, in PyTorch and in onnxruntime, with the views in
groups of 1, 2, 4 and all, and reports each grouping's time against one by one. gnnseg's sliding windows stack
views and windows while a forward holds at most :data:`gnnseg.seg.unet.sliding_window.STACKED_VOXELS` voxels; this
table is where those budgets come from. The networks here are not the ones the nnU-Net drop-in benchmark measures.

Writes benchmarks/results/unet_mirrored_views.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from gnnseg.core import machine_info, write_json
from gnnseg.core.freed_memory import keep_freed_memory
from gnnseg.core.onnx_sessions import open_session_uncached
from gnnseg.seg.unet import UNet, features_per_stage
from gnnseg.seg.unet.inference_network import for_cpu_prediction

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import best_of  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

PATCHES = [(64, 64), (128, 128), (192, 192), (256, 256), (384, 384), (512, 512),
           (16, 32, 32), (16, 48, 48), (24, 64, 64), (32, 64, 64), (32, 96, 96), (32, 112, 128)]


def strides_for(patch: tuple[int, ...]) -> list[list[int]]:
    """nnU-Net's rule in short: halve every axis still at least 8 voxels, stage by stage, until none is (at most 8
    stages in 2D and 6 in 3D, nnU-Net's caps for these sizes)."""
    strides, size = [[1] * len(patch)], list(patch)
    while len(strides) < (8 if len(patch) == 2 else 6):
        stride = [2 if s >= 8 else 1 for s in size]
        if stride == [1] * len(patch):
            break
        strides.append(stride)
        size = [s // k for s, k in zip(size, stride)]
    return strides


def network_for(patch: tuple[int, ...]) -> torch.nn.Module:
    torch.manual_seed(0)
    dims = len(patch)
    strides = strides_for(patch)
    network = UNet(1, 3, dims=dims, features_per_stage=features_per_stage(len(strides), dims=dims),
                   kernel_sizes=[[3] * dims] * len(strides), strides=strides)
    return network.eval()


def onnx_session(network: torch.nn.Module, patch: tuple[int, ...], folder: Path):
    path = folder / f"{'x'.join(map(str, patch))}.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (torch.zeros(1, 1, *patch),), path, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    return open_session_uncached(path)


def group_seconds(forward, patch: tuple[int, ...], group: int, views: int, repeats: int) -> float:
    """Time for all ``views`` of one window, ``group`` views per forward."""
    batches = [torch.randn(min(group, views - first), 1, *patch) for first in range(0, views, group)]
    for batch in batches:
        forward(batch)                                            # kernels built for this batch size
    return best_of(lambda: [forward(batch) for batch in batches], repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="three small patches only")
    args = parser.parse_args()
    keep_freed_memory()                                           # as gnnseg's prediction commands run
    patches = [PATCHES[0], PATCHES[1], PATCHES[6]] if args.quick else PATCHES
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for patch in patches:
            network, views = network_for(patch), 4 if len(patch) == 2 else 8
            session = onnx_session(network, patch, Path(folder))      # the network as gnnseg exports it
            copy = for_cpu_prediction(network)                        # as gnnseg predicts with it in PyTorch
            runtimes = {"torch": copy,
                        "onnxruntime": lambda batch, s=session: s.run(["logits"], {"image": batch.numpy()})}
            row = {"patch": list(patch), "voxels": math.prod(patch), "views": views, "stages": len(strides_for(patch))}
            for runtime, forward in runtimes.items():
                with torch.inference_mode():
                    seconds = {group: group_seconds(forward, patch, group, views, args.repeats)
                               for group in sorted({1, 2, 4, views})}
                row[runtime] = {"one_by_one_s": round(seconds[1], 4),
                                **{f"groups_of_{g}_ratio": round(s / seconds[1], 3) for g, s in seconds.items()
                                   if g > 1}}
            rows.append(row)
            print(row, flush=True)
    report = {"benchmark": "unet_mirrored_views", "machine": machine_info(), "torch_threads": torch.get_num_threads(),
              "repeats": args.repeats, "quick": args.quick, "rows": rows}
    write_json(RESULTS / "unet_mirrored_views.json", report)
    (RESULTS / "unet_mirrored_views.md").write_text(markdown(report))


def markdown(report: dict) -> str:
    groups = ["groups_of_2_ratio", "groups_of_4_ratio", "groups_of_8_ratio"]
    lines = ["# Mirrored views of one window: one forward each or stacked", "",
             f"{report['machine']['processor']}, {report['torch_threads']} threads, fastest of {report['repeats']}. "
             "Time for all views of one window with the views stacked in groups of 2, 4 or 8, against one forward "
             "per view (below 1: stacking is faster). nnU-Net-shaped U-Nets, random weights.", "",
             "| patch | voxels | views | runtime | one by one s | groups of 2 | groups of 4 | groups of 8 |",
             "|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        for runtime in ("torch", "onnxruntime"):
            cells = [str(row[runtime].get(g, "")) for g in groups]
            lines.append(f"| {' x '.join(map(str, row['patch']))} | {row['voxels']:,} | {row['views']} | {runtime} | "
                         f"{row[runtime]['one_by_one_s']} | {' | '.join(cells)} |")
    lines.append("")
    for runtime in ("torch", "onnxruntime"):
        stacks = sorted((row["voxels"] * int(g.split("_")[2]), ratio) for row in report["rows"]
                        for g, ratio in row[runtime].items() if g.startswith("groups_of_"))
        losing = next((voxels for voxels, ratio in stacks if ratio >= 1), None)
        gaining = [voxels for voxels, ratio in stacks if ratio < 1 and (losing is None or voxels < losing)]
        lines.append(f"- {runtime}: every stack of up to {max(gaining, default=0):,} voxels per forward gained; "
                     + (f"the smallest that did not held {losing:,}." if losing else "none lost."))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
