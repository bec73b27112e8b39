"""Latency per case on this CPU: MedSAM's ViT-B at 1024, Lite MedSAM in PyTorch and in onnxruntime, the lighter
``lite_medsam_fast`` in onnxruntime, and the default model (box-centred: one 128-pixel window per box and slice) in
onnxruntime.

A case is what the CVPR 2024 "MedSAM on Laptop" challenge times: read the image, segment, write the mask.

- 2D: a Kvasir-SEG image (JPEG) and one box (its polyp's box + 5 px), mask written as PNG;
- 3D: TotalSegmentator's ``example_ct_sm`` (30 slices, NIfTI) and one 3D box around the liver (all 30 slices),
  propagated from the middle slice, labels written as NIfTI.

Two clocks: **warm** (the model already loaded in this process: file in, file out) and **cold** (a new
``gnnseg seg segment`` process per case: Python start, imports, model load, then the case). New processes find
gnnseg's bytecode compiled, as pip leaves a wheel and ``make setup`` an editable install; the default's 2D case is
also timed with Python compiling gnnseg's modules from source in every process (its bytecode removed and
``PYTHONDONTWRITEBYTECODE`` set: a container that disables bytecode over an editable install made without
``make setup``). ViT-B has random
weights (its speed does not depend on them); its 3D case is not run (30 encoder calls of several seconds each).

    python benchmarks/lite_medsam_latency.py
"""

from __future__ import annotations

import argparse
import compileall
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import gnnseg
from gnnseg.core import machine_info, write_json
from gnnseg.core.onnx_sessions import CACHE_ENV
from gnnseg.seg.io import (
    MedicalImage,
    read_image_2d,
    read_nifti,
    write_image_2d,
    write_nifti,
)
from gnnseg.seg.io.intensity import scale_volume
from gnnseg.seg.sam.checkpoint import save_sam
from gnnseg.seg.sam.export import export_onnx
from gnnseg.seg.sam.inference.chain import make_predictor
from gnnseg.seg.sam.inference.prompts import boxes_from_mask
from gnnseg.seg.sam.inference.volume import segment_volume
from gnnseg.seg.sam.modeling.sam import build_sam
from gnnseg.seg.sam.shipped import DEFAULT_MODEL, load_model
from timing import best_of

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGE = Path(gnnseg.__file__).parent


def case_2d(model, image_path: Path, box: np.ndarray, output: Path) -> None:
    predictor = make_predictor(model, cache_size=0)
    predictor.set_image(read_image_2d(image_path).array)
    mask = predictor.predict(boxes=box).masks[0, 0]
    write_image_2d(mask.astype(np.uint8) * 255, output, overwrite=True)


def case_3d(model, volume_path: Path, box3d: np.ndarray, output: Path) -> None:
    volume = read_nifti(volume_path)
    labels = segment_volume(make_predictor(model, cache_size=0), scale_volume(volume.array, "ct"), box3d)
    write_nifti(MedicalImage(labels.astype(np.uint16), volume.spacing, volume.affine), output, overwrite=True)


