"""nnU-Net v2 models predicted by nnunetv2 itself and by gnnseg, in the same run: agreement and CPU time.

For each setting a model folder in nnU-Net's results layout (``Trainer__Plans__configuration/`` with ``plans.json``,
``dataset.json`` and ``fold_<k>/checkpoint_final.pth``) is predicted by nnunetv2's ``nnUNetPredictor`` (CPU,
``predict_from_files_sequential``, tile step 0.5, Gaussian weighting) and by gnnseg's
:func:`~gnnseg.seg.unet.nnunet_predict.predict_nnunet_folder` (and, where gnnseg's ONNX export of nnU-Net models is
present, by its torch-free ONNX predictor), with test-time mirroring on and off. gnnseg runs as ``gnnseg seg
predict``; every predictor run is a Python process of its own, timed from after its imports. Reported per setting:
Dice of gnnseg's segmentation against nnunetv2's per case (mean over the labels either map holds), and the wall time
of each predictor over all cases (loading the model included) as a ratio gnnseg / nnunetv2.

Models (default): random-weight networks (nnunetv2's own initialisation, every weight then moved by 0.1 x N(0, 1), 2
folds) on plans made by nnunetv2's planner (``nnUNetv2_plan_and_preprocess --no_pp``) for

- ``tiny_3d``: three synthetic anisotropic volumes (4 mm slices), predicted on two volumes at other spacings;
- ``tiny_2d``: three synthetic grey PNGs, predicted on two (one smaller than the patch);
- ``isbi_2d``: ISBI 2012 EM (30 training sections, 512 x 512), predicted on two test sections;
- ``ct_3d_fullres``: the TotalSegmentator CT volume (3 mm, the 5 organs of ``unet_totalseg_ct``), predicted on itself.

``--quick`` runs the two tiny settings only; ``--repeats 3`` keeps each predictor's fastest of three runs.
``--model FOLDER --cases FOLDER`` measures a model of your own instead (a trained one: nothing is randomised).
nnunetv2 (and its torchvision) must be installed beside gnnseg.
Writes ``benchmarks/results/nnunet_dropin.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gnnseg.core import machine_info, write_json
from gnnseg.core.onnx_sessions import CACHE_ENV
from gnnseg.seg.io import MedicalImage, convert_isbi2012, read_any
from gnnseg.seg.io.any_format import write_any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test oracles' torchvision schemas, used here too
from tests.seg.torchvision_schemas import make_torchvision_importable  # noqa: E402
from timing import best_of, worker_output  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FOLDS = (0, 1)


# ------------------------------------------------------------------------------------------------ datasets

def _smooth_image(shape, rng, scale, offset, border) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    image = gaussian_filter(rng.normal(size=shape), 2.0) * scale + offset
    out = np.zeros(shape)
    inner = tuple(slice(b, s - b) for b, s in zip(border, shape))
    out[inner] = image[inner]
    return out


def _dataset_json(folder: Path, channels: dict, labels: dict, count: int, ending: str) -> None:
    (folder / "dataset.json").write_text(json.dumps({"channel_names": channels, "labels": labels,
                                                     "numTraining": count, "file_ending": ending}, indent=2))


def build_tiny_3d(raw: Path, cases: Path) -> None:
    rng = np.random.default_rng(0)
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for k in range(3):
        spacing = (4.0, 0.8, 0.8)
        image = _smooth_image((12, 40, 36), rng, 60.0, 100.0, (1, 2, 2)).astype(np.float32)
        labels = (image > 100).astype(np.uint8) + (image > 130).astype(np.uint8)
        affine = np.diag([*spacing[::-1], 1.0])
        write_any(MedicalImage(image, spacing, affine), raw / "imagesTr" / f"tiny_{k:03d}_0000.nii.gz")
        write_any(MedicalImage(labels, spacing, affine), raw / "labelsTr" / f"tiny_{k:03d}.nii.gz")
    _dataset_json(raw, {"0": "MR"}, {"background": 0, "a": 1, "b": 2}, 3, ".nii.gz")
    cases.mkdir(parents=True)
    for k, (shape, spacing) in enumerate([((10, 44, 38), (3.0, 0.7, 0.9)), ((14, 30, 52), (4.0, 0.8, 0.8))]):
        image = _smooth_image(shape, rng, 60.0, 100.0, (1, 2, 3)).astype(np.float32)
        write_any(MedicalImage(image, spacing, np.diag([*spacing[::-1], 1.0])), cases / f"case{k}_0000.nii.gz")


def build_tiny_2d(raw: Path, cases: Path) -> None:
    rng = np.random.default_rng(1)
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for k in range(3):
        image = np.clip(_smooth_image((48, 56), rng, 300.0, 120.0, (0, 0)), 0, 255).astype(np.uint8)
        write_any(MedicalImage(image, (1.0, 1.0)), raw / "imagesTr" / f"tiny_{k:03d}_0000.png")
        write_any(MedicalImage((image > 120).astype(np.uint8), (1.0, 1.0)), raw / "labelsTr" / f"tiny_{k:03d}.png")
    _dataset_json(raw, {"0": "EM"}, {"background": 0, "cell": 1}, 3, ".png")
    cases.mkdir(parents=True)
    for k, shape in enumerate([(60, 50), (30, 34)]):
        image = np.clip(_smooth_image(shape, rng, 300.0, 120.0, (0, 0)), 0, 255).astype(np.uint8)
        write_any(MedicalImage(image, (1.0, 1.0)), cases / f"img{k}_0000.png")


def build_isbi_2d(raw: Path, cases: Path, data: Path) -> None:
    dataset = convert_isbi2012(data / "isbi2012_em", raw)
    cases.mkdir(parents=True)
    for path in sorted((dataset.root / "imagesTs").glob("*.png"))[:2]:
        shutil.copy(path, cases / path.name)


def build_ct_3d(raw: Path, cases: Path, data: Path) -> None:
    from unet_planner_fidelity import build_ct

    dataset = build_ct(data / "totalsegmentator_examples", raw)
    cases.mkdir(parents=True)
    for path in sorted((dataset.root / "imagesTr").glob("*.nii.gz")):
        shutil.copy(path, cases / path.name)


# ------------------------------------------------------------------------------------------------ models

def plan_with_nnunetv2(raw: Path, number: int, scratch: Path) -> Path:
    """Plans from nnunetv2's own fingerprint and planner; returns the preprocessed folder holding nnUNetPlans.json."""
    name = f"Dataset{number:03d}_{raw.name}"
    shutil.move(str(raw), scratch / "raw" / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    binary = Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"
    subprocess.run([str(binary), "-d", str(number), "--no_pp", "-np", "1"], env=env, check=True, capture_output=True)
    return scratch / "preprocessed" / name


def write_random_model(planned: Path, configuration: str, results: Path, seed: int) -> Path:
    """``nnUNetTrainer__nnUNetPlans__<configuration>/`` with random-weight checkpoints shaped as nnunetv2 saves them."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    plans = json.loads((planned / "nnUNetPlans.json").read_text())
    dataset = json.loads((planned / "dataset.json").read_text())
    folder = results / f"nnUNetTrainer__nnUNetPlans__{configuration}"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    architecture = plans["configurations"][configuration]["architecture"]
    dims = len(plans["configurations"][configuration]["patch_size"])
    for fold in FOLDS:
        torch.manual_seed(seed + fold)
        network = get_network_from_plans(architecture["network_class_name"], architecture["arch_kwargs"],
                                         architecture["_kw_requires_import"], len(dataset["channel_names"]),
                                         len(dataset["labels"]), allow_init=True, deep_supervision=True)
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
        (folder / f"fold_{fold}").mkdir()
        torch.save({"network_weights": network.state_dict(), "optimizer_state": None, "grad_scaler_state": None,
                    "logging": {"ema_fg_dice": [np.float64(0.0)]}, "_best_ema": np.float64(0.0), "current_epoch": 1,
                    "init_args": {"plans": plans, "configuration": configuration, "fold": fold,
                                  "dataset_json": dataset, "device": torch.device("cpu")},
                    "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": tuple(range(dims))},
                   folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


# ------------------------------------------------------------------------------------------------ predictors

def predict_nnunetv2(model: Path, cases: Path, output: Path, mirroring: bool, probabilities: bool) -> float:
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer  # noqa: F401  (found by name when the model opens)
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                    perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(model), use_folds=None)
        output.mkdir(parents=True)
        predictor.predict_from_files_sequential(str(cases), str(output), save_probabilities=probabilities)
    return time.perf_counter() - start


def predict_gnnseg(model: Path, cases: Path, output: Path, mirroring: bool, probabilities: bool,
                   precision: str = "float32") -> float:
    """``gnnseg seg predict`` as a user runs it (an ONNX export as ``model`` runs torch-free)."""
    import gnnseg.cli.seg  # noqa: F401  (the command's own imports, before the clock)
    import gnnseg.core.freed_memory  # noqa: F401
    import gnnseg.seg.io.dicom_seg  # noqa: F401
    import gnnseg.seg.unet.onnx_predictor  # noqa: F401
    from gnnseg.cli import main as gnnseg_main

    if not (model / "inference.json").is_file():       # a PyTorch model, not an ONNX export
        import gnnseg.seg.unet.nnunet_predict  # noqa: F401
        import gnnseg.seg.unet.pipeline  # noqa: F401
        import gnnseg.seg.unet.results_layout  # noqa: F401

    command = ["seg", "predict", "-m", str(model), "-i", str(cases), "-o", str(output), "--json"]
    command += ([] if mirroring else ["--disable-tta"]) + (["--save-probabilities"] if probabilities else [])
    command += ["--precision", precision] if precision != "float32" else []
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        status = gnnseg_main(command)
    if status != 0:
        raise RuntimeError(f"gnnseg {' '.join(command)} exited with {status}")
    return time.perf_counter() - start


PREDICTORS = {"nnunetv2": predict_nnunetv2, "gnnseg": predict_gnnseg,
              "bf16": lambda *args: predict_gnnseg(*args, precision="bfloat16"), "onnx": predict_gnnseg}


def timed_in_new_process(kind: str, model: Path, cases: Path, output: Path, mirroring: bool,
                         probabilities: bool = False) -> float:
    """One predictor's seconds (``PREDICTORS[kind]``; for ``onnx`` the export folder as ``model``), run in a Python
    process of its own, as a user's command runs: imports happen before the clock starts, and whatever a tool sets for
    its process (gnnseg's command line keeps freed memory for reuse) stays with that tool."""
    return float(worker_output(__file__, kind, model, cases, output, int(mirroring), int(probabilities)))


def run_worker(kind: str, *args: str) -> None:
    """The ``--worker`` side of :func:`timed_in_new_process` (and of the components' timing): prints the result."""
    if kind == "components":
        model, export, repeats = args
        print(json.dumps(component_seconds(Path(model), Path(export) if export else None, int(repeats))))
        return
    if kind == "nnunetv2":
        make_torchvision_importable()
    model, cases, output, mirroring, probabilities = args
    print(PREDICTORS[kind](Path(model), Path(cases), Path(output), mirroring == "1", probabilities == "1"))


def mean_dice(a: np.ndarray, b: np.ndarray) -> float:
    labels = sorted(set(np.unique(a).tolist()) | set(np.unique(b).tolist()))
    return float(np.mean([2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k)) for k in labels]))


