"""Adapting the released LiteMedSAM weights to the five-modality corpus without costing them their generality.

The released model (``litemedsam``) keeps its encoder; its mask decoder is tuned on its own cached embeddings of
every training image of :mod:`gnnseg.seg.sam.training.corpus` (stage 3, :mod:`gnnseg.seg.sam.training.decoder_tuning`:
Dice + BCE + IoU loss, 0-5 px box jitter, AdamW), which a 2-core CPU affords. ``--views``: the symmetric copies of each
image cached (``flip``: the image and its mirror; ``d4``: all eight, 4x the caching).

- **all**: tuned on the five modalities (draw shares as for the packaged models), scored on every held-out object;
- **leave one modality out**: for each modality, tuned on the other four with the same recipe and budget, scored
  on the held-out objects of the one it never saw. Target: none drops more than 1 DSC point below
  the released model, i.e. adaptation does not cost generality.
- **interpolated** (WiSE-FT: the decoder ``(1 - alpha) * released + alpha * tuned``): ``alpha`` is the largest of
  0.25, 0.5, 0.75 and 1 with which every left-out modality stays within 1 point of the released decoder on *its
  training images* (never on the held-out objects the figures score): a rule fixed before measuring. The all-five
  decoder and every left-out decoder are then scored at that ``alpha`` as above.

Held-out objects are prompted with their tight box + 5 px, without test-time augmentation. Nothing here chooses a
setting on held-out data: the recipe (the stage-3 defaults of ``lite_medsam_train.py``) and budgets are fixed in
the command, ``alpha`` is chosen on training images (scored at the model's input size on their cached embeddings,
up to 300 objects per modality). Writes ``lite_adaptation.json`` / ``.md`` and the decoder tuned on all five,
interpolated at the chosen ``alpha`` (``--out``/``mask_decoder.pt``, for
:func:`gnnseg.seg.sam.checkpoint.load_mask_decoder` over ``litemedsam``)::

    python benchmarks/lite_adaptation.py --seconds 300 --views flip --out runs/litemedsam_adapted

``--zoom C`` adapts the model as it is used with ``--zoom C``: each training object becomes the window that zoom
answers its box on (:func:`~gnnseg.seg.sam.training.samples.zoomed_samples`), its embedding is cached, and the held-out
objects are scored through zoom. ``--max-objects`` caps the training objects per modality (drawn at random), since a
window is one encoder pass per object; ``--name`` names the results files::

    python benchmarks/lite_adaptation.py --zoom 0.5 --views none --max-objects 400 --name lite_adaptation_zoom \
        --out runs/litemedsam_adapted_zoom

Every decoder is scored with the released encoder's embeddings, each held-out image (or window) encoded once.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gnnseg.core import machine_info, write_json
from gnnseg.seg.sam.checkpoint import save_mask_decoder
from gnnseg.seg.sam.inference.augmented_predictor import symmetries
from gnnseg.seg.sam.inference.box_prompted import box_dice_scores
from gnnseg.seg.sam.shipped import RELEASED_MODELS, load_model
from gnnseg.seg.sam.training.corpus import MODALITIES, SHARES, load_corpus, pooled
from gnnseg.seg.sam.training.decoder_tuning import (
    DecoderTuningConfig,
    cached_box_dice,
    interpolated_decoder,
    tune_decoder,
)
from gnnseg.seg.sam.training.distill import cache_teacher_embeddings
from gnnseg.seg.sam.training.prepared import PreparedSet
from gnnseg.seg.sam.training.samples import zoomed_samples
from lite_medsam_train import seconds_per_iteration

RESULTS = Path(__file__).resolve().parent / "results"
BOX_MARGIN = 5
ALLOWED_DROP = 0.01
ALPHAS = (0.25, 0.5, 0.75, 1.0)
"""Interpolation weights tried, 0 being the released decoder."""
CHOICE_OBJECTS = 300
"""Training objects per modality that ``alpha`` is chosen on."""


class EncoderMemo(torch.nn.Module):
    """The frozen released encoder, remembering each input's embedding: every decoder scored here shares it, so a
    held-out image (or zoom window) is encoded once, not once per decoder."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.memo: dict[bytes, torch.Tensor] = {}

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        key = hashlib.blake2b(pixels.detach().contiguous().numpy().tobytes(), digest_size=16).digest()
        if key not in self.memo:
            self.memo[key] = self.encoder(pixels)
        return self.memo[key]


def held_out_dsc(model, samples, zoom: float | None, memo: EncoderMemo) -> float:
    """Mean DSC of ``samples`` under ``model``'s decoder (through zoom where set), its encoder answered by ``memo``."""
    encoder, model.image_encoder = model.image_encoder, memo
    try:
        return float(np.mean(box_dice_scores(model, samples, BOX_MARGIN, zoom=zoom)))
    finally:
        model.image_encoder = encoder


