"""Masks for labelled objects from their boxes: how every benchmark, the demo and fine-tuning's validation score a
model. Each object is prompted with its tight box grown by ``margin`` pixels (MedSAM's evaluation prompt), through
any predictor of :func:`~gnnseg.seg.sam.inference.chain.make_predictor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from gnnseg.seg.metrics import dice
from gnnseg.seg.sam.inference.chain import make_predictor
from gnnseg.seg.sam.inference.prompts import boxes_from_mask

if TYPE_CHECKING:
    from gnnseg.seg.sam.modeling.sam import Sam


class LabelledObject(Protocol):
    """One object of an image (a :class:`~gnnseg.seg.sam.training.samples.PromptSample`, for one)."""

    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray   # (H, W) bool: the object


def grown_box(sample: LabelledObject, margin: int) -> np.ndarray:
    """The sample's tight box grown by ``margin`` pixels per side, clipped to the image."""
    return boxes_from_mask(sample.mask, margin)[0].astype(np.float64)


def box_prompted_masks(model: Sam, samples: Sequence[LabelledObject], margin: int = 5, *,
                       augmentation: str = "none", zoom: float | None = None,
                       zoom_scales: int = 1) -> list[np.ndarray]:
    """The predicted mask of each sample, prompted with its tight box grown by ``margin`` pixels
    (:func:`predicted_masks` with ``model``'s predictor). ``augmentation``: test-time augmentation
    (:mod:`gnnseg.seg.sam.inference.augmented_predictor`); ``zoom`` and ``zoom_scales``: windows around each box
    (:mod:`gnnseg.seg.sam.inference.zoom`).
    """
    predictor = make_predictor(model, augmentation=augmentation, zoom=zoom, zoom_scales=zoom_scales)
    return predicted_masks(predictor, samples, margin)


def predicted_masks(predictor, samples: Sequence[LabelledObject], margin: int = 5) -> list[np.ndarray]:
    """Each sample's mask from ``predictor`` (any of :func:`~gnnseg.seg.sam.inference.chain.make_predictor`'s), prompted
    with its tight box grown by ``margin`` pixels. Samples that share an image share one ``set_image`` and one
    batched ``predict``."""
    masks: list[np.ndarray | None] = [None] * len(samples)
    by_image: dict[int, list[int]] = {}
    for index, sample in enumerate(samples):
        by_image.setdefault(id(sample.image), []).append(index)
    for indices in by_image.values():
        predictor.set_image(samples[indices[0]].image)
        predicted = predictor.predict(boxes=np.stack([grown_box(samples[i], margin) for i in indices])).masks
        for i, mask in zip(indices, predicted[:, 0]):
            masks[i] = mask
    return masks


def box_dice_scores(model: Sam, samples: Sequence[LabelledObject], margin: int = 5, *,
                    augmentation: str = "none", zoom: float | None = None) -> np.ndarray:
    """Dice of each sample's box-prompted mask (:func:`box_prompted_masks`) against its ground truth."""
    masks = box_prompted_masks(model, samples, margin, augmentation=augmentation, zoom=zoom)
    return np.array([dice(mask, sample.mask) for mask, sample in zip(masks, samples)])
