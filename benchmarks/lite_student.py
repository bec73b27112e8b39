"""A faster student from the real teacher: how much of the released LiteMedSAM a distilled ``lite_medsam_fast`` keeps.

The student is made by ``lite_medsam_train.py`` (stage 1 only on a CPU: its encoder learns the released model's
cached embeddings of every training image and its mirror, and it takes the teacher's prompt encoder and mask
decoder unchanged)::

    python benchmarks/lite_medsam_train.py --prepared runs/lite/train256.npz --out runs/lite_fast_released \\
        --device cpu --teacher litemedsam --student lite_medsam_fast --student-init lite_medsam_fast \\
        --views flip --teacher-cache runs/litemedsam_adapted/view_embeddings.npy --distill-seconds 2700 \\
        --finetune-seconds 0 --batch-size 8

This script scores teacher and student on every held-out object of the five-modality corpus (tight box + 5 px, no
augmentation), reports the student's retention per modality (student DSC / teacher DSC) and both encoders' time
per image on this CPU (PyTorch, best of ``--repeats``). Writes ``lite_student.json`` / ``.md``::

    python benchmarks/lite_student.py --student runs/lite_fast_released/lite_medsam_fast.pt
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from gnnseg.core import machine_info, write_json
from gnnseg.core.checkpoint import load_checkpoint
from gnnseg.seg.sam.shipped import load_model
from gnnseg.seg.sam.training.corpus import MODALITIES, load_corpus
from lite_adaptation import BOX_MARGIN, held_out_dsc
from timing import best_of

RESULTS = Path(__file__).resolve().parent / "results"


@torch.inference_mode()
def encoder_seconds(model, repeats: int) -> float:
    size = model.config.image_size
    pixels = torch.rand(1, 3, size, size)
    model.encode(pixels)
    return best_of(lambda: model.encode(pixels), repeats)


def markdown(result: dict) -> str:
    teacher, student = result["teacher"], result["student"]
    lines = ["# A faster student distilled from the released LiteMedSAM", "",
             f"Held-out DSC, tight box + {BOX_MARGIN} px, no augmentation; encoder time per image in PyTorch on "
             f"{result['machine'].get('cpu_count', '?')} CPU cores.", "",
             "| model | " + " | ".join(MODALITIES) + " | mean | encoder ms |", "|---|" + "---|" * (len(MODALITIES) + 2)]
    for name, row in (("released `litemedsam` (teacher)", teacher), ("distilled `lite_medsam_fast`", student)):
        lines.append(f"| {name} | " + " | ".join(f"{row['dsc'][m]:.3f}" for m in MODALITIES)
                     + f" | {np.mean(list(row['dsc'].values())):.3f} | {1000 * row['encoder_seconds']:.0f} |")
    lines.append("| retention | " + " | ".join(f"{result['retention'][m]:.0%}" for m in MODALITIES)
                 + f" | {result['retention_mean']:.0%} | {result['speedup']:.1f}x faster |")
    distill = result["training"].get("distill", {})
    if distill:
        lines += ["", f"Stage 1 on this CPU: {distill.get('iterations')} steps of batch 8 "
                      f"({distill.get('seconds', 0) / 60:.0f} min), MSE {distill.get('mse_first_50', 0):.4f} -> "
                      f"{distill.get('mse_last_50', 0):.4f}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--student", type=Path, required=True, help="the distilled checkpoint")
    parser.add_argument("--teacher", default="litemedsam")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    held_out = load_corpus(args.data, "val")
    rows = {}
    for role, name in (("teacher", args.teacher), ("student", str(args.student))):
        model = load_model(name)
        rows[role] = {"model": name, "encoder_seconds": encoder_seconds(model, args.repeats),
                      "dsc": {m: held_out_dsc(model, held_out[m]) for m in MODALITIES}}
        print(role, rows[role], flush=True)
    retention = {m: rows["student"]["dsc"][m] / rows["teacher"]["dsc"][m] for m in MODALITIES}
    result = {"benchmark": "lite_student", "command": shlex.join([sys.executable, *sys.argv]),
              "machine": machine_info(), "box_margin": BOX_MARGIN,
              "objects": {m: len(held_out[m]) for m in MODALITIES},
              "training": load_checkpoint(args.student).get("meta", {}), **rows, "retention": retention,
              "retention_mean": float(np.mean(list(rows["student"]["dsc"].values()))
                                      / np.mean(list(rows["teacher"]["dsc"].values()))),
              "speedup": rows["teacher"]["encoder_seconds"] / rows["student"]["encoder_seconds"]}
    write_json(RESULTS / "lite_student.json", result)
    (RESULTS / "lite_student.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
