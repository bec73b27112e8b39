"""The released LiteMedSAM trained whole on the windows zoom answers, checked leave-one-modality-out (a GPU job).

What a 2-core CPU cannot afford (66 s per step of 8 windows): the released model (``litemedsam``), image encoder and
mask decoder, fine-tuned on the window that ``--zoom`` answers each training object on, with rounds of simulated
correction clicks after each box (:func:`~gnnseg.seg.sam.training.finetune.finetune`: MedSAM's recipe, bfloat16
autocast on a GPU). The protocol is ``lite_adaptation.py``'s, fixed before measuring:

- **all**: trained on the training objects of the five modalities of :mod:`gnnseg.seg.sam.training.corpus` (drawn with
  the packaged models' shares), scored on every held-out object through zoom;
- **leave one modality out**: for each modality, trained on the other four with the same recipe and budget, scored on
  the held-out objects of the one it never saw. Target: none drops more than 1 DSC point below the released model;
- **interpolated** (WiSE-FT over every weight): ``alpha`` is the largest of 0.25, 0.5, 0.75 and 1 with which every
  left-out model stays within 1 point of the released model on *training* objects of the modality it never saw (at
  most ``--choice-objects`` windows each), never on held-out objects. The all-five model and every left-out model are
  then scored at that ``alpha``.

Held-out objects are prompted with their tight box + 5 px, through zoom, without test-time augmentation. Each run
trains for as many steps as fit in ``--seconds`` on this machine (timed on a throwaway copy first). The results are
written after every stage, so a run cut short keeps what it measured. The all-five model is saved in half precision
as ``--out``/``model_tuned.pt`` once trained, and at the chosen ``alpha`` as ``model.pt`` (``--checkpoint`` takes
either)::

    python benchmarks/lite_finetune_lomo.py --device cuda --seconds 45
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gnnseg.core import machine_info, write_json
from gnnseg.core.devices import resolve_device
from gnnseg.seg.sam.checkpoint import save_sam
from gnnseg.seg.sam.inference.box_prompted import box_dice_scores
from gnnseg.seg.sam.shipped import RELEASED_MODELS, load_model
from gnnseg.seg.sam.training.corpus import MODALITIES, SHARES, load_corpus, pooled
from gnnseg.seg.sam.training.decoder_tuning import interpolated_model
from gnnseg.seg.sam.training.finetune import FinetuneConfig, finetune
from gnnseg.seg.sam.training.prepared import PreparedSet
from lite_adaptation import ALLOWED_DROP, ALPHAS, BOX_MARGIN, choose_alpha, training_samples
from lite_medsam_train import seconds_per_iteration

RESULTS = Path(__file__).resolve().parent / "results"
PROBE_STEPS = 10
"""Steps timed, as the difference between runs of 1 and 1 + PROBE_STEPS steps, to size each run to its budget."""


def mean_dsc(model, samples, zoom: float | None) -> float:
    """Mean DSC of ``samples`` prompted with their tight box + 5 px, through zoom where set."""
    return float(np.mean(box_dice_scores(model, samples, BOX_MARGIN, zoom=zoom)))


def trained(released, prepared: PreparedSet, weights: np.ndarray, seconds: float, base: FinetuneConfig,
            device: torch.device) -> tuple[object, dict]:
    """A copy of ``released`` fine-tuned whole for as many steps as fit in ``seconds`` (timed on a throwaway copy)."""
    with tempfile.TemporaryDirectory() as scratch:
        def run(steps: int, warmup: int) -> None:
            config = replace(base, rounds=1, iterations_per_round=steps, warmup_iterations=warmup)
            finetune(model, prepared, [], config, scratch, weights=weights, show_progress=False, device=device)

        model = copy.deepcopy(released)
        per_step = seconds_per_iteration(lambda n: run(n, 1), steps=PROBE_STEPS, untimed=2)
        steps = max(1, int(seconds / per_step))
        model = copy.deepcopy(released)
        began = time.perf_counter()
        run(steps, min(base.warmup_iterations, steps // 10))
    return model, {"steps": steps, "seconds": time.perf_counter() - began, "seconds_per_step": per_step}


def markdown(result: dict) -> str:
    released, alpha, recipe = result["released"], result.get("alpha"), result["recipe"]
    lines = ["# The released LiteMedSAM fine-tuned whole on zoom windows, leave one modality out", "",
             f"Held-out DSC, tight box + {BOX_MARGIN} px, zoom {recipe['zoom']:g}, no augmentation. Image encoder "
             f"and mask decoder trained on {result['device']} ({recipe['click_rounds']} click rounds per step, "
             f"batch {recipe['batch_size']}, lr {recipe['lr']:g}, {result['seconds_per_run']:g} s per run); "
             "*interpolated*: every weight (1 - alpha) x released + alpha x tuned, alpha chosen on training objects.",
             "", "| model | " + " | ".join(MODALITIES) + " | mean |", "|---|" + "---|" * (len(MODALITIES) + 1)]
    rows = [("released `litemedsam`", released)]
    if "all" in result:
        rows.append((f"trained on all five ({result['all']['training']['steps']} steps)", result["all"]["dsc"]))
        if "interpolated_dsc" in result["all"]:
            rows.append((f"the same, interpolated (alpha {alpha:g})", result["all"]["interpolated_dsc"]))
    for name, scores in rows:
        lines.append(f"| {name} | " + " | ".join(f"{scores[m]:.3f}" for m in MODALITIES)
                     + f" | {np.mean([scores[m] for m in MODALITIES]):.3f} |")
    if result["left_out"]:
        lines += ["", "Leave one modality out: trained on the other four, scored on the one it never saw (change in "
                  "DSC points against the released model; the target is no drop beyond 1 point).", "",
                  "| left out | steps | released | trained without it | change | interpolated | change "
                  "| within 1 point |", "|---|---|---|---|---|---|---|---|"]
        for modality, row in result["left_out"].items():
            blended = row.get("interpolated_dsc")
            cells = ("-", "-", "-") if blended is None else (
                f"{blended:.3f}", f"{100 * (blended - released[modality]):+.1f}",
                "yes" if blended >= released[modality] - ALLOWED_DROP else "no")
            lines.append(f"| {modality} | {row['training']['steps']} | {released[modality]:.3f} | {row['dsc']:.3f} | "
                         f"{100 * (row['dsc'] - released[modality]):+.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the GPU where there is one)")
    parser.add_argument("--seconds", type=float, default=45, help="training budget of each run (all, and each "
                        "left-out modality)")
    parser.add_argument("--zoom", type=float, default=0.5, help="zoom context the model is trained and scored with")
    parser.add_argument("--click-rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-objects", type=int, default=400,
                        help="at most this many training objects per modality, drawn at random")
    parser.add_argument("--choice-objects", type=int, default=150,
                        help="training objects per modality that alpha is chosen on")
    parser.add_argument("--held-out-objects", type=int, default=None,
                        help="at most this many held-out objects per modality (smoke runs; figures use all)")
    parser.add_argument("--name", default="lite_finetune_lomo", help="results file name (without extension)")
    parser.add_argument("--out", type=Path, default=Path("runs/litemedsam_finetuned_zoom"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()

    released = load_model("litemedsam").to(device)
    held_out = {m: samples[:args.held_out_objects] for m, samples in load_corpus(args.data, "val").items()}
    train = training_samples(load_corpus(args.data, "train"), args.max_objects, args.zoom,
                             released.config.image_size, np.random.default_rng(0))
    samples, modality_of, shares = pooled(train)
    prepared = PreparedSet.from_samples(samples, released.config)
    rng = np.random.default_rng(0)
    choice = {m: [train[m][i] for i in sorted(rng.permutation(len(train[m]))[:args.choice_objects])]
              for m in MODALITIES}
    base = FinetuneConfig(batch_size=args.batch_size, lr=args.lr, click_rounds=args.click_rounds)
    result = {"benchmark": args.name, "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
              "machine": machine_info(), "device": torch.cuda.get_device_name(device) if device.type == "cuda"
              else "cpu", "box_margin": BOX_MARGIN, "seconds_per_run": args.seconds,
              "recipe": {"zoom": args.zoom, "click_rounds": args.click_rounds, "batch_size": args.batch_size,
                         "lr": args.lr, "weight_decay": base.weight_decay, "box_shift": base.box_shift,
                         "freeze_prompt_encoder": base.freeze_prompt_encoder, "max_objects": args.max_objects,
                         "choice_objects": args.choice_objects, "shares": SHARES},
              "objects": {m: len(held_out[m]) for m in MODALITIES},
              "train_objects": {m: len(train[m]) for m in MODALITIES},
              "data_seconds": time.perf_counter() - began, "left_out": {}}

    def save() -> None:
        result["total_seconds"] = time.perf_counter() - began
        write_json(args.results / f"{args.name}.json", result)
        (args.results / f"{args.name}.md").write_text(markdown(result))

    result["released"] = {m: mean_dsc(released, held_out[m], args.zoom) for m in MODALITIES}
    print("released", result["released"], flush=True)
    save()
    adapted, training = trained(released, prepared, shares, args.seconds, base, device)
    result["all"] = {"training": training, "dsc": {m: mean_dsc(adapted, held_out[m], args.zoom) for m in MODALITIES}}
    print("all", result["all"], flush=True)
    meta = {"started_from": "litemedsam", "base_sha256": RELEASED_MODELS["litemedsam"].sha256, "zoom": args.zoom,
            "recipe": "benchmarks/lite_finetune_lomo.py", "training": training}
    save_sam(adapted, args.out / "model_tuned.pt", half_precision=True, meta={**meta, "alpha": 1.0})
    save()
    left_out_models = {}
    for modality in MODALITIES:
        model, training = trained(released, prepared, np.where(modality_of == modality, 0.0, shares), args.seconds,
                                  base, device)
        curve = {str(alpha): mean_dsc(interpolated_model(released, model, alpha), choice[modality], None)
                 for alpha in (0, *ALPHAS)}
        left_out_models[modality] = model
        result["left_out"][modality] = {"training": training, "dsc": mean_dsc(model, held_out[modality], args.zoom),
                                        "training_curve": curve}
        print("without", modality, result["left_out"][modality], flush=True)
        save()
    alpha = result["alpha"] = choose_alpha({m: row["training_curve"] for m, row in result["left_out"].items()})
    for modality, model in left_out_models.items():
        result["left_out"][modality]["interpolated_dsc"] = mean_dsc(interpolated_model(released, model, alpha),
                                                                    held_out[modality], args.zoom)
    blended = interpolated_model(released, adapted, alpha)
    result["all"]["interpolated_dsc"] = {m: mean_dsc(blended, held_out[m], args.zoom) for m in MODALITIES}
    print("alpha", alpha, "all", result["all"]["interpolated_dsc"], flush=True)
    save_sam(blended, args.out / "model.pt", half_precision=True, meta={**meta, "alpha": alpha})
    save()
    print(markdown(result))


if __name__ == "__main__":
    main()
