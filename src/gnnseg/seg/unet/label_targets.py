"""What the loss compares the network's outputs with: label maps turned into training targets, as nnU-Net v2 does.

Patches carry integer label maps ``(B, 1, *spatial)`` through sampling, augmentation and deep-supervision downsampling
(nearest), as nnU-Net keeps them until its last transform; then:

- plain labels: the map itself, the ignore label (if any) replaced by ``-1``, which the softmax loss skips;
- regions (:class:`~gnnseg.seg.io.dataset_labels.DatasetLabels` ``has_regions``): one binary channel per foreground
  region, 1 where the voxel holds any label of the region (nnU-Net's ``ConvertSegmentationToRegionsTransform``), and a
  mask that is 0 on the ignore label (nnU-Net's ``loss_mask``: the channel it appends for the ignore label, inverted).

Converting after downsampling equals nnU-Net's order (convert, then downsample) because both steps are per voxel.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gnnseg.seg.io.dataset_labels import DatasetLabels, LabelOrRegion


def region_targets(target: Tensor, regions: list[LabelOrRegion]) -> Tensor:
    """``target (B, 1, *spatial)`` integer labels -> ``(B, R, *spatial)`` float32, 1 inside each region."""
    channels = []
    for region in regions:
        members = torch.as_tensor(region if isinstance(region, tuple) else (region,), device=target.device)
        channels.append(torch.isin(target[:, 0], members.to(target.dtype)))
    return torch.stack(channels, 1).float()


def loss_mask(target: Tensor, ignore_label: int | None) -> Tensor | None:
    """``(B, 1, *spatial)`` float32: 0 on the ignore label, 1 elsewhere (``None`` without an ignore label)."""
    return None if ignore_label is None else (target != ignore_label).float()


def softmax_targets(target: Tensor, ignore_label: int | None) -> Tensor:
    """Plain labels for the softmax loss: the ignore label as ``-1`` (skipped), every other value as it is."""
    return target if ignore_label is None else torch.where(target == ignore_label, -1, target)


def pseudo_dice_counts(logits: Tensor, target: Tensor, labels: DatasetLabels) -> np.ndarray:
    """True positives, false positives and false negatives per foreground label or region, ``(3, len(scored))``, on
    validation patches outside the ignore label: the arg-max for plain labels, each region where its logit exceeds 0
    (sigmoid > 0.5) for regions (nnU-Net's ``validation_step``)."""
    counted = torch.ones_like(target[:, 0], dtype=torch.bool) if labels.ignore_label is None else \
        target[:, 0] != labels.ignore_label
    if labels.has_regions:
        predicted = logits > 0
        truth = region_targets(target, labels.regions).bool()
    else:
        winners = logits.argmax(1)
        predicted = torch.stack([winners == value for value in labels.foreground_labels], 1)
        truth = torch.stack([target[:, 0] == value for value in labels.foreground_labels], 1)
    predicted, truth = predicted & counted[:, None], truth & counted[:, None]
    axes = (0, *range(2, predicted.dim()))
    return torch.stack([(predicted & truth).sum(axes), (predicted & ~truth).sum(axes),
                        (~predicted & truth).sum(axes)]).double().cpu().numpy()
