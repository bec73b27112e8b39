"""The web page in a real browser: Playwright drives Debian's chromium, uploads a polyp, drags a box around it, and
the overlay must cover the polyp inside the box and nothing far outside. A screenshot is kept as an artifact in
``runs/test-artifacts/serve_page.png``. A 3D object is corrected on a service whose model answers as a stand-in does
(its negative clicks cut the mask), so the slices the correction reached can be read off the mask's columns."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
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


@contextlib.contextmanager
def serving(app):
    """``app`` served by uvicorn on a free loopback port; yields the page's address with its token."""
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install -e '.[test]')")
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/#token=page-token"  # the page passes the token on; the API refuses without
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def server_url():
    pytest.importorskip("fastapi", reason="fastapi is not installed (pip install -e '.[test]')")
    from gnnseg.seg.sam.shipped import ModelChoice
    from gnnseg.seg.serve.app import create_app
    from gnnseg.seg.serve.guard import ServiceAccess

    with serving(create_app(choice=ModelChoice(checkpoint="lite_medsam"),
                            access=ServiceAccess(token="page-token"))) as url:
        yield url


@pytest.fixture(scope="module")
def stand_in_server():
    """The service with a small model loaded but the stand-in answering; yields its page's address and the stand-in."""
    pytest.importorskip("fastapi", reason="fastapi is not installed (pip install -e '.[test]')")
    from gnnseg.seg.sam.modeling.sam import build_sam
    from gnnseg.seg.serve.app import create_app
    from gnnseg.seg.serve.guard import ServiceAccess
    from tests.seg.stand_in_predictors import CutsAtNegativeClicks

    app = create_app(build_sam("tiny_vit_mini"), access=ServiceAccess(token="page-token"))
    app.state.segmenter.predictor = predictor = CutsAtNegativeClicks()
    with serving(app) as url:
        yield url, predictor


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


OVERLAY_AT = """([x, y]) => {
  // whether the canvas shows an overlay at image pixel (x, y): the centre of its drawn square differs from the image
  const canvas = document.getElementById('view');
  const at = [Math.floor((x + 0.5) * state.scale), Math.floor((y + 0.5) * state.scale)];
  const bare = new OffscreenCanvas(canvas.width, canvas.height).getContext('2d');
  bare.imageSmoothingEnabled = false;
  bare.drawImage(state.picture, 0, 0, canvas.width, canvas.height);
  const shown = canvas.getContext('2d').getImageData(at[0], at[1], 1, 1).data;
  const plain = bare.getImageData(at[0], at[1], 1, 1).data;
  return Math.abs(shown[0] - plain[0]) + Math.abs(shown[1] - plain[1]) + Math.abs(shown[2] - plain[2]) >= 30;
}"""


