"""Train gnnseg's Lite MedSAM the way Lite MedSAM was made: a teacher, a distilled TinyViT, then fine-tuning.

1. **Teacher**: ``vit_teacher_256`` (a ViT with Lite MedSAM's 256 input and 64 x 64 embedding) trained from scratch
   with MedSAM's recipe (:mod:`gnnseg.seg.sam.training.finetune`) on the five-modality corpus. No released MedSAM
   weights can be downloaded here; with them, ``medsam_vit_b.pth`` would be the teacher.
2. **Stage 1**: teacher embeddings of every training image cached on disk (:class:`EmbeddingCache`); TinyViT
   (``lite_medsam``) learns them with an MSE loss (:func:`distill_encoder`).
3. **Stage 2**: the student takes the teacher's prompt encoder and mask decoder and the whole model is fine-tuned
   with Dice + BCE + IoU loss and 0-5 px box jitter at 256 (Lite MedSAM's ``bbox_shift=5``).

4. **Stage 3** (``--decoder-from``, affordable on a CPU): the encoder frozen, its embeddings of every training image
   under the square's eight symmetries cached once, and only the mask decoder trained on them
   (:mod:`gnnseg.seg.sam.training.decoder_tuning`), with stage 2's loss and box jitter.

Every phase has a wall-clock budget: a few timed steps measure the machine, and the phase gets as many iterations
as fit. The corpus arrives prepared (``--prepared``, from ``--prepare``), so a machine without the raw datasets
(a rented GPU) can train. Evaluation on the held-out corpus is ``benchmarks/lite_medsam_eval.py``.

    python benchmarks/lite_medsam_train.py --prepare runs/lite/train256.npz        # here, from ../shared/datasets
    python benchmarks/lite_medsam_train.py --prepared runs/lite/train256.npz --out runs/lite \\
        --device cuda --teacher-seconds 190 --distill-seconds 90 --finetune-seconds 140
    python benchmarks/lite_medsam_train.py --prepared runs/lite/train256.npz --out runs/lite \\
        --device cuda --stage2-from runs/lite/lite_medsam.pt --finetune-seconds 235 --finetune-lr 1e-4

The packaged ``lite_medsam`` is the result of those two commands on an NVIDIA H200 (docs/MODEL_CARD.md). A teacher
given as a checkpoint is distilled from as it is; ``lite_medsam_fast`` was distilled from the packaged Lite model:

    python benchmarks/lite_medsam_train.py --prepared runs/lite/train256.npz --out runs/lite_fast --device cuda \
        --teacher src/gnnseg/seg/sam/weights/lite_medsam.pt --student lite_medsam_fast \
        --distill-seconds 100 --finetune-seconds 200

A student of the released LiteMedSAM (``litemedsam``), stage 1 only, here on 2 CPU cores, its encoder started from
the packaged ``lite_medsam_fast`` and trained on the teacher's cached embeddings of each image and its mirror
(``benchmarks/lite_student.py`` scores it)::

    python benchmarks/lite_medsam_train.py --prepared runs/lite/train256.npz --out runs/lite_fast_released \
        --device cpu --teacher litemedsam --student lite_medsam_fast --student-init lite_medsam_fast --views flip \
        --teacher-cache runs/litemedsam_adapted/view_embeddings.npy --distill-seconds 2700 --finetune-seconds 0 \
        --batch-size 8

The packaged ``lite_medsam_fast``'s decoder was tuned here, on 2 CPU cores (docs/MODEL_CARD.md)::

    python benchmarks/lite_medsam_train.py --prepared runs/lite/train256.npz --out runs/lite_fast_s3 --device cpu \
        --decoder-from src/gnnseg/seg/sam/weights/lite_medsam_fast.pt --decoder-seconds 2400
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gnnseg.seg.sam.checkpoint import load_sam, save_sam
from gnnseg.seg.sam.inference.symmetry import DIHEDRAL
from gnnseg.seg.sam.modeling.sam import Sam, build_sam
from gnnseg.seg.sam.shipped import MODEL_NAMES, load_model
from gnnseg.seg.sam.training.decoder_tuning import DecoderTuningConfig, tune_decoder
from gnnseg.seg.sam.training.distill import (
    DistillConfig,
    EmbeddingCache,
    cache_teacher_embeddings,
    distill_encoder,
    neck_from_teacher,
    student_from_teacher,
)
from gnnseg.seg.sam.training.finetune import BatchSource, FinetuneConfig, finetune, prompted_loss
from gnnseg.seg.sam.training.prepared import PreparedSet


def prepare(data: str, target: Path) -> None:
    from gnnseg.seg.sam.training.corpus import load_corpus, pooled

    samples, _, weights = pooled(load_corpus(data, "train"))
    prepared = PreparedSet.from_samples(samples, build_sam("lite_medsam").config)
    prepared.save(target)
    np.save(target.with_suffix(".weights.npy"), weights)
    print(f"{len(prepared)} objects on {len(prepared.images)} images -> {target}")


VIEWS = {"one": DIHEDRAL[:1], "flip": DIHEDRAL[:2], "d4": DIHEDRAL}


def teacher_cache(teacher: Sam, prepared: PreparedSet, views, path: Path, device: torch.device) -> EmbeddingCache:
    """The teacher's embeddings of every image under ``views``: the cache at ``path`` when it records this teacher's
    configuration, this many images and these views, else computed there."""
    expected = {"teacher": teacher.config.to_dict(), "images": len(prepared.images),
                "symmetries": [[view.quarter_turns, view.mirror] for view in views]}
    if Path(path).is_file():
        cache = EmbeddingCache.open(path)
        if cache.meta != json.loads(json.dumps(expected)):
            raise SystemExit(f"{path} holds other embeddings than this teacher's of these views: remove it")
        print(f"teacher embeddings: reusing {path}", flush=True)
        return cache
    return cache_teacher_embeddings(teacher, prepared, path, batch_size=16, symmetries=views, device=device,
                                    show_progress=False)


def seconds_per_step(model: Sam, source: BatchSource, device: torch.device, steps: int = 6) -> float:
    """Wall time of one training step (after two warm-up steps), on a throwaway copy of the model."""
    trial = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.AdamW([p for p in trial.parameters() if p.requires_grad], lr=1e-5)
    rng = np.random.default_rng(123)
    for step in range(steps + 2):
        if step == 2:
            if device.type == "cuda":
                torch.cuda.synchronize()
            began = time.perf_counter()
        loss = prompted_loss(trial, *source.draw(rng))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - began) / steps


def budgeted_finetune(model: Sam, prepared: PreparedSet, weights: np.ndarray, base: FinetuneConfig, seconds: float,
                      output: Path, device: torch.device, rounds: int) -> dict:
    source = BatchSource(model, prepared, weights, base, device)
    per_step = seconds_per_step(model, source, device)
    iterations = max(rounds, int(seconds / per_step) // rounds * rounds)
    config = replace(base, rounds=rounds, iterations_per_round=iterations // rounds,
                     warmup_iterations=min(base.warmup_iterations, iterations // 10))
    print(f"{output.name}: {per_step * 1000:.1f} ms per step -> {config.iterations} iterations", flush=True)
    summary = finetune(model, prepared, [], config, output, weights=weights, device=device, show_progress=False)
    return {**summary, "iterations": config.iterations, "seconds_per_step": per_step}


def seconds_per_iteration(train: Callable[[int], object], steps: int, untimed: int) -> float:
    """Wall time of one iteration of ``train(n)``, which runs ``n`` iterations on a throwaway copy of the model.

    After ``untimed`` iterations that warm the machine up, it is the difference between runs of 1 and ``1 + steps``
    iterations divided by ``steps``: what a call does once (checkpoint, plot, saved model), which on a GPU outweighs
    a few steps, then does not count as step time. Floored at 1 ms a step."""
    train(untimed)
    durations = []
    for count in (1, 1 + steps):
        began = time.perf_counter()
        train(count)
        durations.append(time.perf_counter() - began)
    return max(durations[1] - durations[0], 1e-3 * steps) / steps


def budgeted_distill(student: Sam, prepared: PreparedSet, cache, base: DistillConfig, seconds: float,
                     output: Path, device: torch.device) -> dict:
    trial = copy.deepcopy(student)
    per_step = seconds_per_iteration(
        lambda n: distill_encoder(trial, prepared, cache, replace(base, iterations=n, warmup_iterations=1),
                                  device=device, show_progress=False), steps=8, untimed=2)
    config = replace(base, iterations=max(10, int(seconds / per_step)))
    config = replace(config, warmup_iterations=min(base.warmup_iterations, config.iterations // 10))
    print(f"distill: {per_step * 1000:.1f} ms per step -> {config.iterations} iterations", flush=True)
    log = distill_encoder(student, prepared, cache, config, output, device=device, show_progress=False)
    losses = log["loss"]
    return {"iterations": config.iterations, "seconds": log["seconds"], "seconds_per_step": per_step,
            "mse_first_50": float(np.mean(losses[:50])), "mse_last_50": float(np.mean(losses[-50:]))}


def budgeted_decoder_tuning(model: Sam, prepared: PreparedSet, weights: np.ndarray, base: DecoderTuningConfig,
                            seconds: float, output: Path, device: torch.device) -> dict:
    """Stage 3: cache the model's embeddings of all eight views of every image, then tune its decoder for as many
    iterations as fit in ``seconds`` (the caching not counted)."""
    began = time.perf_counter()
    cache = cache_teacher_embeddings(model, prepared, output / "view_embeddings.npy", batch_size=8,
                                     symmetries=DIHEDRAL, device=device, show_progress=False)
    cache_seconds = time.perf_counter() - began
    model.cpu()  # the decoder steps run where the cache is
    trial = copy.deepcopy(model)
    per_step = seconds_per_iteration(
        lambda n: tune_decoder(trial, prepared, cache, replace(base, iterations=n, warmup_iterations=1),
                               weights=weights, show_progress=False), steps=3, untimed=1)
    config = replace(base, iterations=max(10, int(seconds / per_step)))
    print(f"decoder tuning: {per_step * 1000:.0f} ms per step -> {config.iterations} iterations", flush=True)
    log = tune_decoder(model, prepared, cache, config, output, weights=weights, show_progress=False)
    losses = log["loss"]
    return {"iterations": config.iterations, "lr": config.lr, "batch_size": config.batch_size,
            "box_shift": config.box_shift, "cache_seconds": cache_seconds, "seconds": log["seconds"],
            "seconds_per_step": per_step, "loss_first_100": float(np.mean(losses[:100])),
            "loss_last_100": float(np.mean(losses[-100:]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/datasets")
    parser.add_argument("--prepare", type=Path, help="write the prepared training set here and stop")
    parser.add_argument("--prepared", type=Path, help="the prepared training set (from --prepare)")
    parser.add_argument("--out", type=Path, default=Path("runs/lite_medsam"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--teacher", default="vit_teacher_256",
                        help="a model name to train from scratch, or a checkpoint to distil from as it is")
    parser.add_argument("--student", default="lite_medsam", help="the student's model name (SAM_CONFIGS)")
    parser.add_argument("--teacher-cache", type=Path,
                        help="the teacher's embeddings of these views, already cached (by lite_adaptation.py)")
    parser.add_argument("--views", choices=sorted(VIEWS), default="one",
                        help="views of each image the student learns (flip: also its mirror, a free 2x of data)")
    parser.add_argument("--student-init", help="start the student's encoder from this model (a name or a checkpoint "
                        "of the student's architecture) instead of random weights: more from a CPU budget")
    parser.add_argument("--neck-from-teacher", action="store_true",
                        help="start the student's encoder neck from the teacher's where the shapes agree, so its "
                             "embeddings begin on the teacher's scale")
    parser.add_argument("--teacher-seconds", type=float, default=200)
    parser.add_argument("--distill-seconds", type=float, default=100)
    parser.add_argument("--finetune-seconds", type=float, default=160, help="stage 2's budget (0: no stage 2)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--finetune-lr", type=float, default=2e-4)
    parser.add_argument("--stage2-from", type=Path, help="only continue stage 2 from this student checkpoint")
    parser.add_argument("--decoder-from", type=Path,
                        help="only tune this checkpoint's mask decoder on its frozen embeddings (stage 3)")
    parser.add_argument("--decoder-seconds", type=float, default=2400)
    parser.add_argument("--decoder-lr", type=float, default=1e-4)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.data, args.prepare)
        return
    began = time.perf_counter()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    prepared = PreparedSet.load(args.prepared)
    weights = np.load(args.prepared.with_suffix(".weights.npy"))
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "objects": len(prepared), "images": len(prepared.images)}
    stage2 = FinetuneConfig(batch_size=args.batch_size, lr=args.finetune_lr, warmup_iterations=100, box_shift=5,
                            freeze_prompt_encoder=False)
    if args.stage2_from:
        student, meta = load_sam(args.stage2_from)
        report["finetune_continued"] = budgeted_finetune(student, prepared, weights, stage2, args.finetune_seconds,
                                                         args.out / "student_continued", device, args.rounds)
        save_sam(student, args.out / "lite_medsam_continued.pt", half_precision=True,
                 meta={**meta, "finetune_continued": report["finetune_continued"]})
        print(json.dumps(report))
        return

    if args.decoder_from:
        model, meta = load_sam(args.decoder_from)
        model.float()
        report["decoder_tuning"] = budgeted_decoder_tuning(
            model, prepared, weights, DecoderTuningConfig(batch_size=args.batch_size, lr=args.decoder_lr),
            args.decoder_seconds, args.out, device)
        save_sam(model, args.out / f"{args.decoder_from.stem}_decoder_tuned.pt", half_precision=True,
                 meta={**meta, "decoder_tuning": report["decoder_tuning"]})
        (args.out / "decoder_tuning_report.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report))
        return

    if args.teacher in MODEL_NAMES or Path(args.teacher).is_file():
        teacher = load_model(args.teacher)
        report["teacher"] = {"checkpoint": args.teacher}
    else:
        teacher = build_sam(args.teacher)
        teacher_config = FinetuneConfig(batch_size=args.batch_size, lr=4e-4, warmup_iterations=200, box_shift=5)
        report["teacher"] = budgeted_finetune(teacher, prepared, weights, teacher_config, args.teacher_seconds,
                                              args.out / "teacher", device, args.rounds)
        save_sam(teacher, args.out / "teacher.pt", half_precision=True,
                 meta={"role": "Lite MedSAM teacher", "train": report["teacher"]})

    views = VIEWS[args.views]
    cache = teacher_cache(teacher, prepared, views, args.teacher_cache or args.out / "teacher_embeddings.npy",
                          device)
    report["views"] = len(views)
    student = build_sam(args.student)
    if args.student_init:
        student.image_encoder.load_state_dict(load_model(args.student_init).image_encoder.state_dict())
        report["student_init"] = args.student_init
    if args.neck_from_teacher:
        report["neck_from_teacher"] = neck_from_teacher(student, teacher)
    report["distill"] = budgeted_distill(student, prepared, cache,
                                         DistillConfig(batch_size=args.batch_size, lr=1e-3, warmup_iterations=100),
                                         args.distill_seconds, args.out / "student", device)
    student_from_teacher(student, teacher)
    if args.finetune_seconds > 0:
        report["finetune"] = budgeted_finetune(student, prepared, weights, stage2, args.finetune_seconds,
                                               args.out / "student", device, args.rounds)
    save_sam(student, args.out / f"{args.student}.pt", half_precision=True,
             meta={"role": "Lite MedSAM student", **{k: report[k] for k in ("teacher", "distill", "finetune")
                                                     if k in report}})
    report["total_seconds"] = time.perf_counter() - began
    (args.out / "train_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
