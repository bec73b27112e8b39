"""Fine-tuning: the loss falls on a learnable toy task, a run resumes where it stopped, bad setups are refused."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from gnnseg.seg.sam.checkpoint import load_sam
from gnnseg.seg.sam.modeling.sam import SAM_CONFIGS, build_sam
from gnnseg.seg.sam.training.click_loop import loop_losses
from gnnseg.seg.sam.training.finetune import FinetuneConfig, finetune, learning_rate, prompt_batch, prompted_loss
from gnnseg.seg.sam.training.losses import box_prompt_loss
from gnnseg.seg.sam.training.samples import samples_from_image

MODEL = replace(SAM_CONFIGS["vit_mini"], crop_margin=0.25)


def disk_samples(count: int, seed: int = 0):
    """Bright disks of random size on a noisy dark background: the box says where, the pixels say what."""
    rng = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        y, x = np.mgrid[:64, :64]
        cy, cx, r = rng.integers(20, 44), rng.integers(20, 44), rng.integers(7, 14)
        disk = (y - cy) ** 2 + (x - cx) ** 2 <= r ** 2
        image = rng.normal(60, 20, (64, 64)) + 120 * disk
        samples += samples_from_image(np.clip(image, 0, 255).astype(np.uint8), disk.astype(np.uint8), f"disk{index}")
    return samples


def test_prompt_batch_boxes_enclose_their_masks_after_augmentation():
    model = build_sam(MODEL)
    pixels, boxes, masks = prompt_batch(disk_samples(6), model, np.random.default_rng(0), box_shift=5, augment=True)
    assert pixels.shape == (6, 3, 64, 64) and boxes.shape == (6, 4) and masks.shape == (6, 64, 64)
    for box, mask in zip(boxes, masks):
        rows, cols = torch.nonzero(mask, as_tuple=True)
        assert box[0] <= cols.min() + 1 and box[2] >= cols.max() - 1
        assert box[1] <= rows.min() + 1 and box[3] >= rows.max() - 1


def test_loss_is_small_for_a_confident_correct_prediction():
    masks = torch.zeros(2, 32, 32)
    masks[:, 8:24, 8:24] = 1
    logits = (masks * 40 - 20)[:, None, ::2, ::2].contiguous()
    assert box_prompt_loss(logits, torch.ones(2, 1), masks).item() < 0.1
    assert box_prompt_loss(-logits, torch.ones(2, 1), masks).item() > 2


def test_the_training_loss_is_the_box_alone_or_the_mean_over_the_correction_loop():
    torch.manual_seed(0)
    model = build_sam(MODEL).eval()
    pixels, boxes, masks = prompt_batch(disk_samples(3), model, np.random.default_rng(0), box_shift=5, augment=False)
    embeddings = model.encode(pixels)
    box_alone = box_prompt_loss(*model.decode(embeddings, boxes=boxes), masks)
    assert float(prompted_loss(model, pixels, boxes, masks)) == pytest.approx(float(box_alone), rel=1e-5)
    loop = loop_losses(model, embeddings, boxes, masks, 3)
    assert float(prompted_loss(model, pixels, boxes, masks, click_rounds=2)) == pytest.approx(
        float(torch.stack(loop).mean()), rel=1e-5)


def test_click_rounds_train_the_point_embeddings(tmp_path):
    def point_embeddings_after(click_rounds: int) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = build_sam(MODEL)
        config = FinetuneConfig(rounds=1, iterations_per_round=2, batch_size=2, warmup_iterations=1,
                                freeze_prompt_encoder=False, click_rounds=click_rounds)
        finetune(model, disk_samples(4), [], config, tmp_path / str(click_rounds), show_progress=False)
        return [e.weight.detach().clone() for e in model.prompt_encoder.point_embeddings]

    torch.manual_seed(0)
    initial = [e.weight.detach().clone() for e in build_sam(MODEL).prompt_encoder.point_embeddings]
    box_only, with_clicks = point_embeddings_after(0), point_embeddings_after(2)
    assert all(torch.equal(a, b) for a, b in zip(initial[:2], box_only[:2]))        # no click: labels 0/1 unused
    assert any(not torch.equal(a, b) for a, b in zip(initial[:2], with_clicks[:2]))  # clicks move them


def test_learning_rate_warms_up_then_decays():
    config = FinetuneConfig(rounds=2, iterations_per_round=50, lr=1e-3, warmup_iterations=10)
    rates = [learning_rate(config, i) for i in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert rates[50] < rates[10] and rates[-1] < 1e-5


@pytest.mark.slow
def test_finetune_reduces_the_loss(tmp_path):
    torch.manual_seed(0)
    model = build_sam(MODEL)
    config = FinetuneConfig(rounds=3, iterations_per_round=20, batch_size=6, lr=2e-3, warmup_iterations=5)
    finetune(model, disk_samples(24), disk_samples(4, seed=1), config, tmp_path, show_progress=False)
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["train_loss"][-1] < 0.8 * log["train_loss"][0]
    assert (tmp_path / "progress.png").stat().st_size > 0
    trained, meta = load_sam(tmp_path / "model.pt")
    assert trained.config == MODEL and meta["finetune"]["rounds"] == 3


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch):
    import gnnseg.seg.sam.training.finetune as module

    train, val = disk_samples(8), disk_samples(2, seed=1)
    config = FinetuneConfig(rounds=3, iterations_per_round=2, batch_size=2, warmup_iterations=1)
    scored = module.box_dice_scores
    calls = []

    def interrupted_after_one_round(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return scored(*args, **kwargs)

    monkeypatch.setattr(module, "box_dice_scores", interrupted_after_one_round)
    with pytest.raises(KeyboardInterrupt):
        finetune(build_sam(MODEL), train, val, config, tmp_path, show_progress=False)
    first = json.loads((tmp_path / "log.json").read_text())
    assert len(first["train_loss"]) == 1 and not (tmp_path / "model.pt").exists()
    monkeypatch.setattr(module, "box_dice_scores", scored)
    with pytest.raises(ValueError, match="another configuration"):
        finetune(build_sam(MODEL), train, val, replace(config, lr=5e-4), tmp_path, resume=True)
    finetune(build_sam(MODEL), train, val, config, tmp_path, resume=True, show_progress=False)
    resumed = json.loads((tmp_path / "log.json").read_text())
    assert len(resumed["train_loss"]) == 3 and resumed["train_loss"][0] == first["train_loss"][0]
    assert (tmp_path / "model.pt").exists()


def test_finetune_refuses_empty_training_sets_and_bad_weights(tmp_path):
    model = build_sam(MODEL)
    with pytest.raises(ValueError, match="no training samples"):
        finetune(model, [], [], FinetuneConfig(), tmp_path)
    with pytest.raises(ValueError, match="weights"):
        finetune(model, disk_samples(2), [], FinetuneConfig(), tmp_path, weights=[1.0])
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        finetune(model, disk_samples(2), [], FinetuneConfig(), tmp_path / "new", resume=True)


def test_zoom_is_for_whole_image_models_and_their_objects(tmp_path):
    from gnnseg.seg.sam.training.prepared import PreparedSet

    samples = disk_samples(2)
    box_centred = build_sam(MODEL)
    with pytest.raises(ValueError, match="already cuts a window around each box"):
        finetune(box_centred, samples, [], FinetuneConfig(rounds=1, iterations_per_round=1, zoom=0.5), tmp_path / "a")
    whole_image = build_sam(replace(SAM_CONFIGS["vit_mini"], image_layout="padded"))
    prepared = PreparedSet.from_samples(samples, whole_image.config)
    with pytest.raises(ValueError, match="give the PromptSamples"):
        finetune(whole_image, prepared, [], FinetuneConfig(rounds=1, iterations_per_round=1, zoom=0.5), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_run_begun_before_a_recipe_field_existed_resumes_with_its_default(tmp_path):
    from gnnseg.core.checkpoint import load_checkpoint, save_checkpoint

    train = disk_samples(4)
    config = FinetuneConfig(rounds=2, iterations_per_round=1, batch_size=2, warmup_iterations=1)
    finetune(build_sam(MODEL), train, [], replace(config, rounds=1), tmp_path, show_progress=False)
    latest = tmp_path / "checkpoint_latest.pt"
    state = load_checkpoint(latest)
    del state["config"]["val_box_margin"]               # as a run written before that field existed
    state["config"]["rounds"] = 2
    save_checkpoint(state, latest)
    with pytest.raises(ValueError, match="another configuration"):
        finetune(build_sam(MODEL), train, [], replace(config, val_box_margin=7), tmp_path, resume=True)
    assert finetune(build_sam(MODEL), train, [], config, tmp_path, resume=True, show_progress=False)["rounds"] == 2
