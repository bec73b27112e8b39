"""Training samples for box-prompted segmentation: one (image, object mask) pair per object.

MedSAM trains on image-mask pairs with one box per object (Ma et al. 2024, Methods): every label of a 2D mask or of
a 3D volume's slice, split into connected components so that one box holds one object, with tiny objects dropped
(``pre_CT_MR.py`` drops components under 100 pixels in 2D). CT slices are windowed and MR slices clipped to
percentiles before they become 8-bit RGB, as at inference.

Boxes are drawn when a sample is used: the object's tight box grown by a random 0-``max_shift`` pixels per side
(MedSAM's ``bbox_shift``), so the model learns to tolerate loose boxes.

A 3D box is looser still on most of its slices: its rectangle bounds the organ's widest extent, and on the slice
where propagation starts the organ may fill a small part of it. :func:`box_3d_samples` gives each slice of an organ
the rectangle of the organ's 3D box as its prompt (``prompt_box``), so a model can learn to answer that too.

A whole-image model answered with zoom (:mod:`gnnseg.seg.sam.inference.zoom`) sees a window around each box, not the
image; :func:`zoomed_samples` turns each sample into that window, so it can be trained on what it will be shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from gnnseg.seg.io.intensity import scale_volume, to_rgb_uint8
from gnnseg.seg.sam.inference.box_prompted import grown_box
from gnnseg.seg.sam.inference.prompts import boxes_from_mask
from gnnseg.seg.sam.inference.zoom import check_zoom, zoom_window

MIN_OBJECT_PIXELS = 100
"""Objects smaller than this are dropped, as MedSAM's preprocessing drops them in 2D."""


@dataclass(frozen=True)
class PromptSample:
    """One object: ``image`` ``(H, W, 3)`` uint8 (shared between the objects of an image), ``mask`` ``(H, W)`` bool;
    ``prompt_box``: the box it is prompted with (``x0, y0, x1, y1``) where that is not its own tight box."""

    image: np.ndarray
    mask: np.ndarray
    source: str
    prompt_box: np.ndarray | None = None

    def tight_box(self) -> np.ndarray:
        """``x0, y0, x1, y1`` (inclusive pixel indices) of the object."""
        return boxes_from_mask(self.mask)[0].astype(np.float64)


def object_masks(labels: np.ndarray, min_pixels: int = MIN_OBJECT_PIXELS) -> list[np.ndarray]:
    """Boolean masks of the connected components (8-connected) of every nonzero label, largest first per label."""
    objects = []
    for value in np.unique(labels[labels > 0]):
        components, count = ndimage.label(labels == value, structure=np.ones((3, 3), dtype=bool))
        sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
        for index in np.argsort(-sizes):
            if sizes[index] >= min_pixels:
                objects.append(components == index + 1)
    return objects


def samples_from_image(image: np.ndarray, labels: np.ndarray, source: str,
                       min_pixels: int = MIN_OBJECT_PIXELS) -> list[PromptSample]:
    """Every object of a 2D label map over its image (grey or RGB, any intensity range)."""
    if image.shape[:2] != labels.shape:
        raise ValueError(f"{source}: image {image.shape[:2]} and labels {labels.shape} differ in size")
    rgb = to_rgb_uint8(image)
    return [PromptSample(rgb, mask, source) for mask in object_masks(labels, min_pixels)]


def _scaled_volume(volume: np.ndarray, labels: np.ndarray, source: str, modality: str) -> np.ndarray:
    """The volume CT-windowed or MR-clipped as a whole (so all slices share one scale), once its labels match it."""
    if volume.shape != labels.shape:
        raise ValueError(f"{source}: volume {volume.shape} and labels {labels.shape} differ in shape")
    if modality not in ("ct", "mr"):
        raise ValueError(f"modality must be 'ct' or 'mr', got {modality!r}")
    return scale_volume(volume, modality, "soft_tissue")


def samples_from_volume(volume: np.ndarray, labels: np.ndarray, source: str, *, modality: str,
                        min_pixels: int = MIN_OBJECT_PIXELS, slices: Iterable[int] | None = None) -> list[PromptSample]:
    """Objects on the axial slices of a ``(Z, Y, X)`` volume; CT is soft-tissue windowed, MR percentile-clipped.

    The intensity transform is applied to the whole volume (MedSAM's ``pre_CT_MR.py`` does the same), so all
    slices share one scale.
    """
    scaled = _scaled_volume(volume, labels, source, modality)
    samples = []
    for z in slices if slices is not None else range(volume.shape[0]):
        if labels[z].any():
            samples += samples_from_image(scaled[z], labels[z], f"{source}/z{z}", min_pixels)
    return samples