@contextlib.contextmanager
def opened_page(server_url, path: Path, *, modality: str = "auto", accept_downloads: bool = False):
    """The page in chromium (a fresh profile) with the file at ``path`` opened; yields the page and ``at(x, y)``, the
    page position of image pixel (or voxel column and row) ``(x, y)``."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = chromium_path()
    with sync_api.sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="gnnseg-page-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=["--no-sandbox"],
            accept_downloads=accept_downloads, viewport={"width": 1400, "height": 1000})
        try:
            page = context.new_page()
            page.goto(server_url)
            page.select_option("#modality", modality)
            page.set_input_files("#file", str(path))
            page.wait_for_function("document.getElementById('status').textContent.includes('Drag a box')",
                                   timeout=60_000)
            scale = page.evaluate("state.scale")
            frame = page.locator("#view").bounding_box()
            css = frame["width"] / page.evaluate("document.getElementById('view').width")
            yield page, lambda x, y: (frame["x"] + x * scale * css, frame["y"] + y * scale * css)
        finally:
            context.close()


def drag(page, start, end) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=6)
    page.mouse.up()


POLYP = 170   # the Kvasir image the page tests open (sorted by name)


def polyp_page(server_url):
    """The page with a Kvasir polyp opened (:func:`opened_page`)."""
    return opened_page(server_url, sorted(require_dataset("kvasir_seg_subset/images").glob("*.jpg"))[POLYP])


def test_page_segments_a_dragged_box_in_chromium(server_url):
    name = sorted(require_dataset("kvasir_seg_subset/images").glob("*.jpg"))[POLYP].name
    from gnnseg.seg.io import read_image_2d

    truth = read_image_2d(require_dataset("kvasir_seg_subset/masks") / name, grayscale=True).array > 127
    rows, cols = np.nonzero(truth)
    box = [int(cols.min()) - 5, int(rows.min()) - 5, int(cols.max()) + 5, int(rows.max()) + 5]
    with polyp_page(server_url) as (page, at):
        drag(page, at(box[0], box[1]), at(box[2], box[3]))
        page.wait_for_function("document.getElementById('view').dataset.masks === '1'", timeout=60_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve_page.png"))
        scale = page.evaluate("state.scale")
        found = page.evaluate(OVERLAY_CHECK, [*(float(v * scale) for v in box), 12 * scale])
        status = page.text_content("#status")
    assert found["inside"] > 0.2 * found["area"], found
    assert found["farOutside"] == 0, found
    assert "1 mask(s) in" in status


def test_page_corrects_a_mask_with_two_clicks_and_undoes_one(server_url):
    with polyp_page(server_url) as (page, at):
        drag(page, at(40, 40), at(200, 200))
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


def test_page_propagates_a_3d_box_through_a_volume_and_downloads_nifti(server_url, tmp_path):
    from gnnseg.seg.io import MedicalImage, read_nifti, write_nifti

    z, y, x = np.mgrid[:7, :64, :64]
    ball = (z - 3) ** 2 * 16 + (y - 30) ** 2 + (x - 34) ** 2 <= 14 ** 2
    volume = np.random.default_rng(0).normal(100, 10, ball.shape) + 400 * ball
    path = write_nifti(MedicalImage(volume.astype(np.float32), (3.0, 1.0, 1.0)), tmp_path / "ball.nii.gz")
    with opened_page(server_url, path, modality="mr", accept_downloads=True) as (page, at):
        assert page.is_visible("#slice") and page.evaluate("state.slice") == 3
        page.check("#box-3d")
        page.fill("#z-from", "1")
        page.fill("#z-to", "5")
        drag(page, at(17, 13), at(51, 47))
        page.wait_for_function("document.getElementById('view').dataset.masks === '1'", timeout=120_000)
        count = "Array.from(maskOnSlice(state.boxes[0].object.mask)).reduce((a, b) => a + b, 0)"
        on_slice = page.evaluate(count)
        page.evaluate("showSlice(0)")
        off_slice = page.evaluate(count)
        with page.expect_download() as download:
            page.click("#download-nifti")
        saved = tmp_path / "downloaded.nii.gz"
        download.value.save_as(saved)
    assert on_slice > 0.5 * ball[3].sum() and off_slice == 0  # slice 0 lies outside the box's range 1..5
    labels = read_nifti(saved).array
    assert labels.shape == ball.shape and labels[1:6].any() and not labels[0].any() and not labels[6].any()


def test_page_corrects_a_3d_object_with_clicks_on_two_slices_and_undoes_one(stand_in_server, tmp_path):
    from gnnseg.seg.io import MedicalImage, write_nifti
    from gnnseg.seg.serve.encoding import rle_decode

    url, predictor = stand_in_server
    volume = np.random.default_rng(2).normal(100, 10, (9, 40, 48)).astype(np.float32)
    path = write_nifti(MedicalImage(volume, (3.0, 1.0, 1.0)), tmp_path / "noise.nii.gz")

    def columns(object_, z):
        found = np.flatnonzero(rle_decode(object_["mask"])[z].any(axis=0))
        return int(found[0]), int(found[-1])

    with opened_page(url, path, modality="mr") as (page, at):
        assert page.evaluate("state.slice") == 4
        assert (page.input_value("#z-from"), page.input_value("#z-to")) == ("0", "8")   # slice 4 +-5, in 0..8
        page.check("#box-3d")
        page.fill("#z-from", "2")
        page.fill("#z-to", "6")
        drag(page, at(6.3, 5.3), at(40.3, 33.3))
        page.wait_for_function("document.getElementById('view').dataset.masks === '1'", timeout=60_000)
        made = page.evaluate("state.boxes[0].object")
        calls = len(predictor.images)
        page.keyboard.down("Shift")
        page.mouse.click(*at(20.3, 15.3))                       # slice 4: the object does not go on from column 20
        page.keyboard.up("Shift")
        page.wait_for_function("document.getElementById('view').dataset.clicks === '1'", timeout=60_000)
        cut = page.evaluate("state.boxes[0].object")
        answered = len(predictor.images) - calls
        status = page.text_content("#status")
        page.evaluate("showSlice(5)")                           # the slider's move: slice 5 decoded from the code
        shown_on_5 = [page.evaluate(OVERLAY_AT, [x, 20]) for x in (8, 22, 30)]
        page.mouse.click(*at(8.3, 8.3))                         # slice 5: a click that adds
        page.wait_for_function("document.getElementById('view').dataset.clicks === '2'", timeout=60_000)
        widened = page.evaluate("state.boxes[0].object")
        page.click("#undo")
        page.wait_for_function("document.getElementById('view').dataset.clicks === '1'", timeout=60_000)
        undone = page.evaluate("state.boxes[0].object")
    assert made["box3d"] == [6, 5, 2, 40, 33, 6] and all(columns(made, z) == (6, 40) for z in range(2, 7))
    assert cut["clicks"] == [{"slice": 4, "points": [[pytest.approx(20.3, abs=0.15), pytest.approx(15.3, abs=0.15)]],
                              "labels": [0]}]
    assert [columns(cut, z) for z in range(2, 7)] == [(6, 25), (6, 22), (6, 19), (6, 22), (6, 25)] and answered == 5
    assert "Click answered in" in status and "on the server" in status
    assert shown_on_5 == [True, True, False]                    # columns 6..22 on slice 5
    # the click on slice 5 is answered there and propagated up to 6; slice 4, clicked before, keeps its mask
    assert [columns(widened, z) for z in range(2, 7)] == [(6, 25), (6, 22), (6, 19), (6, 25), (6, 28)]
    assert undone["mask"] == cut["mask"] and undone["clicks"] == cut["clicks"]
