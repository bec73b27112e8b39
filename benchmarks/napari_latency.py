"""Time from a box drawn to its mask shown, in napari's gnnseg widget and on the web page, with the same model and the
same boxes, on this machine.

- 2D: 20 held-out Kvasir polyps (``serve_page_clicks.py``'s set), one box each: the polyp's box + 5 px.
- 3D: TotalSegmentator's ``example_ct_sm`` (30 x 101 x 122 CT, 3 mm), one 3D box around each of 20 organs (the 20
  largest labels after the one used to warm up; a box is the organ's in-plane box + 2 px over its slices, drawn on
  its middle slice), propagated slice by slice. Different organs, so no box reuses the embeddings of another (a
  repeated box would be answered from the predictors' memo).

napari: the widget (``gnnseg.seg.napari``) on a ``ViewerModel`` with Qt offscreen; the clock starts as the rectangle is
added to the widget's Shapes layer (what the end of a drag does) and stops when the widget has pasted the answer into
its Labels layer (the ``answered`` signal). Qt's offscreen platform has no OpenGL here, so the canvas draw is not
in the figure; the Labels layer is refreshed. The page: chromium (Playwright) on ``gnnseg serve``'s page in this
process, the box dragged with the mouse; the clock starts at the mouse-up (a capturing listener) and stops when the
page's status says the masks are drawn on its canvas (a MutationObserver). Both run the service's predictor of the
default model; one box of each kind warms each side up first and is not counted.

Writes ``napari_latency.json`` and ``.md`` to ``--out-dir``. Run it alone: the timings are wall clock::

    python benchmarks/napari_latency.py
    python benchmarks/napari_latency.py --cases 2 --out-dir /tmp/napari   # smoke
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402

from gnnseg.core import machine_info, write_json  # noqa: E402
from gnnseg.seg.io import read_image_2d, read_nifti  # noqa: E402
from gnnseg.seg.metrics import dice  # noqa: E402
from gnnseg.seg.sam.shipped import DEFAULT_MODEL  # noqa: E402
from gnnseg.seg.serve.encoding import rle_decode  # noqa: E402
from serve_page_clicks import BOX_MARGIN, polyps, start_server  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CT = "totalsegmentator_examples/example_ct_sm.nii.gz"
CT_LABELS = "totalsegmentator_examples/example_seg.nii.gz"
ORGAN_MARGIN = 2
CASES = 20

TIMING_HOOKS = """
window.__drawnAt = null; window.__shownAt = null;
window.addEventListener("mouseup", () => { window.__drawnAt = performance.now(); window.__shownAt = null; }, true);
new MutationObserver(() => {
  if (window.__shownAt === null && /mask\\(s\\) in/.test(document.getElementById("status").textContent)) {
    window.__shownAt = performance.now();
  }
}).observe(document.getElementById("status"), { childList: true, characterData: true, subtree: true });
"""


def polyp_boxes(data: Path, count: int) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """``count + 1`` held-out polyps (the first warms up) with their masks and boxes ``x0, y0, x1, y1`` (+ 5 px)."""
    cases = []
    for path, truth in polyps(data, count + 1):
        rows, cols = np.nonzero(truth)
        height, width = truth.shape
        box = np.array([max(0, cols.min() - BOX_MARGIN), max(0, rows.min() - BOX_MARGIN),
                        min(width - 1, cols.max() + BOX_MARGIN), min(height - 1, rows.max() + BOX_MARGIN)])
        cases.append((path, truth, box))
    return cases


def organ_boxes(labels: np.ndarray, count: int) -> list[tuple[int, np.ndarray]]:
    """``count + 1`` organs, largest first (the first warms up), with 3D boxes ``x0, y0, z0, x1, y1, z1`` (+ 2 px in
    plane, over the organ's slices)."""
    values, sizes = np.unique(labels[labels > 0], return_counts=True)
    organs = values[np.argsort(-sizes, kind="stable")][: count + 1]
    if len(organs) < count + 1:
        raise SystemExit(f"{CT_LABELS} has {len(organs)} organs; {count + 1} are needed")
    depth, height, width = labels.shape
    boxes = []
    for organ in organs:
        z, y, x = np.nonzero(labels == organ)
        boxes.append((int(organ), np.array([max(0, x.min() - ORGAN_MARGIN), max(0, y.min() - ORGAN_MARGIN), z.min(),
                                            min(width - 1, x.max() + ORGAN_MARGIN),
                                            min(height - 1, y.max() + ORGAN_MARGIN), z.max()])))
    return boxes


def napari_times(polyp_cases, ct_path: Path, organ_cases, labels: np.ndarray) -> dict:
    """Box drawn -> Labels layer updated in the widget: seconds and DSC per 2D polyp and per 3D organ."""
    from napari.components import ViewerModel
    from qtpy.QtCore import QEventLoop
    from qtpy.QtWidgets import QApplication

    from gnnseg.seg.napari.widget import SegmentWidget

    application = QApplication.instance() or QApplication([])
    viewer = ViewerModel()
    widget = SegmentWidget(viewer)
    answered_at: list[float] = []
    widget.answered.connect(lambda _: answered_at.append(time.perf_counter()))

    def wait_idle() -> None:
        while widget.busy:
            application.processEvents()
            time.sleep(0.005)

    def timed_box(layer, corners: np.ndarray) -> float:
        loop = QEventLoop()
        widget.answered.connect(loop.quit)
        began = time.perf_counter()
        layer.add_rectangles(corners)
        loop.exec_()
        widget.answered.disconnect(loop.quit)
        wait_idle()
        return answered_at[-1] - began

    def started(name: str) -> None:
        widget.image_box.setCurrentText(name)
        widget.start()
        wait_idle()

    result = {"2d_seconds": [], "2d_dsc": [], "3d_seconds": [], "3d_dsc": []}
    for path, truth, (x0, y0, x1, y1) in polyp_cases:
        viewer.layers.clear()
        viewer.add_image(read_image_2d(path).array, name=path.stem, rgb=True)
        started(path.stem)
        # corners at the box's pixel centres + 0.5, where the page's drag puts them
        seconds = timed_box(viewer.layers[f"{path.stem} boxes"], np.array([[y0, x0], [y1, x1]]) + 0.5)
        result["2d_seconds"].append(seconds)
        result["2d_dsc"].append(dice(viewer.layers[f"{path.stem} objects"].data > 0, truth))
    viewer.layers.clear()
    ct = read_nifti(ct_path)
    viewer.add_image(ct.array, name="ct", scale=ct.spacing)
    started("ct")
    boxes = viewer.layers["ct boxes"]
    for organ, (x0, y0, z0, x1, y1, z1) in organ_cases:
        middle, either_side = z0 + (z1 - z0) // 2, (z1 - z0 + 1) // 2
        widget.depth_box.setValue(either_side)
        corners = np.array([[middle, y0, x0], [middle, y0, x1], [middle, y1, x1], [middle, y1, x0]]) + [0, 0.5, 0.5]
        result["3d_seconds"].append(timed_box(boxes, corners))
        result["3d_dsc"].append(dice(viewer.layers["ct objects"].data > 0, labels == organ))
        widget.undo()                                       # the next organ starts from empty labels, as on the page
        wait_idle()
    viewer.layers.clear()
    return result


def page_times(polyp_cases, ct_path: Path, organ_cases, labels: np.ndarray) -> dict:
    """Box drawn -> masks drawn on the page: seconds and DSC per 2D polyp and per 3D organ."""
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("GNNSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("no chromium on PATH (Debian: apt-get install chromium; or set GNNSEG_CHROMIUM)")
    url, server = start_server(DEFAULT_MODEL)
    result = {"2d_seconds": [], "2d_dsc": [], "3d_seconds": [], "3d_dsc": []}
    try:
        with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=["--no-sandbox"],
                viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(url)
            page.evaluate(TIMING_HOOKS)

            def drag(box: np.ndarray) -> tuple[float, np.ndarray]:
                """Drag ``x0, y0, x1, y1`` on the shown image; the page's time and the mask it got."""
                scale = page.evaluate("state.scale")
                frame = page.locator("#view").bounding_box()
                css = frame["width"] / page.evaluate("document.getElementById('view').width")
                x0, y0, x1, y1 = (frame["x"] + (v + 0.5) * scale * css if k % 2 == 0 else
                                  frame["y"] + (v + 0.5) * scale * css for k, v in enumerate(box))
                page.mouse.move(x0, y0)
                page.mouse.down()
                page.mouse.move(x1, y1, steps=6)
                page.mouse.up()
                page.wait_for_function("window.__shownAt !== null && state.boxes.length === 1 && "
                                       "!!state.boxes[0].object", timeout=120_000)
                seconds = page.evaluate("(window.__shownAt - window.__drawnAt) / 1000")
                return seconds, rle_decode(page.evaluate("state.boxes[0].object.mask"))

            def cleared() -> None:
                page.click("#clear")
                page.wait_for_function("state.boxes.length === 0")

            for path, truth, box in polyp_cases:
                page.set_input_files("#file", str(path))
                page.wait_for_function("document.getElementById('status').textContent.includes('Drag a box')",
                                       timeout=60_000)
                seconds, mask = drag(box)
                result["2d_seconds"].append(seconds)
                result["2d_dsc"].append(dice(mask, truth))
                cleared()
            page.set_input_files("#file", str(ct_path))
            page.wait_for_function("document.getElementById('status').textContent.includes('Drag a box')",
                                   timeout=60_000)
            page.check("#box-3d")
            for organ, (x0, y0, z0, x1, y1, z1) in organ_cases:
                middle, either_side = z0 + (z1 - z0) // 2, (z1 - z0 + 1) // 2
                page.evaluate("([z, low, high]) => { state.zRangeSet = true; $('z-from').value = low; "
                              "$('z-to').value = high; return showSlice(z); }",
                              [int(middle), int(max(0, middle - either_side)),
                               int(min(labels.shape[0] - 1, middle + either_side))])
                seconds, mask = drag(np.array([x0, y0, x1, y1]))
                result["3d_seconds"].append(seconds)
                result["3d_dsc"].append(dice(mask, labels == organ))
                cleared()
            context.close()
    finally:
        server.should_exit = True
    return result


def summary(seconds: list[float]) -> dict:
    values = 1000 * np.asarray(seconds[1:])              # the first warmed up
    return {"median_ms": float(np.median(values)), "p90_ms": float(np.percentile(values, 90)),
            "min_ms": float(values.min()), "max_ms": float(values.max()), "count": len(values)}


def markdown(result: dict) -> str:
    lines = ["# Box drawn to mask shown: napari widget and web page", "",
             f"Model `{result['model']}`, the service's predictor on both sides; median of {result['cases']} boxes "
             "each, after one box that warms up. napari: until the Labels layer holds the answer (Qt offscreen, no "
             "canvas draw); page: until the overlay is drawn on its canvas (chromium).", "",
             "| case | napari median (ms) | page median (ms) | page / napari | napari p90 | page p90 | "
             "mean DSC napari | mean DSC page |", "|---|---|---|---|---|---|---|---|"]
    for key, name in (("kvasir_2d", "2D Kvasir polyp, box + 5 px"), ("ct_3d", "3D CT organ box, propagated")):
        case = result[key]
        lines.append(f"| {name} | {case['napari']['median_ms']:.0f} | {case['page']['median_ms']:.0f} | "
                     f"{case['page_over_napari']:.2f} | {case['napari']['p90_ms']:.0f} | "
                     f"{case['page']['p90_ms']:.0f} | {case['napari_dsc']:.3f} | {case['page_dsc']:.3f} |")
    lines.append(f"\n3D boxes span {min(result['ct_3d']['slices'])}-{max(result['ct_3d']['slices'])} slices "
                 f"(median {int(np.median(result['ct_3d']['slices']))}).\n")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--cases", type=int, default=CASES, help="boxes timed per kind (after one that warms up)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    ct_path, labels_path = args.data / CT, args.data / CT_LABELS
    for path in (ct_path, labels_path):
        if not path.is_file():
            raise SystemExit(f"missing {path} (benchmarks read ../shared/datasets)")
    load_before = os.getloadavg()
    labels = read_nifti(labels_path).array
    polyp_cases, organ_cases = polyp_boxes(args.data, args.cases), organ_boxes(labels, args.cases)
    napari = napari_times(polyp_cases, ct_path, organ_cases, labels)
    print("napari done", {k: np.round(v, 3).tolist() for k, v in napari.items()}, flush=True)
    page = page_times(polyp_cases, ct_path, organ_cases, labels)
    print("page done", {k: np.round(v, 3).tolist() for k, v in page.items()}, flush=True)
    result = {"benchmark": "napari_latency", "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
              "machine": machine_info(), "model": DEFAULT_MODEL, "cases": args.cases,
              "qt_platform": os.environ["QT_QPA_PLATFORM"],
              "load_average_before_after": [load_before, os.getloadavg()]}
    for key, kind, names in (("kvasir_2d", "2d", [p.name for p, _, _ in polyp_cases]),
                             ("ct_3d", "3d", [organ for organ, _ in organ_cases])):
        result[key] = {"napari": summary(napari[f"{kind}_seconds"]), "page": summary(page[f"{kind}_seconds"]),
                       "napari_dsc": float(np.mean(napari[f"{kind}_dsc"][1:])),
                       "page_dsc": float(np.mean(page[f"{kind}_dsc"][1:])),
                       "cases": names[1:], "napari_seconds": napari[f"{kind}_seconds"][1:],
                       "page_seconds": page[f"{kind}_seconds"][1:]}
        result[key]["page_over_napari"] = result[key]["page"]["median_ms"] / result[key]["napari"]["median_ms"]
    result["ct_3d"]["slices"] = [int(box[5] - box[2] + 1) for _, box in organ_cases[1:]]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.out_dir / "napari_latency.json", result)
    (args.out_dir / "napari_latency.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
