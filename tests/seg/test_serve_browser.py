"""The web page in a real browser: Playwright drives Debian's chromium, uploads a polyp, drags a box around it, and
the overlay must cover the polyp inside the box and nothing far outside. A screenshot is kept as an artifact in
``runs/test-artifacts/serve_page.png``."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_dataset

ARTIFACTS = Path(__file__).resolve().parents[2] / "runs" / "test-artifacts"


def chromium_path() -> str:
    path = os.environ.get("GNNSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium; or set GNNSEG_CHROMIUM)")
    return path


@pytest.fixture(scope="module")
def server_url():
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install -e '.[test]')")
    import uvicorn

    from gnnseg.seg.sam.shipped import ModelChoice
    from gnnseg.seg.serve.app import create_app
    from gnnseg.seg.serve.guard import ServiceAccess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = create_app(choice=ModelChoice(checkpoint="lite_medsam"), access=ServiceAccess(token="page-token"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/#token=page-token"  # the page passes the token on; the API refuses without
    server.should_exit = True
    thread.join(10)


OVERLAY_CHECK = """([x0, y0, x1, y1, margin]) => {
  // pixels where the visible canvas differs from the bare image are the overlay (and the box outline)
  const canvas = document.getElementById('view');
  const bare = new OffscreenCanvas(canvas.width, canvas.height).getContext('2d');
  bare.imageSmoothingEnabled = false;
  bare.drawImage(state.picture, 0, 0, canvas.width, canvas.height);
  const shown = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const plain = bare.getImageData(0, 0, canvas.width, canvas.height).data;
  let inside = 0, farOutside = 0;
  for (let y = 0; y < canvas.height; y++) for (let x = 0; x < canvas.width; x++) {
    const i = 4 * (y * canvas.width + x);
    const change = Math.abs(shown[i] - plain[i]) + Math.abs(shown[i + 1] - plain[i + 1])
      + Math.abs(shown[i + 2] - plain[i + 2]);
    if (change < 30) continue;
    if (x > x0 + 3 && x < x1 - 3 && y > y0 + 3 && y < y1 - 3) inside++;
    else if (x < x0 - margin || x > x1 + margin || y < y0 - margin || y > y1 + margin) farOutside++;
  }
  return {inside, farOutside, area: (x1 - x0) * (y1 - y0)};
}"""


POLYP = 170   # the Kvasir image the page tests open (sorted by name)


@contextlib.contextmanager
def polyp_page(server_url, tmp_path):
    """The page in chromium with a Kvasir polyp opened; yields the page and ``at(x, y)``, the page position of image
    pixel ``(x, y)``."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = chromium_path()
    image = sorted(require_dataset("kvasir_seg_subset/images").glob("*.jpg"))[POLYP]
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True, args=["--no-sandbox"],
            viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()
            page.goto(server_url)
            page.set_input_files("#file", str(image))
            page.wait_for_function("document.getElementById('status').textContent.includes('Drag a box')",
                                   timeout=60_000)
            scale = page.evaluate("state.scale")
            frame = page.locator("#view").bounding_box()
            css = frame["width"] / page.evaluate("document.getElementById('view').width")
            yield page, lambda x, y: (frame["x"] + x * scale * css, frame["y"] + y * scale * css)
        finally:
            context.close()