def dice_per_case(ours: Path, theirs: Path, ending: str) -> dict[str, float]:
    """Per case of ``theirs``: the mean Dice between our label map and theirs (a case we lack is an error)."""
    return {path.name[: -len(ending)]: mean_dice(read_any(ours / path.name).array, read_any(path).array)
            for path in sorted(theirs.glob(f"*{ending}"))}


def component_seconds(model: Path, export: Path | None, repeats: int) -> dict[str, float]:
    """Where a prediction's time goes, for this model (in a process of its own, so that the allocator starts as
    glibc sets it): opening it in gnnseg (all folds), and one forward of one patch with fold 0, the fastest of
    ``repeats`` each: float32 as the network is (as nnunetv2 runs it) and as gnnseg's prediction copy
    (:mod:`gnnseg.seg.unet.inference_network`), each before and after freed memory is kept for reuse (as gnnseg's
    command line does), then bfloat16 autocast and onnxruntime (on all threads); then one forward of every fold in
    onnxruntime, one after another on all threads and side by side as the ONNX predictor runs them."""
    import torch

    from gnnseg.core.freed_memory import keep_freed_memory
    from gnnseg.seg.unet.inference_network import for_cpu_prediction
    from gnnseg.seg.unet.nnunet_models import open_nnunet_model
    from gnnseg.seg.unet.precision import autocast

    seconds = {"open_model_s": best_of(lambda: open_nnunet_model(model), repeats)}
    opened = open_nnunet_model(model)
    networks = {"float32": opened.network, "copy": for_cpu_prediction(opened.network), "bfloat16": opened.network}
    patch = torch.randn(1, opened.labels.num_channels, *opened.configuration.patch_size)

    def forward(kind: str) -> None:
        with torch.inference_mode(), autocast("bfloat16" if kind == "bfloat16" else "float32"):
            networks[kind](patch)

    for kind in ("float32", "copy", "kept float32", "kept copy", "bfloat16"):
        if kind.startswith("kept"):
            keep_freed_memory()
        name = kind.removeprefix("kept ")
        forward(name)                                           # oneDNN builds its kernels on the first call
        seconds[f"forward_{kind.replace(' ', '_')}_s"] = best_of(lambda n=name: forward(n), repeats)
    if export is not None:
        from gnnseg.core.onnx_sessions import open_session
        from gnnseg.seg.unet.onnx_predictor import INFERENCE_FILE, INPUT_NAME, OnnxUNet, in_order

        feed = {INPUT_NAME: patch.numpy()}
        on_all_threads = [open_session(export / graph) for graph in
                          json.loads((export / INFERENCE_FILE).read_text())["graphs"]]

        def one_after_another() -> None:
            for session in on_all_threads:
                session.run(None, feed)

        side_by_side = OnnxUNet(export)

        def folds_side_by_side() -> None:
            folds = range(len(side_by_side.sessions))
            list(in_order(lambda fold: side_by_side.window_logits(fold, feed[INPUT_NAME]), folds,
                          side_by_side.side_by_side))

        one_after_another()
        folds_side_by_side()
        seconds["forward_onnx_s"] = best_of(lambda: on_all_threads[0].run(None, feed), repeats)
        seconds["forward_onnx_folds_one_after_another_s"] = best_of(one_after_another, repeats)
        seconds["forward_onnx_folds_side_by_side_s"] = best_of(folds_side_by_side, repeats)
    return {key: round(value, 3) for key, value in seconds.items()}


