"""Stage 3: the cache of symmetric views' embeddings and tuning the mask decoder on it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from gnnseg.seg.sam.inference.model_input import whole_image_input
from gnnseg.seg.sam.inference.symmetry import DIHEDRAL
from gnnseg.seg.sam.modeling.sam import build_sam
from gnnseg.seg.sam.training.decoder_tuning import (
    DecoderTuningConfig,
    cached_box_dice,
    interpolated_decoder,
    interpolated_model,
    tune_decoder,
    view_masks,
)
from gnnseg.seg.sam.training.distill import cache_teacher_embeddings
from gnnseg.seg.sam.training.prepared import PreparedSet
from tests.seg.test_sam_distill import STUDENT, wide_disk_samples


@pytest.fixture(scope="module")
def prepared() -> PreparedSet:
    return PreparedSet.from_samples(wide_disk_samples(3), STUDENT)


@pytest.fixture(scope="module")
def view_cache(prepared, tmp_path_factory):
    torch.manual_seed(0)
    model = build_sam(STUDENT).eval()
    cache = cache_teacher_embeddings(model, prepared, tmp_path_factory.mktemp("views") / "emb.npy", batch_size=5,
                                     symmetries=DIHEDRAL, show_progress=False)
    return model, cache


def test_each_view_is_the_turned_image_encoded_with_padding_at_the_bottom_right(prepared, view_cache):
    model, cache = view_cache
    assert cache.array.shape == (3 * 8, 32, 16, 16)
    assert cache.meta["symmetries"][3] == [1, True]
    height, width = prepared.extents[1]
    for k in (0, 3, 6):  # identity, a mirrored quarter turn, a half turn
        turned = DIHEDRAL[k].image(prepared.images[1, :height, :width])
        pixels, inside = whole_image_input(turned, 64, layout="padded", normalization="minmax")
        assert inside == turned.shape[:2]
        with torch.no_grad():
            expected = model.encode(torch.from_numpy(pixels))[0]
        np.testing.assert_allclose(cache.batch(np.array([1 * 8 + k]))[0], expected, atol=2e-2)


def test_view_masks_cover_the_bright_disks_of_the_turned_images(prepared):
    objects = np.arange(len(prepared)).repeat(8)
    views = np.tile(np.arange(8), len(prepared))
    masks = view_masks(prepared, objects, views)
    assert masks.shape == (len(objects), 64, 64) and set(masks.unique().tolist()) == {0.0, 1.0}
    for mask, obj, view in zip(masks, objects, views):
        image = prepared.object_image[obj]
        height, width = prepared.extents[image]
        turned = DIHEDRAL[view].image(prepared.images[image, :height, :width, 0]).astype(float)
        inside = mask[: turned.shape[0], : turned.shape[1]].numpy() > 0
        assert mask.sum() == inside.sum() > 20  # nothing in the padding
        assert turned[inside].mean() > turned[~inside].mean() + 60


def test_tuning_lowers_the_loss_and_changes_only_the_mask_decoder(prepared, view_cache):
    _, cache = view_cache
    torch.manual_seed(0)
    model = build_sam(STUDENT)
    model.prompt_encoder.requires_grad_(False)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    config = DecoderTuningConfig(iterations=80, batch_size=4, lr=2e-3, warmup_iterations=5)
    log = tune_decoder(model, prepared, cache, config, weights=np.ones(6), show_progress=False)
    assert len(log["loss"]) == 80
    assert np.mean(log["loss"][-10:]) < 0.8 * np.mean(log["loss"][:10])
    changed = {name.split(".")[0] for name, tensor in model.state_dict().items()
               if not torch.equal(tensor, before[name])}
    assert changed == {"mask_decoder"}
    assert not model.training
    assert not any(p.requires_grad for p in model.prompt_encoder.parameters())  # the caller's choices are kept
    assert all(p.requires_grad for p in model.image_encoder.parameters())


def test_tuning_reads_the_views_a_cache_records_and_refuses_another_sets_cache_and_bad_weights(
        prepared, view_cache, tmp_path):
    model, cache = view_cache
    config = DecoderTuningConfig(iterations=1, batch_size=2)
    plain = cache_teacher_embeddings(model, prepared, tmp_path / "plain.npy", show_progress=False)  # identity only
    assert [(s.quarter_turns, s.mirror) for s in plain.views] == [(0, False)]
    assert len(tune_decoder(build_sam(STUDENT), prepared, plain, config, show_progress=False)["loss"]) == 1
    fewer = PreparedSet.from_samples(wide_disk_samples(2), STUDENT)  # a cache of three images does not fit two
    with pytest.raises(ValueError, match="every image under the 1 symmetries it records"):
        tune_decoder(build_sam(STUDENT), fewer, plain, config, show_progress=False)
    with pytest.raises(ValueError, match="weights must be 6 non-negative"):
        tune_decoder(build_sam(STUDENT), prepared, cache, config, weights=np.ones(5), show_progress=False)


def test_interpolation_blends_the_mask_decoders_weight_by_weight_and_keeps_the_rest(prepared, view_cache):
    _, cache = view_cache
    torch.manual_seed(0)
    released = build_sam(STUDENT)
    tuned = copy.deepcopy(released)
    tune_decoder(tuned, prepared, cache, DecoderTuningConfig(iterations=5, batch_size=2, warmup_iterations=1,
                                                              lr=1e-2), show_progress=False)
    before = {name: tensor.clone() for name, tensor in released.state_dict().items()}
    half = interpolated_decoder(released, tuned, 0.5).state_dict()
    for name, tensor in released.state_dict().items():
        if name.startswith("mask_decoder.") and tensor.is_floating_point():
            torch.testing.assert_close(half[name], (tensor + tuned.state_dict()[name]) / 2)
        else:
            assert torch.equal(half[name], tensor), name
    assert any(not torch.equal(half[name], before[name]) for name in half if name.startswith("mask_decoder."))
    for alpha, expected in ((0.0, released), (1.0, tuned)):
        ends = interpolated_decoder(released, tuned, alpha).mask_decoder.state_dict()
        assert all(torch.equal(ends[name], value) for name, value in expected.mask_decoder.state_dict().items())
    assert all(torch.equal(released.state_dict()[name], value) for name, value in before.items())  # left as it was
    with pytest.raises(ValueError, match="alpha must lie in 0..1"):
        interpolated_decoder(released, tuned, 1.5)
    with pytest.raises(ValueError, match="differ in their names or shapes"):
        interpolated_decoder(released, build_sam("vit_cpu"), 0.5)
    moved = copy.deepcopy(tuned)  # every weight away from the released one, the encoder's too
    with torch.no_grad():
        for parameter in moved.parameters():
            parameter.add_(1.0)
    whole = interpolated_model(released, moved, 0.25).state_dict()
    for name, tensor in released.state_dict().items():
        expected = torch.lerp(tensor, moved.state_dict()[name], 0.25) if tensor.is_floating_point() else tensor
        torch.testing.assert_close(whole[name], expected)
    encoder_weight = next(name for name in whole if name.startswith("image_encoder.") and "weight" in name)
    assert not torch.equal(whole[encoder_weight], released.state_dict()[encoder_weight])


def test_cached_box_dice_scores_each_object_as_the_encoder_would_and_rises_with_tuning(prepared, view_cache):
    model, cache = view_cache
    objects = np.arange(len(prepared))
    scores = cached_box_dice(model, prepared, cache, objects, margin=2)
    assert scores.shape == (len(prepared),) and np.all((scores >= 0) & (scores <= 1))
    # the same object scored from the encoder's own float32 embedding of the image, prompted the same way
    image = prepared.object_image[0]
    height, width = prepared.extents[image]
    pixels, _ = whole_image_input(prepared.images[image, :height, :width], 64, layout="padded",
                                  normalization="minmax")
    mask = view_masks(prepared, objects[:1], np.zeros(1, np.int64))[0] > 0
    ys, xs = np.nonzero(mask.numpy())
    box = torch.tensor([[xs.min() - 2, ys.min() - 2, xs.max() + 2, ys.max() + 2]], dtype=torch.float32).clamp(0, 63)
    with torch.no_grad():
        low_res, _ = model.decode(model.encode(torch.from_numpy(pixels)), boxes=box)
    predicted = torch.nn.functional.interpolate(low_res, (64, 64), mode="bilinear")[0, 0] > 0
    expected = 2 * (predicted & mask).sum() / (predicted.sum() + mask.sum())
    assert scores[0] == pytest.approx(float(expected), abs=0.02)

    tuned = copy.deepcopy(model)
    tune_decoder(tuned, prepared, cache, DecoderTuningConfig(iterations=80, batch_size=4, lr=2e-3,
                                                             warmup_iterations=5), show_progress=False)
    assert cached_box_dice(tuned, prepared, cache, objects).mean() > scores.mean() + 0.1


def test_cached_box_dice_needs_the_images_as_they_are(prepared, view_cache, tmp_path):
    model, _ = view_cache
    turned_only = cache_teacher_embeddings(model, prepared, tmp_path / "turned.npy", symmetries=DIHEDRAL[2:3],
                                           show_progress=False)
    with pytest.raises(ValueError, match="first view must be the image as it is"):
        cached_box_dice(model, prepared, turned_only, [0])
