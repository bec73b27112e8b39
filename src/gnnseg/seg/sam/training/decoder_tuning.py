"""Tuning a whole-image model's mask decoder on frozen image embeddings: more training than a CPU could otherwise give.

A fine-tuning step of a whole Lite MedSAM on a CPU is nearly all the image encoder's forward and backward pass. With the
encoder frozen its embeddings never change, so they are computed once
(:func:`~gnnseg.seg.sam.training.distill.cache_teacher_embeddings` with ``symmetries=DIHEDRAL``): every training image
under each of the square's eight symmetries (or a subset, on a smaller budget), turned and then padded exactly as
test-time augmentation shows it to the model. A step then costs only the prompt encoder and mask decoder.

Each draw takes an object (with per-sample ``weights``, as :func:`~gnnseg.seg.sam.training.finetune.finetune`), one of
the cached views of its image, the object's mask in that view and its tight box grown by a random 0..``box_shift``
pixels per side; the loss is stage 2's Dice + BCE + IoU-prediction MSE
(:func:`~gnnseg.seg.sam.training.losses.box_prompt_loss`) and only the mask decoder learns.

A tuned decoder can give up what the released one knew about images unlike its training set. Weight-space
interpolation between the two (:func:`interpolated_decoder`; :func:`interpolated_model` for whole models; WiSE-FT,
Wortsman et al., CVPR 2022) trades part of the gain for part of that generality; :func:`cached_box_dice` scores a
decoder on cached embeddings, cheaply enough to choose how far to go on training images
(``benchmarks/lite_adaptation.py`` measures both).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from gnnseg.core.progress import progress
from gnnseg.core.runs import write_json
from gnnseg.core.seed import seed_everything
from gnnseg.seg.metrics import dice
from gnnseg.seg.sam.inference.model_input import pad_to_square
from gnnseg.seg.sam.inference.prompts import boxes_from_mask
from gnnseg.seg.sam.inference.symmetry import DIHEDRAL, Symmetry
from gnnseg.seg.sam.modeling.sam import Sam
from gnnseg.seg.sam.training.distill import EmbeddingCache
from gnnseg.seg.sam.training.finetune import learning_rate
from gnnseg.seg.sam.training.losses import box_prompt_loss
from gnnseg.seg.sam.training.prepared import PreparedSet, jittered_boxes
from gnnseg.seg.sam.training.samples import draw_probabilities


@dataclass(frozen=True)
class DecoderTuningConfig:
    iterations: int = 1000
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_iterations: int = 50
    box_shift: int = 5
    iou_loss_weight: float = 1.0
    seed: int = 0


def view_masks(prepared: PreparedSet, objects: np.ndarray, views: np.ndarray,
               symmetries: Sequence[Symmetry] = DIHEDRAL) -> Tensor:
    """``(B, S, S)`` float masks of ``objects``, each as ``symmetries[views[b]]`` shows its image (turned, then
    padded at the bottom and right like the image in the cache)."""
    masks = []
    for obj, view in zip(objects, views):
        image = prepared.object_image[obj]
        height, width = prepared.extents[image]
        mask = prepared.instances[image, :height, :width] == prepared.object_id[obj]
        masks.append(pad_to_square(symmetries[view].image(mask), prepared.size))
    return torch.from_numpy(np.stack(masks).astype(np.float32))


def tune_decoder(model: Sam, prepared: PreparedSet, cache: EmbeddingCache, config: DecoderTuningConfig,
                 output: str | os.PathLike | None = None, *, weights: Sequence[float] | None = None,
                 show_progress: bool | None = None) -> dict[str, Any]:
    """Train ``model.mask_decoder`` in place on the cached views of ``prepared``'s images; returns the loss log.

    ``cache`` must hold the model's own embeddings of every image under the same symmetries (all eight, or a
    subset), in :func:`~gnnseg.seg.sam.training.distill.cache_teacher_embeddings` order. With ``output``,
    ``decoder_tuning_log.json`` is written there.
    """
    prepared.check_fits(model.config)
    symmetries = cache.views
    views_per_image = len(symmetries)
    grid = model.config.embedding_size
    expected = (len(prepared.images) * views_per_image, model.config.prompt_dim, grid, grid)
    if tuple(cache.array.shape) != expected:
        raise ValueError(f"the cache holds embeddings of shape {tuple(cache.array.shape)}; tuning needs {expected} "
                         f"(every image under the {views_per_image} symmetries it records)")
    probabilities = prepared.object_probabilities(draw_probabilities(weights, int(prepared.object_sample.max()) + 1))
    seed_everything(config.seed)
    trainable = {parameter: parameter.requires_grad for parameter in model.parameters()}
    model.train().requires_grad_(False)
    model.mask_decoder.requires_grad_(True)
    parameters = list(model.mask_decoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    losses: list[float] = []
    began = time.perf_counter()
    bar = progress(range(config.iterations), desc="decoder tuning", total=config.iterations,
                   enabled=show_progress)
    for iteration in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, iteration)
        objects = rng.choice(len(prepared), size=config.batch_size, p=probabilities)
        views = rng.integers(views_per_image, size=config.batch_size)
        masks = view_masks(prepared, objects, views, symmetries)
        boxes = jittered_boxes(masks > 0, rng, config.box_shift)
        embeddings = cache.batch(prepared.object_image[objects] * views_per_image + views)
        low_res, iou = model.decode(embeddings, boxes=boxes)
        loss = box_prompt_loss(low_res, iou, masks, config.iou_loss_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if hasattr(bar, "set_postfix") and iteration % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    model.eval()
    for parameter, flag in trainable.items():
        parameter.requires_grad_(flag)
    log = {"config": asdict(config), "loss": losses, "seconds": time.perf_counter() - began}
    if output is not None:
        write_json(Path(output) / "decoder_tuning_log.json", log)
    return log


def interpolated_model(released: Sam, tuned: Sam, alpha: float, module: str | None = None) -> Sam:
    """A copy of ``released`` whose weights are ``(1 - alpha) * released + alpha * tuned``, weight by weight
    (``alpha`` 0: the released model, 1: the tuned one): all of them, or those of ``module`` alone (such as
    ``"mask_decoder"``), the rest staying ``released``'s."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in 0..1 (0: the released weights, 1: the tuned ones), got {alpha}")
    start = (released if module is None else getattr(released, module)).state_dict()
    end = (tuned if module is None else getattr(tuned, module)).state_dict()
    if start.keys() != end.keys() or any(start[name].shape != end[name].shape for name in start):
        raise ValueError(f"the two models' {module or 'weights'} differ in their names or shapes; interpolation "
                         "needs a tuned model of the same architecture")
    blended = copy.deepcopy(released)
    (blended if module is None else getattr(blended, module)).load_state_dict(
        {name: torch.lerp(start[name], end[name].to(start[name].device, start[name].dtype), alpha)
         if start[name].is_floating_point() else start[name] for name in start})
    return blended


