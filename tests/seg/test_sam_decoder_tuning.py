"""Stage 3: the cache of symmetric views' embeddings and tuning the mask decoder on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gnnseg.seg.sam.inference.model_input import whole_image_input
from gnnseg.seg.sam.inference.symmetry import DIHEDRAL
from gnnseg.seg.sam.modeling.sam import build_sam
from gnnseg.seg.sam.training.decoder_tuning import DecoderTuningConfig, tune_decoder, view_masks
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
