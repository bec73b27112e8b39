"""Correction clicks through the web page, timed in the browser: chromium (Playwright) opens each held-out Kvasir
polyp on the page served by ``gnnseg serve``, drags the polyp's tight box grown by 5 pixels, then clicks where the
CVPR 2025 challenge's simulated user would, five times, as a clinician would click on the page.

A click's time is the page's own figure: from the click handler's start, through the request, the answer's decoding
and the overlay's drawing, to the status line (``Click answered in N ms``); the server's share is the ``seconds``
the answer carries. Target: <= 50 ms at p95 through the page (200 clicks, 2 cores, the server and the browser on the
same machine). The final DSC on the page must agree with ``sam_interactive.py``'s for the same model (a check that
the page clicks where it is told).

Writes ``serve_page_clicks.json`` and ``.md`` to ``--out-dir``. Run it alone: the timings are wall clock::

    python benchmarks/serve_page_clicks.py                      # the default model, 40 polyps x 5 clicks
    python benchmarks/serve_page_clicks.py --images 2 --out-dir /tmp/page   # smoke
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from gnnseg.core import machine_info, write_json
from gnnseg.seg.io import read_image_2d
from gnnseg.seg.metrics import dice
from gnnseg.seg.sam.inference.simulated_user import CLICKS, next_click
from gnnseg.seg.sam.shipped import DEFAULT_MODEL, ModelChoice
from gnnseg.seg.serve.encoding import rle_decode

RESULTS = Path(__file__).resolve().parent / "results"
BOX_MARGIN = 5
TOKEN = "page-benchmark"


def start_server(checkpoint: str):
    """The service on a free loopback port, in a thread; returns its URL (with the page's token) and the server."""
    import uvicorn

    from gnnseg.seg.serve.app import create_app
    from gnnseg.seg.serve.guard import ServiceAccess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(choice=ModelChoice(checkpoint=checkpoint), access=ServiceAccess(token=TOKEN))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the service did not start within 60 s")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}/#token={TOKEN}", server


def polyps(data: Path, count: int | None) -> list[tuple[Path, np.ndarray]]:
    """The held-out Kvasir polyps (the last 40 in sorted order, as the corpus splits them) and their masks."""
    images = sorted((data / "kvasir_seg_subset" / "images").glob("*.jpg"))[160:]
    if not images:
        raise SystemExit(f"no Kvasir images under {data / 'kvasir_seg_subset'}")
    masks = data / "kvasir_seg_subset" / "masks"
    return [(path, read_image_2d(masks / path.name, grayscale=True).array > 127) for path in images[:count]]


def play(page, image: Path, truth: np.ndarray, clicks: int) -> dict:
    """One polyp on the page: the box, then up to ``clicks`` simulated clicks; DSC per step and each click's time."""
    page.set_input_files("#file", str(image))
    page.wait_for_function("document.getElementById('status').textContent.includes('Drag a box')", timeout=60_000)
    scale = page.evaluate("state.scale")
    frame = page.locator("#view").bounding_box()
    css = frame["width"] / page.evaluate("document.getElementById('view').width")

    def at(x: float, y: float) -> tuple[float, float]:      # the page position of image pixel (x, y)'s centre
        return frame["x"] + (x + 0.5) * scale * css, frame["y"] + (y + 0.5) * scale * css

    rows, cols = np.nonzero(truth)
    height, width = truth.shape
    box = (max(0, cols.min() - BOX_MARGIN), max(0, rows.min() - BOX_MARGIN),
           min(width - 1, cols.max() + BOX_MARGIN), min(height - 1, rows.max() + BOX_MARGIN))
    page.mouse.move(*at(box[0], box[1]))
    page.mouse.down()
    page.mouse.move(*at(box[2], box[3]), steps=6)
    page.mouse.up()
    page.wait_for_function("state.boxes.length === 1 && !!state.boxes[0].object", timeout=60_000)
    mask = rle_decode(page.evaluate("state.boxes[0].object.mask"))
    dsc, page_ms, server_ms = [dice(mask, truth)], [], []
    for step in range(1, clicks + 1):
        click = next_click(mask, truth)
        if click is None:
            dsc.append(dsc[-1])
            continue
        (y, x), label = click
        if label == 0:
            page.keyboard.down("Shift")
        page.mouse.click(*at(x, y))
        if label == 0:
            page.keyboard.up("Shift")
        page.wait_for_function(f"state.boxes[0].object.points.length === {step}", timeout=60_000)
        answered = re.search(r"Click answered in (\d+) ms", page.text_content("#status"))
        page_ms.append(int(answered.group(1)))
        answer = page.evaluate("state.boxes[0].object")
        server_ms.append(1000 * answer["seconds"])
        mask = rle_decode(answer["mask"])
        dsc.append(dice(mask, truth))
    return {"image": image.name, "dsc_per_step": dsc, "page_ms": page_ms, "server_ms": server_ms}


def markdown(result: dict) -> str:
    dsc = " | ".join(f"{value:.3f}" for value in result["dsc_per_step"])
    steps = " | ".join(f"{k} clicks" if k else "box" for k in range(len(result["dsc_per_step"])))
    return "\n".join([
        "# Correction clicks through the web page (chromium)", "",
        f"Model `{result['model']}`; {result['images']} held-out Kvasir polyps, box + {BOX_MARGIN} px, then the "
        f"simulated user's clicks on the page; {result['clicks']} clicks timed.", "",
        "| | p50 (ms) | p95 (ms) | max (ms) |", "|---|---|---|---|",
        f"| click through the page | {result['page_ms_p50']:.0f} | {result['page_ms_p95']:.0f} | "
        f"{result['page_ms_max']:.0f} |",
        f"| of which on the server | {result['server_ms_p50']:.1f} | {result['server_ms_p95']:.1f} | "
        f"{result['server_ms_max']:.1f} |", "",
        f"| | {steps} |", "|---" * (len(result["dsc_per_step"]) + 1) + "|",
        f"| mean DSC on the page | {dsc} |", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--checkpoint", default=DEFAULT_MODEL, help="model name or checkpoint the service runs")
    parser.add_argument("--images", type=int, default=None, help="first N held-out polyps (smoke runs)")
    parser.add_argument("--clicks", type=int, default=CLICKS)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("GNNSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("no chromium on PATH (Debian: apt-get install chromium; or set GNNSEG_CHROMIUM)")
    cases = polyps(args.data, args.images)
    url, server = start_server(args.checkpoint)
    played = []
    try:
        with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=["--no-sandbox"],
                viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(url)
            for number, (image, truth) in enumerate(cases, 1):
                played.append(play(page, image, truth, args.clicks))
                print(f"{number}/{len(cases)} {image.name}: DSC {played[-1]['dsc_per_step'][0]:.3f} -> "
                      f"{played[-1]['dsc_per_step'][-1]:.3f}, page ms {played[-1]['page_ms']}", flush=True)
            context.close()
    finally:
        server.should_exit = True
    page_ms = np.concatenate([p["page_ms"] for p in played]).astype(float)
    server_ms = np.concatenate([p["server_ms"] for p in played])
    result = {"benchmark": "serve_page_clicks", "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
              "machine": machine_info(), "model": args.checkpoint, "images": len(played), "clicks": len(page_ms),
              "box_margin": BOX_MARGIN, "target_page_ms_p95": 50.0,
              "dsc_per_step": np.mean([p["dsc_per_step"] for p in played], axis=0).tolist(),
              **{f"page_ms_{name}": float(f(page_ms)) for name, f in
                 (("p50", np.median), ("p95", lambda v: np.percentile(v, 95)), ("max", np.max))},
              **{f"server_ms_{name}": float(f(server_ms)) for name, f in
                 (("p50", np.median), ("p95", lambda v: np.percentile(v, 95)), ("max", np.max))},
              "per_image": played}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / "serve_page_clicks.json", result)
    (args.out_dir / "serve_page_clicks.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
