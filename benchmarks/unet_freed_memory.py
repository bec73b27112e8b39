"""U-Net training steps with glibc's default allocator and with freed memory kept for reuse, each in its own process.

``gnnseg.core.freed_memory.keep_freed_memory`` is a setting of the whole process, so every measurement runs in a
fresh Python process: a training step (forward with deep supervision, backward, SGD with Nesterov momentum, as nnU-Net
trains) of nnU-Net-sized networks, 2D (7 stages to 512 features, batch 2 of 512 x 512, the ISBI plans' shape) and 3D
(5 stages to 320 features, batch 2 of 32 x 112 x 128, the CT plans' patch), fastest of ``--repeats`` steps after one
warm-up step, the two allocators taking turns ``--rounds`` times. Writes ``benchmarks/results/unet_freed_memory.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import worker_output  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NETWORKS = {
    "2d": {"features": [32, 64, 128, 256, 512, 512, 512], "batch": (2, 1, 512, 512), "classes": 2},
    "3d": {"features": [32, 64, 128, 256, 320], "batch": (2, 1, 32, 112, 128), "classes": 6},
}


def step_seconds(network_name: str, keep: bool, repeats: int) -> float:
    """The fastest of ``repeats`` training steps in this process (after one warm-up step)."""
    import torch

    from gnnseg.core.freed_memory import keep_freed_memory
    from gnnseg.seg.unet.network import UNet

    if keep:
        keep_freed_memory()
    torch.manual_seed(0)
    spec = NETWORKS[network_name]
    dims = len(spec["batch"]) - 2
    stages = len(spec["features"])
    network = UNet(1, spec["classes"], dims=dims, features_per_stage=spec["features"],
                   kernel_sizes=[[3] * dims] * stages, strides=[[1] * dims] + [[2] * dims] * (stages - 1),
                   deep_supervision=True)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    batch = torch.randn(spec["batch"])

    def step() -> float:
        began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = sum(output.square().mean() for output in network(batch))
        loss.backward()
        optimizer.step()
        return time.perf_counter() - began

    step()
    return min(step() for _ in range(repeats))


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        name, keep, repeats = sys.argv[2:]
        print(step_seconds(name, keep == "1", int(repeats)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "unet_freed_memory.json")
    args = parser.parse_args()
    from gnnseg.core import machine_info, write_json

    rows = {}
    for name in NETWORKS:
        seconds = {"default": float("inf"), "kept": float("inf")}
        for _ in range(args.rounds):
            for kind in seconds:
                seconds[kind] = min(seconds[kind], float(worker_output(__file__, name, int(kind == "kept"),
                                                                        args.repeats)))
        rows[name] = {"default_allocator_s": round(seconds["default"], 3),
                      "freed_memory_kept_s": round(seconds["kept"], 3),
                      "time_ratio": round(seconds["kept"] / seconds["default"], 3), **NETWORKS[name]}
        print(name, rows[name], flush=True)
    report = {"benchmark": "unet_freed_memory", "machine": machine_info(), "repeats": args.repeats,
              "rounds": args.rounds, "rows": rows}
    write_json(args.output, report)
    lines = ["# U-Net training step: glibc's default allocator against freed memory kept", "",
             f"{report['machine']['processor']}, {report['machine']['torch_threads']} threads; fastest of "
             f"{args.repeats} steps per process, {args.rounds} processes per allocator, taking turns.", "",
             "| network | batch | default allocator s | freed memory kept s | ratio |", "|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(f"| {name} ({len(row['features'])} stages to {row['features'][-1]}) | {row['batch']} | "
                     f"{row['default_allocator_s']} | {row['freed_memory_kept_s']} | {row['time_ratio']} |")
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