def box_3d_samples(volume: np.ndarray, labels: np.ndarray, source: str, *, modality: str,
                   slices: Iterable[int], min_pixels: int = MIN_OBJECT_PIXELS) -> list[PromptSample]:
    """Each organ on each of ``slices`` of a ``(Z, Y, X)`` volume (intensities as :func:`samples_from_volume`), the
    label's whole region on the slice, prompted with the rectangle of the organ's 3D box over ``slices``: what a
    3D box gives a 2D model on any slice it crosses. Organs on fewer than ``min_pixels`` pixels of a slice are left
    out there."""
    slices = list(slices)
    scaled = _scaled_volume(volume, labels, source, modality)
    images = {z: to_rgb_uint8(scaled[z]) for z in slices}    # one image per slice, shared by its organs
    crossed = labels[slices]
    samples = []
    for value in np.unique(crossed[crossed > 0]):
        organ = crossed == value
        rectangle = boxes_from_mask(organ.any(axis=0))[0].astype(np.float64)
        for z, mask in zip(slices, organ):
            if mask.sum() >= min_pixels:
                samples.append(PromptSample(images[z], mask, f"{source}/z{z}/label{int(value)}/box3d", rectangle))
    return samples


def refuse_prompt_boxes(samples: Sequence[PromptSample], where: str) -> None:
    """Refuse samples with their own ``prompt_box`` where boxes come from the masks alone (``where`` says which
    path), so that a 3D box's loose prompt is never silently replaced by the tight box."""
    carrying = [sample.source for sample in samples if sample.prompt_box is not None]
    if carrying:
        raise ValueError(f"{where} draws each box from its object's mask, so it cannot use the prompt boxes of "
                         f"{len(carrying)} samples (first: {carrying[0]}); train them on a box-centred model")


def zoomed_samples(samples: Sequence[PromptSample], context: float, min_side: int,
                   margin: int = 5) -> list[PromptSample]:
    """Each sample cut to the window that zoom answers its box on: the window around its tight box grown by
    ``margin`` pixels (the evaluation prompt), ``context`` box sizes on each side and at least ``min_side`` pixels
    (:func:`~gnnseg.seg.sam.inference.zoom.zoom_window`). A sample whose window is its whole image keeps its image,
    shared with the image's other objects, so a whole-image model still encodes that image once."""
    context = check_zoom(context)
    refuse_prompt_boxes(samples, "zoom")
    zoomed = []
    for sample in samples:
        rows, columns = zoom_window(grown_box(sample, margin), context, sample.mask.shape, min_side)
        if (rows.stop - rows.start, columns.stop - columns.start) == sample.mask.shape:
            zoomed.append(sample)
            continue
        zoomed.append(PromptSample(np.ascontiguousarray(sample.image[rows, columns]),
                                   np.ascontiguousarray(sample.mask[rows, columns]),
                                   f"{sample.source}/zoom[{rows.start}:{rows.stop},{columns.start}:{columns.stop}]"))
    return zoomed


def jittered_box(sample: PromptSample, rng: np.random.Generator, max_shift: int = 20) -> np.ndarray:
    """The sample's box (its ``prompt_box``, else its tight box) grown by an independent random 0..``max_shift``
    pixels per side, clipped to the image.

    The shift is capped at a quarter of the box's size along that axis: 20 pixels around a 30-pixel cell
    would otherwise make the box meaningless.
    """
    box = sample.tight_box() if sample.prompt_box is None else np.asarray(sample.prompt_box, dtype=np.float64)
    height, width = sample.mask.shape
    size = np.array([box[2] - box[0] + 1, box[3] - box[1] + 1])
    cap = np.minimum(max_shift, np.floor(size / 4)).astype(int)
    shifts = np.array([rng.integers(0, cap[axis % 2] + 1) for axis in range(4)])
    grown = box + shifts * np.array([-1, -1, 1, 1])
    return np.clip(grown, 0, [width - 1, height - 1, width - 1, height - 1])


def draw_probabilities(weights: Sequence[float] | None, count: int) -> np.ndarray | None:
    """How often each of ``count`` samples is drawn, from one weight per sample on any positive scale
    (``None``: all equally likely)."""
    if weights is None:
        return None
    probabilities = np.asarray(weights, dtype=np.float64)
    if probabilities.shape != (count,) or not (probabilities >= 0).all() or probabilities.sum() <= 0:
        raise ValueError(f"weights must be {count} non-negative numbers with a positive sum")
    return probabilities / probabilities.sum()
