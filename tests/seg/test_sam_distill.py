"""Lite MedSAM's pieces: the prepared whole-image set, the teacher-embedding cache, distillation, stage 2."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from gnnseg.seg.sam.inference.model_input import resize_longest_side, resize_mask
from gnnseg.seg.sam.inference.symmetry import Symmetry
from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS, build_sam
from gnnseg.seg.sam.training.distill import (
    DistillConfig,
    EmbeddingCache,
    cache_teacher_embeddings,
    distill_encoder,
    student_from_teacher,
)
from gnnseg.seg.sam.training.finetune import FinetuneConfig, finetune, prompt_batch
from gnnseg.seg.sam.training.prepared import PreparedSet, jittered_boxes, normalize_batch
from gnnseg.seg.sam.training.samples import samples_from_image

STUDENT = SAM_CONFIGS["tiny_vit_mini"]
TEACHER = replace(SAM_CONFIGS["vit_mini"], patch_size=4, image_layout="padded")  # 64 in, 16 x 16 out, as the student


def wide_disk_samples(count: int, seed: int = 0):
    """Two bright disks per 48 x 96 image (so the 64 px input is padded below the image)."""
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        y, x = np.mgrid[:48, :96]
        labels = np.zeros((48, 96), np.uint8)
        for number, cx in enumerate((24, 72), start=1):
            cy, r = rng.integers(16, 32), rng.integers(8, 14)
            labels[(y - cy) ** 2 + (x - cx) ** 2 <= r ** 2] = number
        image = np.clip(rng.normal(60, 20, (48, 96)) + 120 * (labels > 0), 0, 255).astype(np.uint8)
        samples += samples_from_image(image, labels, f"disks{index}")
    return samples


def test_prepared_set_resizes_each_image_once_in_the_models_layout():
    samples = wide_disk_samples(3)
    prepared = PreparedSet.from_samples(samples, STUDENT)
    assert prepared.images.shape == (3, 64, 64, 3) and len(prepared) == len(samples) == 6
    assert prepared.extents.tolist() == [[32, 64]] * 3
    assert (prepared.images[:, 32:] == 0).all()  # zero padding below the image
    np.testing.assert_allclose(prepared.images[0, :32], np.round(resize_longest_side(samples[0].image, 64)), atol=1)
    first = prepared.instances[0] == prepared.object_id[0]
    np.testing.assert_array_equal(first[:32], resize_mask(samples[0].mask.astype(np.uint8), (32, 64)) > 0)


def test_batches_hold_masks_inside_their_boxes_after_augmentation():
    prepared = PreparedSet.from_samples(wide_disk_samples(4), STUDENT)
    pixels, boxes, masks = prepared.batch(np.arange(8), np.random.default_rng(0), box_shift=4, augment=True,
                                          normalization="minmax")
    assert pixels.shape == (8, 3, 64, 64) and boxes.shape == (8, 4) and masks.shape == (8, 64, 64)
    for box, mask in zip(boxes, masks):
        rows, cols = torch.nonzero(mask, as_tuple=True)
        assert box[0] <= cols.min() and box[2] >= cols.max() and box[1] <= rows.min() and box[3] >= rows.max()
        assert box[2] - box[0] <= cols.max() - cols.min() + 8


def test_whole_image_models_draw_from_prepared_sets_not_windows():
    with pytest.raises(ValueError, match="PreparedSet.batch"):
        prompt_batch(wide_disk_samples(1), build_sam(STUDENT), np.random.default_rng(0), box_shift=2, augment=False)


def test_minmax_normalisation_ignores_the_padding_and_keeps_it_zero():
    pixels = torch.full((1, 3, 4, 4), 0.0)
    pixels[0, :, :2, :] = torch.tensor([[10.0, 20.0, 30.0, 50.0]] * 2)
    normalized = normalize_batch(pixels, torch.tensor([[2, 4]]), "minmax")
    assert normalized[0, 0, 0].tolist() == [0.0, 0.25, 0.5, 1.0]
    assert (normalized[0, :, 2:] == 0).all()


def test_jittered_boxes_stay_within_a_quarter_of_the_object():
    masks = torch.zeros(50, 64, 64, dtype=torch.bool)
    masks[:, 20:40, 10:30] = True
    boxes = jittered_boxes(masks, np.random.default_rng(1), max_shift=100)
    assert (boxes[:, 0] >= 5).all() and (boxes[:, 0] <= 10).all() and (boxes[:, 3] <= 44).all()
    assert len({tuple(b.tolist()) for b in boxes}) > 10


def test_prepared_set_round_trips_and_refuses_another_model(tmp_path):
    prepared = PreparedSet.from_samples(wide_disk_samples(2), STUDENT)
    loaded = PreparedSet.load(prepared.save(tmp_path / "set.npz"))
    np.testing.assert_array_equal(loaded.instances, prepared.instances)
    assert loaded.layout == "padded"
    with pytest.raises(ValueError, match="prepared for 64 px padded"):
        loaded.check_fits(SAM_CONFIGS["lite_medsam"])
    np.savez(tmp_path / "other.npz", images=prepared.images)
    with pytest.raises(ValueError, match="not a prepared training set"):
        PreparedSet.load(tmp_path / "other.npz")


def test_embedding_cache_holds_the_teachers_embeddings(tmp_path):
    prepared = PreparedSet.from_samples(wide_disk_samples(3), STUDENT)
    teacher = build_sam(TEACHER)
    cache = cache_teacher_embeddings(teacher, prepared, tmp_path / "emb.npy", batch_size=2, show_progress=False)
    reopened = EmbeddingCache.open(tmp_path / "emb.npy")
    assert reopened.array.shape == (3, 32, 16, 16) and reopened.meta["teacher"]["patch_size"] == 4
    with torch.no_grad():
        expected = teacher.encode(prepared.pixels([1], "minmax"))
    torch.testing.assert_close(reopened.batch(np.array([1])), expected, atol=2e-3, rtol=2e-3)
    assert len(cache) == 3
    json_path = tmp_path / "emb.npy.json"
    json_path.write_text(json.dumps({"shape": [4, 32, 16, 16], "meta": {}}))
    with pytest.raises(ValueError, match="incomplete"):
        EmbeddingCache.open(tmp_path / "emb.npy")
    with pytest.raises(FileNotFoundError):
        EmbeddingCache.open(tmp_path / "none.npy")


def test_the_student_sees_each_cached_view_as_the_teacher_saw_it(tmp_path):
    prepared = PreparedSet.from_samples(wide_disk_samples(2), STUDENT)
    teacher = build_sam(TEACHER).eval()
    views = [Symmetry(0, False), Symmetry(1, True)]  # a quarter turn makes the 48 x 96 image tall
    cache = cache_teacher_embeddings(teacher, prepared, tmp_path / "emb.npy", symmetries=views, show_progress=False)
    assert cache.views == views and len(cache) == 4
    with torch.no_grad():
        shown = teacher.encode(prepared.pixels([1], "minmax", views=[views[1]]))
        unturned = teacher.encode(prepared.pixels([1], "minmax"))
    torch.testing.assert_close(cache.batch(np.array([3])), shown, atol=2e-3, rtol=2e-3)
    assert (cache.batch(np.array([3])) - unturned).abs().max() > 0.05
    with pytest.raises(ValueError, match="2 images x 2 views"):
        distill_encoder(build_sam(replace(STUDENT, prompt_dim=16, decoder_heads=2)), prepared, cache,
                        DistillConfig(iterations=1), show_progress=False)
    log = distill_encoder(build_sam(STUDENT), prepared, cache, DistillConfig(iterations=3, batch_size=4),
                          show_progress=False)
    assert len(log["loss"]) == 3 and np.isfinite(log["loss"]).all()


@pytest.mark.slow
def test_distillation_pulls_the_student_towards_the_teacher(tmp_path):
    torch.manual_seed(0)
    prepared = PreparedSet.from_samples(wide_disk_samples(6), STUDENT)
    cache = cache_teacher_embeddings(build_sam(TEACHER), prepared, tmp_path / "emb.npy", show_progress=False)
    student = build_sam(STUDENT)
    log = distill_encoder(student, prepared, cache, DistillConfig(iterations=60, batch_size=4, lr=3e-3,
                                                                  warmup_iterations=5),
                          tmp_path, show_progress=False)
    assert np.mean(log["loss"][-10:]) < 0.5 * np.mean(log["loss"][:5])
    assert (tmp_path / "distill_log.json").is_file()
    wrong = build_sam(replace(STUDENT, prompt_dim=16, decoder_heads=2))
    with pytest.raises(ValueError, match="shape"):
        distill_encoder(wrong, prepared, cache, DistillConfig(iterations=1), show_progress=False)


def test_student_takes_the_teachers_prompt_encoder_and_decoder():
    teacher, student = build_sam(TEACHER), build_sam(STUDENT)
    student_from_teacher(student, teacher)
    for part in ("prompt_encoder", "mask_decoder"):
        for key, value in getattr(teacher, part).state_dict().items():
            torch.testing.assert_close(getattr(student, part).state_dict()[key], value)
    with pytest.raises(ValueError, match="does not fit"):
        student_from_teacher(build_sam("vit_mini"), build_sam("vit_cpu"))


@pytest.mark.slow
def test_whole_image_finetuning_from_a_prepared_set_reduces_the_loss(tmp_path):
    torch.manual_seed(0)
    prepared = PreparedSet.from_samples(wide_disk_samples(12), STUDENT)
    config = FinetuneConfig(rounds=3, iterations_per_round=15, batch_size=6, lr=2e-3, warmup_iterations=5,
                            box_shift=3)
    finetune(build_sam(STUDENT), prepared, wide_disk_samples(2, seed=5), config, tmp_path, show_progress=False)
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["train_loss"][-1] < 0.8 * log["train_loss"][0]
    assert 0 <= log["val_dice"][-1] <= 1
