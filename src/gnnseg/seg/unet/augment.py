"""Training augmentations on batches of patches, in torch, for 2D ``(B, C, y, x)`` and 3D ``(B, C, z, y, x)``.

Probabilities and ranges follow nnU-Net v2's default training transforms (Isensee et al. 2021,
supplementary; ``nnUNetTrainer.get_training_transforms``): rotation p 0.2, scaling p 0.2 in [0.7, 1.4],
Gaussian noise p 0.1, Gaussian blur p 0.2, brightness p 0.15, contrast p 0.15, gamma p 0.3 (and inverted
gamma p 0.1), mirroring on every axis. Elastic deformation, off in nnU-Net, is available as in the
original U-Net for EM images (Ronneberger et al. 2015: random displacements on a 3x3 grid, sigma 10 px,
smooth interpolation), and so are an additive intensity shift (``shift_p``) and a shift drawn for each labelled
structure on its own (``label_shift_p``), for training sets that show only one contrast phase of a scan the network
must also read in another: contrast agent brightens organs by different amounts, which one global shift cannot
show. The per-label shift is domain randomisation in the spirit of SynthSeg (Billot et al. 2023), which draws every
label's intensities afresh; it is applied before noise and blur, so the new edges are blurred like real ones.

Spatial transforms are composed into one sampling grid per sample and applied with ``grid_sample``:
bilinear for images, nearest for labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AugmentationConfig:
    rotation_p: float = 0.2
    rotation_max_degrees: float = 180.0   # 2D: in-plane range; 3D: per axis, capped at 30 as in nnU-Net
    scale_p: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    elastic_p: float = 0.0
    elastic_sigma_px: float = 10.0
    elastic_grid: int = 3
    noise_p: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_p: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    shift_p: float = 0.0                   # additive shift of the normalised intensities; off in nnU-Net
    shift_range: tuple[float, float] = (-1.0, 1.0)
    label_shift_p: float = 0.0             # a shift per foreground label of a patch; off in nnU-Net
    label_shift_range: tuple[float, float] = (-1.0, 1.0)
    contrast_p: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    gamma_p: float = 0.3
    inverted_gamma_p: float = 0.1
    gamma_range: tuple[float, float] = (0.7, 1.5)
    mirror_axes: tuple[int, ...] | None = None   # spatial axes to mirror (None: all)

    @classmethod
    def none(cls) -> AugmentationConfig:
        return cls(rotation_p=0, scale_p=0, elastic_p=0, noise_p=0, blur_p=0, brightness_p=0, contrast_p=0,
                   gamma_p=0, inverted_gamma_p=0, mirror_axes=())


def _rotation_matrix(dims: int, generator: torch.Generator, max_degrees: float) -> Tensor:
    def angle(limit):
        return (torch.rand(1, generator=generator).item() * 2 - 1) * math.radians(limit)

    if dims == 2:
        a = angle(max_degrees)
        return torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    matrix = torch.eye(3)
    for first, second in ((0, 1), (0, 2), (1, 2)):
        a = angle(min(30.0, max_degrees))
        rotation = torch.eye(3)
        rotation[first, first] = rotation[second, second] = math.cos(a)
        rotation[first, second], rotation[second, first] = -math.sin(a), math.sin(a)
        matrix = rotation @ matrix
    return matrix


def _elastic_field(shape, dims: int, generator: torch.Generator, sigma_px: float, grid: int) -> Tensor:
    """Smooth displacement in normalised coordinates, ``(*shape, dims)``: random coarse-grid offsets with
    standard deviation ``sigma_px`` pixels, upsampled bicubically (trilinearly in 3D)."""
    coarse = torch.randn((1, dims, *([grid] * dims)), generator=generator) * sigma_px
    mode = "bicubic" if dims == 2 else "trilinear"
    field = F.interpolate(coarse, size=tuple(shape), mode=mode, align_corners=True)[0]
    scale = torch.tensor([2.0 / max(s - 1, 1) for s in reversed(shape)]).view(dims, *([1] * dims))
    return (field.flip(0) * scale).movedim(0, -1)      # grid_sample wants (x, y[, z]) order


def spatial_transform(image: Tensor, seg: Tensor, config: AugmentationConfig, generator: torch.Generator
                      ) -> tuple[Tensor, Tensor]:
    """Rotate, scale and deform each sample (same transform for its image and labels)."""
    batch, dims = image.shape[0], image.dim() - 2
    shape = image.shape[2:]
    images, segs = [], []
    for b in range(batch):
        rotate = torch.rand(1, generator=generator).item() < config.rotation_p
        scale = torch.rand(1, generator=generator).item() < config.scale_p
        elastic = torch.rand(1, generator=generator).item() < config.elastic_p
        if not (rotate or scale or elastic):
            images.append(image[b]), segs.append(seg[b])
            continue
        matrix = torch.eye(dims)
        if rotate:
            matrix = _rotation_matrix(dims, generator, config.rotation_max_degrees) @ matrix
        if scale:
            low, high = config.scale_range
            matrix = matrix / (low + (high - low) * torch.rand(1, generator=generator).item())
        # affine_grid works in coordinates normalised per axis to [-1, 1] and ordered (x, y[, z]);
        # conjugating with the half sizes makes the rotation a true rotation on non-square patches
        half = torch.tensor([s / 2 for s in reversed(shape)], dtype=matrix.dtype)
        matrix = torch.diag(1 / half) @ matrix @ torch.diag(half)
        theta = torch.cat([matrix, torch.zeros(dims, 1)], dim=1).unsqueeze(0)
        grid = F.affine_grid(theta, (1, 1, *shape), align_corners=False)[0]
        if elastic:
            grid = grid + _elastic_field(shape, dims, generator, config.elastic_sigma_px, config.elastic_grid)
        grid = grid.unsqueeze(0).to(image.dtype)
        images.append(F.grid_sample(image[b:b + 1], grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=False)[0])
        segs.append(F.grid_sample(seg[b:b + 1].to(image.dtype), grid, mode="nearest", padding_mode="zeros",
                                  align_corners=False)[0].to(seg.dtype))
    return torch.stack(images), torch.stack(segs)


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    dims = x.dim() - 1
    radius = max(1, int(round(3 * sigma)))
    coordinates = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-coordinates ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    out = x.unsqueeze(0)
    conv = F.conv2d if dims == 2 else F.conv3d
    for axis in range(dims):
        view = [1] * dims
        view[axis] = -1
        weight = kernel.view(1, 1, *view).expand(x.shape[0], 1, *kernel.view(*view).shape).contiguous()
        padding = [0] * dims
        padding[axis] = radius
        out = conv(out, weight, padding=tuple(padding), groups=x.shape[0])
    return out[0]


def label_intensity_shift(image: Tensor, seg: Tensor, config: AugmentationConfig, generator: torch.Generator
                          ) -> Tensor:
    """With probability ``label_shift_p`` per sample, add to the voxels of each foreground label present in it an
    offset of its own, uniform in ``label_shift_range`` (every channel alike)."""
    if config.label_shift_p <= 0:
        return image
    low, high = config.label_shift_range
    out = image.clone()
    for b in range(image.shape[0]):
        if torch.rand(1, generator=generator).item() >= config.label_shift_p:
            continue
        for label in seg[b].unique().tolist():
            if label > 0:
                offset = low + (high - low) * torch.rand(1, generator=generator).item()
                out[b] += offset * (seg[b] == label).to(image.dtype)
    return out


def intensity_transform(image: Tensor, config: AugmentationConfig, generator: torch.Generator) -> Tensor:
    """Noise, blur, brightness, shift, contrast and gamma, each drawn per sample."""
    def chance(p):
        return torch.rand(1, generator=generator).item() < p

    def uniform(bounds):
        return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(1, generator=generator).item()

    out = []
    for sample in image:
        if chance(config.noise_p):
            sample = sample + torch.randn(sample.shape, generator=generator) * math.sqrt(uniform(config.noise_variance))
        if chance(config.blur_p):
            sample = _gaussian_blur(sample, uniform(config.blur_sigma))
        if chance(config.brightness_p):
            sample = sample * uniform(config.brightness_range)
        if chance(config.shift_p):
            sample = sample + uniform(config.shift_range)
        if chance(config.contrast_p):
            mean = sample.mean(dim=tuple(range(1, sample.dim())), keepdim=True)
            low, high = sample.amin(dim=tuple(range(1, sample.dim())), keepdim=True), \
                sample.amax(dim=tuple(range(1, sample.dim())), keepdim=True)
            sample = ((sample - mean) * uniform(config.contrast_range) + mean).clamp(low, high)
        for inverted, p in ((True, config.inverted_gamma_p), (False, config.gamma_p)):
            if chance(p):
                sample = _gamma(-sample if inverted else sample, uniform(config.gamma_range))
                sample = -sample if inverted else sample
        out.append(sample)
    return torch.stack(out)


def _gamma(x: Tensor, gamma: float) -> Tensor:
    """Gamma on the [min, max] range of each channel, keeping its mean and std (as batchgenerators does)."""
    axes = tuple(range(1, x.dim()))
    mean, std = x.mean(dim=axes, keepdim=True), x.std(dim=axes, keepdim=True)
    low, high = x.amin(dim=axes, keepdim=True), x.amax(dim=axes, keepdim=True)
    span = (high - low).clamp_min(1e-7)
    y = ((x - low) / span).clamp(0, 1) ** gamma * span + low
    new_std = y.std(dim=axes, keepdim=True).clamp_min(1e-7)
    return (y - y.mean(dim=axes, keepdim=True)) / new_std * std + mean


def mirror(image: Tensor, seg: Tensor, config: AugmentationConfig, generator: torch.Generator
           ) -> tuple[Tensor, Tensor]:
    dims = image.dim() - 2
    axes = range(dims) if config.mirror_axes is None else config.mirror_axes
    flips = [2 + axis for axis in axes if torch.rand(1, generator=generator).item() < 0.5]
    if flips:
        image, seg = image.flip(flips), seg.flip(flips)
    return image, seg


def augment(image: Tensor, seg: Tensor, config: AugmentationConfig, generator: torch.Generator
            ) -> tuple[Tensor, Tensor]:
    """All augmentations in nnU-Net's order: spatial, intensity (the per-label shift first), mirroring."""
    image, seg = spatial_transform(image, seg, config, generator)
    image = intensity_transform(label_intensity_shift(image, seg, config, generator), config, generator)
    return mirror(image, seg, config, generator)