def training_samples(train: dict, max_objects: int | None, zoom: float | None, input_size: int,
                     rng: np.random.Generator) -> dict:
    """Each modality's training objects, at most ``max_objects`` drawn at random (kept in their order), cut to their
    zoom windows where ``zoom`` is set."""
    chosen = {}
    for modality, samples in train.items():
        if max_objects is not None and len(samples) > max_objects:
            samples = [samples[i] for i in sorted(rng.permutation(len(samples))[:max_objects])]
        chosen[modality] = samples if zoom is None else zoomed_samples(samples, zoom, input_size, BOX_MARGIN)
    return chosen


def tuned(model, prepared, cache, weights, seconds: float, base: DecoderTuningConfig) -> tuple[object, dict]:
    """A copy of ``model`` with its decoder tuned for as many iterations as fit in ``seconds``."""
    trial = copy.deepcopy(model)
    per_step = seconds_per_iteration(
        lambda n: tune_decoder(trial, prepared, cache, replace(base, iterations=n, warmup_iterations=1),
                               weights=weights, show_progress=False), steps=4, untimed=2)
    config = replace(base, iterations=max(20, int(seconds / per_step)))
    result = copy.deepcopy(model)
    log = tune_decoder(result, prepared, cache, config, weights=weights, show_progress=False)
    return result, {"iterations": config.iterations, "seconds": log["seconds"], "seconds_per_step": per_step,
                    "loss_first_100": float(np.mean(log["loss"][:100])),
                    "loss_last_100": float(np.mean(log["loss"][-100:]))}


def markdown(result: dict) -> str:
    released, alpha = result["released"], result["alpha"]
    zoom = result["recipe"].get("zoom")
    seen = ("no augmentation" if zoom is None
            else f"no augmentation, zoom {zoom:g}; training objects cut to their zoom windows")
    lines = ["# Adapting the released LiteMedSAM: its decoder tuned on the corpus", "",
             f"Held-out DSC, tight box + {BOX_MARGIN} px, {seen}. Decoder tuned on frozen embeddings on "
             f"{result['machine'].get('cpu_count', '?')} CPU cores; *interpolated*: the decoder "
             f"(1 - alpha) x released + alpha x tuned, alpha = {alpha:g} chosen on training images (below).", "",
             "| model | " + " | ".join(MODALITIES) + " | mean |", "|---|" + "---|" * (len(MODALITIES) + 1)]
    rows = [("released `litemedsam`", released),
            (f"decoder tuned on all five ({result['all']['tuning']['iterations']} steps)", result["all"]["dsc"]),
            (f"the same, interpolated (alpha {alpha:g})", result["all"]["interpolated_dsc"])]
    for name, scores in rows:
        lines.append(f"| {name} | " + " | ".join(f"{scores[m]:.3f}" for m in MODALITIES)
                     + f" | {np.mean([scores[m] for m in MODALITIES]):.3f} |")
    lines += ["", "Leave one modality out: tuned on the other four, scored on the one it never saw (change in DSC "
              "points against the released decoder; the target is no drop beyond 1 point).", "",
              f"| left out | steps | released | tuned without it | change | interpolated (alpha {alpha:g}) | change "
              "| within 1 point |", "|---|---|---|---|---|---|---|---|"]
    for modality, row in result["left_out"].items():
        change, blended = row["dsc"] - released[modality], row["interpolated_dsc"] - released[modality]
        lines.append(f"| {modality} | {row['tuning']['iterations']} | {released[modality]:.3f} | {row['dsc']:.3f} | "
                     f"{100 * change:+.1f} | {row['interpolated_dsc']:.3f} | {100 * blended:+.1f} | "
                     f"{'yes' if blended >= -ALLOWED_DROP else 'no'} |")
    lines += ["", "How alpha was chosen: each left-out decoder on up to "
              f"{CHOICE_OBJECTS} *training* objects of the modality it never saw (Dice at the model's input size, "
              "change in points against the released decoder on the same objects); the largest alpha within 1 point "
              "everywhere.", "", "| left out | released | " + " | ".join(f"alpha {a:g}" for a in ALPHAS) + " |",
              "|---|---|" + "---|" * len(ALPHAS)]
    for modality, row in result["left_out"].items():
        curve = row["training_curve"]
        lines.append(f"| {modality} | {curve['0']:.3f} | "
                     + " | ".join(f"{100 * (curve[str(a)] - curve['0']):+.1f}" for a in ALPHAS) + " |")
    return "\n".join(lines) + "\n"