def interpolated_decoder(released: Sam, tuned: Sam, alpha: float) -> Sam:
    """:func:`interpolated_model` of the mask decoders: everything else is ``released``'s."""
    return interpolated_model(released, tuned, alpha, "mask_decoder")


@torch.no_grad()
def cached_box_dice(model: Sam, prepared: PreparedSet, cache: EmbeddingCache, objects: Sequence[int] | np.ndarray,
                    margin: int = 5) -> np.ndarray:
    """Dice of each of ``objects`` (indices into ``prepared``) at the model's input size, its image as it is (the
    cache's identity view), prompted with its tight box grown by ``margin`` pixels; masks are logits above 0."""
    symmetries = cache.views
    if not symmetries or (symmetries[0].quarter_turns, symmetries[0].mirror) != (0, False):
        raise ValueError("the cache's first view must be the image as it is (identity)")
    objects = np.asarray(objects, dtype=np.int64)
    scores: list[float] = []
    for start in range(0, len(objects), 32):
        chosen = objects[start : start + 32]
        masks = (view_masks(prepared, chosen, np.zeros(len(chosen), np.int64), symmetries) > 0).numpy()
        boxes = torch.from_numpy(np.concatenate([boxes_from_mask(mask, margin) for mask in masks])).float()
        low_res, _ = model.decode(cache.batch(prepared.object_image[chosen] * len(symmetries)).to(model.decoder_dtype),
                                  boxes=boxes)
        predicted = F.interpolate(low_res.float(), masks.shape[-2:], mode="bilinear", align_corners=False)[:, 0] > 0
        scores += [dice(guess, mask) for guess, mask in zip(predicted.numpy(), masks)]
    return np.array(scores)