def measure(name: str, model: Path, cases: Path, scratch: Path, compare_probabilities: bool, repeats: int) -> dict:
    """The predictors on ``cases``, mirroring on and off: nnunetv2, gnnseg in float32 (nnU-Net's numbers), gnnseg
    in bfloat16 (opt-in) and gnnseg's ONNX export. Each time is the fastest of ``repeats`` runs, the predictors
    taking turns so that a busy spell of the machine does not fall on one of them only. The ONNX export's first run
    is also kept apart: it optimises the graphs and caches them for the machine (``gnnseg.core.onnx_sessions``)."""
    ending = json.loads((model / "dataset.json").read_text())["file_ending"]
    row: dict = {"model": str(model), "cases": sorted(p.name for p in cases.iterdir()), "settings": {}}
    export = scratch / name / "onnx_export"
    onnx_error = None
    try:
        from gnnseg.seg.unet.onnx_export import export_nnunet_model

        if not export.exists():
            export_nnunet_model(model, export)
    except Exception as error:  # the ONNX path is optional (another module, onnxruntime)
        onnx_error = f"{type(error).__name__}: {error}"
    for mirroring in (True, False):
        tag = "mirroring_on" if mirroring else "mirroring_off"
        work = scratch / name / tag
        os.environ[CACHE_ENV] = str(work / "onnx_cache")   # empty: the first ONNX run of each setting fills it
        theirs_s = ours_s = bf16_s = onnx_s = float("inf")
        onnx_first_s = None
        for run in range(repeats):
            theirs_s = min(theirs_s, timed_in_new_process("nnunetv2", model, cases, work / f"nnunetv2_{run}",
                                                          mirroring))
            ours_s = min(ours_s, timed_in_new_process("gnnseg", model, cases, work / f"gnnseg_{run}", mirroring))
            bf16_s = min(bf16_s, timed_in_new_process("bf16", model, cases, work / f"bf16_{run}", mirroring))
            if onnx_error is None:
                took = timed_in_new_process("onnx", export, cases, work / f"onnx_{run}", mirroring)
                onnx_first_s = took if onnx_first_s is None else onnx_first_s
                onnx_s = min(onnx_s, took)
        for kind in ("nnunetv2", "gnnseg", "bf16") + (("onnx",) if onnx_error is None else ()):
            shutil.copytree(work / f"{kind}_0", work / kind)
        setting = {"nnunetv2_s": round(theirs_s, 3), "gnnseg_s": round(ours_s, 3),
                   "torch_time_ratio_vs_nnunetv2": round(ours_s / theirs_s, 3),
                   "dice_vs_nnunetv2": dice_per_case(work / "gnnseg", work / "nnunetv2", ending),
                   "bf16_s": round(bf16_s, 3), "bf16_time_ratio_vs_nnunetv2": round(bf16_s / theirs_s, 3),
                   "bf16_dice_vs_nnunetv2": dice_per_case(work / "bf16", work / "nnunetv2", ending)}
        if onnx_error is None:
            setting.update(onnx_s=round(onnx_s, 3), onnx_first_run_s=round(onnx_first_s, 3),
                           onnx_time_ratio_vs_nnunetv2=round(onnx_s / theirs_s, 3),
                           onnx_dice_vs_nnunetv2=dice_per_case(work / "onnx", work / "nnunetv2", ending))
        else:
            setting.update(onnx_time_ratio_vs_nnunetv2=None, onnx_unavailable=onnx_error)
        if compare_probabilities:
            timed_in_new_process("nnunetv2", model, cases, work / "nnunetv2_p", mirroring, True)
            timed_in_new_process("gnnseg", model, cases, work / "gnnseg_p", mirroring, True)
            setting["probability_max_abs_diff"] = float(max(
                np.abs(np.load(p)["probabilities"] - np.load(work / "nnunetv2_p" / p.name)["probabilities"]).max()
                for p in (work / "gnnseg_p").glob("*.npz")))
        row["settings"][tag] = setting
        print(f"{name:15s} {tag:14s} nnunetv2 {theirs_s:7.2f} s  gnnseg {ours_s:7.2f} s  "
              f"ratio {ours_s / theirs_s:5.2f}  bf16 {bf16_s / theirs_s:5.2f}  "
              f"onnx {setting['onnx_time_ratio_vs_nnunetv2']}  "
              f"Dice min {min(setting['dice_vs_nnunetv2'].values()):.5f}", flush=True)
    row["seconds"] = json.loads(worker_output(__file__, "components", model, export if onnx_error is None else "",
                                              repeats))
    return row


