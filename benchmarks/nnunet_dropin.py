"""nnU-Net v2 models predicted by nnunetv2 itself and by gnnseg, in the same run: agreement and CPU time.

For each setting a model folder in nnU-Net's results layout (``Trainer__Plans__configuration/`` with ``plans.json``,
``dataset.json`` and ``fold_<k>/checkpoint_final.pth``) is predicted by nnunetv2's ``nnUNetPredictor`` (CPU,
``predict_from_files_sequential``, tile step 0.5, Gaussian weighting) and by gnnseg's
:func:`~gnnseg.seg.unet.nnunet_predict.predict_nnunet_folder` (and, where gnnseg's ONNX export of nnU-Net models is
present, by its torch-free ONNX predictor), with test-time mirroring on and off. Reported per setting: Dice of
gnnseg's segmentation against nnunetv2's per case (mean over the labels either map holds), and the wall time of each
predictor over all cases (loading the model included) as a ratio gnnseg / nnunetv2.

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
from timing import best_of  # noqa: E402

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
    from gnnseg.seg.unet.nnunet_predict import predict_nnunet_folder

    start = time.perf_counter()
    predict_nnunet_folder(model, cases, output, use_mirroring=mirroring, save_probabilities=probabilities,
                          device="cpu", precision=precision, show_progress=False)
    return time.perf_counter() - start


def predict_onnx(output: Path, cases: Path, mirroring: bool, export: Path) -> float:
    from gnnseg.seg.unet.onnx_predictor import predict_onnx_folder

    start = time.perf_counter()
    predict_onnx_folder(export, cases, output, mirror=mirroring, show_progress=False)
    return time.perf_counter() - start


def mean_dice(a: np.ndarray, b: np.ndarray) -> float:
    labels = sorted(set(np.unique(a).tolist()) | set(np.unique(b).tolist()))
    return float(np.mean([2 * np.sum((a == k) & (b == k)) / (np.sum(a == k) + np.sum(b == k)) for k in labels]))


def dice_per_case(ours: Path, theirs: Path, ending: str) -> dict[str, float]:
    """Per case of ``theirs``: the mean Dice between our label map and theirs (a case we lack is an error)."""
    return {path.name[: -len(ending)]: mean_dice(read_any(ours / path.name).array, read_any(path).array)
            for path in sorted(theirs.glob(f"*{ending}"))}


def component_seconds(model: Path, export: Path | None, repeats: int) -> dict[str, float]:
    """Where a prediction's time goes, for this model: opening it in gnnseg (all folds), and one forward of one
    patch with fold 0, in float32, under bfloat16 autocast and in onnxruntime (the fastest of ``repeats`` each)."""
    import torch

    from gnnseg.seg.unet.nnunet_models import open_nnunet_model
    from gnnseg.seg.unet.precision import autocast

    seconds = {"open_model_s": best_of(lambda: open_nnunet_model(model), repeats)}
    opened = open_nnunet_model(model)
    patch = torch.randn(1, opened.labels.num_channels, *opened.configuration.patch_size)

    def forward(precision: str) -> None:
        with torch.inference_mode(), autocast(precision):
            opened.network(patch)

    for precision in ("float32", "bfloat16"):
        forward(precision)                                   # oneDNN builds its kernels on the first call
        seconds[f"forward_{precision}_s"] = best_of(lambda p=precision: forward(p), repeats)
    if export is not None:
        from gnnseg.seg.unet.onnx_predictor import OnnxUNet

        onnx_model, array = OnnxUNet(export), patch.numpy()
        onnx_model.window_logits(0, array)
        seconds["forward_onnx_s"] = best_of(lambda: onnx_model.window_logits(0, array), repeats)
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
            theirs_s = min(theirs_s, predict_nnunetv2(model, cases, work / f"nnunetv2_{run}", mirroring, False))
            ours_s = min(ours_s, predict_gnnseg(model, cases, work / f"gnnseg_{run}", mirroring, False))
            bf16_s = min(bf16_s, predict_gnnseg(model, cases, work / f"bf16_{run}", mirroring, False, "bfloat16"))
            if onnx_error is None:
                took = predict_onnx(work / f"onnx_{run}", cases, mirroring, export)
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
            predict_nnunetv2(model, cases, work / "nnunetv2_p", mirroring, True)
            predict_gnnseg(model, cases, work / "gnnseg_p", mirroring, True)
            setting["probability_max_abs_diff"] = float(max(
                np.abs(np.load(p)["probabilities"] - np.load(work / "nnunetv2_p" / p.name)["probabilities"]).max()
                for p in (work / "gnnseg_p").glob("*.npz")))
        row["settings"][tag] = setting
        print(f"{name:15s} {tag:14s} nnunetv2 {theirs_s:7.2f} s  gnnseg {ours_s:7.2f} s  "
              f"ratio {ours_s / theirs_s:5.2f}  bf16 {bf16_s / theirs_s:5.2f}  "
              f"onnx {setting['onnx_time_ratio_vs_nnunetv2']}  "
              f"Dice min {min(setting['dice_vs_nnunetv2'].values()):.5f}", flush=True)
    row["seconds"] = component_seconds(model, export if onnx_error is None else None, repeats)
    return row


def markdown(report: dict) -> str:
    lines = ["# nnU-Net v2 models: gnnseg against nnunetv2", "",
             f"{report['machine'].get('processor') or report['machine'].get('platform')}, "
             f"torch threads {report['torch_threads']}; {report['folds']} folds of random weights per model; "
             f"fastest of {report['repeats']} runs. gnnseg float32 computes nnU-Net's numbers; bfloat16 is opt-in "
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
              f"{report['bf16_time_ratio_vs_nnunetv2']['worst']} (bfloat16)."]
    if report["onnx_time_ratio_vs_nnunetv2"] is None:
        lines.append(f"ONNX: {report['onnx_unavailable']}")
    lines += ["", "Where the time goes (fastest of the runs): opening the model in gnnseg, one forward of one patch.",
              "", "| setting | open s | forward float32 s | forward bfloat16 s | forward onnxruntime s |",
              "|---|---|---|---|---|"]
    for name, row in report["settings"].items():
        seconds = row["seconds"]
        lines.append(f"| {name} | {seconds['open_model_s']} | {seconds['forward_float32_s']} | "
                     f"{seconds['forward_bfloat16_s']} | {seconds.get('forward_onnx_s', 'n/a')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
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
    import nnunetv2.inference.predict_from_raw_data  # noqa: F401  (imported before any timing, as gnnseg's is)
    import torch

    import gnnseg.seg.unet.nnunet_predict  # noqa: F401

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
