"""Dice + cross-entropy with deep supervision, as nnU-Net trains (Isensee et al. 2021).

Soft Dice over foreground classes (``do_bg=False``), computed over the whole batch ("batch Dice") or
per sample, plus cross-entropy, weighted 1:1. Region-based datasets train one sigmoid output per region instead:
binary cross-entropy with logits plus soft Dice over every region (``do_bg=True``: no channel is background),
nnU-Net's ``DC_and_BCE_loss``; the ignore label is left out of both terms (its ``loss_mask``). Dice enters as
``1 - Dice`` here where nnU-Net adds ``-Dice``: the values differ by 1, the gradients are the same.
With deep supervision every decoder output gets the
loss against the labels downsampled (nearest) to its resolution, weighted ``1 / 2^i`` with the coarsest
output's weight set to 0, then normalised to sum to 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gnnseg.seg.io.dataset_labels import DatasetLabels, LabelOrRegion
from gnnseg.seg.unet.label_targets import loss_mask, region_targets, softmax_targets


def soft_dice(logits: Tensor, target: Tensor, *, batch_dice: bool = True, smooth: float = 1e-5) -> Tensor:
    """Mean soft Dice over foreground classes. ``logits (B, K, *spatial)``, ``target (B, 1, *spatial)``
    integer labels (values < 0 are ignored)."""
    probabilities = logits.softmax(1)
    valid = (target >= 0).to(logits.dtype)
    one_hot = torch.zeros_like(logits).scatter_(1, target.clamp_min(0).long(), 1.0) * valid
    probabilities = probabilities * valid
    axes = tuple(range(2, logits.dim()))
    if batch_dice:
        axes = (0, *axes)
    intersection = (probabilities * one_hot).sum(axes)
    denominator = probabilities.sum(axes) + one_hot.sum(axes)
    dice = (2 * intersection + smooth) / (denominator + smooth).clamp_min(1e-8)
    foreground = dice[1:] if batch_dice else dice[:, 1:]
    return foreground.mean()


class DiceCrossEntropyLoss(nn.Module):
    def __init__(self, batch_dice: bool = True, dice_weight: float = 1.0, ce_weight: float = 1.0,
                 ignore_label: int | None = None) -> None:
        super().__init__()
        self.batch_dice, self.dice_weight, self.ce_weight = batch_dice, dice_weight, ce_weight
        self.ignore_label = ignore_label

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits (B, K, *spatial)``, ``target (B, 1, *spatial)``; label -1 and the ignore label are ignored."""
        target = softmax_targets(target, self.ignore_label)
        ce = F.cross_entropy(logits, target[:, 0].long(), ignore_index=-1)
        dice_loss = 1.0 - soft_dice(logits, target, batch_dice=self.batch_dice)
        return self.ce_weight * ce + self.dice_weight * dice_loss


def masked_soft_dice(probabilities: Tensor, target: Tensor, mask: Tensor | None, *, batch_dice: bool = True,
                     smooth: float = 1e-5) -> Tensor:
    """Mean soft Dice over every channel (``do_bg=True``): ``probabilities`` and binary ``target`` ``(B, R,
    *spatial)``, voxels where ``mask (B, 1, *spatial)`` is 0 left out."""
    if mask is not None:
        probabilities, target = probabilities * mask, target * mask
    axes = tuple(range(2, probabilities.dim()))
    if batch_dice:
        axes = (0, *axes)
    intersection = (probabilities * target).sum(axes)
    denominator = probabilities.sum(axes) + target.sum(axes)
    return ((2 * intersection + smooth) / (denominator + smooth).clamp_min(1e-8)).mean()


class RegionDiceBCELoss(nn.Module):
    """Binary cross-entropy with logits + soft Dice over the regions, weighted 1:1, outside the ignore label.

    Takes integer label maps and turns them into one binary target per region
    (:func:`~gnnseg.seg.unet.label_targets.region_targets`); the cross-entropy is the mean over voxels and regions
    without an ignore label, and with one the sum over the regions and counted voxels divided by the counted voxels,
    as nnU-Net's ``DC_and_BCE_loss`` computes them."""

    def __init__(self, regions: Sequence[LabelOrRegion], ignore_label: int | None = None, batch_dice: bool = True,
                 dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        super().__init__()
        self.regions, self.ignore_label = list(regions), ignore_label
        self.batch_dice, self.dice_weight, self.bce_weight = batch_dice, dice_weight, bce_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits (B, R, *spatial)``, ``target (B, 1, *spatial)`` integer labels."""
        regions = region_targets(target, self.regions)
        mask = loss_mask(target, self.ignore_label)
        dice = masked_soft_dice(torch.sigmoid(logits), regions, mask, batch_dice=self.batch_dice)
        if mask is None:
            bce = F.binary_cross_entropy_with_logits(logits, regions)
        else:
            bce = (F.binary_cross_entropy_with_logits(logits, regions, reduction="none") * mask).sum() \
                / mask.sum().clamp_min(1e-8)
        return self.bce_weight * bce + self.dice_weight * (1.0 - dice)


def training_loss(labels: DatasetLabels, batch_dice: bool = True) -> DeepSupervisionLoss:
    """The loss a dataset trains with, with deep supervision: :class:`RegionDiceBCELoss` for regions, else
    :class:`DiceCrossEntropyLoss`; either skips the ignore label (nnU-Net's ``_build_loss``)."""
    if labels.has_regions:
        return DeepSupervisionLoss(RegionDiceBCELoss(labels.regions, labels.ignore_label, batch_dice=batch_dice))
    return DeepSupervisionLoss(DiceCrossEntropyLoss(batch_dice=batch_dice, ignore_label=labels.ignore_label))


def deep_supervision_weights(num_outputs: int) -> list[float]:
    """``1/2^i`` for output ``i`` (0 = full resolution), the coarsest set to 0, normalised (nnU-Net)."""
    weights = [1 / 2 ** i for i in range(num_outputs)]
    if num_outputs > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def downsample_target(target: Tensor, shape: Sequence[int]) -> Tensor:
    """Nearest-neighbour downsampling of integer labels ``(B, 1, *spatial)`` to ``shape``."""
    if tuple(target.shape[2:]) == tuple(shape):
        return target
    return F.interpolate(target.float(), size=tuple(shape), mode="nearest").to(target.dtype)


class DeepSupervisionLoss(nn.Module):
    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, outputs: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        if isinstance(outputs, Tensor):
            return self.loss(outputs, target)
        weights = deep_supervision_weights(len(outputs))
        # zero-weighted outputs stay in the graph (with zero gradient) so that DDP sees every head used
        return sum(w * self.loss(out, downsample_target(target, out.shape[2:])) for w, out in zip(weights, outputs))
