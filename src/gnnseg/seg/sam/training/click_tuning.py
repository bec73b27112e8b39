"""Teaching a box-centred model to take correction clicks, on a CPU: the prompt encoder and mask decoder tuned on
frozen window embeddings, with the CVPR 2025 challenge's simulated user giving the clicks.

A model trained with boxes alone reads a click as noise (its answers get worse with every click). SAM's recipe
(Kirillov et al. 2023, Appendix A) trains the loop itself: after the first answer the next point comes from the
error region, the previous logits are fed back as the dense prompt, and every round is scored. Here:

1. Each training object gets ``boxes_per_object`` jittered boxes (0..``box_shift`` pixels per side); each box's
   window (the model's ``crop_margin``) is encoded once by the frozen image encoder, and its mask resized to the
   input. A box-centred model's window depends only on its box, and clicks inside the box leave it unchanged, so the
   cached embedding is exactly what inference sees.
2. A step draws a batch of windows (the modalities equally often) and plays the loop
   (:func:`~gnnseg.seg.sam.training.click_loop.loop_losses`): the box (round 0), then each window's next click from
   the simulated user on its current mask at the input's resolution (no click where nothing is wrong: a padding
   point, label -1), with all clicks so far and the previous low-resolution logits (detached) as prompts. With
   ``score_every_round`` every round ``0 .. clicks`` is scored and back-propagated, as SAM does; without it, a depth
   ``k`` from 0 to ``clicks`` is drawn and only round ``k`` is scored, the earlier rounds running without gradients
   (one backward pass per step instead of ``clicks + 1``). Box-only answers stay trained (round 0).
3. AdamW on the prompt encoder and mask decoder only; the image encoder and its cache never change.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from gnnseg.core.progress import progress
from gnnseg.core.seed import seed_everything
from gnnseg.seg.sam.inference.crop import CropWindow
from gnnseg.seg.sam.inference.predictor import resize_crop
from gnnseg.seg.sam.modeling.sam import Sam
from gnnseg.seg.sam.training.click_loop import loop_losses
from gnnseg.seg.sam.training.finetune import resize_mask_crop
from gnnseg.seg.sam.training.samples import PromptSample, jittered_box


@dataclass(frozen=True)
class ClickTuningConfig:
    steps: int = 3000
    batch_size: int = 16
    clicks: int = 5
    boxes_per_object: int = 2
    max_objects_per_group: int = 400
    box_shift: int = 10
    lr: float = 3e-4
    weight_decay: float = 0.01
    score_every_round: bool = False
    seed: int = 0


@dataclass(frozen=True)
class WindowCache:
    """Frozen embeddings of training windows: ``(N, D, g, g)`` embeddings, ``(N, 4)`` boxes in input pixels,
    ``(N, S, S)`` masks in {0, 1}, and each window's group (its modality) for balanced draws."""

    embeddings: Tensor
    boxes: Tensor
    masks: Tensor
    groups: np.ndarray


@torch.no_grad()   # not inference mode: the cached tensors feed a backward pass
def cache_windows(model: Sam, samples: Mapping[str, Sequence[PromptSample]], config: ClickTuningConfig,
                  batch_size: int = 64) -> WindowCache:
    """Encode ``boxes_per_object`` jittered-box windows of every sample (``samples`` by group; at most
    ``max_objects_per_group`` of a group, drawn at random) once."""
    if model.config.crop_margin is None:
        raise ValueError("click tuning on cached windows is for box-centred models (crop_margin set)")
    rng = np.random.default_rng(config.seed)
    size = model.config.image_size
    pixels, boxes, masks, groups = [], [], [], []
    for group, group_samples in enumerate(samples.values()):
        chosen = rng.permutation(len(group_samples))[: config.max_objects_per_group]
        for sample in (group_samples[i] for i in sorted(chosen)):
            for _ in range(config.boxes_per_object):
                box = jittered_box(sample, rng, config.box_shift).astype(np.float64)
                window = CropWindow.around(box, model.config.crop_margin)
                pixels.append(resize_crop(window.cut(sample.image), size))
                masks.append(resize_mask_crop(window.cut(sample.mask), size))
                boxes.append(torch.as_tensor(window.to_input(box, size), dtype=torch.float32))
                groups.append(group)
    model.eval()
    embeddings = [model.encode(model.normalize(torch.stack(pixels[start:start + batch_size])))
                  for start in progress(range(0, len(pixels), batch_size), desc="encoding windows")]
    return WindowCache(torch.cat(embeddings), torch.stack(boxes), torch.stack(masks), np.array(groups))


def click_tune(model: Sam, cache: WindowCache, config: ClickTuningConfig) -> dict:
    """Tune ``model``'s prompt encoder and mask decoder in place on ``cache``; the training log."""
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed + 1)
    for parameter in model.image_encoder.parameters():
        parameter.requires_grad_(False)
    trained = [*model.prompt_encoder.parameters(), *model.mask_decoder.parameters()]
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
    by_group = [np.flatnonzero(cache.groups == g) for g in np.unique(cache.groups)]
    model.train()
    log = {"loss": [], "round_losses": [], "config": asdict(config)}
    started = time.perf_counter()
    for _ in progress(range(config.steps), desc="click tuning"):
        picks = np.array([rng.choice(by_group[g]) for g in rng.integers(len(by_group), size=config.batch_size)])
        batch = cache.embeddings[picks], cache.boxes[picks], cache.masks[picks]
        if config.score_every_round:
            losses = loop_losses(model, *batch, rounds=config.clicks + 1)
            scored = dict(enumerate(losses))
            loss = torch.stack(losses).mean()
        else:
            depth = int(rng.integers(config.clicks + 1))
            loss, = loop_losses(model, *batch, rounds=depth + 1, graded="last")
            scored = {depth: loss}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        log["loss"].append(float(loss.detach()))
        log["round_losses"].append({k: float(v.detach()) for k, v in scored.items()})
    model.eval()
    log["seconds"] = time.perf_counter() - started
    return log