def test_page_segments_a_dragged_box_in_chromium(server_url, tmp_path):
    name = sorted(require_dataset("kvasir_seg_subset/images").glob("*.jpg"))[POLYP].name
    from gnnseg.seg.io import read_image_2d

    truth = read_image_2d(require_dataset("kvasir_seg_subset/masks") / name, grayscale=True).array > 127
    rows, cols = np.nonzero(truth)
    box = [int(cols.min()) - 5, int(rows.min()) - 5, int(cols.max()) + 5, int(rows.max()) + 5]
    with polyp_page(server_url, tmp_path) as (page, at):
        page.mouse.move(*at(box[0], box[1]))
        page.mouse.down()
        page.mouse.move(*at(box[2], box[3]), steps=8)
        page.mouse.up()
        page.wait_for_function("document.getElementById('view').dataset.masks === '1'", timeout=60_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve_page.png"))
        scale = page.evaluate("state.scale")
        found = page.evaluate(OVERLAY_CHECK, [*(float(v * scale) for v in box), 12 * scale])
        status = page.text_content("#status")
    assert found["inside"] > 0.2 * found["area"], found
    assert found["farOutside"] == 0, found
    assert "1 mask(s) in" in status


def test_page_corrects_a_mask_with_two_clicks_and_undoes_one(server_url, tmp_path):
    with polyp_page(server_url, tmp_path) as (page, at):
        page.mouse.move(*at(40, 40))
        page.mouse.down()
        page.mouse.move(*at(200, 200), steps=8)
        page.mouse.up()
        page.wait_for_function("document.getElementById('view').dataset.masks === '1'", timeout=60_000)
        boxed = page.evaluate("state.boxes[0].object.mask")
        page.mouse.click(*at(120, 120))
        page.wait_for_function("document.getElementById('view').dataset.clicks === '1'", timeout=60_000)
        first = page.evaluate("state.boxes[0].object")
        page.keyboard.down("Shift")
        page.mouse.click(*at(60, 60))
        page.keyboard.up("Shift")
        page.wait_for_function("document.getElementById('view').dataset.clicks === '2'", timeout=60_000)
        second = page.evaluate("state.boxes[0].object")
        status = page.text_content("#status")
        page.click("#undo")
        page.wait_for_function("document.getElementById('view').dataset.clicks === '1'", timeout=60_000)
        undone = page.evaluate("state.boxes[0].object")
    assert first["labels"] == [1] and second["labels"] == [1, 0]
    assert [round(v) for v in second["points"][1]] == [60, 60]
    assert "Click answered in" in status and "on the server" in status
    assert undone["mask"] == first["mask"] and undone["points"] == first["points"]
    assert boxed["size"] == first["mask"]["size"]


def test_page_propagates_a_box_through_a_volume_and_downloads_nifti(server_url, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = chromium_path()
    from gnnseg.seg.io import MedicalImage, read_nifti, write_nifti

    z, y, x = np.mgrid[:7, :64, :64]
    ball = (z - 3) ** 2 * 16 + (y - 30) ** 2 + (x - 34) ** 2 <= 14 ** 2
    volume = np.random.default_rng(0).normal(100, 10, ball.shape) + 400 * ball
    path = write_nifti(MedicalImage(volume.astype(np.float32), (3.0, 1.0, 1.0)), tmp_path / "ball.nii.gz")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True, args=["--no-sandbox"],
            accept_downloads=True, viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()
            page.goto(server_url)
            page.select_option("#modality", "mr")
            page.set_input_files("#file", str(path))
            page.wait_for_function("document.getElementById('status').textContent.includes('Drag a box')",
                                   timeout=60_000)
            assert page.is_visible("#slice") and page.evaluate("state.slice") == 3
            page.check("#propagate")
            page.fill("#z-from", "1")
            page.fill("#z-to", "5")
            scale = page.evaluate("state.scale")
            frame = page.locator("#view").bounding_box()
            css = frame["width"] / page.evaluate("document.getElementById('view').width")
            page.mouse.move(frame["x"] + 17 * scale * css, frame["y"] + 13 * scale * css)
            page.mouse.down()
            page.mouse.move(frame["x"] + 51 * scale * css, frame["y"] + 47 * scale * css, steps=6)
            page.mouse.up()
            page.wait_for_function("document.getElementById('view').dataset.masks === '1'", timeout=120_000)
            on_slice = page.evaluate("Array.from(maskOnSlice(state.masks[0].rle)).reduce((a, b) => a + b, 0)")
            page.evaluate("showSlice(0)")
            off_slice = page.evaluate("Array.from(maskOnSlice(state.masks[0].rle)).reduce((a, b) => a + b, 0)")
            with page.expect_download() as download:
                page.click("#download-nifti")
            saved = tmp_path / "downloaded.nii.gz"
            download.value.save_as(saved)
        finally:
            context.close()
    assert on_slice > 0.5 * ball[3].sum() and off_slice == 0  # slice 0 lies outside the box's range 1..5
    labels = read_nifti(saved).array
    assert labels.shape == ball.shape and labels[1:6].any() and not labels[0].any() and not labels[6].any()
