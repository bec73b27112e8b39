"""A bounded load test of ``gnnseg serve`` on loopback: latency of box requests, and memory over many uploads.

1. **Latency**: one Kvasir image is uploaded and encoded (first request); then ``--clients`` concurrent clients,
   each on its own keep-alive connection as a viewer holds one, send ``--requests`` one-box segment requests in all
   (boxes jittered around the polyp), each client one at a time, and the throughput, p50 / p95 latency and errors
   are recorded. The clients are the standard library's ``http.client`` (about a tenth of httpx's CPU time per
   request, and no per-client TLS setup): on a 2-core machine the load
   generator's CPU time is taken from the server.
2. **Memory**: ``--uploads`` distinct 256 x 256 images are uploaded, every ``--encode-every``-th followed by one box
   request (so that it is encoded and its embedding cached), with the store and the embedding cache kept small
   (``--store-mb``, ``--cache-mb``) so that LRU eviction must keep the server bounded; its resident memory is
   sampled throughout.

The server is a separate ``gnnseg serve`` process; the test stops by itself.

    python benchmarks/serve_load.py --checkpoint lite_medsam
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import shlex
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from gnnseg.core import machine_info, write_json
from gnnseg.seg.io import read_image_2d
from gnnseg.seg.sam.inference.prompts import boxes_from_mask
from gnnseg.seg.serve.encoding import image_png_bytes

RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class MemorySampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.running = pid, every, [], True

    def run(self) -> None:
        while self.running:
            self.samples.append((time.perf_counter(), resident_mb(self.pid)))
            time.sleep(self.every)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--checkpoint", default="lite_medsam")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--uploads", type=int, default=1000)
    parser.add_argument("--store-mb", type=int, default=64)
    parser.add_argument("--cache-mb", type=int, default=64)
    parser.add_argument("--decoder-dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--compile", action="store_true", help="serve with the decoder compiled for one box")
    parser.add_argument("--name", default="serve_load", help="results file name (benchmarks/results/NAME.json)")
    parser.add_argument("--encode-every", type=int, default=10, help="a box request after every N-th upload")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "gnnseg.cli", "serve", "--checkpoint", args.checkpoint,
                               "--port", str(port), "--store-mb", str(args.store_mb), "--cache-mb",
                               str(args.cache_mb), "--decoder-dtype", args.decoder_dtype,
                               *(["--compile"] if args.compile else [])], stderr=subprocess.DEVNULL)
    sampler = MemorySampler(server.pid)
    try:
        with httpx.Client(base_url=url, timeout=120) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    client.get("/healthz").raise_for_status()
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("the server did not start") from None
                    time.sleep(0.2)
            sampler.start()
            idle_mb = resident_mb(server.pid)

            image_path = sorted((Path(args.data) / "kvasir_seg_subset" / "images").glob("*.jpg"))[170]
            truth = read_image_2d(Path(args.data) / "kvasir_seg_subset" / "masks" / image_path.name,
                                  grayscale=True).array > 127
            tight = boxes_from_mask(truth)[0]
            upload = {"file": (image_path.name, image_path.read_bytes())}
            image_id = client.post("/v1/images", files=upload).json()["id"]
            began = time.perf_counter()
            client.post(f"/v1/images/{image_id}/segment", json={"boxes": [tight.tolist()]}).raise_for_status()
            first_request_s = time.perf_counter() - began
            rng = np.random.default_rng(0)
            boxes = [(tight + rng.integers(-5, 6, 4)).clip(0, min(truth.shape) - 1).tolist()
                     for _ in range(args.requests)]

            pending = queue.SimpleQueue()
            for box in boxes:
                pending.put(box)

            def client_session() -> list[tuple[float, int]]:
                """One viewer: its own keep-alive connection, one request at a time until the boxes run out."""
                answers = []
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                try:
                    while True:
                        try:
                            box = pending.get_nowait()
                        except queue.Empty:
                            return answers
                        body = json.dumps({"boxes": [box], "format": "json"}).encode()
                        start = time.perf_counter()
                        connection.request("POST", f"/v1/images/{image_id}/segment", body=body,
                                           headers={"Content-Type": "application/json"})
                        response = connection.getresponse()
                        response.read()
                        answers.append((time.perf_counter() - start, response.status))
                finally:
                    connection.close()

            began = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                sessions = [pool.submit(client_session) for _ in range(args.clients)]
                answers = [answer for session in sessions for answer in session.result()]
            wall = time.perf_counter() - began
            latencies = np.array([seconds for seconds, _ in answers])
            errors = sum(status != 200 for _, status in answers)
            after_latency_mb = resident_mb(server.pid)
            print(f"{args.requests} requests, {args.clients} clients: p50 {np.percentile(latencies, 50) * 1000:.0f} "
                  f"ms, p95 {np.percentile(latencies, 95) * 1000:.0f} ms, {errors} errors", flush=True)

            upload_rss = []
            generator = np.random.default_rng(1)
            began = time.perf_counter()
            for index in range(args.uploads):
                pixels = (generator.random((256, 256, 3)) * 255).astype(np.uint8)
                uploaded = client.post("/v1/images", files={"file": (f"u{index}.png", image_png_bytes(pixels))})
                uploaded.raise_for_status()
                if index % args.encode_every == 0:
                    client.post(f"/v1/images/{uploaded.json()['id']}/segment",
                                json={"boxes": [[60, 60, 180, 180]]}).raise_for_status()
                if index % 50 == 49:
                    upload_rss.append(resident_mb(server.pid))
                    print(f"{index + 1} uploads: {upload_rss[-1]:.0f} MB", flush=True)
            uploads_s = time.perf_counter() - began
            held = client.get("/healthz").json()["images"]
    finally:
        sampler.running = False
        server.terminate()
        server.wait(30)
    result = {
        "benchmark": "serve_load", "machine": machine_info(),
        "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
        "checkpoint": args.checkpoint, "decoder_dtype": args.decoder_dtype,
        "compiled_decoder": args.compile, "clients": args.clients, "requests": args.requests,
        "first_request_s": first_request_s,
        "throughput_rps": args.requests / wall, "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p95_ms": float(np.percentile(latencies, 95) * 1000), "max_ms": float(latencies.max() * 1000),
        "errors": int(errors),
        "uploads": args.uploads, "encoded_uploads": len(range(0, args.uploads, args.encode_every)),
        "uploads_seconds": uploads_s, "store_mb": args.store_mb, "cache_mb": args.cache_mb,
        "images_held_after_uploads": held,
        "rss_mb_idle": idle_mb, "rss_mb_after_latency": after_latency_mb, "rss_mb_every_50_uploads": upload_rss,
        "rss_mb_peak": max(mb for _, mb in sampler.samples),
    }
    write_json(RESULTS / f"{args.name}.json", result)
    lines = ["| figure | value |", "|---|---|"]
    lines += [f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
              for key, value in result.items() if key not in ("machine", "command", "rss_mb_every_50_uploads")]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
