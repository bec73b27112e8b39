"""A whole-image training set resized once to the model's input, with batches drawn on any device.

Whole-image models (SAM, MedSAM, Lite MedSAM) see every object of an image through the same resized input, so the
resize is done once per image here instead of once per draw: the images become ``(N, S, S, 3)`` uint8 in the
model's layout (square, or longest side + zero padding) and the objects one instance map per image at ``S``
(nearest neighbour, as MedSAM resizes ground truth). Objects of one image never overlap: they are connected
components of a label map (:mod:`gnnseg.seg.sam.training.samples`). An object whose mask vanishes at ``S`` is dropped.

A batch is drawn as tensors on the training device: rotations by 90 degrees and flips of image and mask together,
the box read off the (augmented) mask and grown by a random 0..``box_shift`` pixels per side (at most a quarter of
the box), min-max or ImageNet normalisation. The set saves to and loads from one compressed ``.npz``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gnnseg.seg.sam.inference.model_input import pad_to_square, resize_image, resize_longest_side, resize_mask
from gnnseg.seg.sam.inference.symmetry import Symmetry
from gnnseg.seg.sam.modeling.sam import SamConfig, imagenet_normalize
from gnnseg.seg.sam.training.samples import PromptSample, refuse_prompt_boxes


@dataclass
class PreparedSet:
    """``images`` ``(N, S, S, 3)`` uint8; ``extents`` ``(N, 2)`` the image's ``(H', W')`` inside any padding;
    ``instances`` ``(N, S, S)`` int32 object ids (0 background); per object: ``object_image`` (index into
    ``images``), ``object_id`` (value in its instance map) and ``object_sample`` (index of the sample it came from)."""

    images: np.ndarray
    extents: np.ndarray
    instances: np.ndarray
    object_image: np.ndarray
    object_id: np.ndarray
    object_sample: np.ndarray
    layout: str

    def __len__(self) -> int:
        return len(self.object_image)

    @property
    def size(self) -> int:
        return self.images.shape[1]

    @classmethod
    def from_samples(cls, samples: Sequence[PromptSample], config: SamConfig) -> PreparedSet:
        """Group the samples by the image they share and resize each image and its objects once."""
        if not samples:
            raise ValueError("no samples to prepare")
        refuse_prompt_boxes(samples, "a whole-image model's prepared set")
        size, layout = config.image_size, config.layout
        by_image: dict[int, list[int]] = {}
        for index, sample in enumerate(samples):
            by_image.setdefault(id(sample.image), []).append(index)
        images, extents, instances = [], [], []
        object_image, object_id, object_sample = [], [], []
        for image_index, indices in enumerate(by_image.values()):
            image = samples[indices[0]].image
            height, width = image.shape[:2]
            if layout == "square":
                resized_hw = (size, size)
                images.append(np.round(resize_image(image, size)).clip(0, 255).astype(np.uint8))
            else:
                resized = resize_longest_side(image, size)
                resized_hw = resized.shape[:2]
                images.append(pad_to_square(np.round(resized).clip(0, 255).astype(np.uint8), size))
            labels = np.zeros((height, width), np.int32)
            for number, index in enumerate(indices, start=1):
                labels[samples[index].mask] = number
            small = np.zeros((size, size), np.int32)
            small[: resized_hw[0], : resized_hw[1]] = resize_mask(labels, resized_hw)
            present = set(np.unique(small).tolist())
            for number, index in enumerate(indices, start=1):
                if number in present:
                    object_image.append(image_index)
                    object_id.append(number)
                    object_sample.append(index)
            extents.append(resized_hw)
            instances.append(small)
        return cls(np.stack(images), np.array(extents, np.int32), np.stack(instances), np.array(object_image),
                   np.array(object_id), np.array(object_sample), layout)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, images=self.images, extents=self.extents, instances=self.instances,
                            object_image=self.object_image, object_id=self.object_id,
                            object_sample=self.object_sample, layout=np.array(self.layout))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PreparedSet:
        with np.load(path, allow_pickle=False) as data:
            missing = {"images", "extents", "instances", "object_image", "object_id", "object_sample",
                       "layout"} - set(data.files)
            if missing:
                raise ValueError(f"{path} is not a prepared training set: missing {sorted(missing)}")
            fields = {name: data[name] for name in data.files}
        fields["layout"] = str(fields["layout"])
        return cls(**fields)

    def check_fits(self, config: SamConfig) -> None:
        if (self.size, self.layout) != (config.image_size, config.layout):
            raise ValueError(f"the set was prepared for {self.size} px {self.layout} input; the model takes "
                             f"{config.image_size} px {config.layout} input")

    def object_probabilities(self, sample_probabilities: np.ndarray | None) -> np.ndarray | None:
        """Draw probabilities per object from those per sample (indexed by ``object_sample``), normalised again
        over the objects that survived the resize (``None`` stays ``None``: all equally likely)."""
        if sample_probabilities is None:
            return None
        per_object = sample_probabilities[self.object_sample]
        return per_object / per_object.sum()

    def pixels(self, image_indices: Sequence[int] | np.ndarray, normalization: str,
               device: torch.device | str = "cpu", views: Sequence[Symmetry] | None = None) -> Tensor:
        """``(B, 3, S, S)`` float32 encoder input of whole images, without augmentation, or with ``views`` each
        image as its symmetry shows it (the part inside the padding turned, then padded again)."""
        indices = np.asarray(image_indices)
        images, extents = self.images[indices], self.extents[indices]
        if views is not None:
            shown = [view.image(self.images[index, :height, :width])
                     for index, (height, width), view in zip(indices, extents, views, strict=True)]
            images = np.stack([pad_to_square(view, self.size) for view in shown])
            extents = np.array([view.shape[:2] for view in shown])
        pixels = torch.as_tensor(images, device=device).permute(0, 3, 1, 2)
        return normalize_batch(pixels.float(), torch.as_tensor(extents, device=device), normalization)

    def batch(self, chosen: Sequence[int] | np.ndarray, rng: np.random.Generator, *, box_shift: int,
              augment: bool, normalization: str, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
        """Encoder input ``(B, 3, S, S)``, boxes ``(B, 4)`` and float masks ``(B, S, S)`` of objects ``chosen``."""
        chosen = np.asarray(chosen)
        image_indices = self.object_image[chosen]
        pixels = self.pixels(image_indices, normalization, device)
        instances = torch.as_tensor(self.instances[image_indices], device=device)
        masks = instances == torch.as_tensor(self.object_id[chosen], device=device)[:, None, None]
        if augment:
            turns = rng.integers(4, size=len(chosen))
            flips = rng.integers(2, size=len(chosen)).astype(bool)
            symmetries = [Symmetry(int(k), bool(f)) for k, f in zip(turns, flips)]
            pixels = torch.stack([symmetry.plane(p) for symmetry, p in zip(symmetries, pixels)])
            masks = torch.stack([symmetry.plane(m) for symmetry, m in zip(symmetries, masks)])
        boxes = jittered_boxes(masks, rng, box_shift)
        return pixels, boxes, masks.float()


def normalize_batch(pixels: Tensor, extents: Tensor, normalization: str) -> Tensor:
    """0..255 ``(B, 3, S, S)`` pixels -> encoder input; min-max (Lite MedSAM) is taken over each image's own area
    ``extents[b]`` (not its padding), and the padding is zero in the result under either normalisation."""
    size = pixels.shape[-1]
    grid = torch.arange(size, device=pixels.device)
    inside = (grid[None, :, None] < extents[:, 0, None, None]) & (grid[None, None, :] < extents[:, 1, None, None])
    inside = inside[:, None]
    if normalization == "minmax":
        low = torch.where(inside, pixels, torch.inf).amin(dim=(1, 2, 3), keepdim=True)
        high = torch.where(inside, pixels, -torch.inf).amax(dim=(1, 2, 3), keepdim=True)
        normalized = (pixels - low) / (high - low).clamp_min(1e-8)
    elif normalization == "imagenet":
        normalized = imagenet_normalize(pixels)
    else:
        raise ValueError(f"normalization must be 'minmax' or 'imagenet', got {normalization!r}")
    return normalized * inside


def jittered_boxes(masks: Tensor, rng: np.random.Generator, max_shift: int) -> Tensor:
    """Tight boxes ``x0, y0, x1, y1`` of ``(B, S, S)`` masks, each side moved out by a random 0..``max_shift``
    pixels, capped at a quarter of the box's extent on that axis and clipped to the input."""
    size = masks.shape[-1]
    index = torch.arange(size, device=masks.device)
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    big = size + 1
    y0 = torch.where(rows, index, big).amin(dim=1)
    y1 = torch.where(rows, index, -1).amax(dim=1)
    x0 = torch.where(cols, index, big).amin(dim=1)
    x1 = torch.where(cols, index, -1).amax(dim=1)
    tight = torch.stack([x0, y0, x1, y1], dim=1).float()
    extent = torch.stack([x1 - x0 + 1, y1 - y0 + 1], dim=1).float().repeat(1, 2)
    cap = torch.clamp(torch.floor(extent / 4), max=max_shift)
    fractions = torch.as_tensor(rng.random((len(masks), 4)), dtype=torch.float32, device=masks.device)
    shifts = torch.floor(fractions * (cap + 1))
    grown = tight + shifts * torch.tensor([-1.0, -1.0, 1.0, 1.0], device=masks.device)
    return grown.clamp(0, size - 1)
