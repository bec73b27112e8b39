"""Speed and memory of one Mamba block, parallel scan against the sequential recurrence, on this CPU.

For each sequence length (1k, 4k, 16k, 64k positions: a 32 x 32 to 256 x 256 feature map flattened) one forward +
backward pass of a Mamba block (d_model 32, d_state 16, expand 2, batch 1) is timed with both scans, each in a
fresh process so that its peak resident memory is its own.

    python benchmarks/umamba_scan_speed.py
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from gnnseg.core import machine_info, write_json
from gnnseg.seg.unet.mamba import Mamba

RESULTS = Path(__file__).resolve().parent / "results"
D_MODEL = 32


def one(length: int, sequential: bool) -> dict:
    torch.manual_seed(0)
    block = Mamba(D_MODEL)
    x = torch.randn(1, length, D_MODEL, requires_grad=True)
    block(x[:, :64], sequential=sequential).sum().backward()  # warm-up
    began = time.perf_counter()
    block(x, sequential=sequential).sum().backward()
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="1024,4096,16384,65536")
    parser.add_argument("--one", nargs=2, metavar=("LENGTH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1] == "sequential")))
        return
    rows = []
    for length in map(int, args.lengths.split(",")):
        row = {"length": length}
        for mode in ("parallel", "sequential"):
            output = subprocess.run([sys.executable, __file__, "--one", str(length), mode], check=True,
                                    capture_output=True, text=True).stdout
            row[mode] = json.loads(output.strip().splitlines()[-1])
        row["speedup"] = row["sequential"]["seconds"] / row["parallel"]["seconds"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_json(RESULTS / "umamba_scan_speed.json", {
        "benchmark": "umamba_scan_speed", "machine": machine_info(),
        "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
        "block": {"d_model": D_MODEL, "d_state": 16, "expand": 2, "batch": 1, "chunk": 64}, "rows": rows})
    lines = ["| positions | parallel fwd+bwd (s) | sequential fwd+bwd (s) | speed-up "
             "| peak RSS parallel / sequential (MB) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['length']:,} | {r['parallel']['seconds']:.3f} | {r['sequential']['seconds']:.3f} | "
              f"{r['speedup']:.1f}x | {r['parallel']['peak_rss_mb']:.0f} / {r['sequential']['peak_rss_mb']:.0f} |"
              for r in rows]
    (RESULTS / "umamba_scan_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