def choose_alpha(curves: dict[str, dict[str, float]]) -> float:
    """The largest of ``ALPHAS`` with which no left-out modality's training Dice drops more than ``ALLOWED_DROP``
    below the released decoder's (0 when none qualifies)."""
    safe = [a for a in ALPHAS if all(curve[str(a)] >= curve["0"] - ALLOWED_DROP for curve in curves.values())]
    return max(safe, default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--seconds", type=float, default=300, help="tuning budget of each run (all, and each "
                        "left-out modality), the caching not counted")
    parser.add_argument("--views", choices=("none", "flip", "d4"), default="flip",
                        help="symmetric copies of each training image to cache")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--zoom", type=float, default=None,
                        help="adapt and score the model as used with --zoom C (training objects cut to their windows)")
    parser.add_argument("--max-objects", type=int, default=None,
                        help="at most this many training objects per modality, drawn at random")
    parser.add_argument("--name", default="lite_adaptation", help="results file name (without extension)")
    parser.add_argument("--out", type=Path, default=Path("runs/litemedsam_adapted"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)

    released = load_model("litemedsam")
    memo = EncoderMemo(released.image_encoder)
    held_out = load_corpus(args.data, "val")
    train = training_samples(load_corpus(args.data, "train"), args.max_objects, args.zoom,
                             released.config.image_size, np.random.default_rng(0))
    samples, modality_of, shares = pooled(train)
    prepared = PreparedSet.from_samples(samples, released.config)
    began = time.perf_counter()
    views = symmetries(args.views)
    cache = cache_teacher_embeddings(released, prepared, args.out / "view_embeddings.npy", batch_size=8,
                                     symmetries=views)
    cache_seconds = time.perf_counter() - began
    print(f"cached {len(prepared.images) * len(views)} views in {cache_seconds:.0f} s", flush=True)
    base = DecoderTuningConfig(batch_size=args.batch_size, lr=args.lr)

    rng = np.random.default_rng(0)
    object_modality = modality_of[prepared.object_sample]
    choice_objects = {m: rng.permutation(np.flatnonzero(object_modality == m))[:CHOICE_OBJECTS] for m in MODALITIES}

    scores = {m: held_out_dsc(released, held_out[m], args.zoom, memo) for m in MODALITIES}
    print("released", scores, flush=True)
    adapted, tuning = tuned(released, prepared, cache, shares, args.seconds, base)
    result = {"benchmark": args.name, "command": " ".join(map(shlex.quote, [sys.executable, *sys.argv])),
              "machine": machine_info(), "torch_threads": torch.get_num_threads(), "box_margin": BOX_MARGIN,
              "recipe": {"views": args.views, "zoom": args.zoom, "max_objects": args.max_objects,
                         "batch_size": base.batch_size, "lr": base.lr, "box_shift": base.box_shift,
                         "weight_decay": base.weight_decay, "shares": SHARES},
              "cache_seconds": cache_seconds, "objects": {m: len(held_out[m]) for m in MODALITIES},
              "train_objects": {m: len(train[m]) for m in MODALITIES},
              "released": scores,
              "all": {"tuning": tuning,
                      "dsc": {m: held_out_dsc(adapted, held_out[m], args.zoom, memo) for m in MODALITIES}},
              "left_out": {}}
    print("all", result["all"], flush=True)
    left_out_models = {}
    for modality in MODALITIES:
        weights = np.where(modality_of == modality, 0.0, shares)
        model, tuning = tuned(released, prepared, cache, weights, args.seconds, base)
        curve = {str(alpha): float(np.mean(cached_box_dice(interpolated_decoder(released, model, alpha), prepared,
                                                           cache, choice_objects[modality], BOX_MARGIN)))
                 for alpha in (0, *ALPHAS)}
        left_out_models[modality] = model
        result["left_out"][modality] = {"tuning": tuning,
                                        "dsc": held_out_dsc(model, held_out[modality], args.zoom, memo),
                                        "training_curve": curve}
        print("without", modality, result["left_out"][modality], flush=True)
    alpha = choose_alpha({m: row["training_curve"] for m, row in result["left_out"].items()})
    result["alpha"] = alpha
    for modality, model in left_out_models.items():
        result["left_out"][modality]["interpolated_dsc"] = held_out_dsc(
            interpolated_decoder(released, model, alpha), held_out[modality], args.zoom, memo)
    blended = interpolated_decoder(released, adapted, alpha)
    result["all"]["interpolated_dsc"] = {m: held_out_dsc(blended, held_out[m], args.zoom, memo) for m in MODALITIES}
    print("alpha", alpha, "all", result["all"]["interpolated_dsc"], flush=True)
    save_mask_decoder(blended, args.out / "mask_decoder.pt", base="litemedsam",
                      base_sha256=RELEASED_MODELS["litemedsam"].sha256,
                      meta={"tuning": result["all"]["tuning"], "alpha": alpha,
                            "recipe": "benchmarks/lite_adaptation.py"})
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / f"{args.name}.json", result)
    report = markdown(result)
    (args.results / f"{args.name}.md").write_text(report)
    print(report)
    print(json.dumps({"mask_decoder": str(args.out / "mask_decoder.pt")}))


if __name__ == "__main__":
    main()
