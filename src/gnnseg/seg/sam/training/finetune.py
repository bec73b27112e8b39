"""Fine-tuning (or training from scratch) a SAM-architecture model on box-prompted samples, as MedSAM did.

MedSAM's recipe (Ma et al. 2024, Methods; ``train_one_gpu.py``): one box per object, grown by a random
0-20 pixels per side; loss = Dice + binary cross-entropy on the mask logits (unweighted); AdamW (lr 1e-4, weight
decay 0.01); the prompt encoder frozen, the image encoder and mask decoder trained. Lite MedSAM adds a mean squared
error between the predicted IoU and the IoU of the predicted mask, which keeps the IoU head meaningful.

Additions here, because a small model trained from scratch on a few hundred images needs them (MedSAM started from SAM's
weights and 1.5 million images): flips and 90-degree rotations of each sample, and a learning rate with a linear warm-up
and a cosine decay. With ``click_rounds`` the step plays SAM's correction loop after the box (clicks from the simulated
user, the previous logits fed back, every round scored), so the model learns to take clicks; the point embeddings learn
only with ``freeze_prompt_encoder=False``. Whole-image models train on a
:class:`~gnnseg.seg.sam.training.prepared.PreparedSet` (each image resized once); box-centred models cut a window per
draw; with ``zoom`` a whole-image model trains and is validated on the window around each box that zoom answers it
on (:func:`~gnnseg.seg.sam.training.samples.zoomed_samples`). On a GPU the steps run under bfloat16 autocast.
Training runs in rounds of ``iterations_per_round`` steps; after each round the model is scored on held-out samples
(Dice with tight boxes plus ``val_box_margin``), a checkpoint is written and the curve is plotted. A run resumes from
its last checkpoint; under ``torchrun`` every rank draws its own samples and the gradients are averaged over ranks with
an all-reduce before every step (what DistributedDataParallel does, without wrapping the model, whose encoder and
decoder are called separately).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from gnnseg.core.checkpoint import load_checkpoint, save_checkpoint
from gnnseg.core.distributed import distributed_context
from gnnseg.core.progress import progress
from gnnseg.core.runs import write_json
from gnnseg.core.seed import seed_everything
from gnnseg.seg.sam.checkpoint import save_sam
from gnnseg.seg.sam.inference.box_prompted import box_dice_scores
from gnnseg.seg.sam.inference.crop import CropWindow
from gnnseg.seg.sam.inference.predictor import resize_crop
from gnnseg.seg.sam.inference.symmetry import Symmetry
from gnnseg.seg.sam.modeling.sam import Sam
from gnnseg.seg.sam.training.click_loop import loop_losses
from gnnseg.seg.sam.training.prepared import PreparedSet
from gnnseg.seg.sam.training.samples import PromptSample, draw_probabilities, jittered_box, zoomed_samples

TRAINING_FORMAT = "gnnseg-sam-training"


@dataclass(frozen=True)
class FinetuneConfig:
    rounds: int = 20
    iterations_per_round: int = 100
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_iterations: int = 100
    box_shift: int = 20
    augment: bool = True
    iou_loss_weight: float = 1.0
    freeze_prompt_encoder: bool = True
    click_rounds: int = 0
    val_box_margin: int = 5
    zoom: float | None = None
    """Whole-image models: box sizes of context of the zoom window each object is cut to (``None``: whole images)."""
    seed: int = 0

    @property
    def iterations(self) -> int:
        return self.rounds * self.iterations_per_round


def learning_rate(config: FinetuneConfig, iteration: int) -> float:
    """Linear warm-up to ``lr``, then cosine decay to zero at the last iteration (any config with ``lr``,
    ``warmup_iterations`` and ``iterations``: distillation uses it too)."""
    if iteration < config.warmup_iterations:
        return config.lr * (iteration + 1) / config.warmup_iterations
    progress_ = (iteration - config.warmup_iterations) / max(config.iterations - config.warmup_iterations, 1)
    return 0.5 * config.lr * (1 + math.cos(math.pi * min(progress_, 1.0)))


def prompt_batch(samples: Sequence[PromptSample], model: Sam, rng: np.random.Generator, *, box_shift: int,
                 augment: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs of a box-centred model for a batch: ``(B, 3, S, S)`` normalised windows, ``(B, 4)`` boxes and
    ``(B, S, S)`` masks (whole-image models draw from a :class:`PreparedSet` instead)."""
    config = model.config
    if config.crop_margin is None:
        raise ValueError("prompt_batch cuts box-centred windows; this model takes whole images (PreparedSet.batch)")
    size = config.image_size
    pixels, boxes, masks = [], [], []
    for sample in samples:
        box = jittered_box(sample, rng, box_shift)
        window = CropWindow.around(box, config.crop_margin)
        pixels.append(resize_crop(window.cut(sample.image), size))
        masks.append(resize_mask_crop(window.cut(sample.mask), size))
        local_box = window.to_input(box, size)
        if augment:
            symmetry = Symmetry(int(rng.integers(4)), bool(rng.integers(2)))
            pixels[-1], masks[-1] = symmetry.plane(pixels[-1]), symmetry.plane(masks[-1])
            local_box = symmetry.boxes(local_box[None], (size, size))[0]
        boxes.append(torch.as_tensor(local_box, dtype=torch.float32))
    return model.normalize(torch.stack(pixels)), torch.stack(boxes), torch.stack(masks)


