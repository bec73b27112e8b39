"""The "MedSAM on Laptop" challenge loop on our real data: convert, predict every case, score as the challenge did.

The held-out Kvasir-SEG images (40 2D cases) and the TotalSegmentator CT (one 3D case, 37 organs) are written as
challenge cases (``gnnseg seg lite convert``); each whole-image model by name (the released ``litemedsam`` and the
packaged Lite models), exported to ONNX, answers them (``gnnseg seg lite predict``), as given and with each box
answered on a window around it (``--zoom 0.5``, :mod:`gnnseg.seg.sam.inference.zoom`); box-centred models
(``vit_cpu``, ``vit_cpu_clicks``), which ONNX does not run and which answer every box on its own window already,
run in PyTorch once. ``gnnseg seg lite evaluate`` gives DSC and NSD per case. Writes
benchmarks/results/lite_challenge.{json,md}.

    python benchmarks/lite_challenge.py
    python benchmarks/lite_challenge.py --zooms none          # without the zoomed rows
    python benchmarks/lite_challenge.py --models litemedsam   # one model; rows of the others are kept
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gnnseg.core import machine_info, write_json
from gnnseg.seg.sam.challenge import evaluate_cases, predict_cases, write_cases
from gnnseg.seg.sam.export import export_onnx
from gnnseg.seg.sam.shipped import ModelChoice, load_model

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("litemedsam", "lite_medsam", "lite_medsam_fast", "vit_cpu", "vit_cpu_clicks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--zooms", default="none,0.5", help="zoom contexts to measure, comma-separated; none: off")
    parser.add_argument("--models", default=",".join(MODELS), help="models by name, comma-separated")
    args = parser.parse_args()
    names = args.models.split(",")
    command = " ".join(map(shlex.quote, [sys.executable, *sys.argv]))
    zooms = [None if value == "none" else float(value) for value in args.zooms.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        cases = write_cases(args.data, folder / "cases")
        for name in names:
            model = load_model(name)
            box_centred = model.config.crop_margin is not None
            if not box_centred:
                export_onnx(model, folder / name)
            for zoom in [None] if box_centred else zooms:
                predictions = folder / f"pred_{name}_{zoom}"
                checkpoint = name if box_centred else str(folder / name)
                began = time.perf_counter()
                run = predict_cases(folder / "cases" / "imgs", predictions,
                                    choice=ModelChoice(checkpoint=checkpoint, zoom=zoom), show_progress=False)
                seconds = time.perf_counter() - began
                scores = evaluate_cases(predictions, folder / "cases" / "gts")["per_case"]
                two_d = [score for case, score in scores.items() if case.startswith("2D")]
                three_d = scores["3DBox_CT_example"]
                runtime = "PyTorch" if box_centred else "onnxruntime"
                label = f"{name} ({runtime})" if zoom is None else f"{name} ({runtime}, zoom {zoom:g})"
                rows.append({"name": name, "model": label, "command": command, "zoom": zoom,
                             "dsc_2d": float(np.mean([s["dsc"] for s in two_d])),
                             "nsd_2d": float(np.mean([s["nsd"] for s in two_d])), "dsc_3d": three_d["dsc"],
                             "nsd_3d": three_d["nsd"], "seconds_2d_mean": float(np.mean(
                                 [s for case, s in run["seconds"].items() if case.startswith("2D")])),
                             "seconds_3d": run["seconds"]["3DBox_CT_example"], "seconds_total": seconds})
                print(rows[-1], flush=True)
    path = RESULTS / "lite_challenge.json"
    if path.is_file():  # rows of models not measured now are kept from the earlier run
        earlier = [{**row, "name": row.get("name", row["model"].split(" (")[0])}  # rows from before names were kept
                   for row in json.loads(path.read_text())["rows"]]
        rows += [row for row in earlier if row["name"] not in names]
        rows.sort(key=lambda row: (list(MODELS).index(row["name"]), row["zoom"] is not None))
    write_json(path, {
        "benchmark": "lite_challenge", "machine": machine_info(), "cases": cases, "rows": rows, "command": command})
    lines = ["| model | 2D DSC | 2D NSD | 3D DSC | 3D NSD | s per 2D case | s for the 3D case |", "|---" * 7 + "|"]
    lines += [f"| {r['model']} | {r['dsc_2d']:.3f} | {r['nsd_2d']:.3f} | {r['dsc_3d']:.3f} | {r['nsd_3d']:.3f} | "
              f"{r['seconds_2d_mean']:.2f} | {r['seconds_3d']:.1f} |" for r in rows]
    lines.append(f"\n{cases['cases_2d']} 2D cases (held-out Kvasir-SEG polyps, boxes + 5 px) and one 3D case "
                 f"(TotalSegmentator CT, {cases['objects_3d']} organs, tight 3D boxes); models loaded once.")
    (RESULTS / "lite_challenge.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
