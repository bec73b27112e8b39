"""Lite MedSAM against its teacher on held-out boxes, and its speed on this CPU (PyTorch and onnxruntime).

Accuracy: Dice of the box-prompted mask (tight box + 5 px, the protocol of ``sam_box_prompt.py``) on every
held-out object of the five-modality corpus (:mod:`gnnseg.seg.sam.training.corpus`), for the distilled student, its
teacher and the shipped box-centred model.

Speed, in one run on this machine:

- image encoder per image: Lite MedSAM's TinyViT (256 input) in PyTorch and in onnxruntime, the teacher, and
  MedSAM's ViT-B at 1024 (random weights: the architecture is the cost) -- the "10x faster" claim;
- box decoder per batch of boxes, PyTorch and onnxruntime;
- a whole 2D case as the CVPR 2024 challenge times it: one image, its boxes, masks back at full size;
- ONNX outputs against PyTorch's (largest absolute difference).

    python benchmarks/lite_medsam_eval.py --teacher runs/lite_medsam/teacher.pt    # the packaged student
    python benchmarks/lite_medsam_eval.py --student runs/lite_medsam/lite_medsam.pt  # another student, no teacher

``--also`` adds models to the accuracy table (default: the packaged ``lite_medsam_fast``, distilled from
``lite_medsam``).
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
import torch

from gnnseg.core import machine_info, write_json
from gnnseg.core.checkpoint import load_checkpoint
from gnnseg.seg.sam.checkpoint import load_sam
from gnnseg.seg.sam.export import export_onnx
from gnnseg.seg.sam.inference.box_prompted import box_dice_scores, grown_box
from gnnseg.seg.sam.inference.onnx_model import OnnxSam
from gnnseg.seg.sam.modeling.sam import build_sam
from gnnseg.seg.sam.shipped import (
    PACKAGED_MODELS,
    load_model,
    load_shipped_model,
    make_predictor,
)
from gnnseg.seg.sam.training.corpus import MODALITIES, load_corpus
from timing import best_of

RESULTS = Path(__file__).resolve().parent / "results"


def accuracy(models: dict, data: str) -> dict:
    held_out = load_corpus(data, "val")
    table = {}
    for name, model in models.items():
        began = time.perf_counter()
        scores = {m: box_dice_scores(model, held_out[m], margin=5) for m in MODALITIES}
        table[name] = {m: float(scores[m].mean()) for m in MODALITIES}
        table[name]["mean_over_modalities"] = float(np.mean([table[name][m] for m in MODALITIES]))
        table[name]["seconds"] = time.perf_counter() - began
        print(name, {k: round(v, 3) for k, v in table[name].items()}, flush=True)
    table["objects"] = {m: len(held_out[m]) for m in MODALITIES}
    return table


def speed(student, teacher, data: str, repeats: int) -> dict:
    case = load_corpus(data, "val", modalities=("EM",))["EM"]
    image = case[0].image
    boxes = np.stack([grown_box(sample, 5) for sample in case if sample.image is image])
    figures: dict = {"case": {"image": list(image.shape), "boxes": len(boxes)}}
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(student, folder)
        onnx_model = OnnxSam(folder)
        runners = {"lite_medsam_torch": student, "lite_medsam_onnx": onnx_model}
        if teacher is not None:
            runners["teacher_torch"] = teacher
        predictors = {name: make_predictor(model, cache_size=0) for name, model in runners.items()}  # time the encoder
        with torch.inference_mode():
            for name, predictor in predictors.items():
                predictor.set_image(image)
                figures[f"encoder_seconds_{name}"] = best_of(lambda p=predictor: p.set_image(image), repeats)
                if name != "teacher_torch":
                    figures[f"decoder_seconds_{name}_{len(boxes)}_boxes"] = best_of(
                        lambda p=predictor: p.predict(boxes=boxes), repeats)

                    def whole_case(p=predictor):
                        p.set_image(image)
                        p.predict(boxes=boxes)

                    figures[f"case_seconds_{name}"] = best_of(whole_case, repeats)
            torch_prediction = predictors["lite_medsam_torch"].predict(boxes=boxes)
            onnx_prediction = predictors["lite_medsam_onnx"].predict(boxes=boxes)
            embedding_gap = (predictors["lite_medsam_torch"]._embedding.numpy()
                             - predictors["lite_medsam_onnx"]._embedding)
            figures["onnx_max_abs_diff_embedding"] = float(np.abs(embedding_gap).max())
            figures["onnx_max_abs_diff_logits"] = float(np.abs(torch_prediction.logits - onnx_prediction.logits).max())
            figures["onnx_mask_agreement"] = float((torch_prediction.masks == onnx_prediction.masks).mean())
            medsam = build_sam("medsam_vit_b")
            pixels = torch.rand(1, 3, 1024, 1024)
            medsam.encode(pixels)
            figures["encoder_seconds_medsam_vit_b_1024"] = best_of(lambda: medsam.encode(pixels), max(1, repeats // 2))
    figures["lite_speedup_over_medsam_encoder"] = (figures["encoder_seconds_medsam_vit_b_1024"]
                                                   / figures["encoder_seconds_lite_medsam_onnx"])
    figures["onnx_speedup_over_torch_encoder"] = (figures["encoder_seconds_lite_medsam_torch"]
                                                  / figures["encoder_seconds_lite_medsam_onnx"])
    print(json.dumps(figures, indent=1), flush=True)
    return figures


def markdown(result: dict) -> str:
    acc = result["accuracy"]
    names = [n for n in acc if n != "objects"]
    lines = ["| model | " + " | ".join(MODALITIES) + " | mean |", "|---" * (len(MODALITIES) + 2) + "|"]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{acc[name][m]:.3f}" for m in MODALITIES)
                     + f" | {acc[name]['mean_over_modalities']:.3f} |")
    lines.append("| held-out objects | " + " | ".join(str(acc["objects"][m]) for m in MODALITIES) + " | |")
    lines += ["", "| speed (best of runs, seconds) | value |", "|---|---|"]
    lines += [f"| {key} | {value:.4g} |" for key, value in result["speed"].items() if isinstance(value, float)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--teacher", help="the teacher checkpoint (runs/lite_medsam/teacher.pt after training)")
    parser.add_argument("--student", default="lite_medsam", help="checkpoint or packaged model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--also", nargs="*", default=["lite_medsam_fast"],
                        help="more checkpoints or packaged models for the accuracy table (their speed: "
                             "lite_medsam_latency.py)")
    args = parser.parse_args()
    student = load_model(args.student)
    student_meta = load_checkpoint(PACKAGED_MODELS.get(args.student, args.student)).get("meta", {})
    models = {"lite_medsam (student)": student}
    teacher = None
    if args.teacher:
        teacher, _ = load_sam(args.teacher)
        models["vit_teacher_256 (teacher)"] = teacher
    models.update({str(name): load_model(name) for name in args.also})
    models["vit_cpu (shipped, box-centred)"] = load_shipped_model()
    result = {"benchmark": "lite_medsam", "machine": machine_info(),
              "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
              "training": student_meta,
              "accuracy": accuracy(models, args.data),
              "speed": speed(student, teacher, args.data, args.repeats)}
    write_json(RESULTS / "lite_medsam.json", result)
    (RESULTS / "lite_medsam.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
