"""Augmentations keep images and labels aligned; the patch sampler oversamples foreground and pads."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from gnnseg.core.runs import write_json
from gnnseg.seg.unet.augment import (
    AugmentationConfig,
    _gamma,
    augment,
    intensity_transform,
    label_intensity_shift,
    spatial_transform,
)
from gnnseg.seg.unet.dataloader import PatchSampler


def blob_batch(dims: int, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * dims, indexing="ij"))
    center = torch.tensor([size * 0.4, size * 0.55, size * 0.5][:dims]).view(dims, *([1] * dims))
    seg = (((grid - center) ** 2).sum(0) < (size / 4) ** 2).long()
    return seg.float()[None, None].repeat(2, 1, *([1] * dims)), seg[None, None].repeat(2, 1, *([1] * dims))


@pytest.mark.parametrize("dims", [2, 3])
def test_spatial_transforms_move_labels_with_the_image(dims):
    image, seg = blob_batch(dims)
    config = AugmentationConfig(rotation_p=1.0, scale_p=1.0, elastic_p=1.0 if dims == 2 else 0.0)
    moved_image, moved_seg = spatial_transform(image, seg, config, torch.Generator().manual_seed(3))
    assert moved_seg.dtype == seg.dtype and set(moved_seg.unique().tolist()) <= {0, 1}
    agreement = ((moved_image > 0.5).long() == moved_seg).float().mean()
    assert agreement > 0.97
    assert not torch.equal(moved_seg, seg)          # something really moved


def test_mirroring_and_identity():
    image, seg = blob_batch(2)
    same_image, same_seg = augment(image, seg, AugmentationConfig.none(), torch.Generator().manual_seed(0))
    assert torch.equal(same_image, image) and torch.equal(same_seg, seg)
    flipped = AugmentationConfig(rotation_p=0, scale_p=0, noise_p=0, blur_p=0, brightness_p=0, contrast_p=0,
                                 gamma_p=0, inverted_gamma_p=0)
    for seed in range(6):
        out_image, out_seg = augment(image, seg, flipped, torch.Generator().manual_seed(seed))
        assert torch.equal((out_image > 0.5).long(), out_seg)


def test_intensity_transforms_change_values_not_shapes():
    image = torch.randn(3, 1, 16, 16)
    config = AugmentationConfig(noise_p=1, blur_p=1, brightness_p=1, contrast_p=1, gamma_p=1, inverted_gamma_p=1)
    out = intensity_transform(image, config, torch.Generator().manual_seed(1))
    assert out.shape == image.shape and not torch.allclose(out, image)
    x = torch.rand(1, 8, 8) * 5
    gamma = _gamma(x, 1.4)
    assert torch.isclose(gamma.mean(), x.mean(), atol=1e-4) and torch.isclose(gamma.std(), x.std(), atol=1e-4)


def test_intensity_shift_adds_one_offset_per_sample_within_its_range():
    image = torch.randn(4, 2, 8, 8)
    only_shift = replace(AugmentationConfig.none(), shift_p=1.0, shift_range=(0.5, 1.0))
    offsets = intensity_transform(image, only_shift, torch.Generator().manual_seed(3)) - image
    per_sample = offsets.flatten(1)
    torch.testing.assert_close(per_sample, per_sample[:, :1].expand_as(per_sample))   # one shift per sample
    assert bool(((per_sample[:, 0] >= 0.5) & (per_sample[:, 0] <= 1.0)).all())
    assert per_sample[:, 0].unique().numel() == 4
    assert torch.equal(intensity_transform(image, AugmentationConfig.none(), torch.Generator()), image)


def test_label_shift_moves_each_label_by_its_own_offset_and_leaves_background():
    image = torch.randn(3, 2, 6, 10)
    seg = torch.zeros(3, 1, 6, 10)
    seg[:, :, :3, :4], seg[:, :, 3:, 6:] = 1, 2
    seg[2] = 0                                               # a patch of background only
    config = replace(AugmentationConfig.none(), label_shift_p=1.0, label_shift_range=(0.5, 1.0))
    offsets = label_intensity_shift(image, seg, config, torch.Generator().manual_seed(0)) - image
    assert torch.equal(offsets[seg.expand_as(image) == 0], torch.zeros(int((seg.expand_as(image) == 0).sum())))
    drawn = set()
    for b in range(2):
        for label in (1, 2):
            inside = offsets[b][seg[b].expand_as(image[b]) == label]
            torch.testing.assert_close(inside, inside[:1].expand_as(inside))   # one offset per label, all channels
            assert 0.5 <= inside[0] <= 1.0
            drawn.add(round(float(inside[0]), 6))
    assert len(drawn) == 4                                   # drawn for each label of each patch
    generator = torch.Generator().manual_seed(0)
    assert label_intensity_shift(image, seg, AugmentationConfig.none(), generator) is image
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())   # nothing drawn when off


def write_case(folder, case_id, data, seg):
    np.save(folder / f"{case_id}.npy", data.astype(np.float32))
    np.save(folder / f"{case_id}_seg.npy", seg.astype(np.int8))
    locations = {"1": np.argwhere(seg[0] == 1).tolist()}
    write_json(folder / f"{case_id}.json", {"class_locations": locations})


def test_sampler_oversamples_foreground_and_pads_small_cases(tmp_path):
    data = np.random.default_rng(0).normal(size=(1, 1, 64, 64))
    seg = np.zeros((1, 1, 64, 64))
    seg[0, 0, 50:53, 5:8] = 1                         # a tiny object in a corner
    seg[0, 0, 0:4, 0:4] = -1                          # outside the nonzero region
    write_case(tmp_path, "big", data, seg)
    sampler = PatchSampler(tmp_path, ["big"], (16, 16), batch_size=3, oversample_foreground=0.33, seed=0)
    hits = 0
    for _ in range(20):
        images, labels = sampler.batch()
        assert images.shape == (3, 1, 16, 16) and labels.shape == (3, 1, 16, 16)
        assert labels.min() >= 0                         # -1 became background
        assert labels[-1].sum() > 0                      # the forced sample always sees the object
        hits += int(labels[0].sum() > 0)
    assert hits < 10                                     # random samples mostly miss it

    write_case(tmp_path, "small", np.ones((1, 1, 10, 12)), np.ones((1, 1, 10, 12)))
    small = PatchSampler(tmp_path, ["small"], (16, 16), batch_size=2, oversample_foreground=0.0, seed=1)
    images, labels = small.batch()
    assert images.shape == (2, 1, 16, 16)
    assert int(images[0].sum()) == 120 and int(labels[0].sum()) == 120   # all of it, zero-padded around
    with pytest.raises(ValueError, match="at least one case"):
        PatchSampler(tmp_path, [], (16, 16), 2)