def prompted_loss(model: Sam, pixels: Tensor, boxes: Tensor, masks: Tensor, iou_weight: float = 1.0,
                  click_rounds: int = 0) -> Tensor:
    """One training forward pass and its :func:`~gnnseg.seg.sam.training.losses.box_prompt_loss` (the model under
    bfloat16 autocast on a GPU): the box's answer, then ``click_rounds`` rounds of simulated correction clicks on the
    same embeddings, every round scored and the losses averaged
    (:func:`~gnnseg.seg.sam.training.click_loop.loop_losses`)."""
    device = pixels.device
    with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        embeddings = model.encode(pixels)
    return torch.stack(loop_losses(model, embeddings, boxes, masks, click_rounds + 1, iou_weight=iou_weight)).mean()


def resize_mask_crop(crop: np.ndarray, size: int) -> Tensor:
    """``(s, s)`` boolean crop -> ``(size, size)`` float mask in {0, 1} (area-weighted, then thresholded at 0.5)."""
    mask = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None, None]
    if mask.shape[-1] != size:
        mask = F.interpolate(mask, (size, size), mode="bilinear", align_corners=False,
                             antialias=mask.shape[-1] > size)
    return (mask[0, 0] >= 0.5).float()


def _plot_curve(log: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    rounds = np.arange(1, len(log["train_loss"]) + 1)
    axis.plot(rounds, log["train_loss"], label="train loss")
    axis.plot(rounds, log["val_dice"], label="validation Dice")
    axis.set_xlabel("round")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


class BatchSource:
    """Draws training batches on ``device``: from a prepared set (whole-image models) or by cutting windows."""

    def __init__(self, model: Sam, train: Sequence[PromptSample] | PreparedSet, weights: Sequence[float] | None,
                 config: FinetuneConfig, device: torch.device) -> None:
        if not len(train):
            raise ValueError("no training samples")
        sample_count = len(train) if not isinstance(train, PreparedSet) else int(train.object_sample.max()) + 1
        probabilities = draw_probabilities(weights, sample_count)
        self.prepared = None
        if model.config.crop_margin is None:
            self.prepared = train if isinstance(train, PreparedSet) else PreparedSet.from_samples(train, model.config)
            self.prepared.check_fits(model.config)
            probabilities = self.prepared.object_probabilities(probabilities)
        elif isinstance(train, PreparedSet):
            raise ValueError("a box-centred model cuts its own windows: give it PromptSamples, not a PreparedSet")
        self.samples = train
        self.probabilities = probabilities
        self.model, self.config, self.device = model, config, device

    def draw(self, rng: np.random.Generator) -> tuple[Tensor, Tensor, Tensor]:
        count = len(self.prepared) if self.prepared is not None else len(self.samples)
        chosen = rng.choice(count, size=self.config.batch_size, p=self.probabilities)
        if self.prepared is not None:
            return self.prepared.batch(chosen, rng, box_shift=self.config.box_shift, augment=self.config.augment,
                                       normalization=self.model.config.normalization, device=self.device)
        batch = prompt_batch([self.samples[i] for i in chosen], self.model, rng, box_shift=self.config.box_shift,
                             augment=self.config.augment)
        return tuple(tensor.to(self.device) for tensor in batch)


def zoomed_sets(model: Sam, train: Sequence[PromptSample] | PreparedSet, val: Sequence[PromptSample],
                context: float, margin: int) -> tuple[list[PromptSample], list[PromptSample]]:
    """The training and validation objects cut to their zoom windows (at least the model's input wide, around the
    tight box grown by ``margin``, the validation prompt's). Scoring a validation window whole with that prompt
    equals scoring its object with zoom."""
    if model.config.crop_margin is not None:
        raise ValueError("zoom trains a whole-image model on the window around each box; this model is box-centred "
                         "and already cuts a window around each box (crop_margin): leave zoom out")
    if isinstance(train, PreparedSet):
        raise ValueError("zoom cuts windows from the objects' images; a PreparedSet holds them already resized to "
                         "the input: give the PromptSamples")
    size = model.config.image_size
    return zoomed_samples(train, context, size, margin), zoomed_samples(val, context, size, margin)


def finetune(model: Sam, train: Sequence[PromptSample] | PreparedSet, val: Sequence[PromptSample],
             config: FinetuneConfig, output: str | os.PathLike, *, weights: Sequence[float] | None = None,
             resume: bool = False, meta: dict[str, Any] | None = None, show_progress: bool | None = None,
             device: str | torch.device = "cpu") -> dict[str, Any]:
    """Train ``model`` in place; write ``checkpoint_latest.pt``, ``model.pt``, ``log.json`` and ``progress.png``.

    ``weights`` (one per training sample, any positive scale) sets how often each sample is drawn; by default
    all are equally likely. Modalities with few, large objects need more weight than EM's thousands of cells.
    ``train`` may be a ready :class:`PreparedSet` for a whole-image model (``weights`` then follow its
    ``object_sample`` indices).
    """
    device = torch.device(device)
    if config.zoom is not None:
        train, val = zoomed_sets(model, train, val, config.zoom, config.val_box_margin)
    model.to(device)
    source = BatchSource(model, train, weights, config, device)
    output = Path(output)
    latest = output / "checkpoint_latest.pt"
    if resume and not latest.is_file():
        raise FileNotFoundError(f"cannot resume: {latest} does not exist")
    output.mkdir(parents=True, exist_ok=True)
    context = distributed_context()
    seed_everything(config.seed)
    if config.freeze_prompt_encoder:
        model.prompt_encoder.requires_grad_(False)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    log: dict[str, list[float]] = {"train_loss": [], "val_dice": [], "lr": [], "round_seconds": []}
    start_round = 0
    if resume:
        state = load_checkpoint(latest, required_keys=("format", "model", "optimizer", "round", "log", "config"))
        began_with = {**dataclasses.asdict(FinetuneConfig()), **state["config"]}  # fields added since: defaults
        if began_with != dataclasses.asdict(config):
            raise ValueError(f"{latest} was written with another configuration: {state['config']}")
        model.load_state_dict(state["model"])
        model.to(device)
        optimizer.load_state_dict(state["optimizer"])
        start_round, log = state["round"], state["log"]
    if context.enabled:  # every rank starts from rank 0's weights
        for tensor in model.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
    rng = np.random.default_rng([config.seed, context.rank, start_round])
    if context.is_main:
        write_json(output / "finetune_config.json", {**dataclasses.asdict(config), "model": model.config.to_dict(),
                                                      "train_samples": len(train), "val_samples": len(val),
                                                      "world_size": context.world_size})
    bar = progress(range(start_round, config.rounds), desc="finetune", total=config.rounds - start_round,
                   enabled=show_progress if context.is_main else False)
    for round_index in bar:
        began = time.perf_counter()
        model.train()
        losses = []
        for step in range(config.iterations_per_round):
            iteration = round_index * config.iterations_per_round + step
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, iteration)
            loss = prompted_loss(model, *source.draw(rng), config.iou_loss_weight, config.click_rounds)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if context.enabled:  # data parallel: average the gradients over ranks
                for parameter in parameters:
                    if parameter.grad is not None:
                        context.all_reduce_sum(parameter.grad).div_(context.world_size)
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        val_dice = float(box_dice_scores(model, val, config.val_box_margin).mean()) if val else float("nan")
        for key, value in (("train_loss", np.mean(losses)), ("val_dice", val_dice),
                           ("lr", optimizer.param_groups[0]["lr"]), ("round_seconds", time.perf_counter() - began)):
            log[key].append(float(value))
        if context.is_main:
            save_checkpoint({"format": TRAINING_FORMAT, "model": model.state_dict(),
                             "optimizer": optimizer.state_dict(), "round": round_index + 1, "log": log,
                             "config": dataclasses.asdict(config), "model_config": model.config.to_dict()}, latest)
            write_json(output / "log.json", log)
            _plot_curve(log, output / "progress.png")
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{log['train_loss'][-1]:.3f}", val_dice=f"{val_dice:.3f}")
    summary = {"rounds": config.rounds, "final_val_dice": log["val_dice"][-1] if log["val_dice"] else None,
               "train_seconds": float(np.sum(log["round_seconds"]))}
    if context.is_main:
        save_sam(model, output / "model.pt", meta={**(meta or {}), "finetune": dataclasses.asdict(config),
                                                  "final_val_dice": summary["final_val_dice"]})
        write_json(output / "summary.json", summary)
    return summary