def markdown(report: dict) -> str:
    lines = ["# nnU-Net v2 models: gnnseg against nnunetv2", "",
             f"{report['machine'].get('processor') or report['machine'].get('platform')}, "
             f"torch threads {report['torch_threads']}; {report['folds']} folds of random weights per model; "
             f"fastest of {report['repeats']} runs, each in a process of its own. gnnseg float32 computes nnU-Net's "
             "arithmetic (float32 sums in another order); bfloat16 is opt-in "
             "(`--precision bfloat16`); ONNX is the torch-free export (its first run, which optimises and caches "
             "the graphs, in brackets).", "",
             "| setting | mirroring | nnunetv2 s | gnnseg s | gnnseg / nnunetv2 | Dice min | bfloat16 / nnunetv2 "
             "| bfloat16 Dice min | ONNX / nnunetv2 (first run) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, row in report["settings"].items():
        for tag, s in row["settings"].items():
            onnx = s.get("onnx_time_ratio_vs_nnunetv2")
            onnx_text = (f"{onnx} ({round(s['onnx_first_run_s'] / s['nnunetv2_s'], 3)})" if onnx is not None
                         else "n/a")
            lines.append(f"| {name} | {tag.removeprefix('mirroring_')} | {s['nnunetv2_s']} | {s['gnnseg_s']} | "
                         f"{s['torch_time_ratio_vs_nnunetv2']} | {min(s['dice_vs_nnunetv2'].values()):.5f} | "
                         f"{s['bf16_time_ratio_vs_nnunetv2']} | {min(s['bf16_dice_vs_nnunetv2'].values()):.4f} | "
                         f"{onnx_text} |")
    lines += ["", f"Lowest Dice against nnunetv2: {report['dice_vs_nnunetv2_min']:.5f} (float32), "
              f"{report['bf16_dice_vs_nnunetv2_min']:.4f} (bfloat16); worst time ratio "
              f"{report['torch_time_ratio_vs_nnunetv2']['worst']} (float32), "
              f"{report['bf16_time_ratio_vs_nnunetv2']['worst']} (bfloat16). Probabilities (tiny settings, float32): "
              f"within {report['probability_max_abs_diff']:.2e} of nnunetv2's."]
    if report["onnx_time_ratio_vs_nnunetv2"] is None:
        lines.append(f"ONNX: {report['onnx_unavailable']}")
    lines += ["", "Where the time goes (fastest of the runs): opening the model in gnnseg, one forward of one patch: "
              "float32 as the network is (the arithmetic nnunetv2 runs) and gnnseg's prediction copy (group norms, "
              "oneDNN 3D convolutions, transposed convolutions as matrix products), each with glibc's default "
              "allocator and with freed memory kept for reuse (gnnseg's command line), then bfloat16 and "
              "onnxruntime; last, one forward of every fold in onnxruntime, one after another on all threads and "
              "side by side (the ONNX predictor's way).", "",
              "| setting | open s | float32 s | copy s | float32, memory kept s | copy, memory kept s "
              "| bfloat16 s | onnxruntime s | all folds, one after another s | all folds, side by side s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in report["settings"].items():
        seconds = row["seconds"]
        lines.append(f"| {name} | {seconds['open_model_s']} | {seconds['forward_float32_s']} | "
                     f"{seconds['forward_copy_s']} | {seconds['forward_kept_float32_s']} | "
                     f"{seconds['forward_kept_copy_s']} | {seconds['forward_bfloat16_s']} | "
                     f"{seconds.get('forward_onnx_s', 'n/a')} | "
                     f"{seconds.get('forward_onnx_folds_one_after_another_s', 'n/a')} | "
                     f"{seconds.get('forward_onnx_folds_side_by_side_s', 'n/a')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        run_worker(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the two tiny settings only")
    parser.add_argument("--model", type=Path, help="an nnU-Net model folder of your own (with --cases)")
    parser.add_argument("--cases", type=Path, help="its input cases (nnU-Net naming)")
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--output", type=Path, default=RESULTS / "nnunet_dropin.json")
    parser.add_argument("--repeats", type=int, default=1, help="time each predictor this many times, keep the fastest "
                        "(3 steadies the figures on a shared machine)")
    args = parser.parse_args()
    if (args.model is None) != (args.cases is None):
        parser.error("--model and --cases go together")
    scratch = Path(tempfile.mkdtemp(prefix="nnunet_dropin_"))
    for folder in ("raw", "preprocessed", "results"):
        (scratch / folder).mkdir()
    os.environ.update(nnUNet_raw=str(scratch / "raw"), nnUNet_preprocessed=str(scratch / "preprocessed"),
                      nnUNet_results=str(scratch / "results"))
    make_torchvision_importable()
    import torch

    settings = {}
    if args.model is not None:
        settings["your_model"] = measure("your_model", args.model.resolve(), args.cases.resolve(), scratch, True,
                                         args.repeats)
    else:
        builders = [("tiny_3d", "3d_fullres", build_tiny_3d, True), ("tiny_2d", "2d", build_tiny_2d, True)]
        if not args.quick:
            missing = [p for p in ("isbi2012_em", "totalsegmentator_examples") if not (args.data / p).is_dir()]
            if missing:
                sys.exit(f"{args.data} lacks {missing}; pass --data or --quick")
            builders += [("isbi_2d", "2d", lambda r, c: build_isbi_2d(r, c, args.data), False),
                         ("ct_3d_fullres", "3d_fullres", lambda r, c: build_ct_3d(r, c, args.data), False)]
        for number, (name, configuration, build, probabilities) in enumerate(builders, start=961):
            cases = scratch / "cases" / name
            build(scratch / name, cases)
            planned = plan_with_nnunetv2(scratch / name, number, scratch)
            model = write_random_model(planned, configuration, scratch / "results" / f"Dataset{number:03d}_{name}",
                                       seed=number)
            settings[name] = measure(name, model, cases, scratch, probabilities, args.repeats)
    every = [s for row in settings.values() for s in row["settings"].values()]
    ratios = {f"{name}/{tag}": s["torch_time_ratio_vs_nnunetv2"] for name, row in settings.items()
              for tag, s in row["settings"].items()}
    onnx = {f"{name}/{tag}": s["onnx_time_ratio_vs_nnunetv2"] for name, row in settings.items()
            for tag, s in row["settings"].items()}
    bf16 = {f"{name}/{tag}": s["bf16_time_ratio_vs_nnunetv2"] for name, row in settings.items()
            for tag, s in row["settings"].items()}
    unavailable = next((s["onnx_unavailable"] for s in every if "onnx_unavailable" in s), None)
    report = {"benchmark": "nnunet_dropin", "machine": machine_info(), "torch_threads": torch.get_num_threads(),
              "quick": args.quick, "repeats": args.repeats,
              "folds": len(FOLDS) if args.model is None else "the model's",
              "dice_vs_nnunetv2_min": min(min(s["dice_vs_nnunetv2"].values()) for s in every),
              "probability_max_abs_diff": max((s["probability_max_abs_diff"] for s in every
                                               if "probability_max_abs_diff" in s), default=None),
              "torch_time_ratio_vs_nnunetv2": {**ratios, "worst": max(ratios.values())},
              "bf16_time_ratio_vs_nnunetv2": {**bf16, "worst": max(bf16.values())},
              "bf16_dice_vs_nnunetv2_min": min(min(s["bf16_dice_vs_nnunetv2"].values()) for s in every),
              "onnx_time_ratio_vs_nnunetv2": (None if any(v is None for v in onnx.values())
                                              else {**onnx, "worst": max(onnx.values())}),
              "onnx_unavailable": unavailable, "settings": settings}
    write_json(args.output, report)
    args.output.with_suffix(".md").write_text(markdown(report))
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"Dice min {report['dice_vs_nnunetv2_min']:.5f}; worst time ratio "
          f"{report['torch_time_ratio_vs_nnunetv2']['worst']}; wrote {args.output}")


if __name__ == "__main__":
    main()
