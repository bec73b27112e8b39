"""The loss every box- or click-prompted training step scores: Dice and cross-entropy on the mask logits, and the
IoU head's error (Lite MedSAM's addition, which keeps the predicted IoU meaningful)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def box_prompt_loss(low_res: Tensor, iou_pred: Tensor, masks: Tensor, iou_weight: float = 1.0) -> Tensor:
    """Dice (squared denominators, as MONAI's ``DiceLoss(squared_pred=True)``) + BCE + IoU-prediction MSE.

    ``low_res`` ``(B, 1, h, w)`` logits are upscaled to the masks' ``(B, S, S)`` size.
    """
    logits = F.interpolate(low_res, masks.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    probabilities = torch.sigmoid(logits)
    dims = (1, 2)
    intersection = (probabilities * masks).sum(dims)
    dice_loss = 1 - (2 * intersection + 1e-5) / ((probabilities ** 2).sum(dims) + (masks ** 2).sum(dims) + 1e-5)
    bce = F.binary_cross_entropy_with_logits(logits, masks)
    with torch.no_grad():
        predicted = logits > 0
        hits = (predicted & (masks > 0)).sum(dims)
        union = (predicted | (masks > 0)).sum(dims)
        true_iou = hits / union.clamp_min(1)
    iou_loss = F.mse_loss(iou_pred[:, 0], true_iou)
    return dice_loss.mean() + bce + iou_weight * iou_loss
