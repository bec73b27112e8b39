"""The correction loop played during training: a box, then clicks from the CVPR 2025 challenge's simulated user,
each round fed the previous round's logits, as SAM's recipe trains it (Kirillov et al. 2023, Appendix A).

Both trainers play it: click tuning on cached window embeddings (:mod:`~gnnseg.seg.sam.training.click_tuning`) and
whole-model fine-tuning with ``click_rounds`` (:mod:`~gnnseg.seg.sam.training.finetune`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from gnnseg.seg.sam.inference.simulated_user import next_click
from gnnseg.seg.sam.modeling.sam import Sam
from gnnseg.seg.sam.training.losses import box_prompt_loss

PADDING_LABEL = -1


def simulated_clicks(low_res: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """Each window's next click on its answer ``(B, 1, h, w)`` against its mask ``(B, S, S)``: ``(B, 1, 2)`` x, y
    in input pixels and ``(B, 1)`` labels (1 add, 0 remove, -1 nothing to correct)."""
    size = masks.shape[-1]
    answers = F.interpolate(low_res.detach().float(), (size, size), mode="bilinear", align_corners=False)[:, 0] > 0
    points = torch.zeros(len(masks), 1, 2, device=masks.device)
    labels = torch.full((len(masks), 1), PADDING_LABEL, dtype=torch.int64, device=masks.device)
    for index, (answer, mask) in enumerate(zip(answers.cpu().numpy(), masks.cpu().numpy() > 0.5)):
        click = next_click(answer, mask)
        if click is not None:
            (y, x), label = click
            points[index, 0] = torch.tensor([x, y], dtype=torch.float32)
            labels[index, 0] = label
    return points, labels


def loop_losses(model: Sam, embeddings: Tensor, boxes: Tensor, masks: Tensor, rounds: int, *,
                graded: str = "every", iou_weight: float = 1.0) -> list[Tensor]:
    """The losses of the loop's rounds ``0 .. rounds - 1`` (0: the box alone; ``k``: after ``k`` clicks).

    ``graded="every"`` keeps every round's graph (SAM scores every round); ``graded="last"`` runs the earlier rounds
    without gradients and returns only the last round's loss, one backward pass per step (the cheaper CPU recipe).
    Clicks come from each round's detached answer, so no gradient flows from one round into the next.
    """
    if rounds < 1:
        raise ValueError(f"the loop needs at least one round (the box), got {rounds}")
    if graded not in ("every", "last"):
        raise ValueError(f"graded must be 'every' or 'last', got {graded!r}")
    device = embeddings.device
    points, labels, previous, losses = None, None, None, []
    for round_index in range(rounds):
        kept = graded == "every" or round_index == rounds - 1
        with torch.set_grad_enabled(kept and torch.is_grad_enabled()), \
                torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            prompt = None if points is None else (points, labels)
            low_res, iou = model.decode(embeddings, points=prompt, boxes=boxes, mask_inputs=previous)
        if kept:
            losses.append(box_prompt_loss(low_res.float(), iou.float(), masks, iou_weight))
        if round_index < rounds - 1:
            new_points, new_labels = simulated_clicks(low_res, masks)
            points = new_points if points is None else torch.cat([points, new_points], dim=1)
            labels = new_labels if labels is None else torch.cat([labels, new_labels], dim=1)
            previous = low_res.detach().float()
    return losses