def cold(arguments: list[str], output: Path, repeats: int, cache: Path, bytecode: bool = True) -> tuple[float, float]:
    """A new ``gnnseg seg segment`` process per case: the first run's time, with ``cache`` (a folder that must not
    exist yet) as its empty cache of optimised onnxruntime graphs (``gnnseg.core.onnx_sessions``), which it fills,
    and the fastest of ``repeats`` runs after it, which use it. Without ``bytecode`` every process compiles
    gnnseg's modules from source (its bytecode removed, none written); with it, the bytecode is compiled first."""
    if cache.exists():
        raise ValueError(f"{cache} exists: the first run would not start uncached")
    environment = {**os.environ, CACHE_ENV: str(cache)}
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    if bytecode:
        compileall.compile_dir(PACKAGE, quiet=1)       # as pip does when it installs a wheel
    else:
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
        for folder in list(PACKAGE.rglob("__pycache__")):
            shutil.rmtree(folder)

    def run() -> None:
        output.unlink(missing_ok=True)
        subprocess.run([sys.executable, "-m", "gnnseg.cli", "seg", "segment", *arguments, "-o", str(output)],
                       check=True, capture_output=True, env=environment)

    return best_of(run, 1), best_of(run, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = Path(args.data)
    image_path = sorted((data / "kvasir_seg_subset" / "images").glob("*.jpg"))[170]
    truth = read_image_2d(data / "kvasir_seg_subset" / "masks" / image_path.name, grayscale=True).array > 127
    box = boxes_from_mask(truth, 5)[0].astype(np.float64)
    volume_path = data / "totalsegmentator_examples" / "example_ct_sm.nii.gz"
    liver = read_nifti(data / "totalsegmentator_examples" / "example_seg.nii.gz").array == 5
    zs, ys, xs = np.nonzero(liver)
    box3d = np.array([[xs.min(), ys.min(), zs.min(), xs.max(), ys.max(), zs.max()]])

    lite, fast, vit_b = load_model("lite_medsam"), load_model("lite_medsam_fast"), build_sam("medsam_vit_b")
    figures: dict = {"2d_case": {"image": image_path.name, "shape": list(truth.shape), "box": box.tolist()},
                     "3d_case": {"volume": volume_path.name, "shape": list(liver.shape), "box3d": box3d[0].tolist()}}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        os.environ[CACHE_ENV] = str(folder / "warm_cache")   # the loaded models' own; each new process gets another
        export_onnx(lite, folder / "onnx")
        export_onnx(fast, folder / "fast_onnx")
        export_onnx(load_model(DEFAULT_MODEL), folder / "default_onnx")
        runners = {"vit_b": vit_b, "lite_torch": lite, "onnx": load_model(folder / "onnx"),
                   "fast_onnx": load_model(folder / "fast_onnx"), "default_onnx": load_model(folder / "default_onnx")}
        for name, model in runners.items():
            case_2d(model, image_path, box, folder / "warmup.png")
            figures[f"{name}_2d_case_s"] = best_of(lambda m=model: case_2d(m, image_path, box, folder / "m.png"),
                                                   args.repeats if name != "vit_b" else 2)
            print(name, "2d", round(figures[f"{name}_2d_case_s"], 3), flush=True)
        for name in ("lite_torch", "onnx", "fast_onnx", "default_onnx"):
            figures[f"{name}_3d_case_s"] = best_of(
                lambda m=runners[name]: case_3d(m, volume_path, box3d, folder / "m.nii.gz"), 2)
            print(name, "3d", round(figures[f"{name}_3d_case_s"], 3), flush=True)

        save_sam(vit_b, folder / "medsam_vit_b_random.pt", half_precision=True)
        box_arg = ",".join(str(int(v)) for v in box)
        box3d_arg = ",".join(str(int(v)) for v in box3d[0])
        checkpoints = {"vit_b": str(folder / "medsam_vit_b_random.pt"), "lite_torch": "lite_medsam",
                       "onnx": str(folder / "onnx"), "fast_onnx": str(folder / "fast_onnx"),
                       "default_onnx": str(folder / "default_onnx")}
        for name, checkpoint in checkpoints.items():
            figures[f"{name}_2d_case_first_cold_s"], figures[f"{name}_2d_case_cold_s"] = cold(
                ["--image", str(image_path), "--box", box_arg, "--checkpoint", checkpoint], folder / "cold.png",
                1 if name == "vit_b" else args.repeats, folder / f"cache_{name}_2d")
            print(name, "2d cold", round(figures[f"{name}_2d_case_cold_s"], 3), flush=True)
        figures["default_onnx_2d_case_cold_no_bytecode_s"] = cold(
            ["--image", str(image_path), "--box", box_arg, "--checkpoint", checkpoints["default_onnx"]],
            folder / "cold.png", args.repeats, folder / "cache_default_no_bytecode", bytecode=False)[1]
        for name in ("onnx", "fast_onnx", "default_onnx"):
            figures[f"{name}_3d_case_first_cold_s"], figures[f"{name}_3d_case_cold_s"] = cold(
                ["--volume", str(volume_path), "--box3d", box3d_arg, "--checkpoint", checkpoints[name]],
                folder / "cold.nii.gz", 1, folder / f"cache_{name}_3d")
        figures["python_torch_import_s"] = best_of(
            lambda: subprocess.run([sys.executable, "-c", "import torch"], check=True), args.repeats)
    figures["speedup_vs_vit_b"] = figures["vit_b_2d_case_s"] / figures["onnx_2d_case_s"]
    figures["speedup_vs_vit_b_torch"] = figures["vit_b_2d_case_s"] / figures["lite_torch_2d_case_s"]
    figures["fast_speedup_vs_vit_b"] = figures["vit_b_2d_case_s"] / figures["fast_onnx_2d_case_s"]
    result = {"benchmark": "lite_medsam_latency", "machine": machine_info(), "default_model": DEFAULT_MODEL,
              "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])), **figures}
    write_json(RESULTS / "lite_medsam_latency.json", result)
    def cell(key: str) -> str:
        return f"{figures[key]:.2f}" if key in figures else "not run"
    lines = [("| case | ViT-B 1024 (PyTorch) | Lite MedSAM (PyTorch) | Lite MedSAM (onnxruntime) "
              f"| lite_medsam_fast (onnxruntime) | {DEFAULT_MODEL}, the default (onnxruntime) |"), "|---" * 6 + "|"]
    for label, suffix in (("2D, warm (s)", "2d_case_s"), ("2D, new process (s)", "2d_case_cold_s"),
                          ("2D, first new process on the machine (s)", "2d_case_first_cold_s"),
                          ("3D 30 slices, warm (s)", "3d_case_s"), ("3D 30 slices, new process (s)", "3d_case_cold_s"),
                          ("3D 30 slices, first new process (s)", "3d_case_first_cold_s")):
        lines.append(f"| {label} | " + " | ".join(cell(f"{name}_{suffix}") for name in checkpoints) + " |")
    lines.append(f"\nSpeed-up over ViT-B per warm 2D case: Lite onnxruntime {figures['speedup_vs_vit_b']:.1f}x, "
                 f"Lite PyTorch {figures['speedup_vs_vit_b_torch']:.1f}x, lite_medsam_fast onnxruntime "
                 f"{figures['fast_speedup_vs_vit_b']:.1f}x. `import torch` alone: "
                 f"{figures['python_torch_import_s']:.2f} s. A first new process on a machine optimises the "
                 "onnxruntime graphs and caches them for the next ones (`GNNSEG_CACHE_DIR`). New processes read "
                 "gnnseg's compiled bytecode; compiling it from source in every process, the default's 2D case "
                 f"takes {figures['default_onnx_2d_case_cold_no_bytecode_s']:.2f} s.")
    (RESULTS / "lite_medsam_latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
